"""One simulated visit: its workspace, cache hints, phases and log records.

Semantics (``tests/naive.py`` and ``tests/naive_policy.py`` re-implement them in plain Python,
draw for draw). Every draw comes from one ``numpy.random.Generator`` passed in by the caller,
in this order per visit:

0. **Phase.** The response phase in force is the last whose start is ``<=`` the global visit
   index (no draw): its truth answers the visit, its best slate measures the regret, and its
   state weights draw the state.
1. **State.** ``uniform``: ``s = below(S)``; ``empirical``: ``s`` = the first state whose
   cumulative weight exceeds ``rng.random() * total`` (states without history never occur).
2. **Slate**: by the policy (:mod:`rlreco.engine.kernels.policy`).
3. **Response**, one outcome per slot (ignored, clicked or bought):

   - ``seed`` model: ``C`` and ``B`` by inverse CDF on ``rng.random()`` each (``C`` first),
     each capped at ``n``; then ``C`` distinct slots clicked and ``B`` distinct slots bought,
     each set chosen by a partial Fisher-Yates shuffle of ``0..n-1`` (step ``i`` swaps ``i``
     with ``i + below(n - i)``), clicks first. A slot both clicked and bought is bought.
   - ``truth`` model: per slot in order ``click = rng.random() < p_click`` then
     ``buy = rng.random() < p_buy``; bought if ``buy``, else clicked if ``click``.

   Metrics count click events (``C``, or the successful click draws) and purchases.
4. **Update**, slot by slot: a product new to the state (value ``-inf``) becomes known with
   value 0 and reward ``round2(rng.standard_normal())``; then ``reco_count += 1``,
   ``count += 1``, ``r = round2(rng.normal(reward_of_outcome, 1.0))``, ``reward += r`` and
   ``value += (r - value) / reco_count`` (step size ``1/n``, the sample average), or
   ``value += alpha * (r - value)`` under a constant step ``alpha`` (``PolicyParams.step``).

``below`` and ``round2`` are those of :mod:`rlreco.engine.kernels.draw`. Steps 3 and 4 and the
visit's metric sums are one kernel,
:func:`~rlreco.engine.kernels.feedback.respond_update_record_nb`, shared by the fused loop
(:func:`~rlreco.engine.kernels.visit_loop.simulate_visits_nb`, which inlines every per-visit
kernel of this module) and the online visit (:mod:`rlreco.engine.online`).
"""

from __future__ import annotations

import numpy as np

from rlreco.engine.kernels.candidate_cache import CACHE_CAPACITY
from rlreco.engine.kernels.jit import jit
from rlreco.engine.kernels.prefetch import prefetch_nb
from rlreco.engine.kernels.records import Workspace
from rlreco.engine.kernels.topn import FANOUT, FANOUT_BITS, level_start_nb


@jit()
def new_workspace_nb(slate_size: int, depth: int) -> Workspace:
    """Scratch arrays of one visit (:class:`~rlreco.engine.kernels.records.Workspace`).

    Parameters
    ----------
    slate_size : int
    depth : int
        Depth of the learner's top-n index (1 under ``scan``).
    """
    n = slate_size
    return Workspace(
        np.empty(n, dtype=np.int64),
        np.zeros(n, dtype=np.int8),
        np.empty(n, dtype=np.int64),
        np.empty(n, dtype=np.float64),
        np.empty(n + 1, dtype=np.float64),
        np.empty(n + 1, dtype=np.int64),
        # a cached query ranks up to CACHE_CAPACITY candidates in the same rows
        np.empty((3, max(1 << (FANOUT_BITS * depth), CACHE_CAPACITY)), dtype=np.int64),
        np.zeros(n, dtype=np.float64),
        np.zeros(n, dtype=np.float64),
    )


@jit(inline=True)
def prefetch_slate_nb(
    value: np.ndarray,
    index: np.ndarray,
    depth: int,
    cells: np.ndarray,
    truth: np.ndarray,
    state: int,
    slate: np.ndarray,
) -> None:
    """Hint every table line the response and update of a slate will read, all at once.

    Parameters
    ----------
    value : ndarray of float64, shape (S, W)
    index : ndarray of float64, shape (S, index_width(W)) or (S, 0)
    depth : int
    cells : ndarray of CELL_DTYPE, shape (S, P)
    truth : ndarray of TRUTH_DTYPE, shape (S, P) or (S, 0)
    state : int
    slate : ndarray of int64, shape (n,)
    """
    bottom = level_start_nb(depth - 1)
    for i in range(slate.shape[0]):
        product = slate[i]
        prefetch_nb(cells, state, product)
        # the whole group of 8 is read again by the index repair: one line
        prefetch_nb(value, state, product)
        if index.shape[1] > 0:
            prefetch_nb(index, state, bottom + (product >> FANOUT_BITS) // FANOUT * FANOUT)
        if truth.shape[1] > 0:
            prefetch_nb(truth, state, product)


@jit(inline=True)
def record_slots_nb(
    log: np.ndarray,
    at: int,
    visit: int,
    state: int,
    slate: np.ndarray,
    outcome: np.ndarray,
    drawn: np.ndarray,
    propensity: np.ndarray,
) -> None:
    """Write one visit's slots into ``log[at:at + n]`` (LOG_DTYPE records).

    Parameters
    ----------
    log : ndarray of LOG_DTYPE, shape (m,)
    at : int
    visit, state : int
    slate, outcome, drawn, propensity
        As in :class:`~rlreco.engine.kernels.records.Workspace`, after the visit's update.
    """
    for i in range(slate.shape[0]):
        row = log[at + i]
        row["visit"] = visit
        row["state"] = state
        row["position"] = i
        row["product"] = slate[i]
        row["outcome"] = outcome[i]
        row["reward"] = drawn[i]
        row["propensity"] = propensity[i]


@jit(inline=True)
def phase_of_visit_nb(phase_start: np.ndarray, visit: int) -> int:
    """Index of the last phase starting at or before ``visit`` (``phase_start[0] == 0``)."""
    phase = 0
    while phase + 1 < phase_start.shape[0] and phase_start[phase + 1] <= visit:
        phase += 1
    return phase


@jit(inline=True)
def next_phase_start_nb(phase_start: np.ndarray, phase: int) -> int:
    """The visit at which the phase after ``phase`` starts (int64 max after the last)."""
    if phase + 1 < phase_start.shape[0]:
        return phase_start[phase + 1]
    return np.iinfo(np.int64).max
