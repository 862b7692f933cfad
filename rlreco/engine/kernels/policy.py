"""Slate policies to compare with epsilon-greedy, and their fused visit loop.

Every policy fills a slate of ``n`` distinct products of the state's segment catalogue (in
catalogue order ``K``); the response, bookkeeping and metrics are those of
:mod:`rlreco.engine.kernels.visit` (its ``respond_*_nb`` and ``update_cells_nb`` are reused,
with the full-scan search, so no top-n index is kept). All draws come from one generator, in
this order per visit: the state (``draw_state_nb``), the slate (below), the response, the
update.

``decaying`` (parameter ``c``)
    Epsilon-greedy with a per-state epsilon ``min(1, c / v)``, ``v`` the visits to the state
    including this one (counted from the start of the loop's ``state_visits``); the slate is
    :func:`~rlreco.engine.kernels.visit.choose_slate_nb` with that epsilon.
``softmax`` (temperature ``tau``)
    Boltzmann sampling without replacement over the known products of the catalogue: each
    known product, in catalogue order, draws ``u = rng.random()`` and gets the key
    ``value / tau - log(-log(u))`` (Gumbel top-n: the ``n`` largest keys are distributed as
    ``n`` successive softmax draws). Fewer than ``n`` known products: the slate is padded with
    catalogue products drawn as in epsilon-greedy exploration (``below(K)`` until new).
``ucb1`` (parameter ``c``)
    Products never recommended in the state (``reco_count == 0``) first, in random order (a
    partial Fisher-Yates shuffle of the untried products in catalogue order, step ``i`` picking
    ``i + below(m - i)``); the remaining slots take the largest
    ``value + c * sqrt(ln N_s / reco_count)``, ``N_s`` the recommendations made in the state.
``thompson`` (parameter ``sigma``)
    Gaussian Thompson sampling: each catalogue product, in catalogue order, draws
    ``mean + sigma / sqrt(reco_count + 1) * rng.standard_normal()`` with ``mean`` its value
    (0 if unknown); the ``n`` largest draws form the slate.

Ties rank the lower product id first. The ``explored`` metric counts the slots of a product
never recommended in the state before the visit (``decaying``: the slots of
``choose_slate_nb`` that explored).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from rlreco.engine.kernels.jit import jit
from rlreco.engine.kernels.records import ResponseModel, TopNSearch
from rlreco.engine.kernels.topn import insert_ranked_nb
from rlreco.engine.kernels.visit import (
    choose_slate_nb,
    draw_below_nb,
    draw_state_nb,
    is_in_nb,
    respond_seed_nb,
    respond_truth_nb,
    update_cells_nb,
)


class _Policy(NamedTuple):
    decaying: int = 0
    softmax: int = 1
    ucb1: int = 2
    thompson: int = 3


#: Policy codes of :func:`simulate_policy_visits_nb`.
Policy = _Policy()


@jit()
def count_untried_nb(cells: np.ndarray, state: int, slate: np.ndarray) -> int:
    """Slate products never recommended in the state (the ``explored`` count).

    Parameters
    ----------
    cells : ndarray of CELL_DTYPE, shape (n_states, n_products)
    state : int
    slate : ndarray of int64, shape (n,)
    """
    untried = 0
    for i in range(slate.shape[0]):
        untried += cells[state, slate[i]].reco_count == 0
    return untried


@jit()
def pad_slate_nb(
    rng: np.random.Generator, catalogue: np.ndarray, slate: np.ndarray, filled: int
) -> None:
    """Fill slots ``filled..n-1`` with catalogue products drawn ``below(K)`` until new.

    Parameters
    ----------
    rng : numpy.random.Generator
    catalogue : ndarray of int32, shape (K,)
    slate : ndarray of int64, shape (n,)
        Slots ``0..filled-1`` are set; the rest are filled in place.
    filled : int
    """
    size = catalogue.shape[0]
    for i in range(filled, slate.shape[0]):
        product = catalogue[draw_below_nb(rng, size)]
        while is_in_nb(product, slate, i):
            product = catalogue[draw_below_nb(rng, size)]
        slate[i] = product


@jit()
def choose_softmax_slate_nb(
    rng: np.random.Generator,
    value: np.ndarray,
    state: int,
    catalogue: np.ndarray,
    tau: float,
    slate: np.ndarray,
    top_key: np.ndarray,
    top_product: np.ndarray,
) -> None:
    """Boltzmann slate by Gumbel top-n (module docstring).

    Parameters
    ----------
    rng : numpy.random.Generator
    value : ndarray of float64, shape (n_states, n_products)
    state : int
    catalogue : ndarray of int32, shape (K,)
        The state's segment catalogue, ``K >= n``.
    tau : float
        Temperature (> 0).
    slate : ndarray of int64, shape (n,)
        Output.
    top_key : ndarray of float64, shape (n,)
        Workspace.
    top_product : ndarray of int64, shape (n,)
        Workspace.
    """
    n = slate.shape[0]
    found = 0
    for k in range(catalogue.shape[0]):
        product = catalogue[k]
        v = value[state, product]
        if v != -np.inf:
            key = v / tau - np.log(-np.log(rng.random()))
            found = insert_ranked_nb(key, product, top_key, top_product, found, n)
    for i in range(found):
        slate[i] = top_product[i]
    pad_slate_nb(rng, catalogue, slate, found)


@jit()
def choose_ucb_slate_nb(
    rng: np.random.Generator,
    value: np.ndarray,
    cells: np.ndarray,
    state: int,
    catalogue: np.ndarray,
    c: float,
    shown: int,
    slate: np.ndarray,
    top_key: np.ndarray,
    top_product: np.ndarray,
    untried: np.ndarray,
) -> None:
    """UCB1 slate, untried products first (module docstring).

    Parameters
    ----------
    rng : numpy.random.Generator
    value : ndarray of float64, shape (n_states, n_products)
    cells : ndarray of CELL_DTYPE, shape (n_states, n_products)
    state : int
    catalogue : ndarray of int32, shape (K,)
    c : float
        Exploration weight (>= 0).
    shown : int
        ``N_s``: recommendations made in the state so far.
    slate : ndarray of int64, shape (n,)
        Output.
    top_key, top_product : ndarray, shape (n,)
        Workspace.
    untried : ndarray of int64, shape (>= K,)
        Workspace.
    """
    n = slate.shape[0]
    m = 0
    found = 0
    log_shown = np.log(max(shown, 1))
    for k in range(catalogue.shape[0]):
        product = catalogue[k]
        tries = cells[state, product].reco_count
        if tries == 0:
            untried[m] = product
            m += 1
        else:
            key = value[state, product] + c * np.sqrt(log_shown / tries)
            found = insert_ranked_nb(key, product, top_key, top_product, found, n)
    first = min(m, n)
    for i in range(first):
        j = i + draw_below_nb(rng, m - i)
        untried[i], untried[j] = untried[j], untried[i]
        slate[i] = untried[i]
    for i in range(first, n):
        slate[i] = top_product[i - first]


@jit()
def choose_thompson_slate_nb(
    rng: np.random.Generator,
    value: np.ndarray,
    cells: np.ndarray,
    state: int,
    catalogue: np.ndarray,
    sigma: float,
    slate: np.ndarray,
    top_key: np.ndarray,
    top_product: np.ndarray,
) -> None:
    """Gaussian Thompson-sampling slate (module docstring).

    Parameters
    ----------
    rng : numpy.random.Generator
    value : ndarray of float64, shape (n_states, n_products)
    cells : ndarray of CELL_DTYPE, shape (n_states, n_products)
    state : int
    catalogue : ndarray of int32, shape (K,)
    sigma : float
        Reward noise scale (> 0).
    slate : ndarray of int64, shape (n,)
        Output.
    top_key, top_product : ndarray, shape (n,)
        Workspace.
    """
    n = slate.shape[0]
    found = 0
    for k in range(catalogue.shape[0]):
        product = catalogue[k]
        mean = value[state, product]
        if mean == -np.inf:
            mean = 0.0
        scale = sigma / np.sqrt(cells[state, product].reco_count + 1.0)
        key = mean + scale * rng.standard_normal()
        found = insert_ranked_nb(key, product, top_key, top_product, found, n)
    for i in range(n):
        slate[i] = top_product[i]


@jit()
def simulate_policy_visits_nb(
    rng: np.random.Generator,
    n_visits: int,
    policy: int,
    param: float,
    value: np.ndarray,
    cells: np.ndarray,
    state_segment: np.ndarray,
    catalog_ptr: np.ndarray,
    catalog_items: np.ndarray,
    state_cdf: np.ndarray,
    state_visits: np.ndarray,
    state_shown: np.ndarray,
    slate_size: int,
    response: int,
    click_cdf: np.ndarray,
    buy_cdf: np.ndarray,
    truth: np.ndarray,
    best_mu: np.ndarray,
    outcome_reward: np.ndarray,
    metrics_block: int,
    metrics: np.ndarray,
) -> None:
    """Simulate ``n_visits`` visits under a :data:`Policy` and add their metrics.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of every draw; advanced in place.
    n_visits : int
    policy : int
        :data:`Policy` code.
    param : float
        The policy's parameter (``c``, ``tau``, ``c`` or ``sigma``).
    value : ndarray of float64, shape (n_states, n_products)
        Cell values (``-inf`` = unknown); updated in place.
    cells : ndarray of CELL_DTYPE, shape (n_states, n_products)
        Updated in place.
    state_segment : ndarray of int16, shape (n_states,)
    catalog_ptr : ndarray of int64, shape (n_segments + 1,)
    catalog_items : ndarray of int32, shape (nnz,)
        CSR segment catalogues, each of at least ``slate_size`` products.
    state_cdf : ndarray of float64, shape (n_states,) or (0,)
        Cumulative state weights (``empirical``) or empty (``uniform``).
    state_visits : ndarray of int64, shape (n_states,)
        Visits per state so far (``decaying``); updated in place.
    state_shown : ndarray of int64, shape (n_states,)
        Recommendations per state so far, the row sums of ``reco_count`` (``ucb1``); updated.
    slate_size : int
    response : int
        :data:`ResponseModel` code.
    click_cdf, buy_cdf : ndarray of float64, shape (k,)
    truth : ndarray of TRUTH_DTYPE, shape (n_states, n_products) or (n_states, 0)
    best_mu : ndarray of float64, shape (n_states,)
    outcome_reward : ndarray of float64, shape (3,)
        Mean reward per outcome code (ignored, clicked, bought).
    metrics_block : int
        Visits per metric block; visit ``i`` of this call goes to block ``i // metrics_block``.
    metrics : ndarray of METRICS_DTYPE, shape (ceil(n_visits / metrics_block),)
        Output sums, added to.
    """
    n = slate_size
    n_states = value.shape[0]
    slate = np.empty(n, dtype=np.int64)
    outcome = np.empty(n, dtype=np.int8)
    order = np.empty(n, dtype=np.int64)
    top_key = np.empty(n + 1, dtype=np.float64)
    top_product = np.empty(n + 1, dtype=np.int64)
    previous = np.empty(n, dtype=np.float64)
    untried = np.empty(catalog_items.shape[0], dtype=np.int64)
    # the scan search of visit.py needs no index, frontier or caches: empty stand-ins
    no_index = np.empty((n_states, 0), dtype=np.float64)
    no_frontier = np.empty((3, 1), dtype=np.int64)
    no_floor = np.empty(1, dtype=np.float64)
    no_size = np.empty(1, dtype=np.int64)
    no_items = np.empty((1, 1), dtype=np.int64)
    for visit in range(n_visits):
        state = draw_state_nb(rng, state_cdf, n_states)
        segment = state_segment[state]
        first, last = catalog_ptr[segment], catalog_ptr[segment + 1]
        catalogue = catalog_items[first:last]
        state_visits[state] += 1
        if policy == Policy.decaying:
            epsilon = min(1.0, param / state_visits[state])
            explored = choose_slate_nb(
                rng,
                value,
                no_index,
                state,
                1,
                TopNSearch.scan,
                catalog_items,
                first,
                last - first,
                epsilon,
                slate,
                top_key,
                top_product,
                no_frontier,
                no_floor,
                no_size,
                no_items,
            )
        else:
            if policy == Policy.softmax:
                choose_softmax_slate_nb(
                    rng, value, state, catalogue, param, slate, top_key, top_product
                )
            elif policy == Policy.ucb1:
                choose_ucb_slate_nb(
                    rng,
                    value,
                    cells,
                    state,
                    catalogue,
                    param,
                    state_shown[state],
                    slate,
                    top_key,
                    top_product,
                    untried,
                )
            else:
                choose_thompson_slate_nb(
                    rng, value, cells, state, catalogue, param, slate, top_key, top_product
                )
            explored = count_untried_nb(cells, state, slate)
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
            no_index,
            cells,
            state,
            1,
            TopNSearch.scan,
            slate,
            outcome,
            outcome_reward,
            previous,
            no_floor,
            no_size,
            no_items,
        )
        state_shown[state] += n
        block = metrics[visit // metrics_block]
        block.visits += 1
        block.slots += n
        block.reward_sum += reward
        block.clicks += clicks
        block.buys += buys
        block.explored += explored
        if response == ResponseModel.truth:
            block.regret_visits += 1
            block.regret_sum += best_mu[state] - shown_mu
