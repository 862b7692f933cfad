"""Simulating visits: the one driver around the fused visit kernel, for every policy.

:class:`Simulator` owns the random stream, the per-block metrics, the per-state policy state
and the kernels' derived arrays of one run (the top-n index and its candidate caches, the
recommendations per state; rebuilt from the tables at every :meth:`Simulator.run`), and
advances the run's :class:`~rlreco.engine.tables.Tables` in place, chunk by chunk (the kernels
work on :attr:`Tables.padded <rlreco.engine.tables.Tables.padded>` directly). Persistence is
the caller's: :attr:`Simulator.rng_state`, :meth:`Simulator.metrics_frame`,
:attr:`Simulator.policy_state` and the tables are what a snapshot must hold to resume.

Determinism
-----------
Every draw comes from one PCG64 stream, ``streams.generator(seed, *stream)``. A visit consumes
a fixed pattern of draws (see :mod:`rlreco.engine.kernels.visit`) and metric blocks are keyed by
the global visit index, so N visits in one call, in any chunks, or interrupted and resumed from
(tables, RNG state, metrics, policy state) give bit-identical tables and metrics.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rlreco.config import SEED_BUY_PROBS, SEED_CLICK_PROBS, RunConfig, StepSize
from rlreco.engine import streams
from rlreco.engine.kernels.candidate_cache import CACHE_CAPACITY
from rlreco.engine.kernels.policy import new_policy_state
from rlreco.engine.kernels.records import (
    CELL_DTYPE,
    METRICS_DTYPE,
    Learner,
    Policy,
    PolicyParams,
    ResponseArrays,
    TopNSearch,
    World,
    aligned_empty,
)
from rlreco.engine.kernels.topn import build_index_nb, index_depth, index_width
from rlreco.engine.kernels.visit import simulate_visits_nb
from rlreco.engine.response import Response, build_response, uses_popularity
from rlreco.engine.state_space import StateSpace
from rlreco.engine.tables import Tables
from rlreco.errors import SimulationError, SnapshotError
from rlreco.schema import DEFAULT_POLICY_PARAM, LOG_DTYPE, POLICY_PARAMS, policy_param_problem

#: Raw per-block sums, as stored (see :data:`~rlreco.engine.kernels.records.METRICS_DTYPE`).
METRIC_SUMS: tuple[str, ...] = tuple(METRICS_DTYPE.names or ())
#: Columns of :meth:`Simulator.metrics_frame`.
METRIC_COLUMNS = (
    "block",
    "first_visit",
    *METRIC_SUMS,
    "mean_reward",
    "click_rate",
    "buy_rate",
    "explored_share",
    "mean_regret",
)
STATE_SAMPLING = {"uniform": 0, "empirical": 1}
TOPN_SEARCH = {"tree": TopNSearch.tree, "scan": TopNSearch.scan}
#: Most visits per kernel call while logging (:meth:`Simulator.run`): their records, ~11 MB at
#: slate 10, are written into one buffer reused by every call.
LOG_VISITS = 1 << 15
#: policy name -> :data:`~rlreco.engine.kernels.records.Policy` code
POLICIES: dict[str, int] = {
    "eps-greedy": Policy.eps_greedy,
    "decaying": Policy.decaying,
    "softmax": Policy.softmax,
    "ucb1": Policy.ucb1,
    "thompson": Policy.thompson,
}
#: per-state policy state that must survive a resume, by policy (:attr:`Simulator.policy_state`)
POLICY_STATE: dict[str, tuple[str, ...]] = {"decaying": ("state_visits",)}


@dataclass(frozen=True)
class SimulationParams:
    """What to simulate.

    Attributes
    ----------
    epsilon : float
        Exploration probability per slot of ``eps-greedy``, in [0, 1].
    slate_size : int
        Products per slate (at most the smallest segment catalogue).
    rewards : (float, float, float)
        Mean reward of an ignored, a clicked and a bought product, in
        :data:`~rlreco.engine.kernels.records.Outcome` order (each draw is N(mean, 1)).
    response : str
        ``"seed"``, ``"popularity"``, the path of a truth-table Parquet file, or a schedule of
        known truths ``VISITS=RESPONSE,...`` (:mod:`rlreco.engine.response`).
    click_probs, buy_probs : tuple of float
        Seed model distributions of the click and purchase counts per visit.
    state_sampling : str
        ``"uniform"`` over all states or ``"empirical"`` (by historical transactions).
    metrics_block : int
        Visits per metric block.
    search : str
        Top-n search: ``"tree"`` (the 8-ary max tree index) or ``"scan"`` (the O(n_products)
        baseline; same results, for benchmarks).
    policy : str
        A key of :data:`POLICIES` (see :mod:`rlreco.engine.kernels.policy`).
    policy_param : float or None
        The parameter of a policy other than ``eps-greedy`` (see :data:`POLICY_PARAMS`); None
        takes :data:`DEFAULT_POLICY_PARAM`. ``eps-greedy`` uses ``epsilon``.
    step_size : StepSize
        How a shown product's value follows its rewards: ``1/n`` (the sample average) or a
        constant step.
    """

    epsilon: float = 0.1
    slate_size: int = 10
    rewards: tuple[float, float, float] = (-2.0, 1.0, 5.0)
    response: str = "seed"
    click_probs: tuple[float, ...] = SEED_CLICK_PROBS
    buy_probs: tuple[float, ...] = SEED_BUY_PROBS
    state_sampling: str = "uniform"
    metrics_block: int = 10_000
    search: str = "tree"
    policy: str = "eps-greedy"
    policy_param: float | None = None
    step_size: StepSize = field(default_factory=StepSize)

    @property
    def param(self) -> float:
        """The policy's parameter value (``epsilon`` for ``eps-greedy``)."""
        if self.policy == "eps-greedy":
            return float(self.epsilon)
        if self.policy_param is None:
            return DEFAULT_POLICY_PARAM[self.policy]
        return float(self.policy_param)

    @classmethod
    def from_config(cls, config: RunConfig, **changes: Any) -> SimulationParams:
        """Parameters of a run configuration, with optional overrides (e.g. ``epsilon=0.2``)."""
        params = cls(
            epsilon=config.policy.epsilon,
            slate_size=config.policy.slate_size,
            rewards=(config.rewards.ignore, config.rewards.click, config.rewards.buy),
            response=str(config.response.model),
            click_probs=tuple(config.response.click_probs),
            buy_probs=tuple(config.response.buy_probs),
            state_sampling=config.simulation.state_sampling,
            metrics_block=config.simulation.metrics_block,
            policy=config.policy.name,
            policy_param=config.policy.param,
            step_size=config.policy.step_size,
        )
        return dataclasses.replace(params, **changes)


