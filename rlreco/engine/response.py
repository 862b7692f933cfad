"""Simulated customer response models, as the arrays the visit kernels read.

``seed``
    The original design's model: the numbers of clicks ``C`` and purchases ``B`` of a visit are
    drawn from categorical distributions over 0, 1, 2, ... (capped at the slate size) and land on
    uniformly chosen slate products, whatever was shown. Every policy earns the same expected
    reward, so regret is not defined.

``popularity``
    Every (state, product) has a true click and buy probability derived from the history; each
    slate product responds independently: clicked with probability ``p_click``, bought with
    probability ``p_buy`` (a bought product counts as bought, with the buy reward). With
    ``q = max(0, count)`` the historical count of a cell (the initial snapshot's ``count``), a
    state ``s`` of segment ``g`` with catalogue ``K_g`` gives each product ``p`` of the catalogue
    the weight

        w[s, p] = 0.45 * q[s, p] / Q[s] + 0.45 * q_g[p] / Q_g + 0.10 / |K_g|

    where ``Q[s]`` sums ``q[s, :]``, ``q_g[p]`` sums ``q[:, p]`` over the segment's states and
    ``Q_g`` sums ``q_g``. A state without history puts its 0.45 on the segment term, and a segment
    without history everything on the uniform term (so the weights of a catalogue sum to 1 and
    are all positive). Then

        p_click[s, p] = 1 - exp(-k_click[s] * w[s, p]),    p_buy = 1 - exp(-k_buy[s] * w)

    with ``k`` solved per state (Newton's method; the mean is concave in ``k``) so that the mean
    of ``p_click`` over the catalogue is ``E[min(C, n)] / n`` under the seed model's click
    distribution (0.074326 for the defaults and ``n = 10``), and likewise for ``p_buy``: a
    uniformly random slate gets the seed model's mean clicks and purchases (0.743 and 0.543 per
    10 products). Products outside the segment catalogue have probability 0.

truth table
    A user-supplied Parquet file of the same probabilities, read by the application layer
    (:func:`rlreco.app.truth.load_truth_tables`) and passed in as a frame per file name, checked
    against the state space by :mod:`rlreco.engine.truth_table`.

schedule (drifting truth)
    ``VISITS=RESPONSE,...`` (e.g. ``0=a.parquet,2000000=b.parquet``): known truths
    (``popularity`` or truth tables) that take over at the given global visit indices, each a
    *phase* of the response. Each visit is answered, and its regret measured, by the phase in
    force at its visit index. A fixed response is one phase starting at 0.

Under a known truth each cell's expected reward is

    mu = p_buy * R_buy + (1 - p_buy) * p_click * R_click + (1 - p_buy) * (1 - p_click) * R_ignore

and the expected regret of a visit is the sum of the ``n`` largest ``mu`` of the state's
catalogue (the best slate) minus the sum of ``mu`` over the slate shown.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from rlreco.config import is_schedule, parse_schedule
from rlreco.engine.kernels.records import ResponseModel
from rlreco.engine.state_space import StateSpace
from rlreco.engine.truth_table import truth_of_frame
from rlreco.errors import SimulationError
from rlreco.schema import TRUTH_DTYPE

#: Weights of the state, segment and uniform terms of the popularity formula.
STATE_SHARE, SEGMENT_SHARE, UNIFORM_SHARE = 0.45, 0.45, 0.10
#: Version of the popularity formula and its calibration: stored models (a sweep caches them
#: in the run directory) are keyed by it, so it changes with any change to their numbers.
POPULARITY_VERSION = 1
#: States per chunk of the dense truth computations: bounds their temporaries (a few arrays of
#: ROW_CHUNK x catalogue float64) whatever the size of the state space.
ROW_CHUNK = 1024


@dataclass(frozen=True)
class Response:
    """A response model as kernel arrays.

    Attributes
    ----------
    name : str
        ``"seed"``, ``"popularity"``, the truth table's path or a schedule's text.
    rewards : (float, float, float)
        Mean reward of an ignored, a clicked and a bought product (Outcome order).
    model : int
        :data:`~rlreco.engine.kernels.records.ResponseModel` code.
    click_cdf, buy_cdf : ndarray of float64, shape (k,)
        Cumulative click and purchase count distributions (used by ``seed``).
    truth : ndarray of TRUTH_DTYPE, shape (n_phases, n_states, n_products) or (1, n_states, 0)
        True ``p_click`` and ``p_buy`` of every cell per phase (empty under ``seed``).
    best_mu : ndarray of float64, shape (n_phases, n_states)
        Expected reward of the best slate of each state per phase (zeros under ``seed``).
    phase_start : ndarray of int64, shape (n_phases,)
        Global visit index at which each phase takes over (``[0]`` for a fixed response).
    phases : tuple of str
        The response spec of each phase (``(name,)`` for a fixed response).
    """

    name: str
    rewards: tuple[float, float, float]
    model: int
    click_cdf: np.ndarray
    buy_cdf: np.ndarray
    truth: np.ndarray
    best_mu: np.ndarray
    phase_start: np.ndarray
    phases: tuple[str, ...]

    @property
    def knows_regret(self) -> bool:
        """Whether the expected regret of a visit is defined."""
        return self.model == ResponseModel.truth

    @property
    def n_phases(self) -> int:
        """Phases of the response (1 unless it is a schedule)."""
        return int(self.phase_start.shape[0])

    @property
    def mu(self) -> np.ndarray:
        """Expected reward of every cell per phase, shape (n_phases, n_states, n_products)
        (or (1, n_states, 0))."""
        return expected_reward(self.truth["p_click"], self.truth["p_buy"], self.rewards)


def count_cdf(probs: Sequence[float], what: str) -> np.ndarray:
    """Cumulative distribution of a count, checked.

    Parameters
    ----------
    probs : sequence of float
        ``P(count = 0), P(count = 1), ...``: in [0, 1], summing to 1 within 1e-6.
    what : str
        Name for error messages, e.g. ``"click_probs"``.

    Returns
    -------
    ndarray of float64, shape (len(probs),)
        Last entry exactly 1, so an inverse-CDF draw on ``[0, 1)`` always lands.
    """
    values = np.asarray(probs, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise SimulationError(f"{what}: expected a non-empty list of probabilities")
    if not np.all((values >= 0.0) & (values <= 1.0)):
        raise SimulationError(f"{what} = {list(probs)}: every entry must be in [0, 1]")
    total = float(np.sum(values))
    if abs(total - 1.0) > 1e-6:
        raise SimulationError(f"{what} = {list(probs)}: sums to {total!r}, not 1 (within 1e-6)")
    cdf = np.cumsum(values)
    cdf[-1] = 1.0
    return cdf


def mean_per_slot(probs: Sequence[float], slate_size: int) -> float:
    """``E[min(count, n)] / n`` for a count distribution: the seed model's rate per slot."""
    values = np.asarray(probs, dtype=np.float64)
    counts = np.minimum(np.arange(values.size), slate_size)
    return float(np.dot(values, counts)) / slate_size


