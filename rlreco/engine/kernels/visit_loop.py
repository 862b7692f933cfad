"""The fused loop over a chunk of visits, compiled per policy family (and logging) on first use.

The per-visit kernels and the order of the draws are those of :mod:`rlreco.engine.kernels.visit`
(its module docstring); this module strings them into the loop the simulator runs,
:func:`simulate_visits_nb`. Every per-visit kernel is inlined into the loop, which is compiled
without reference counting (inlining alone leaves an atomic count update per array argument and
call), so no array's reference count is touched per visit; and the loop hints the table lines of
a chosen slate to the cache before the response draws (``prefetch_slate_nb``).

One loop holding every policy's kernels took most of a machine's first-run compile time, and a
run uses one policy: :func:`make_visit_loop` closes over a policy family and the logging switch
as constants, numba prunes the other branches before it inlines or types anything, and
:func:`visit_loop` builds each variant on its first use in a process (its machine code from
numba's cache after the machine's first use).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rlreco.engine.kernels.draw import draw_state_nb
from rlreco.engine.kernels.feedback import respond_update_record_nb
from rlreco.engine.kernels.jit import jit
from rlreco.engine.kernels.policy import choose_greedy_slate_nb, greedy_epsilon_nb
from rlreco.engine.kernels.propensity import (
    count_found_nb,
    greedy_propensities_nb,
    lookup_top_nb,
    prefetch_records_nb,
    slate_propensities_nb,
)
from rlreco.engine.kernels.records import (
    Learner,
    Policy,
    PolicyParams,
    ResponseArrays,
    TopNSearch,
    Workspace,
    World,
)
from rlreco.engine.kernels.sum_tree import choose_softmax_slate_nb
from rlreco.engine.kernels.sum_tree_update import update_softmax_nb
from rlreco.engine.kernels.thompson import choose_thompson_slate_nb, update_thompson_nb
from rlreco.engine.kernels.ucb1_cache import choose_ucb1_slate_nb
from rlreco.engine.kernels.ucb1_update import update_ucb1_nb
from rlreco.engine.kernels.visit import (
    new_workspace_nb,
    next_phase_start_nb,
    phase_of_visit_nb,
    prefetch_slate_nb,
    record_slots_nb,
)

#: Families of the fused loop: each policy's loop is compiled, on its first use, with only its
#: own kernels (compiling every policy's into one loop took most of a first run's compile time)
GREEDY_LOOP, SOFTMAX_LOOP, UCB1_LOOP, THOMPSON_LOOP = 0, 1, 2, 3
#: policy code -> loop family (eps_greedy and decaying share the epsilon-greedy path)
LOOP_FAMILY = {
    Policy.eps_greedy: GREEDY_LOOP,
    Policy.decaying: GREEDY_LOOP,
    Policy.softmax: SOFTMAX_LOOP,
    Policy.ucb1: UCB1_LOOP,
    Policy.thompson: THOMPSON_LOOP,
}
#: compiled loops of this process, by (family, logging)
_LOOPS: dict[tuple[int, bool], Any] = {}


def visit_loop(code: int, logging: bool) -> Any:
    """The loop kernel of :func:`simulate_visits_nb` for a policy code, with or without logging.

    Built by :func:`make_visit_loop` on first use in the process (its machine code comes from
    numba's cache after a machine's first run).
    """
    key = (LOOP_FAMILY.get(code, THOMPSON_LOOP), bool(logging))
    loop = _LOOPS.get(key)
    if loop is None:
        loop = _LOOPS[key] = make_visit_loop(*key)
    return loop


def loop_kernels() -> tuple[Any, ...]:
    """Every loop kernel built in this process so far (their compile statistics)."""
    return tuple(_LOOPS.values())


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

    Runs the policy's own compiled loop (:func:`visit_loop`) in a new workspace: the policy
    code and whether ``log`` is empty pick it, in Python, before any visit.

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
        logging (the loop compiled without it; no draw changes either way).
    """
    loop = visit_loop(int(policy.code), log.shape[0] > 0)
    ws = new_workspace_nb(policy.slate_size, learner.depth)
    loop(
        rng, first_visit, n_visits, world, learner, policy, response, ws, metrics_block,
        metrics, log,
    )  # fmt: skip


