"""One online visit to one state, with the simulator's kernels.

A customer visit served live (``rlreco recommend``) reads a single state's cells, chooses a
slate by the run's policy, takes the simulated (``seed`` model) or given response and updates
the slate's cells exactly as a simulated visit does: :func:`play_online_visit` builds a
one-state :class:`~rlreco.engine.kernels.records.Learner` (padded values, top-n index, caches)
from the state's row and runs :func:`~rlreco.engine.kernels.policy.choose_slate_nb` and
:func:`~rlreco.engine.kernels.feedback.play_slate_nb` on it, the kernels every simulated visit
goes through.
"""

from __future__ import annotations

from collections.abc import Set
from dataclasses import dataclass

import numpy as np

from rlreco.engine.kernels.candidate_cache import CACHE_CAPACITY
from rlreco.engine.kernels.feedback import play_slate_nb
from rlreco.engine.kernels.policy import choose_slate_nb, new_policy_state
from rlreco.engine.kernels.propensity import slate_propensities_nb
from rlreco.engine.kernels.records import (
    Learner,
    Outcome,
    PolicyParams,
    ResponseArrays,
    ResponseModel,
    TopNSearch,
    World,
)
from rlreco.engine.kernels.topn import index_depth, new_index
from rlreco.engine.kernels.visit import new_workspace_nb
from rlreco.engine.state_space import StateSpace
from rlreco.engine.tables import padded_values
from rlreco.errors import SimulationError
from rlreco.schema import METRICS_DTYPE, TRUTH_DTYPE

#: ``respond`` values of :func:`play_online_visit`
RESPONDS = ("simulate", "given", "none")


@dataclass(frozen=True)
class OnlineVisit:
    """Outcome of one online visit.

    Attributes
    ----------
    slate : ndarray of int64, shape (n,)
        Product ids in slot order.
    outcome : ndarray of int8, shape (n,), or None
        :data:`~rlreco.engine.kernels.records.Outcome` code per slot (None in a dry run).
    metrics : ndarray of METRICS_DTYPE, shape (1,)
        The visit's metric sums (all zero in a dry run but ``explored``).
    propensity : ndarray of float64, shape (n,)
        The policy's probability of each slot's product given the state's tables before the
        visit and the slots before it (:mod:`rlreco.engine.kernels.propensity`).
    reward : ndarray of float64, shape (n,), or None
        The reward drawn for each slot (None in a dry run).
    """

    slate: np.ndarray
    outcome: np.ndarray | None
    metrics: np.ndarray
    propensity: np.ndarray
    reward: np.ndarray | None = None


def play_online_visit(
    rng: np.random.Generator,
    space: StateSpace,
    state_id: int,
    value: np.ndarray,
    cells: np.ndarray,
    *,
    policy: PolicyParams,
    click_cdf: np.ndarray,
    buy_cdf: np.ndarray,
    rewards: tuple[float, float, float],
    respond: str,
    clicked: Set[str] = frozenset(),
    bought: Set[str] = frozenset(),
    state_visits: np.ndarray | None = None,
) -> OnlineVisit:
    """Choose a slate for one state, respond and update its row, with the engine's kernels.

    Parameters
    ----------
    rng : numpy.random.Generator
        Draws the slate, the ``seed`` response and the rewards, in the simulator's order.
    space : StateSpace
    state_id : int
    value : ndarray of float64, shape (1, n_products)
        The state's values (-inf unknown); updated in place unless a dry run.
    cells : ndarray of CELL_DTYPE, shape (1, n_products), C-contiguous
        The state's reward sums and counts; updated in place unless a dry run.
    policy : PolicyParams
        Any policy.
    click_cdf, buy_cdf : ndarray of float64
        ``seed`` model count distributions (``respond="simulate"``).
    rewards : (float, float, float)
        Mean reward of an ignored, a clicked and a bought product (Outcome order).
    respond : {"simulate", "given", "none"}
        ``simulate``: the seed model; ``given``: ``clicked`` and ``bought`` (a product in both
        counts as bought; the click events are all of ``clicked``); ``none``: a dry run.
    clicked, bought : set of str
        Product codes of the given response.
    state_visits : ndarray of int64, shape (1,), optional
        The state's visits so far (``decaying`` counts this visit in it, in place); default:
        none.

    Raises
    ------
    SimulationError
        A given clicked or bought product that is not in the slate, or a bad ``respond``.
    """
    if respond not in RESPONDS:
        raise SimulationError(f"respond {respond!r}: expected simulate, given or none")
    segment = int(space.state_segment[state_id])
    first, last = int(space.catalogue_ptr[segment]), int(space.catalogue_ptr[segment + 1])
    world = World(
        np.zeros(1, dtype=np.int16),
        np.array([0, last - first], dtype=np.int64),
        np.ascontiguousarray(space.catalogue_items[first:last], dtype=np.int32),
        np.empty((1, 0)),
    )
    padded = padded_values(value)
    search = policy.search
    tree = search == TopNSearch.tree
    learner = Learner(
        padded,
        new_index(padded) if tree else np.empty((1, 0)),
        index_depth(padded.shape[1]) if tree else 1,
        cells,
        np.zeros(1),
        np.full(1, -1, dtype=np.int64),
        np.zeros((1, CACHE_CAPACITY), dtype=np.int64),
        state_visits if state_visits is not None else np.zeros(1, dtype=np.int64),
        cells["reco_count"].sum(axis=1).astype(np.int64),
        new_policy_state(policy.code, policy.param, policy.slate_size, padded, cells, world),
    )
    ws = new_workspace_nb(policy.slate_size, learner.depth)
    explored = int(choose_slate_nb(rng, 0, world, learner, policy, ws))
    slate = ws.slate.copy()
    slate_propensities_nb(0, world, learner, policy, ws)  # reads the tables; draws nothing
    propensity = ws.propensity.copy()
    metrics = np.zeros(1, dtype=METRICS_DTYPE)
    metrics[0]["explored"] = explored
    if respond == "none":
        return OnlineVisit(slate, None, metrics, propensity)
    model = ResponseModel.seed
    if respond == "given":
        model = ResponseModel.given
        codes = space.product_codes[slate].tolist()
        for option, given in (("--clicked", clicked), ("--bought", bought)):
            outside = sorted(set(given) - set(codes))
            if outside:
                raise SimulationError(
                    f"product {outside[0]!r} given in {option} is not in the slate "
                    f"({', '.join(codes)})"
                )
        ws.outcome[:] = Outcome.ignored
        ws.outcome[np.isin(codes, list(clicked))] = Outcome.clicked
        ws.outcome[np.isin(codes, list(bought))] = Outcome.bought  # a purchase wins
    response = ResponseArrays(
        model,
        np.asarray(click_cdf, dtype=np.float64),
        np.asarray(buy_cdf, dtype=np.float64),
        np.empty((1, 1, 0), dtype=TRUTH_DTYPE),
        np.zeros((1, 1)),
        np.array(rewards, dtype=np.float64),
        np.zeros(1, dtype=np.int64),
    )
    metrics[0]["explored"] = 0
    play_slate_nb(rng, 0, explored, learner, policy, response, ws, metrics)
    if respond == "given":
        # a product both clicked and bought is one click event and one purchase
        metrics[0]["clicks"] = len(clicked)
    value[...] = padded[:, : value.shape[1]]
    return OnlineVisit(slate, ws.outcome.copy(), metrics, propensity, ws.drawn.copy())