def expected_reward(
    p_click: np.ndarray, p_buy: np.ndarray, rewards: tuple[float, float, float]
) -> np.ndarray:
    """Expected reward ``mu`` of showing a product (see the module docstring).

    Parameters
    ----------
    p_click, p_buy : ndarray of float64
    rewards : (float, float, float)
        Mean reward of an ignored, a clicked and a bought product (Outcome order).
    """
    ignore, click, buy = rewards
    return p_buy * buy + (1.0 - p_buy) * (p_click * click + (1.0 - p_click) * ignore)


def calibrate_rates(weight: np.ndarray, target: float) -> np.ndarray:
    """``1 - exp(-k * weight)`` with ``k`` per row such that each row's mean is ``target``.

    Parameters
    ----------
    weight : ndarray of float64, shape (m, K)
        Positive weights.
    target : float
        Wanted mean per row, in [0, 1].

    Returns
    -------
    ndarray of float64, shape (m, K)
    """
    if target <= 0.0:
        return np.zeros_like(weight)
    if target >= 1.0:
        return np.ones_like(weight)
    m = weight.shape[0]
    k = np.zeros(m)
    gap = np.empty(m)
    slope = np.empty(m)
    # f(k) = mean(1 - exp(-k w)) - target is increasing and concave with f(0) < 0: Newton's
    # iterates from k = 0 rise monotonically to the root, without overshoot
    for _ in range(200):
        # rows in chunks: the temporaries stay bounded (the row means are the same numbers)
        for rows in _row_chunks(m):
            decay = np.exp(-k[rows, None] * weight[rows])
            gap[rows] = target - (1.0 - decay).mean(axis=1)
            slope[rows] = (weight[rows] * decay).mean(axis=1)
        if np.all(gap <= 1e-12 * target):
            break
        k = k + gap / slope
    rates = np.empty_like(weight)
    for rows in _row_chunks(m):
        rates[rows] = -np.expm1(-k[rows, None] * weight[rows])
    return rates