def make_visit_loop(family: int, logging: bool) -> Any:
    """Compile-on-first-call kernel of one loop family (``*_LOOP``), with or without logging.

    ``family`` and ``logging`` are constants of the closure: numba prunes the other families'
    branches before it inlines and types anything, so a loop holds only its policy's kernels
    (and none of the logging's when ``logging`` is False). Numba's cache keys a closure by the
    values it closes over, so each variant is cached apart (the closure holds only these two
    plain values: a kernel object in it would not pickle the same in two processes, and the
    cache would miss every time).
    """

    @jit(refcount=False)
    def run_family_nb(
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
        value, index, depth, cells, cache_floor, cache_size, cache_items = learner[:7]
        state_visits, state_shown = learner[7:9]
        code, param, _, search, step = policy
        if family != GREEDY_LOOP:
            search = TopNSearch.scan  # only the greedy policies read the top-n index: not kept
        model, click_cdf, buy_cdf, phase_truth, phase_best, outcome_reward = response[:6]
        phase_start = response.phase_start
        slate, outcome, order, previous, top_value, top_product, frontier, drawn, propensity = ws
        untried, ucb1, ucb1_work, sum_tree, sum_tree_work, thompson, thompson_work = learner.policy
        saved_path, batch_u, batch_leaf = sum_tree_work
        n_states = value.shape[0]
        n = slate.shape[0]
        first_block = first_visit // metrics_block
        # the phase in force, as views: one comparison per visit finds a switch (a fixed response
        # never switches)
        phase = phase_of_visit_nb(phase_start, first_visit)
        switch = next_phase_start_nb(phase_start, phase)
        truth = phase_truth[phase]
        best_mu = phase_best[phase]
        state_cdf = phase_cdf[phase]
        if logging:
            log_rows = log.reshape((1, log.shape[0]))  # a view, for prefetch_records_nb
        for visit in range(first_visit, first_visit + n_visits):
            if visit >= switch:
                phase = phase_of_visit_nb(phase_start, visit)
                switch = next_phase_start_nb(phase_start, phase)
                truth = phase_truth[phase]
                best_mu = phase_best[phase]
                state_cdf = phase_cdf[phase]
            if logging:
                prefetch_records_nb(log_rows, (visit - first_visit) * n, n)
            state = draw_state_nb(rng, state_cdf, n_states)
            segment = state_segment[state]
            first = catalogue_ptr[segment]
            size = catalogue_ptr[segment + 1] - first
            catalogue = catalogue_items[first : first + size]
            # each policy's kernel with only its own structures (the choose_slate_nb dispatch,
            # without binding the whole bundles on every visit)
            epsilon = 0.0
            if family == GREEDY_LOOP:
                epsilon = greedy_epsilon_nb(code, param, state_visits, state)
                if logging:
                    top_product[:n] = -1  # to count what the policy's top-n lookup writes
                explored = choose_greedy_slate_nb(
                    rng, state, value, index, depth, search, catalogue_items, first, size, epsilon,
                    slate, top_value, top_product, frontier, cache_floor, cache_size, cache_items,
                )  # fmt: skip
            elif family == SOFTMAX_LOOP:
                explored = choose_softmax_slate_nb(
                    rng, sum_tree, value, cells, state, catalogue, param, slate, saved_path,
                    batch_u, batch_leaf,
                )  # fmt: skip
            elif family == UCB1_LOOP:
                explored = choose_ucb1_slate_nb(
                    rng, untried, ucb1, value, cells, state, catalogue, param, state_shown[state],
                    slate, ucb1_work,
                )  # fmt: skip
            else:
                explored = choose_thompson_slate_nb(
                    rng, thompson, value, cells, state, catalogue, param, slate, thompson_work
                )
            prefetch_slate_nb(value, index, depth, cells, truth, state, slate)
            if logging:
                # the slate's propensities read the tables before the update and draw nothing;
                # computed while the prefetched table lines of the slate are on their way
                if family == GREEDY_LOOP:
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
            respond_update_record_nb(
                rng, state, explored, model, click_cdf, buy_cdf, truth, best_mu, outcome_reward,
                value, index, depth, search, step, cells, cache_floor, cache_size, cache_items,
                state_shown, slate, outcome, order, previous, drawn, metrics,
                visit // metrics_block - first_block,
            )  # fmt: skip
            if family == SOFTMAX_LOOP:
                update_softmax_nb(sum_tree, value, state, catalogue, param, slate, previous)
            elif family == UCB1_LOOP:
                update_ucb1_nb(untried, ucb1, value, cells, state, slate, ucb1_work)
            elif family == THOMPSON_LOOP:
                update_thompson_nb(thompson, value, cells, state, param, slate, size)
            if logging:
                record_slots_nb(
                    log, (visit - first_visit) * n, visit, state, slate, outcome, drawn, propensity
                )

    return run_family_nb
