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
visit's metric sums are one kernel, :func:`respond_update_record_nb`, shared by the fused loop
(:func:`simulate_visits_nb`) and the online visit (:mod:`rlreco.engine.online`). Every
per-visit kernel is inlined into the loop, :func:`run_visits_nb`, which is compiled without
reference counting (inlining alone leaves an atomic count update per array argument and call),
so no array's reference count is touched per visit; and the loop hints the table lines of a
chosen slate to the cache before the response draws (:func:`prefetch_slate_nb`).
"""

from __future__ import annotations

import numpy as np

from rlreco.engine.kernels.draw import (
    draw_below_nb,
    draw_count_nb,
    draw_state_nb,
    round_cents_nb,
)
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
    Outcome,
    Policy,
    PolicyParams,
    ResponseArrays,
    ResponseModel,
    TopNSearch,
    Workspace,
    World,
)
from rlreco.engine.kernels.sum_tree import choose_softmax_slate_nb, update_softmax_nb
from rlreco.engine.kernels.thompson import choose_thompson_slate_nb, update_thompson_nb
from rlreco.engine.kernels.topn import (
    CACHE_CAPACITY,
    FANOUT,
    FANOUT_BITS,
    level_start_nb,
    refresh_cache_nb,
    repair_index_nb,
)
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
def pick_slots_nb(
    rng: np.random.Generator, picks: int, code: int, outcome: np.ndarray, order: np.ndarray
) -> None:
    """Mark ``picks`` distinct uniform slots with ``code`` (partial Fisher-Yates on ``order``).

    Parameters
    ----------
    rng : numpy.random.Generator
    picks : int
        Number of slots, ``<= len(outcome)``.
    code : int
        :data:`Outcome` code written into the picked slots.
    outcome : ndarray of int8, shape (n,)
        Modified in place.
    order : ndarray of int64, shape (n,)
        Workspace.
    """
    n = outcome.shape[0]
    for i in range(n):
        order[i] = i
    for i in range(picks):
        j = i + draw_below_nb(rng, n - i)
        order[i], order[j] = order[j], order[i]
        outcome[order[i]] = code


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
def respond_seed_nb(
    rng: np.random.Generator,
    click_cdf: np.ndarray,
    buy_cdf: np.ndarray,
    outcome: np.ndarray,
    order: np.ndarray,
) -> tuple[int, int]:
    """Outcomes of one slate under the ``seed`` model (step 3 of the module docstring).

    Parameters
    ----------
    rng : numpy.random.Generator
    click_cdf, buy_cdf : ndarray of float64, shape (k,)
        Cumulative distributions of the click and purchase counts.
    outcome : ndarray of int8, shape (n,)
        Output: :data:`Outcome` code per slot.
    order : ndarray of int64, shape (n,)
        Workspace.

    Returns
    -------
    (int, int)
        Clicks ``C`` and purchases ``B``.
    """
    n = outcome.shape[0]
    clicks = draw_count_nb(rng, click_cdf, n)
    buys = draw_count_nb(rng, buy_cdf, n)
    for i in range(n):
        outcome[i] = Outcome.ignored
    pick_slots_nb(rng, clicks, Outcome.clicked, outcome, order)
    # purchases are marked last: a purchase overrides a click
    pick_slots_nb(rng, buys, Outcome.bought, outcome, order)
    return clicks, buys


@jit(inline=True)
def respond_truth_nb(
    rng: np.random.Generator,
    truth: np.ndarray,
    outcome_reward: np.ndarray,
    state: int,
    slate: np.ndarray,
    outcome: np.ndarray,
) -> tuple[int, int, float]:
    """Outcomes of one slate under known per-product probabilities (step 3).

    Parameters
    ----------
    rng : numpy.random.Generator
    truth : ndarray of TRUTH_DTYPE, shape (S, P)
    outcome_reward : ndarray of float64, shape (3,)
        Mean reward per :data:`Outcome` code.
    state : int
    slate : ndarray of int64, shape (n,)
    outcome : ndarray of int8, shape (n,)
        Output: :data:`Outcome` code per slot.

    Returns
    -------
    (int, int, float)
        Click events, purchases, and the slate's expected reward: the sum in slot order of
        ``mu = p_buy * R_buy + (1 - p_buy) * (p_click * R_click + (1 - p_click) * R_ignore)``
        (the expression of :func:`rlreco.engine.response.expected_reward`).
    """
    clicks = 0
    buys = 0
    shown_mu = 0.0
    for i in range(slate.shape[0]):
        cell = truth[state, slate[i]]
        p_click = cell["p_click"]
        p_buy = cell["p_buy"]
        click = rng.random() < p_click
        buy = rng.random() < p_buy
        clicks += click
        buys += buy
        shown_mu += p_buy * outcome_reward[Outcome.bought] + (1.0 - p_buy) * (
            p_click * outcome_reward[Outcome.clicked]
            + (1.0 - p_click) * outcome_reward[Outcome.ignored]
        )
        # bought beats clicked beats ignored (codes 2 > 1 > 0), without a random branch
        outcome[i] = max(Outcome.bought * buy, Outcome.clicked * click)
    return clicks, buys, shown_mu


@jit(inline=True)
def update_cells_nb(
    rng: np.random.Generator,
    state: int,
    value: np.ndarray,
    cells: np.ndarray,
    outcome_reward: np.ndarray,
    slate: np.ndarray,
    outcome: np.ndarray,
    previous: np.ndarray,
    step: float,
    drawn: np.ndarray,
) -> float:
    """Bookkeeping, rewards and incremental means of one slate (step 4).

    Parameters
    ----------
    rng : numpy.random.Generator
    state : int
    value : ndarray of float64, shape (S, W)
    cells : ndarray of CELL_DTYPE, shape (S, P)
        Updated in place.
    outcome_reward : ndarray of float64, shape (3,)
        Mean reward per :data:`Outcome` code.
    slate : ndarray of int64, shape (n,)
    outcome : ndarray of int8, shape (n,)
    previous : ndarray of float64, shape (n,)
        Output: the slate's values before the update.
    step : float
        0.0: the sample average (``1/reco_count``); else the constant step size.
    drawn : ndarray of float64, shape (n,)
        Output: the reward drawn for each slot.

    Returns
    -------
    float
        Sum of the drawn rewards, in slot order.
    """
    total = 0.0
    for i in range(slate.shape[0]):
        product = slate[i]
        cell = cells[state, product]
        mean = value[state, product]
        previous[i] = mean
        if mean == -np.inf:
            mean = 0.0
            cell["reward"] = round_cents_nb(rng.standard_normal())
        cell["reco_count"] += 1
        cell["count"] += 1
        reward = round_cents_nb(rng.normal(outcome_reward[outcome[i]], 1.0))
        drawn[i] = reward
        cell["reward"] += reward
        if step > 0.0:
            mean += step * (reward - mean)
        else:
            mean += (reward - mean) / cell["reco_count"]
        value[state, product] = mean
        total += reward
    return total


@jit(inline=True)
def record_visit_nb(
    metrics: np.ndarray,
    block: int,
    slots: int,
    reward: float,
    clicks: int,
    buys: int,
    explored: int,
    knows_regret: bool,
    regret: float,
) -> None:
    """Add one visit to ``metrics[block]`` (METRICS_DTYPE; regret only under a known truth)."""
    row = metrics[block]
    row["visits"] += 1
    row["slots"] += slots
    row["reward_sum"] += reward
    row["clicks"] += clicks
    row["buys"] += buys
    row["explored"] += explored
    if knows_regret:
        row["regret_visits"] += 1
        row["regret_sum"] += regret


@jit(inline=True)
def respond_update_record_nb(
    rng: np.random.Generator,
    state: int,
    explored: int,
    model: int,
    click_cdf: np.ndarray,
    buy_cdf: np.ndarray,
    truth: np.ndarray,
    best_mu: np.ndarray,
    outcome_reward: np.ndarray,
    value: np.ndarray,
    index: np.ndarray,
    depth: int,
    search: int,
    step: float,
    cells: np.ndarray,
    cache_floor: np.ndarray,
    cache_size: np.ndarray,
    cache_items: np.ndarray,
    state_shown: np.ndarray,
    slate: np.ndarray,
    outcome: np.ndarray,
    order: np.ndarray,
    previous: np.ndarray,
    drawn: np.ndarray,
    metrics: np.ndarray,
    block: int,
) -> None:
    """Steps 3 and 4 of a visit whose slate is in ``slate``, and its metric sums.

    The one kernel every visit goes through after its slate is chosen: the fused loop
    (:func:`simulate_visits_nb`) and the online visit (:func:`play_slate_nb`). It takes the
    bundles' arrays one by one because it is inlined: a bundle bound as the parameter of an
    inlined kernel costs an atomic reference-count update per array in it, on every visit.
    Under the ``given`` response model ``outcome`` is read instead of drawn, and its clicks and
    purchases are counted from it.

    Parameters
    ----------
    rng : numpy.random.Generator
    state : int
    explored : int
        Explored slots of the slate.
    model, click_cdf, buy_cdf, truth, best_mu, outcome_reward
        As in :class:`~rlreco.engine.kernels.records.ResponseArrays`.
    value, index, depth, cells, cache_floor, cache_size, cache_items, state_shown
        As in :class:`~rlreco.engine.kernels.records.Learner`; updated in place.
    search : int
        :data:`TopNSearch` code (the index and caches are kept under ``tree`` only).
    step : float
        :attr:`~rlreco.engine.kernels.records.PolicyParams.step`.
    slate, outcome, order, previous, drawn
        As in :class:`~rlreco.engine.kernels.records.Workspace`.
    metrics : ndarray of METRICS_DTYPE, shape (n_blocks,)
    block : int
        Row of ``metrics`` the visit is added to.
    """
    shown_mu = 0.0
    if model == ResponseModel.seed:
        clicks, buys = respond_seed_nb(rng, click_cdf, buy_cdf, outcome, order)
    elif model == ResponseModel.truth:
        clicks, buys, shown_mu = respond_truth_nb(rng, truth, outcome_reward, state, slate, outcome)
    else:  # given
        clicks, buys = count_outcomes_nb(outcome)
    reward = update_cells_nb(
        rng, state, value, cells, outcome_reward, slate, outcome, previous, step, drawn
    )
    n = slate.shape[0]
    state_shown[state] += n
    if search == TopNSearch.tree:
        repair_index_nb(value, index, state, depth, slate)
        refresh_cache_nb(value, state, slate, previous, cache_floor, cache_size, cache_items)
    knows_regret = model == ResponseModel.truth
    regret = best_mu[state] - shown_mu if knows_regret else 0.0
    record_visit_nb(metrics, block, n, reward, clicks, buys, explored, knows_regret, regret)


@jit()
def play_slate_nb(
    rng: np.random.Generator,
    state: int,
    explored: int,
    learner: Learner,
    policy: PolicyParams,
    response: ResponseArrays,
    ws: Workspace,
    metrics: np.ndarray,
) -> None:
    """:func:`respond_update_record_nb` with bundled arguments (one visit: the online visit).

    ``metrics`` (METRICS_DTYPE, shape (1,)) receives the visit's sums. An online visit is
    answered by the response's first phase.
    """
    respond_update_record_nb(
        rng, state, explored, response.model, response.click_cdf, response.buy_cdf,
        response.truth[0], response.best_mu[0], response.outcome_reward, learner.value,
        learner.tree, learner.depth, policy.search, policy.step, learner.cells,
        learner.cache_floor, learner.cache_size, learner.cache_items, learner.state_shown,
        ws.slate, ws.outcome, ws.order, ws.previous, ws.drawn, metrics, 0,
    )  # fmt: skip


@jit(inline=True)
def count_outcomes_nb(outcome: np.ndarray) -> tuple[int, int]:
    """Clicks and purchases of given outcomes (a bought product counts as bought only)."""
    clicks = 0
    buys = 0
    for i in range(outcome.shape[0]):
        clicks += outcome[i] == Outcome.clicked
        buys += outcome[i] == Outcome.bought
    return clicks, buys


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
    if not greedy:
        search = TopNSearch.scan  # only the greedy policies read the top-n index: not kept
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
