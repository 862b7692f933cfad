"""One simulated visit, and the fused loop over a chunk of visits.

Semantics (``tests/naive.py`` re-implements them in plain Python, draw for draw). Every draw
comes from one ``numpy.random.Generator`` passed in by the caller, in this order per visit:

1. **State.** ``uniform``: ``s = below(S)``; ``empirical``: ``s`` = the first state whose
   cumulative weight exceeds ``rng.random() * total`` (states without history never occur).
2. **Slate**, slot by slot (``n`` slots): ``u = rng.random()``. If ``u < epsilon`` the slot
   *explores*: a uniform product of the state's segment catalogue, redrawn (``below(K)``)
   until it is not yet in the slate. Otherwise it is *greedy*: the known product of highest
   value not yet in the slate (ties: lowest product id); if no known product is left (a cold
   state, or fewer than ``n`` known) the slot is *padded* with a catalogue product drawn exactly
   like an explored one but not counted as explored.
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
   ``value += (r - value) / reco_count``.

Here ``below(m) = min(int(rng.random() * m), m - 1)`` (one draw; numba's scalar
``rng.integers`` allocates an array per call and costs 8x more) and
``round2(x) = rint(x * 100) / 100``.
"""

from __future__ import annotations

import numpy as np

from rlreco.engine.kernels.intrinsics import borrow_nb, prefetch_nb
from rlreco.engine.kernels.jit import jit
from rlreco.engine.kernels.records import Outcome, ResponseModel, TopNSearch
from rlreco.engine.kernels.topn import (
    FANOUT,
    FANOUT_BITS,
    depth_of_width_nb,
    find_top_cached_nb,
    level_start_nb,
    refresh_cache_nb,
    repair_index_nb,
    scan_top_nb,
)


@jit(inline=True)
def round_cents_nb(x: float) -> float:
    """Round to 2 decimals: ``rint(x * 100) / 100``."""
    return np.rint(x * 100.0) / 100.0


@jit(inline=True)
def draw_below_nb(rng: np.random.Generator, m: int) -> int:
    """Uniform integer in ``[0, m)`` from one ``rng.random()`` draw."""
    return min(int(rng.random() * m), m - 1)


@jit(inline=True)
def draw_state_nb(rng: np.random.Generator, state_cdf: np.ndarray, n_states: int) -> int:
    """Draw the state of a visit.

    Parameters
    ----------
    rng : numpy.random.Generator
    state_cdf : ndarray of float64, shape (n_states,) or (0,)
        Cumulative state weights for ``empirical`` sampling; empty for ``uniform``.
    n_states : int
    """
    if state_cdf.shape[0] == 0:
        return draw_below_nb(rng, n_states)
    target = rng.random() * state_cdf[-1]
    return min(int(np.searchsorted(state_cdf, target, side="right")), n_states - 1)


@jit(inline=True)
def draw_count_nb(rng: np.random.Generator, cdf: np.ndarray, cap: int) -> int:
    """Inverse-CDF draw of a count ``0..len(cdf)-1``, capped at ``cap``.

    Parameters
    ----------
    rng : numpy.random.Generator
    cdf : ndarray of float64, shape (k,)
        Cumulative probabilities; ``cdf[-1] == 1``.
    cap : int
    """
    u = rng.random()
    count = 0
    while count < cdf.shape[0] - 1 and u >= cdf[count]:
        count += 1
    return min(count, cap)


@jit(inline=True)
def is_in_nb(product: int, slate: np.ndarray, filled: int) -> bool:
    """Whether ``product`` is among the first ``filled`` entries of ``slate``."""
    found = False
    for j in range(filled):
        found |= slate[j] == product
    return found


