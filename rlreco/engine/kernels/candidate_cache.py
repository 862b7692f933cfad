"""Per-state candidate cache of the top-n search.

The cache of state ``s`` lists exactly the known products whose value is at or above its floor
``cache_floor[s]``: ``cache_items[s, :cache_size[s]]``, unordered (-1: not valid). It is made
from the candidates of a tree query (:func:`~rlreco.engine.kernels.topn.collect_candidates_nb`),
the ~20 products at or above the query's floor, and kept exact after every visit by
:func:`refresh_cache_nb`: the slate products that fell below the floor leave and those that
rose to it join. While it holds at least ``n`` (and at most :data:`CACHE_RANKED`) products, the
next query of the state just ranks it (:func:`~rlreco.engine.kernels.ranking.rank_top_nb`),
reading no tree line; a greedy visit consumes about ``n`` of the top products, so under the
sample average about every other query of a state is served this way.
"""

from __future__ import annotations

import numpy as np

from rlreco.engine.kernels.jit import jit
from rlreco.engine.kernels.ranking import rank_top_nb
from rlreco.engine.kernels.topn import collect_candidates_nb

#: Products a state's candidate cache holds at most.
CACHE_CAPACITY = 64
#: A cache with more products than this is not ranked (ranking is quadratic) but refreshed by a
#: tree query, which sets a tighter floor.
CACHE_RANKED = 24


@jit(inline=True)
def find_top_cached_nb(
    value: np.ndarray,
    index: np.ndarray,
    state: int,
    depth: int,
    n: int,
    top_value: np.ndarray,
    top_product: np.ndarray,
    frontier: np.ndarray,
    cache_floor: np.ndarray,
    cache_size: np.ndarray,
    cache_items: np.ndarray,
) -> int:
    """:func:`~rlreco.engine.kernels.topn.find_top_nb` using, while it holds ``n`` products,
    the state's cached candidates.

    The cache of state ``s`` lists exactly the known products with value ``>= cache_floor[s]``
    (kept so by :func:`refresh_cache_nb` after every visit), so when it holds at least ``n``
    of them the top ``n`` are among them and no tree is read. Otherwise the tree query runs
    and its candidates become the new cache.

    Parameters
    ----------
    value, index, state, depth, n, top_value, top_product, frontier
        As for :func:`~rlreco.engine.kernels.topn.find_top_nb`.
    cache_floor : ndarray of float64, shape (n_states,)
    cache_size : ndarray of int64, shape (n_states,)
        Products cached per state; -1 when the cache is not valid.
    cache_items : ndarray of int64, shape (n_states, CACHE_CAPACITY)
    """
    size = cache_size[state]
    if n <= size <= max(CACHE_RANKED, n):
        for k in range(size):
            frontier[0, k] = cache_items[state, k]
        return rank_top_nb(value, state, frontier, 0, size, n, top_value, top_product)
    floor, kept = collect_candidates_nb(
        value, index, state, depth, n, top_value, top_product, frontier
    )
    row = depth & 1
    if kept <= CACHE_CAPACITY:
        cache_floor[state] = floor
        cache_size[state] = kept
        for k in range(kept):
            cache_items[state, k] = frontier[row, k]
    else:
        cache_size[state] = -1
    return rank_top_nb(value, state, frontier, row, kept, n, top_value, top_product)


@jit(inline=True)
def refresh_cache_nb(
    value: np.ndarray,
    state: int,
    products: np.ndarray,
    previous: np.ndarray,
    cache_floor: np.ndarray,
    cache_size: np.ndarray,
    cache_items: np.ndarray,
) -> None:
    """Keep a state's cache exact after ``products`` changed value (from ``previous``).

    Parameters
    ----------
    value : ndarray of float64, shape (n_states, W)
        Already holds the new values.
    state : int
    products : ndarray of int64, shape (m,)
        Distinct products whose value changed.
    previous : ndarray of float64, shape (m,)
        Their values before the change.
    cache_floor, cache_size, cache_items
        As for :func:`find_top_cached_nb`.
    """
    size = cache_size[state]
    if size < 0:
        return
    floor = cache_floor[state]
    # members stay while they reach the floor (only changed products can have fallen)
    kept = 0
    for k in range(size):
        product = cache_items[state, k]
        cache_items[state, kept] = product
        kept += value[state, product] >= floor
    # products that rose to the floor join (they were below it, so not yet members)
    for i in range(products.shape[0]):
        product = products[i]
        # membership is "finite and >= floor", as in the query's filter
        was_member = previous[i] >= floor and previous[i] != -np.inf
        if not was_member and value[state, product] >= floor:
            if kept == CACHE_CAPACITY:
                cache_size[state] = -1
                return
            cache_items[state, kept] = product
            kept += 1
    cache_size[state] = kept
