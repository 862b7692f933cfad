"""One simulated visit, and the fused loop over a chunk of visits.

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
(:func:`simulate_visits_nb`) and the online visit (:mod:`rlreco.engine.online`). Every
per-visit kernel is inlined into the loop, :func:`run_visits_nb`, which is compiled without
reference counting (inlining alone leaves an atomic count update per array argument and call),
so no array's reference count is touched per visit; and the loop hints the table lines of a
chosen slate to the cache before the response draws (:func:`prefetch_slate_nb`).
"""

from __future__ import annotations

import numpy as np

from rlreco.engine.kernels.candidate_cache import CACHE_CAPACITY
from rlreco.engine.kernels.draw import draw_state_nb
from rlreco.engine.kernels.feedback import respond_update_record_nb
from rlreco.engine.kernels.jit import jit
from rlreco.engine.kernels.policy import choose_greedy_slate_nb, greedy_epsilon_nb
from rlreco.engine.kernels.prefetch import prefetch_nb
from rlreco.engine.kernels.propensity import (
    count_found_nb,
    greedy_propensities_nb,
    lookup_top_nb,
    slate_propensities_nb,
)
from rlreco.engine.kernels.records import (
    Learner,
    Policy,
    PolicyParams,
    ResponseArrays,
    Workspace,
    World,
)
from rlreco.engine.kernels.sum_tree import choose_softmax_slate_nb, update_softmax_nb
from rlreco.engine.kernels.thompson import choose_thompson_slate_nb, update_thompson_nb
from rlreco.engine.kernels.topn import FANOUT, FANOUT_BITS, level_start_nb
from rlreco.engine.kernels.ucb1_cache import choose_ucb1_slate_nb, update_ucb1_nb


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


@jit()
def simulate_visits_nb(
    rng: np.random.Generator,
    first_visit: int,
    n_visits: int,
    world: World,
    learner: Learner,
    policy: PolicyParams,
    response: ResponseArrays,
    metrics_block: int,
    metrics: np.ndarray,
    log: np.ndarray,
) -> None:
    """Simulate visits ``first_visit .. first_visit + n_visits - 1`` and add their metrics.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of every draw; advanced in place.
    first_visit : int
        Global index of the first visit (places visits in metric blocks and response phases).
    n_visits : int
    world : World
    learner : Learner
        Updated in place.
    policy : PolicyParams
    response : ResponseArrays
    metrics_block : int
        Visits per metric block.
    metrics : ndarray of METRICS_DTYPE, shape (n_blocks,)
        Sums of blocks ``first_visit // metrics_block`` onwards; visits are added to the
        running sums already present (a block continued from the previous chunk).
    log : ndarray of LOG_DTYPE (:data:`rlreco.schema.LOG_DTYPE`), shape (n_visits * n,) or (0,)
        Output: one record per shown slot, visit ``v``'s slot ``i`` at ``(v - first_visit) *
        n + i``, with its propensity (:mod:`rlreco.engine.kernels.propensity`). Length 0: no
        logging (one predictable branch per visit; no draw changes either way).
    """
    ws = new_workspace_nb(policy.slate_size, learner.depth)
    run_visits_nb(
        rng, first_visit, n_visits, world, learner, policy, response, ws, metrics_block, metrics,
        log,
    )  # fmt: skip


