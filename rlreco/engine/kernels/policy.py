"""Slate policies: how each visit fills its slate, and the dispatch by policy code.

Every policy fills a slate of ``n`` distinct products of the state's segment catalogue (in
catalogue order ``K``), drawing from the visit's generator after the state draw and before
the response (:mod:`rlreco.engine.kernels.visit`). :func:`choose_slate_nb` dispatches on
:data:`~rlreco.engine.kernels.records.Policy`:

``eps_greedy`` (parameter ``epsilon``)
    Slot by slot: ``u = rng.random()``. If ``u < epsilon`` the slot *explores*: a uniform
    product of the catalogue, redrawn (``below(K)``) until it is not yet in the slate.
    Otherwise it is *greedy*: the known product of highest value not yet in the slate (ties:
    lowest product id); if no known product is left (a cold state, or fewer than ``n`` known)
    the slot is *padded* with a catalogue product drawn exactly like an explored one but not
    counted as explored. The best products come from the top-n search
    (:mod:`rlreco.engine.kernels.topn`), looked up once, at the first greedy slot.
``decaying`` (parameter ``c``)
    Epsilon-greedy with a per-state epsilon ``min(1, c / v)``, ``v`` the visits to the state
    including this one (``Learner.state_visits``, counted under this policy only): the same
    path as ``eps_greedy``.
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
    ``value + c * sqrt(ln N_s / reco_count)``, ``N_s`` the recommendations made in the state
    (``Learner.state_shown``).
``thompson`` (parameter ``sigma``)
    Gaussian Thompson sampling: each catalogue product, in catalogue order, draws
    ``mean + sigma / sqrt(reco_count + 1) * rng.standard_normal()`` with ``mean`` its value
    (0 if unknown); the ``n`` largest draws form the slate.

Ties rank the lower product id first. The ``explored`` metric counts the explored slots
(``eps_greedy``, ``decaying``), or the slots of a product never recommended in the state
before the visit (the other policies).
"""

from __future__ import annotations

import numpy as np

from rlreco.engine.kernels.draw import draw_below_nb, is_in_nb
from rlreco.engine.kernels.jit import jit
from rlreco.engine.kernels.records import (
    Learner,
    Policy,
    PolicyParams,
    TopNSearch,
    Workspace,
    World,
)
from rlreco.engine.kernels.topn import find_top_cached_nb, insert_ranked_nb, scan_top_nb


@jit()
def choose_slate_nb(
    rng: np.random.Generator,
    state: int,
    world: World,
    learner: Learner,
    policy: PolicyParams,
    ws: Workspace,
) -> int:
    """Fill ``ws.slate`` for a visit to ``state`` by the policy (module docstring).

    The fused loop calls the epsilon-greedy path itself, with the bundles unpacked (see
    :func:`~rlreco.engine.kernels.visit.respond_update_record_nb`).

    Parameters
    ----------
    rng : numpy.random.Generator
    state : int
    world : World
    learner : Learner
        Read; ``state_visits`` is counted under ``decaying``, and the top-n caches of the tree
        search are refreshed.
    policy : PolicyParams
    ws : Workspace
        ``slate`` is the output; the rest is scratch.

    Returns
    -------
    int
        Explored slots.
    """
    segment = world.state_segment[state]
    first = world.catalogue_ptr[segment]
    size = world.catalogue_ptr[segment + 1] - first
    code = policy.code
    slate, top_value, top_product = ws.slate, ws.top_value, ws.top_product
    value, cells = learner.value, learner.cells
    if code in (Policy.eps_greedy, Policy.decaying):
        epsilon = greedy_epsilon_nb(code, policy.param, learner.state_visits, state)
        return choose_greedy_slate_nb(
            rng, state, value, learner.tree, learner.depth, policy.search,
            world.catalogue_items, first, size, epsilon, slate, top_value, top_product,
            ws.frontier, learner.cache_floor, learner.cache_size, learner.cache_items,
        )  # fmt: skip
    catalogue = world.catalogue_items[first : first + size]
    if code == Policy.softmax:
        choose_softmax_slate_nb(
            rng, value, state, catalogue, policy.param, slate, top_value, top_product
        )
    elif code == Policy.ucb1:
        choose_ucb_slate_nb(
            rng, value, cells, state, catalogue, policy.param, learner.state_shown[state],
            slate, top_value, top_product, ws.untried,
        )  # fmt: skip
    else:
        choose_thompson_slate_nb(
            rng, value, cells, state, catalogue, policy.param, slate, top_value, top_product
        )
    return count_untried_nb(cells, state, slate)


@jit(inline=True)
def greedy_epsilon_nb(code: int, param: float, state_visits: np.ndarray, state: int) -> float:
    """Epsilon of a visit: ``param`` (``eps_greedy``), or ``min(1, c / v)`` (``decaying``),
    counting the visit in ``state_visits`` first."""
    if code != Policy.decaying:
        return param
    state_visits[state] += 1
    return min(1.0, param / state_visits[state])


@jit(inline=True)
def choose_greedy_slate_nb(
    rng: np.random.Generator,
    state: int,
    value: np.ndarray,
    index: np.ndarray,
    depth: int,
    search: int,
    catalogue_items: np.ndarray,
    first: int,
    size: int,
    epsilon: float,
    slate: np.ndarray,
    top_value: np.ndarray,
    top_product: np.ndarray,
    frontier: np.ndarray,
    cache_floor: np.ndarray,
    cache_size: np.ndarray,
    cache_items: np.ndarray,
) -> int:
    """Fill ``slate`` by epsilon-greedy choice (``eps_greedy`` in the module docstring).

    The state's top ``n`` known products are looked up once, at the first greedy slot: with at
    most ``n - 1`` products already in the slate, the best known product not in the slate is
    the first of them not in the slate, if any.

    Parameters
    ----------
    rng : numpy.random.Generator
    state : int
    value, index, depth
        As in :class:`~rlreco.engine.kernels.records.Learner`.
    search : int
        :data:`~rlreco.engine.kernels.records.TopNSearch` code.
    catalogue_items : ndarray of int32, shape (nnz,)
    first, size : int
        The state's catalogue is ``catalogue_items[first:first + size]`` (passed as bounds, not
        as a view), ``size >= n``.
    epsilon : float
        Exploration probability per slot.
    slate, top_value, top_product, frontier
        As in :class:`~rlreco.engine.kernels.records.Workspace` (``slate`` is the output).
    cache_floor, cache_size, cache_items
        As in :class:`~rlreco.engine.kernels.records.Learner`.

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
                        value, index, state, depth, n, top_value, top_product, frontier,
                        cache_floor, cache_size, cache_items,
                    )  # fmt: skip
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
            product = catalogue_items[first + draw_below_nb(rng, size)]
            while is_in_nb(product, slate, i):
                product = catalogue_items[first + draw_below_nb(rng, size)]
        slate[i] = product
    return explored


@jit(inline=True)
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
        untried += cells[state, slate[i]]["reco_count"] == 0
    return untried


@jit(inline=True)
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


@jit(inline=True)
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
    value : ndarray of float64, shape (n_states, W)
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


@jit(inline=True)
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
    value : ndarray of float64, shape (n_states, W)
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
        tries = cells[state, product]["reco_count"]
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


@jit(inline=True)
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
    value : ndarray of float64, shape (n_states, W)
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
        scale = sigma / np.sqrt(cells[state, product]["reco_count"] + 1.0)
        key = mean + scale * rng.standard_normal()
        found = insert_ranked_nb(key, product, top_key, top_product, found, n)
    for i in range(n):
        slate[i] = top_product[i]