@jit()
def choose_slate_nb(
    rng: np.random.Generator,
    value: np.ndarray,
    index: np.ndarray,
    state: int,
    depth: int,
    search: int,
    catalog_items: np.ndarray,
    catalog_first: int,
    catalog_size: int,
    epsilon: float,
    slate: np.ndarray,
    top_value: np.ndarray,
    top_product: np.ndarray,
    frontier: np.ndarray,
    cache_floor: np.ndarray,
    cache_size: np.ndarray,
    cache_items: np.ndarray,
) -> int:
    """Fill a slate by epsilon-greedy choice (step 2 of the module docstring).

    The state's top ``n`` known products are looked up once, at the first greedy slot: with at
    most ``n - 1`` products already in the slate, the best known product not in the slate is
    the first of them not in the slate, if any.

    Parameters
    ----------
    rng : numpy.random.Generator
    value : ndarray of float64, shape (n_states, n_products)
    index : ndarray of float64, shape (n_states, index_width(n_products)) or (n_states, 0)
        Top-n index (width 0 under ``scan`` search).
    state : int
    depth : int
        Index depth.
    search : int
        :data:`TopNSearch` code.
    catalog_items : ndarray of int32, shape (nnz,)
        Concatenated segment catalogues.
    catalog_first, catalog_size : int
        The state's segment catalogue is ``catalog_items[catalog_first:][:catalog_size]``
        (passed as bounds: a slice view would be reference-counted on every visit);
        ``catalog_size >= len(slate)``.
    epsilon : float
        Exploration probability per slot.
    slate : ndarray of int64, shape (n,)
        Output: chosen product ids in slot order.
    top_value : ndarray of float64, shape (n + 1,)
        Workspace: the state's best values.
    top_product : ndarray of int64, shape (n + 1,)
        Workspace: their product ids.
    frontier : ndarray of int64, shape (3, 8**depth)
        Workspace of :func:`~rlreco.engine.kernels.topn.find_top_nb`.
    cache_floor, cache_size, cache_items : ndarray
        Candidate caches (:func:`~rlreco.engine.kernels.topn.find_top_cached_nb`).

    Returns
    -------
    int
        Number of explored slots.
    """
    n = slate.shape[0]
    explored = 0
    found = -1
    cursor = 0
    for i in range(n):
        u = rng.random()
        product = -1
        if u >= epsilon:
            if found < 0:
                if search == TopNSearch.tree:
                    found = find_top_cached_nb(
                        value,
                        index,
                        state,
                        depth,
                        n,
                        top_value,
                        top_product,
                        frontier,
                        cache_floor,
                        cache_size,
                        cache_items,
                    )
                else:
                    found = scan_top_nb(value, state, n, top_value, top_product)
            while cursor < found and is_in_nb(top_product[cursor], slate, i):
                cursor += 1
            if cursor < found:
                product = top_product[cursor]
                cursor += 1
        if product < 0:
            if u < epsilon:
                explored += 1
            product = catalog_items[catalog_first + draw_below_nb(rng, catalog_size)]
            while is_in_nb(product, slate, i):
                product = catalog_items[catalog_first + draw_below_nb(rng, catalog_size)]
        slate[i] = product
    return explored