def _row_chunks(m: int) -> Iterator[slice]:
    """Slices of :data:`ROW_CHUNK` rows covering ``range(m)``."""
    for start in range(0, m, ROW_CHUNK):
        yield slice(start, min(start + ROW_CHUNK, m))


def popularity_probabilities(
    space: StateSpace,
    history_count: np.ndarray,
    click_target: float,
    buy_target: float,
) -> tuple[np.ndarray, np.ndarray]:
    """True click and buy probabilities of the ``popularity`` model (module docstring).

    Parameters
    ----------
    space : StateSpace
    history_count : ndarray of int64, shape (n_states, n_products)
        Historical count of every cell (the initial snapshot's ``count``).
    click_target, buy_target : float
        Mean probability per catalogue product (:func:`mean_per_slot`).

    Returns
    -------
    (ndarray, ndarray) of float64, shape (n_states, n_products)
        ``p_click`` and ``p_buy``; 0 outside each state's segment catalogue.
    """
    truth = popularity_truth(space, history_count, click_target, buy_target)
    return truth["p_click"].copy(), truth["p_buy"].copy()


def popularity_truth(
    space: StateSpace,
    history_count: np.ndarray,
    click_target: float,
    buy_target: float,
) -> np.ndarray:
    """:func:`popularity_probabilities` packed straight into a TRUTH_DTYPE array.

    Built segment by segment into the one (n_states, n_products) array the kernels read (16
    bytes per cell), with temporaries of one segment's cells at most: no dense float64
    probability tables next to it (what lets a large state space fit).
    """
    n_states, n_products = space.n_states, space.n_products
    if history_count.shape != (n_states, n_products):
        raise SimulationError(
            f"history counts have shape {history_count.shape}, expected {(n_states, n_products)}"
        )
    truth = np.zeros((n_states, n_products), dtype=TRUTH_DTYPE)
    for segment in range(space.n_segments):
        states = np.flatnonzero(space.state_segment == segment)
        catalogue = space.catalogue(segment)
        if states.size == 0 or catalogue.size == 0:
            continue
        weight = _popularity_weight(history_count, states, catalogue)
        cells = np.ix_(states, catalogue)
        truth["p_click"][cells] = calibrate_rates(weight, click_target)
        truth["p_buy"][cells] = calibrate_rates(weight, buy_target)
    return truth