@dataclass(frozen=True)
class SimulationSummary:
    """Outcome of one :meth:`Simulator.run` call (rates over the visits of that call).

    Attributes
    ----------
    episodes : int
        Visits simulated by the call.
    episodes_total : int
        Visits simulated by the run so far.
    seconds : float
        Wall time of the call's kernel work.
    episodes_per_second : float
    mean_reward : float
        Reward per visit (sum over the slate).
    click_rate, buy_rate : float
        Click events and purchases per shown product.
    mean_regret : float or None
        Expected regret per visit; None when the response model does not know the truth.
    explored_share : float
        Share of explored slots.
    stopped : bool
        Whether ``should_stop`` ended the call early.
    """

    episodes: int
    episodes_total: int
    seconds: float
    episodes_per_second: float
    mean_reward: float
    click_rate: float
    buy_rate: float
    mean_regret: float | None
    explored_share: float
    stopped: bool

    @classmethod
    def combine(cls, parts: Sequence[SimulationSummary]) -> SimulationSummary:
        """One summary of consecutive :meth:`Simulator.run` calls of one simulator.

        Rates are weighted by visits (every visit shows the same number of products), regret by
        the visits of the parts that know it.
        """
        if not parts:
            raise SimulationError("no simulation summaries to combine")
        episodes = sum(p.episodes for p in parts)
        seconds = sum(p.seconds for p in parts)

        def mean(name: str) -> float:
            if not episodes:
                return float("nan")
            return math.fsum(getattr(p, name) * p.episodes for p in parts if p.episodes) / episodes

        known = [p for p in parts if p.mean_regret is not None and p.episodes]
        regret_visits = sum(p.episodes for p in known)
        return cls(
            episodes=episodes,
            episodes_total=parts[-1].episodes_total,
            seconds=seconds,
            episodes_per_second=episodes / seconds if seconds > 0 else float("nan"),
            mean_reward=mean("mean_reward"),
            click_rate=mean("click_rate"),
            buy_rate=mean("buy_rate"),
            mean_regret=(
                math.fsum((p.mean_regret or 0.0) * p.episodes for p in known) / regret_visits
                if regret_visits
                else None
            ),
            explored_share=mean("explored_share"),
            stopped=any(p.stopped for p in parts),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible dict (NaN becomes None)."""
        return {
            k: (None if isinstance(v, float) and not np.isfinite(v) else v)
            for k, v in dataclasses.asdict(self).items()
        }


class Simulator:
    """Simulates visits of a run under any policy, advancing its tables in place.

    Parameters
    ----------
    space : StateSpace
    tables : Tables
        The run's tables; updated in place by :meth:`run`.
    params : SimulationParams
    seed : int
        Seed of the random stream when ``rng_state`` is None.
    stream : tuple of int
        Stream key under ``seed`` (default ``(streams.SIMULATION,)``; sweeps use their own).
    rng_state : dict, optional
        :attr:`rng_state` of an earlier simulator of this run, to continue its stream.
    episodes_done : int
        Visits already simulated on ``tables``.
    metrics : DataFrame, optional
        :meth:`metrics_frame` of those visits (required when ``episodes_done > 0``).
    history_count : ndarray of int64, shape (n_states, n_products), optional
        Historical counts (the initial snapshot's ``count``) for the ``popularity`` response;
        defaults to ``tables.count`` when no visit has been simulated yet.
    response : Response, optional
        A prebuilt response model (overrides ``params.response``), e.g. shared by many runs.
    truth_tables : mapping of str to DataFrame, optional
        The truth tables ``params.response`` names, by path, as the application layer read them
        (:func:`rlreco.app.truth.load_truth_tables`).
    policy_state : mapping of str to ndarray, optional
        :attr:`policy_state` of an earlier simulator of this run (required when
        ``episodes_done > 0`` and the policy keeps one, see :data:`POLICY_STATE`).
    phase_weights : ndarray of float64, shape (n_phases, n_states), optional
        Under ``empirical`` sampling, the state weights of each phase of the response (a
        schedule of held-out truths, each speaking for its own states); default
        ``space.state_weight`` in every phase.

    Raises
    ------
    SimulationError
        Bad parameters (one line: policy and its parameter, slate size larger than a
        catalogue, probabilities, state sampling, response).
    SnapshotError
        RNG state, metrics or policy state inconsistent with each other or with
        ``episodes_done``.
    """

    def __init__(
        self,
        space: StateSpace,
        tables: Tables,
        params: SimulationParams,
        *,
        seed: int = 0,
        stream: tuple[int, ...] = (streams.SIMULATION,),
        rng_state: Mapping[str, Any] | None = None,
        episodes_done: int = 0,
        metrics: pd.DataFrame | None = None,
        history_count: np.ndarray | None = None,
        response: Response | None = None,
        truth_tables: Mapping[str, pd.DataFrame] | None = None,
        policy_state: Mapping[str, np.ndarray] | None = None,
        phase_weights: np.ndarray | None = None,
    ) -> None:
        self.space = space
        self.tables = tables
        self.params = params
        _check_params(space, tables, params)
        if history_count is None and episodes_done == 0 and uses_popularity(params.response):
            history_count = tables.count  # read only while the response is built
        self.response = (
            response
            if response is not None
            else build_response(
                params.response,
                space,
                rewards=params.rewards,
                slate_size=params.slate_size,
                click_probs=params.click_probs,
                buy_probs=params.buy_probs,
                history_count=history_count,
                truth_tables=truth_tables,
            )
        )
        self._rng = streams.generator(seed, *stream)
        if rng_state is not None:
            self._restore_rng(rng_state)
        self._episodes = int(episodes_done)
        self._blocks = _blocks_from_frame(metrics, params.metrics_block, self._episodes)
        n_states = space.n_states
        self._state_visits = _state_visits(params.policy, policy_state, n_states, self._episodes)
        self._world = World(
            np.ascontiguousarray(space.state_segment, dtype=np.int16),
            np.ascontiguousarray(space.catalog_ptr, dtype=np.int64),
            np.ascontiguousarray(space.catalog_items, dtype=np.int32),
            _phase_cdf(space, params.state_sampling, self.response.n_phases, phase_weights),
        )
        width = tables.padded.shape[1]
        tree = params.search == "tree"
        # the index is 64-byte aligned: a group of 8 sibling maxima is one line
        self._learner = Learner(
            tables.padded,
            aligned_empty((n_states, index_width(width) if tree else 0), np.float64),
            index_depth(width) if tree else 1,
            tables.cells,
            np.zeros(n_states),
            np.full(n_states, -1, dtype=np.int64),
            np.zeros((n_states, CACHE_CAPACITY), dtype=np.int64),
            self._state_visits,
            np.zeros(n_states, dtype=np.int64),
            # built at each run (the tables may change in between); empty until then
            new_policy_state(-1, 0.0, 1, tables.padded, tables.cells, self._world),
        )
        self._policy = PolicyParams(
            POLICIES[params.policy],
            params.param,
            int(params.slate_size),
            TOPN_SEARCH[params.search],
            params.step_size.kernel_step,
        )
        self._response_arrays = ResponseArrays(
            int(self.response.model),
            self.response.click_cdf,
            self.response.buy_cdf,
            self.response.truth,
            self.response.best_mu,
            np.array(self.response.rewards, dtype=np.float64),
            self.response.phase_start,
        )

    @property
    def episodes_total(self) -> int:
        """Visits simulated on the tables so far."""
        return self._episodes

    @property
    def rng_state(self) -> dict[str, Any]:
        """JSON-serialisable ``bit_generator.state`` of the random stream (to resume)."""
        return _plain(self._rng.bit_generator.state)

    @property
    def policy_state(self) -> dict[str, np.ndarray]:
        """Per-state policy state to resume from (copies; empty for policies without one).

        ``decaying``: ``state_visits``, int64 (n_states,), the visits to each state so far.
        """
        names = POLICY_STATE.get(self.params.policy, ())
        return {name: getattr(self._learner, name).copy() for name in names}

    def metrics_frame(self) -> pd.DataFrame:
        """Per-block metrics so far: raw sums and derived rates (see :data:`METRIC_COLUMNS`).

        ``mean_reward`` is per visit; ``click_rate``, ``buy_rate`` and ``explored_share`` per
        shown product; ``mean_regret`` per visit with a known truth (NaN without).
        """
        blocks = self._blocks
        frame = pd.DataFrame(
            {
                "block": np.arange(blocks.size, dtype=np.int64),
                "first_visit": np.arange(blocks.size, dtype=np.int64) * self.params.metrics_block,
            }
        )
        for name in METRIC_SUMS:
            frame[name] = blocks[name].copy()
        with np.errstate(invalid="ignore", divide="ignore"):
            frame["mean_reward"] = blocks["reward_sum"] / blocks["visits"]
            frame["click_rate"] = blocks["clicks"] / blocks["slots"]
            frame["buy_rate"] = blocks["buys"] / blocks["slots"]
            frame["explored_share"] = blocks["explored"] / blocks["slots"]
            frame["mean_regret"] = blocks["regret_sum"] / blocks["regret_visits"]
        return frame

    def run(
        self,
        episodes: int,
        *,
        chunk: int = 500_000,
        progress: Callable[[int], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        log: Callable[[np.ndarray], None] | None = None,
    ) -> SimulationSummary:
        """Simulate ``episodes`` visits (fewer if ``should_stop`` returns True at a chunk end).

        Parameters
        ----------
        episodes : int
            Visits to simulate (>= 0).
        chunk : int
            Visits per kernel call; ``progress`` and ``should_stop`` are called between chunks.
        progress : callable, optional
            Called with the number of visits simulated by this call so far.
        should_stop : callable, optional
            Polled after every chunk (e.g. set by a SIGINT handler); True ends the call there,
            with tables, RNG state, metrics and policy state consistent.
        log : callable, optional
            Log every shown slot: called after every :data:`LOG_VISITS` visits of a chunk and
            after its last visit, before ``progress``, with those visits' records
            (:data:`rlreco.schema.LOG_DTYPE`, ``visits x slate size``, in visit and slot order,
            with propensities; a view of one buffer that the next call overwrites, so copy what
            must outlive the call). Without it no record is
            made, and either way the draws, tables and metrics are the same.
        """
        if episodes < 0 or chunk < 1:
            raise SimulationError(f"episodes = {episodes}, chunk = {chunk}: need >= 0 and >= 1")
        block = self.params.metrics_block
        learner = self._learner
        if learner.value is not self.tables.padded or learner.cells is not self.tables.cells:
            raise SimulationError("the simulator's tables were replaced; build a new Simulator")
        # the tables may have been edited since the last call: derive everything afresh
        if self.params.search == "tree":
            build_index_nb(learner.value, learner.tree)
        learner.cache_size[:] = -1
        learner.state_shown[:] = self.tables.reco_count.sum(axis=1)
        learner = self._learner = learner._replace(
            policy=new_policy_state(
                self._policy.code,
                self._policy.param,
                self._policy.slate_size,
                learner.value,
                learner.cells,
                self._world,
            )
        )
        start_blocks = self._blocks.copy()
        done = 0
        seconds = 0.0
        stopped = False
        # while logging, the kernel is called for at most LOG_VISITS visits at a time, all into
        # one small buffer: a buffer of a whole chunk's records (hundreds of MB) would fault in
        # a fresh page per 4 KiB inside the kernel's time, and leave the cache before it is read
        slate = self.params.slate_size
        step = min(chunk, LOG_VISITS) if log else chunk
        buffer = np.empty(min(step, episodes) * slate if log else 0, dtype=LOG_DTYPE)
        while done < episodes:
            in_chunk = min(chunk, episodes - done)
            for start in range(0, in_chunk, step):
                n = min(step, in_chunk - start)
                first = self._episodes
                first_block = first // block
                out = np.zeros((first + n - 1) // block - first_block + 1, dtype=METRICS_DTYPE)
                if first_block < self._blocks.size:
                    out[0] = self._blocks[first_block]  # continue the partial block's sums
                records = buffer[: n * slate]
                t0 = time.perf_counter()
                simulate_visits_nb(
                    self._rng,
                    first,
                    n,
                    self._world,
                    learner,
                    self._policy,
                    self._response_arrays,
                    block,
                    out,
                    records,
                )
                seconds += time.perf_counter() - t0
                if log is not None:
                    log(records)
                self._blocks = np.concatenate([self._blocks[:first_block], out])
                self._episodes += n
            done += in_chunk
            if progress is not None:
                progress(done)
            if done < episodes and should_stop is not None and should_stop():
                stopped = True
                break
        return self._summary(start_blocks, done, seconds, stopped)

    def _summary(
        self, start_blocks: np.ndarray, done: int, seconds: float, stopped: bool
    ) -> SimulationSummary:
        """Rates over this call's visits: block sums now minus block sums before the call."""
        totals = {}
        for name in METRIC_SUMS:
            totals[name] = float(np.sum(self._blocks[name])) - float(np.sum(start_blocks[name]))
        slots = totals["slots"]
        regret_visits = totals["regret_visits"]
        return SimulationSummary(
            episodes=done,
            episodes_total=self._episodes,
            seconds=seconds,
            episodes_per_second=done / seconds if seconds > 0 else float("nan"),
            mean_reward=totals["reward_sum"] / done if done else float("nan"),
            click_rate=totals["clicks"] / slots if slots else float("nan"),
            buy_rate=totals["buys"] / slots if slots else float("nan"),
            mean_regret=totals["regret_sum"] / regret_visits if regret_visits else None,
            explored_share=totals["explored"] / slots if slots else float("nan"),
            stopped=stopped,
        )

    def _restore_rng(self, rng_state: Mapping[str, Any]) -> None:
        try:
            self._rng.bit_generator.state = dict(rng_state)
        except (KeyError, TypeError, ValueError) as exc:
            raise SnapshotError(f"rng_state: not the state of a PCG64 generator ({exc})") from None


def _state_visits(
    policy: str, policy_state: Mapping[str, np.ndarray] | None, n_states: int, episodes: int
) -> np.ndarray:
    """The visits per state a policy resumes from (zeros for a new run), checked."""
    names = POLICY_STATE.get(policy, ())
    given = dict(policy_state or {})
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise SnapshotError(
            f"policy state: {', '.join(unknown)} is not kept by the {policy} policy "
            f"(it keeps: {', '.join(names) or 'nothing'})"
        )
    if "state_visits" not in names:
        return np.zeros(n_states, dtype=np.int64)
    if "state_visits" not in given:
        if episodes:
            raise SnapshotError(
                f"policy state: state_visits missing for the {episodes} visits already simulated"
            )
        return np.zeros(n_states, dtype=np.int64)
    visits = np.asarray(given["state_visits"])
    if visits.shape != (n_states,) or not np.issubdtype(visits.dtype, np.integer):
        raise SnapshotError(
            f"policy state: state_visits has shape {visits.shape} and dtype {visits.dtype}, "
            f"expected ({n_states},) integers"
        )
    if visits.min(initial=0) < 0 or int(visits.sum()) != episodes:
        raise SnapshotError(
            f"policy state: state_visits sums to {int(visits.sum())}, not the {episodes} visits "
            "simulated"
        )
    return visits.astype(np.int64)


def _phase_cdf(
    space: StateSpace, sampling: str, n_phases: int, phase_weights: np.ndarray | None
) -> np.ndarray:
    """Cumulative state weights per response phase, shape (n_phases, S); (n_phases, 0) under
    uniform sampling."""
    if sampling != "empirical":
        if phase_weights is not None:
            raise SimulationError("phase state weights need empirical state sampling")
        return np.empty((n_phases, 0))
    if phase_weights is None:
        weight = np.asarray(space.state_weight, dtype=np.float64)
        return np.ascontiguousarray(np.broadcast_to(np.cumsum(weight), (n_phases, weight.size)))
    weights = np.asarray(phase_weights, dtype=np.float64)
    if weights.shape != (n_phases, space.n_states):
        raise SimulationError(
            f"phase state weights have shape {weights.shape}, expected "
            f"({n_phases}, {space.n_states}): one row per phase of the response"
        )
    empty = np.flatnonzero(~(weights.sum(axis=1) > 0))
    if empty.size or (weights < 0).any():
        raise SimulationError(
            f"phase {int(empty[0]) if empty.size else 0} of the response: its state weights "
            "must be >= 0 with a positive sum (no state to draw visits from)"
        )
    return np.cumsum(weights, axis=1)


def _plain(state: Mapping[str, Any]) -> dict[str, Any]:
    """A bit generator state as plain JSON types (its integers are Python ints already)."""
    return {k: (_plain(v) if isinstance(v, Mapping) else v) for k, v in state.items()}


def _check_params(space: StateSpace, tables: Tables, params: SimulationParams) -> None:
    shape = (space.n_states, space.n_products)
    if tables.value.shape != shape or tables.cells.shape != shape:
        raise SimulationError(f"tables have shape {tables.value.shape}, the state space {shape}")
    if tables.value.dtype != np.float64 or tables.cells.dtype != CELL_DTYPE:
        raise SimulationError("tables must be float64 values and CELL_DTYPE cells")
    if not tables.cells.flags.c_contiguous:
        raise SimulationError("tables must be C-contiguous")
    if params.policy not in POLICIES:
        raise SimulationError(f"policy {params.policy!r}: expected one of {', '.join(POLICIES)}")
    if not 0.0 <= params.epsilon <= 1.0:
        raise SimulationError(f"epsilon = {params.epsilon!r}: expected a number in [0, 1]")
    _check_policy_param(params)
    if params.slate_size < 1:
        raise SimulationError(f"slate size = {params.slate_size}: expected an integer >= 1")
    sizes = np.diff(space.catalog_ptr)
    used = np.unique(space.state_segment)
    smallest = used[np.argmin(sizes[used])]
    if params.slate_size > sizes[smallest]:
        raise SimulationError(
            f"slate size {params.slate_size} exceeds the catalogue of segment "
            f"{space.segments[smallest]} ({sizes[smallest]} products); use a slate size <= "
            f"{sizes[smallest]}"
        )
    if params.state_sampling not in STATE_SAMPLING:
        raise SimulationError(
            f"state sampling {params.state_sampling!r}: expected uniform or empirical"
        )
    if params.state_sampling == "empirical" and not np.sum(space.state_weight) > 0:
        raise SimulationError("empirical state sampling: no state has historical transactions")
    if not isinstance(params.step_size, StepSize):
        raise SimulationError(f"step size {params.step_size!r}: expected a StepSize")
    if params.metrics_block < 1:
        raise SimulationError(f"metrics block = {params.metrics_block}: expected >= 1")
    if params.search not in TOPN_SEARCH:
        raise SimulationError(f"search {params.search!r}: expected tree or scan")
    if not isinstance(params.response, (str, Path)):
        raise SimulationError(f"response {params.response!r}: expected a string")


def _check_policy_param(params: SimulationParams) -> None:
    """The policy's parameter: none for eps-greedy (it takes ``epsilon``), else in range."""
    policy, value = params.policy, params.policy_param
    if value is None:
        return
    if policy == "eps-greedy":
        raise SimulationError(
            f"policy parameter {value!r}: eps-greedy takes epsilon, not a policy parameter"
        )
    problem = policy_param_problem(policy, value)
    if problem is not None:
        raise SimulationError(f"{policy} {POLICY_PARAMS[policy]} = {value!r}: expected {problem}")


def _blocks_from_frame(
    metrics: pd.DataFrame | None, metrics_block: int, episodes: int
) -> np.ndarray:
    """Per-block sums from a :meth:`Simulator.metrics_frame`, checked against the visit count."""
    if metrics is None or len(metrics) == 0:
        if episodes:
            raise SnapshotError(f"metrics: missing for the {episodes} visits already simulated")
        return np.zeros(0, dtype=METRICS_DTYPE)
    missing = [name for name in ("block", *METRIC_SUMS) if name not in metrics.columns]
    if missing:
        raise SnapshotError(f"metrics: missing column(s) {', '.join(missing)}")
    if not np.array_equal(metrics["block"].to_numpy(), np.arange(len(metrics))):
        raise SnapshotError("metrics: blocks are not 0, 1, 2, ... in order")
    blocks = np.zeros(len(metrics), dtype=METRICS_DTYPE)
    for name in METRIC_SUMS:
        blocks[name] = metrics[name].to_numpy(dtype=blocks.dtype[name])
    expected = np.minimum(metrics_block, episodes - np.arange(len(metrics)) * metrics_block)
    if int(blocks["visits"].sum()) != episodes or not np.array_equal(blocks["visits"], expected):
        raise SnapshotError(
            f"metrics: {int(blocks['visits'].sum())} visits in blocks of {metrics_block} do not "
            f"match the {episodes} visits simulated"
        )
    return blocks