@jit()
def prefetch_slate_nb(
    value: np.ndarray,
    index: np.ndarray,
    cells: np.ndarray,
    truth: np.ndarray,
    state: int,
    depth: int,
    slate: np.ndarray,
) -> None:
    """Prefetch every line the response and update of a slate will touch, all at once.

    Parameters
    ----------
    value : ndarray of float64, shape (n_states, n_products)
    index : ndarray of float64, shape (n_states, index_width(n_products)) or (n_states, 0)
    cells : ndarray of CELL_DTYPE, shape (n_states, n_products)
    truth : ndarray of TRUTH_DTYPE, shape (n_states, n_products) or (n_states, 0)
    state : int
    depth : int
    slate : ndarray of int64, shape (n,)
    """
    n_products = value.shape[1]
    bottom = level_start_nb(depth - 1)
    for i in range(slate.shape[0]):
        product = slate[i]
        first = (product // FANOUT) * FANOUT
        prefetch_nb(value, (state, first))
        prefetch_nb(value, (state, min(first + FANOUT, n_products) - 1))
        prefetch_nb(cells, (state, product))
        if index.shape[1] > 0:
            prefetch_nb(index, (state, bottom + (product // (FANOUT * FANOUT)) * FANOUT))
        if truth.shape[1] > 0:
            prefetch_nb(truth, (state, product))


@jit()
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


@jit()
def respond_truth_nb(
    rng: np.random.Generator,
    truth: np.ndarray,
    state: int,
    slate: np.ndarray,
    outcome: np.ndarray,
    outcome_reward: np.ndarray,
) -> tuple[int, int, float]:
    """Outcomes of one slate under known per-product probabilities (step 3).

    Parameters
    ----------
    rng : numpy.random.Generator
    truth : ndarray of TRUTH_DTYPE, shape (n_states, n_products)
        True probabilities and expected reward of every cell.
    state : int
    slate : ndarray of int64, shape (n,)
    outcome : ndarray of int8, shape (n,)
        Output: :data:`Outcome` code per slot.
    outcome_reward : ndarray of float64, shape (3,)
        Mean reward per :data:`Outcome` code (ignored, clicked, bought).

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
        click = rng.random() < cell.p_click
        buy = rng.random() < cell.p_buy
        clicks += click
        buys += buy
        shown_mu += cell.p_buy * outcome_reward[Outcome.bought] + (1.0 - cell.p_buy) * (
            cell.p_click * outcome_reward[Outcome.clicked]
            + (1.0 - cell.p_click) * outcome_reward[Outcome.ignored]
        )
        # bought beats clicked beats ignored (codes 2 > 1 > 0), without a random branch
        outcome[i] = max(Outcome.bought * buy, Outcome.clicked * click)
    return clicks, buys, shown_mu


@jit()
def update_cells_nb(
    rng: np.random.Generator,
    value: np.ndarray,
    index: np.ndarray,
    cells: np.ndarray,
    state: int,
    depth: int,
    search: int,
    slate: np.ndarray,
    outcome: np.ndarray,
    outcome_reward: np.ndarray,
    previous: np.ndarray,
    cache_floor: np.ndarray,
    cache_size: np.ndarray,
    cache_items: np.ndarray,
) -> float:
    """Bookkeeping, rewards and incremental means of one slate (step 4).

    Parameters
    ----------
    rng : numpy.random.Generator
    value : ndarray of float64, shape (n_states, n_products)
        Modified in place.
    index : ndarray of float64, shape (n_states, index_width(n_products)) or (n_states, 0)
        Repaired in place (width 0 under ``scan`` search).
    cells : ndarray of CELL_DTYPE, shape (n_states, n_products)
        Modified in place.
    state : int
    depth : int
    search : int
        :data:`TopNSearch` code.
    slate : ndarray of int64, shape (n,)
    outcome : ndarray of int8, shape (n,)
    outcome_reward : ndarray of float64, shape (3,)
        Mean reward per :data:`Outcome` code (ignored, clicked, bought).
    previous : ndarray of float64, shape (n,)
        Workspace: the values before the update.
    cache_floor, cache_size, cache_items : ndarray
        Candidate caches, kept exact (:func:`~rlreco.engine.kernels.topn.refresh_cache_nb`).

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
            cell.reward = round_cents_nb(rng.standard_normal())
        cell.reco_count += 1
        cell.count += 1
        reward = round_cents_nb(rng.normal(outcome_reward[outcome[i]], 1.0))
        cell.reward += reward
        mean += (reward - mean) / cell.reco_count
        value[state, product] = mean
        total += reward
    if search == TopNSearch.tree:
        repair_index_nb(value, index, state, depth, slate)
        refresh_cache_nb(value, state, slate, previous, cache_floor, cache_size, cache_items)
    return total


@jit()
def simulate_visits_nb(
    rng: np.random.Generator,
    first_visit: int,
    n_visits: int,
    value: np.ndarray,
    index: np.ndarray,
    cells: np.ndarray,
    state_segment: np.ndarray,
    catalog_ptr: np.ndarray,
    catalog_items: np.ndarray,
    state_cdf: np.ndarray,
    epsilon: float,
    slate_size: int,
    search: int,
    response: int,
    click_cdf: np.ndarray,
    buy_cdf: np.ndarray,
    truth: np.ndarray,
    best_mu: np.ndarray,
    outcome_reward: np.ndarray,
    metrics_block: int,
    metrics: np.ndarray,
    cache_floor: np.ndarray,
    cache_size: np.ndarray,
    cache_items: np.ndarray,
) -> None:
    """Simulate visits ``first_visit .. first_visit + n_visits - 1`` and add their metrics.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of every draw; advanced in place.
    first_visit : int
        Global index of the first visit (places visits in metric blocks).
    n_visits : int
    value : ndarray of float64, shape (n_states, width)
        Cell values (``-inf`` = unknown); updated in place. ``width >= n_products``: columns
        beyond the products are ``-inf`` padding (a width that is a multiple of 8 makes every
        group of 8 leaves one cache line).
    index : ndarray of float64, shape (n_states, index_width(width)) or (n_states, 0)
        Top-n index matching ``value`` (:func:`~rlreco.engine.kernels.topn.new_index`), updated
        in place; width 0 under ``scan`` search.
    cells : ndarray of CELL_DTYPE, shape (n_states, n_products)
        Reward sums and counts; updated in place.
    state_segment : ndarray of int16, shape (n_states,)
    catalog_ptr : ndarray of int64, shape (n_segments + 1,)
    catalog_items : ndarray of int32, shape (nnz,)
        CSR segment catalogues; every catalogue holds at least ``slate_size`` products.
    state_cdf : ndarray of float64, shape (n_states,) or (0,)
        Cumulative state weights (``empirical``) or empty (``uniform``).
    epsilon : float
    slate_size : int
    search : int
        :data:`TopNSearch` code.
    response : int
        :data:`ResponseModel` code.
    click_cdf, buy_cdf : ndarray of float64, shape (k,)
        ``seed`` model count distributions (unused under ``truth``).
    truth : ndarray of TRUTH_DTYPE, shape (n_states, n_products) or (n_states, 0)
        True response per cell (``truth`` model; width 0 under ``seed``).
    best_mu : ndarray of float64, shape (n_states,)
        Expected reward of the best slate per state (``truth`` model only).
    outcome_reward : ndarray of float64, shape (3,)
        Mean reward per :data:`Outcome` code (ignored, clicked, bought).
    metrics_block : int
        Visits per metric block.
    metrics : ndarray of METRICS_DTYPE, shape (n_blocks,)
        Sums of blocks ``first_visit // metrics_block`` onwards; visits are added to the
        running sums already present (a block continued from the previous chunk).
    cache_floor : ndarray of float64, shape (n_states,)
    cache_size : ndarray of int64, shape (n_states,)
    cache_items : ndarray of int64, shape (n_states, CACHE_CAPACITY)
        Candidate caches of the ``tree`` search
        (:func:`~rlreco.engine.kernels.topn.find_top_cached_nb`), updated in place; start with
        ``cache_size`` all -1 (empty) whenever ``value`` was changed outside this kernel.
    """
    depth = depth_of_width_nb(index.shape[1]) if search == TopNSearch.tree else 1
    n = slate_size
    capacity = 1 << (FANOUT_BITS * depth)
    workspace = (
        np.empty(n, dtype=np.int64),  # slate
        np.empty(n, dtype=np.int8),  # outcome
        np.empty(n, dtype=np.int64),  # order
        np.empty((3, capacity), dtype=np.int64),  # frontier of the top-n query
        np.empty(n + 1, dtype=np.float64),  # top values
        np.empty(n + 1, dtype=np.int64),  # top products
        np.empty(n, dtype=np.float64),  # values before the update
    )
    run_visits_nb(
        rng,
        first_visit,
        n_visits,
        value,
        index,
        cells,
        state_segment,
        catalog_ptr,
        catalog_items,
        state_cdf,
        epsilon,
        depth,
        search,
        response,
        click_cdf,
        buy_cdf,
        truth,
        best_mu,
        outcome_reward,
        metrics_block,
        metrics,
        cache_floor,
        cache_size,
        cache_items,
        workspace,
    )


@jit()
def run_visits_nb(
    rng: np.random.Generator,
    first_visit: int,
    n_visits: int,
    value: np.ndarray,
    index: np.ndarray,
    cells: np.ndarray,
    state_segment: np.ndarray,
    catalog_ptr: np.ndarray,
    catalog_items: np.ndarray,
    state_cdf: np.ndarray,
    epsilon: float,
    depth: int,
    search: int,
    response: int,
    click_cdf: np.ndarray,
    buy_cdf: np.ndarray,
    truth: np.ndarray,
    best_mu: np.ndarray,
    outcome_reward: np.ndarray,
    metrics_block: int,
    metrics: np.ndarray,
    cache_floor: np.ndarray,
    cache_size: np.ndarray,
    cache_items: np.ndarray,
    workspace: tuple[np.ndarray, ...],
) -> None:
    """The loop of :func:`simulate_visits_nb` (same parameters, plus ``depth`` and the
    ``workspace`` it allocates, which this call owns for its duration)."""
    # every array used per visit is borrowed: no reference counting on each call
    rng = borrow_nb(rng)
    value = borrow_nb(value)
    index = borrow_nb(index)
    cells = borrow_nb(cells)
    catalog_items = borrow_nb(catalog_items)
    click_cdf = borrow_nb(click_cdf)
    buy_cdf = borrow_nb(buy_cdf)
    truth = borrow_nb(truth)
    outcome_reward = borrow_nb(outcome_reward)
    slate = borrow_nb(workspace[0])
    outcome = borrow_nb(workspace[1])
    order = borrow_nb(workspace[2])
    frontier = borrow_nb(workspace[3])
    top_value = borrow_nb(workspace[4])
    top_product = borrow_nb(workspace[5])
    previous = borrow_nb(workspace[6])
    cache_floor = borrow_nb(cache_floor)
    cache_size = borrow_nb(cache_size)
    cache_items = borrow_nb(cache_items)
    n = slate.shape[0]
    n_states = value.shape[0]
    first_block = first_visit // metrics_block
    for visit in range(first_visit, first_visit + n_visits):
        state = draw_state_nb(rng, state_cdf, n_states)
        segment = state_segment[state]
        explored = choose_slate_nb(
            rng,
            value,
            index,
            state,
            depth,
            search,
            catalog_items,
            catalog_ptr[segment],
            catalog_ptr[segment + 1] - catalog_ptr[segment],
            epsilon,
            slate,
            top_value,
            top_product,
            frontier,
            cache_floor,
            cache_size,
            cache_items,
        )
        prefetch_slate_nb(value, index, cells, truth, state, depth, slate)
        if response == ResponseModel.seed:
            clicks, buys = respond_seed_nb(rng, click_cdf, buy_cdf, outcome, order)
            shown_mu = 0.0
        else:
            clicks, buys, shown_mu = respond_truth_nb(
                rng, truth, state, slate, outcome, outcome_reward
            )
        reward = update_cells_nb(
            rng,
            value,
            index,
            cells,
            state,
            depth,
            search,
            slate,
            outcome,
            outcome_reward,
            previous,
            cache_floor,
            cache_size,
            cache_items,
        )
        block = visit // metrics_block - first_block
        metrics[block].visits += 1
        metrics[block].slots += n
        metrics[block].reward_sum += reward
        metrics[block].clicks += clicks
        metrics[block].buys += buys
        metrics[block].explored += explored
        if response == ResponseModel.truth:
            metrics[block].regret_visits += 1
            metrics[block].regret_sum += best_mu[state] - shown_mu