def _popularity_weight(
    history_count: np.ndarray, states: np.ndarray, catalogue: np.ndarray
) -> np.ndarray:
    """Weights ``w[s, p]`` of one segment's states and catalogue (module docstring), built in
    row chunks (each element depends only on its row's and the segment's sums)."""
    shape = (states.size, catalogue.size)
    q_state = np.empty((states.size, 1))
    q_segment = np.zeros(catalogue.size)
    for rows in _row_chunks(states.size):
        q = np.maximum(history_count[np.ix_(states[rows], catalogue)], 0).astype(np.float64)
        q_state[rows] = q.sum(axis=1, keepdims=True)
        q_segment += q.sum(axis=0)  # integer counts: exact in any order
    uniform = UNIFORM_SHARE / catalogue.size
    if not q_segment.sum() > 0:
        return np.full(shape, 1.0 / catalogue.size)
    segment_term = q_segment / q_segment.sum()
    weight = np.empty(shape)
    for rows in _row_chunks(states.size):
        q = np.maximum(history_count[np.ix_(states[rows], catalogue)], 0).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            state_term = q / q_state[rows]
        # a state without history gives its share to the segment term
        weight[rows] = np.where(
            q_state[rows] > 0,
            STATE_SHARE * state_term + SEGMENT_SHARE * segment_term + uniform,
            (STATE_SHARE + SEGMENT_SHARE) * segment_term + uniform,
        )
    return weight