@jit(refcount=False)
def run_visits_nb(
    rng: np.random.Generator,
    first_visit: int,
    n_visits: int,
    world: World,
    learner: Learner,
    policy: PolicyParams,
    response: ResponseArrays,
    ws: Workspace,
    metrics_block: int,
    metrics: np.ndarray,
    log: np.ndarray,
) -> None:
    """The loop of :func:`simulate_visits_nb`, in the workspace ``ws`` it allocated.

    Compiled without reference counting (see :func:`~rlreco.engine.kernels.jit.jit`): every
    array it touches is owned by its caller for the duration of the call, and the per-visit
    kernels inlined into it would otherwise update the reference counts of their array
    arguments on every visit. It must not allocate.
    """
    # unpacked once: the per-visit kernels take arrays, not bundles (see
    # respond_update_record_nb)
    state_segment, catalogue_ptr, catalogue_items, phase_cdf = world
    value, index, depth, cells, cache_floor, cache_size, cache_items, state_visits, state_shown = (
        learner[:9]
    )
    code, param, _, search, step = policy
    model, click_cdf, buy_cdf, phase_truth, phase_best, outcome_reward, phase_start = response
    slate, outcome, order, previous, top_value, top_product, frontier, drawn, propensity = ws
    untried, ucb1, ucb1_work, sum_tree, sum_tree_work, thompson, thompson_work = learner.policy
    saved_path, batch_u, batch_leaf = sum_tree_work
    greedy = code in (Policy.eps_greedy, Policy.decaying)
    n_states = value.shape[0]
    n = slate.shape[0]
    logging = log.shape[0] > 0
    first_block = first_visit // metrics_block
    # the phase in force, as views: one comparison per visit finds a switch (a fixed response
    # never switches)
    phase = phase_of_visit_nb(phase_start, first_visit)
    switch = next_phase_start_nb(phase_start, phase)
    truth = phase_truth[phase]
    best_mu = phase_best[phase]
    state_cdf = phase_cdf[phase]
    for visit in range(first_visit, first_visit + n_visits):
        if visit >= switch:
            phase = phase_of_visit_nb(phase_start, visit)
            switch = next_phase_start_nb(phase_start, phase)
            truth = phase_truth[phase]
            best_mu = phase_best[phase]
            state_cdf = phase_cdf[phase]
        state = draw_state_nb(rng, state_cdf, n_states)
        segment = state_segment[state]
        first = catalogue_ptr[segment]
        size = catalogue_ptr[segment + 1] - first
        catalogue = catalogue_items[first : first + size]
        # each policy's kernel with only its own structures (the choose_slate_nb dispatch,
        # without binding the whole bundles on every visit)
        epsilon = 0.0
        if greedy:
            epsilon = greedy_epsilon_nb(code, param, state_visits, state)
            if logging:
                top_product[:n] = -1  # to count what the policy's top-n lookup writes
            explored = choose_greedy_slate_nb(
                rng, state, value, index, depth, search, catalogue_items, first, size, epsilon,
                slate, top_value, top_product, frontier, cache_floor, cache_size, cache_items,

            )  # fmt: skip
        elif code == Policy.softmax:
            explored = choose_softmax_slate_nb(
                rng, sum_tree, value, cells, state, catalogue, param, slate, saved_path,
                batch_u, batch_leaf,
            )  # fmt: skip
        elif code == Policy.ucb1:
            explored = choose_ucb1_slate_nb(
                rng, untried, ucb1, value, cells, state, catalogue, param, state_shown[state],
                slate, ucb1_work,
            )  # fmt: skip
        else:
            explored = choose_thompson_slate_nb(
                rng, thompson, value, cells, state, catalogue, param, slate, thompson_work
            )
        if logging:
            # the slate's propensities read the tables before the update and draw nothing
            if greedy:
                if explored < n:  # a greedy or padded slot: the policy looked the top n up
                    found = count_found_nb(top_product, n)
                else:
                    found = lookup_top_nb(
                        value, index, depth, search, state, n, top_value, top_product,
                        frontier, cache_floor, cache_size, cache_items,
                    )  # fmt: skip
                greedy_propensities_nb(epsilon, size, slate, top_product, found, propensity)
            else:
                slate_propensities_nb(state, world, learner, policy, ws)
        prefetch_slate_nb(value, index, depth, cells, truth, state, slate)
        respond_update_record_nb(
            rng, state, explored, model, click_cdf, buy_cdf, truth, best_mu, outcome_reward,
            value, index, depth, search, step, cells, cache_floor, cache_size, cache_items,
            state_shown, slate, outcome, order, previous, drawn, metrics,
            visit // metrics_block - first_block,
        )  # fmt: skip
        if code == Policy.softmax:
            update_softmax_nb(sum_tree, value, state, catalogue, param, slate, previous)
        elif code == Policy.ucb1:
            update_ucb1_nb(untried, ucb1, value, cells, state, param, slate, ucb1_work)
        elif code == Policy.thompson:
            update_thompson_nb(thompson, value, cells, state, param, slate, size)
        if logging:
            record_slots_nb(
                log, (visit - first_visit) * n, visit, state, slate, outcome, drawn, propensity
            )