def truth_arrays(
    space: StateSpace,
    p_click: np.ndarray,
    p_buy: np.ndarray,
    rewards: tuple[float, float, float],
    slate_size: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Pack true probabilities for the kernels, and the best slate's expected reward per state.

    Parameters
    ----------
    space : StateSpace
    p_click, p_buy : ndarray of float64, shape (n_states, n_products)
    rewards : (float, float, float)
        Mean reward of an ignored, a clicked and a bought product (Outcome order).
    slate_size : int

    Returns
    -------
    truth : ndarray of TRUTH_DTYPE, shape (n_states, n_products)
    best_mu : ndarray of float64, shape (n_states,)
        Sum of the ``slate_size`` largest ``mu`` over each state's catalogue.
    """
    truth = np.empty(p_click.shape, dtype=TRUTH_DTYPE)
    truth["p_click"] = p_click
    truth["p_buy"] = p_buy
    return truth, best_slate_mu(space, truth, rewards, slate_size)


def best_slate_mu(
    space: StateSpace, truth: np.ndarray, rewards: tuple[float, float, float], slate_size: int
) -> np.ndarray:
    """Sum of the ``slate_size`` largest ``mu`` over each state's catalogue, shape (n_states,).

    The largest are summed in descending order; computed a chunk of states at a time.
    """
    best_mu = np.zeros(space.n_states)
    for segment in range(space.n_segments):
        states = np.flatnonzero(space.state_segment == segment)
        catalogue = space.catalogue(segment)
        if states.size == 0 or catalogue.size == 0:
            continue
        top = min(slate_size, catalogue.size)
        for rows in _row_chunks(states.size):
            cells = truth[np.ix_(states[rows], catalogue)]
            negated = -expected_reward(cells["p_click"], cells["p_buy"], rewards)
            if top < catalogue.size:
                negated = np.partition(negated, top - 1, axis=1)[:, :top]
            best_mu[states[rows]] = (-np.sort(negated, axis=1)[:, :top]).sum(axis=1)
    return best_mu


def build_response(
    spec: str | Path,
    space: StateSpace,
    *,
    rewards: tuple[float, float, float],
    slate_size: int,
    click_probs: Sequence[float],
    buy_probs: Sequence[float],
    history_count: np.ndarray | None,
    truth_tables: Mapping[str, pd.DataFrame] | None = None,
) -> Response:
    """The response model named by ``spec``: ``"seed"``, ``"popularity"``, a truth table path,
    or a schedule of known truths (``VISITS=RESPONSE,...``, module docstring).

    Parameters
    ----------
    spec : str or Path
    space : StateSpace
    rewards : (float, float, float)
        Mean reward of an ignored, a clicked and a bought product (Outcome order).
    slate_size : int
    click_probs, buy_probs : sequence of float
        Seed model count distributions (also the popularity model's calibration targets).
    history_count : ndarray of int64, shape (n_states, n_products), optional
        Historical counts; required by ``popularity``.
    truth_tables : mapping of str to DataFrame, optional
        The truth tables ``spec`` names (a path, or the paths of a schedule's phases), as read
        by the application layer; the engine reads no file.
    """
    click_cdf = count_cdf(click_probs, "click_probs")
    buy_cdf = count_cdf(buy_probs, "buy_probs")
    name = str(spec)
    if is_schedule(name):
        schedule = parse_schedule(name, "response schedule")
        if any(phase == "seed" for _, phase in schedule):
            raise SimulationError(
                f"response schedule {name!r}: every phase needs a known truth (popularity or a "
                "truth table); seed knows none"
            )
        truths = np.empty((len(schedule), space.n_states, space.n_products), dtype=TRUTH_DTYPE)
        best = np.empty((len(schedule), space.n_states))
        for phase_index, (_, phase) in enumerate(schedule):
            truths[phase_index] = _known_truth(
                phase, space, slate_size, click_probs, buy_probs, history_count, truth_tables
            )
            best[phase_index] = best_slate_mu(space, truths[phase_index], rewards, slate_size)
        return Response(
            name,
            rewards,
            ResponseModel.truth,
            click_cdf,
            buy_cdf,
            truths,
            best,
            np.array([start for start, _ in schedule], dtype=np.int64),
            tuple(phase for _, phase in schedule),
        )
    if name == "seed":
        return Response(
            name,
            rewards,
            ResponseModel.seed,
            click_cdf,
            buy_cdf,
            np.empty((1, space.n_states, 0), dtype=TRUTH_DTYPE),
            np.zeros((1, space.n_states)),
            np.zeros(1, dtype=np.int64),
            (name,),
        )
    truth = _known_truth(
        name, space, slate_size, click_probs, buy_probs, history_count, truth_tables
    )
    best_mu = best_slate_mu(space, truth, rewards, slate_size)
    return known_response(
        name, truth, best_mu, rewards=rewards, click_probs=click_probs, buy_probs=buy_probs
    )


def known_response(
    name: str,
    truth: np.ndarray,
    best_mu: np.ndarray,
    *,
    rewards: tuple[float, float, float],
    click_probs: Sequence[float],
    buy_probs: Sequence[float],
) -> Response:
    """A fixed known truth as a response model, from arrays built earlier (e.g. stored).

    Parameters
    ----------
    name : str
        ``"popularity"`` or a truth table's path.
    truth : ndarray of TRUTH_DTYPE, shape (n_states, n_products)
    best_mu : ndarray of float64, shape (n_states,)
        :func:`best_slate_mu` of ``truth`` under ``rewards`` and the slate size.
    rewards : (float, float, float)
    click_probs, buy_probs : sequence of float
        Seed model count distributions (kept for the kernels' arguments).
    """
    return Response(
        name,
        rewards,
        ResponseModel.truth,
        count_cdf(click_probs, "click_probs"),
        count_cdf(buy_probs, "buy_probs"),
        truth[None],
        best_mu[None],
        np.zeros(1, dtype=np.int64),
        (name,),
    )


def _known_truth(
    name: str,
    space: StateSpace,
    slate_size: int,
    click_probs: Sequence[float],
    buy_probs: Sequence[float],
    history_count: np.ndarray | None,
    truth_tables: Mapping[str, pd.DataFrame] | None,
) -> np.ndarray:
    """The TRUTH_DTYPE array of ``popularity`` or a truth table (``name`` its path)."""
    if name == "popularity":
        if history_count is None:
            raise SimulationError("the popularity response needs the historical counts")
        return popularity_truth(
            space,
            history_count,
            mean_per_slot(click_probs, slate_size),
            mean_per_slot(buy_probs, slate_size),
        )
    frame = (truth_tables or {}).get(name)
    if frame is None:
        raise SimulationError(
            f"response {name!r}: expected seed, popularity, the path of a truth-table Parquet "
            "file (read by the caller) or a schedule VISITS=RESPONSE,..."
        )
    return truth_of_frame(space, frame, source=name)


def uses_popularity(spec: str | Path) -> bool:
    """Whether a response spec (or one phase of a schedule) is ``popularity``."""
    name = str(spec)
    if is_schedule(name):
        return any(phase == "popularity" for _, phase in parse_schedule(name, "response"))
    return name == "popularity"
