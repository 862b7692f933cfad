"""Per-state ranked candidate cache of the top-n search.

The cache of state ``s`` lists exactly the known products whose value is at or above its floor
``cache_floor[s]``, best first (value descending, ties by lower product id), with their values:
row ``cache_items[s]`` holds the products in columns ``0 .. CACHE_SLOTS - 1`` and the bits of
their values (float64) in columns ``CACHE_SLOTS .. CACHE_CAPACITY - 1``; ``cache_size[s]``
members are listed (-1: not valid). While it holds at least ``n`` members (or every known
product: floor ``-inf``), a query copies the first ``n`` (:func:`find_top_cached_nb`), reading
no tree line and no value line.

A rebuild (a query of a state whose cache ran dry) sets a deep floor, one reached by
:data:`FLOOR_NODES` nodes of the tree's level 2 (:func:`find_deep_floor_nb`), collects the
products at or above it from the tree (:func:`~rlreco.engine.kernels.topn.collect_above_nb`)
and ranks them into the row (:func:`rank_into_cache_nb`, keeping the best ``CACHE_SLOTS`` and
raising the floor to the last one kept when more were found).

After every visit :func:`refresh_cache_nb` keeps the cache exact without reading the tree (the
new values of the slate's products are known exactly): a member that fell below the floor
leaves, one that still reaches it moves to its new rank, a product that rose to the floor joins.
A greedy visit shows about ``n`` of the top members. Under the sample average they soon fall far
below the floor or barely move; under a constant step (values that do not converge) they drop a
few ranks and stay. Either way a deep cache serves several visits of a state per rebuild (on the
benchmark's synthetic space: 99.9% of queries under ``1/n``, ~93% under step 0.1 once the
initial values have decayed, against 98% and ~72% for the earlier unranked cache of ~15).
"""

from __future__ import annotations

import numpy as np

from rlreco.engine.kernels.jit import jit
from rlreco.engine.kernels.ranking import count_ahead_nb, rank_top_nb
from rlreco.engine.kernels.records import LANES
from rlreco.engine.kernels.topn import (
    FANOUT,
    collect_above_nb,
    count_reached_nb,
    find_floor_nb,
    level_start_nb,
)

#: Members a state's cache holds at most.
CACHE_SLOTS = 64
#: Columns of a cache row: the members, then the bits of their values.
CACHE_CAPACITY = 2 * CACHE_SLOTS
#: Level-2 nodes the floor of a rebuild must be reached by (each holds a distinct member).
FLOOR_NODES = 24
#: Every this many level-2 maxima is tried as the floor of a rebuild.
FLOOR_STRIDE = 4
#: A rebuild that collects more candidates than this (a floor of ``-inf``, or a dense top)
#: ranks only the query's ``n`` and leaves the cache invalid.
RANK_INTO_CACHE = 2 * CACHE_SLOTS


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
    """:func:`~rlreco.engine.kernels.topn.find_top_nb` served, while it can, by the state's
    ranked cache; otherwise the cache is rebuilt from the tree first.

    Parameters
    ----------
    value, index, state, depth, n, top_value, top_product, frontier
        As for :func:`~rlreco.engine.kernels.topn.find_top_nb` (``frontier`` at least
        ``RANK_INTO_CACHE`` wide).
    cache_floor : ndarray of float64, shape (n_states,)
    cache_size : ndarray of int64, shape (n_states,)
        Members cached per state; -1 when the cache is not valid.
    cache_items : ndarray of int64, shape (n_states, CACHE_CAPACITY)
        Members best first, then the bits of their values.
    """
    size = cache_size[state]
    if size >= n or (size >= 0 and cache_floor[state] == -np.inf):
        return copy_top_nb(cache_items, state, min(size, n), top_value, top_product)
    return rebuild_cache_nb(
        value, index, state, depth, n, top_value, top_product, frontier,
        cache_floor, cache_size, cache_items,
    )  # fmt: skip


@jit(inline=True)
def copy_top_nb(
    cache_items: np.ndarray, state: int, found: int, top_value: np.ndarray, top_product: np.ndarray
) -> int:
    """The first ``found`` members of a state's cache into ``top_*``; returns ``found``."""
    keys = cache_items[state, CACHE_SLOTS:].view(np.float64)
    for k in range(found):
        top_value[k] = keys[k]
        top_product[k] = cache_items[state, k]
    return found


@jit(inline=True)
def find_deep_floor_nb(
    value: np.ndarray, index: np.ndarray, state: int, depth: int, nodes: int
) -> float:
    """A level-2 maximum reached by ``nodes`` level-2 nodes, the largest of those tried
    (``-inf`` if none is): at least ``nodes`` products are at or above it, one per such node.

    Every :data:`FLOOR_STRIDE`-th of the 64 level-2 maxima is tried as a threshold, by one flat
    vector count over all 64 (no data-dependent branch).
    """
    if depth < 2:
        return -np.inf
    keys = value if depth == 2 else index
    start = 0 if depth == 2 else level_start_nb(2)
    stop = start + (min(FANOUT * FANOUT, value.shape[1]) if depth == 2 else FANOUT * FANOUT)
    floor = -np.inf
    # a sample of the maxima as thresholds: the one chosen is reached by a few more nodes
    for at in range(start, stop, FLOOR_STRIDE):
        threshold = keys[state, at]
        reached = count_reached_nb(keys, state, start, stop, threshold)
        floor = max(floor, threshold if reached >= nodes else -np.inf)
    return floor


@jit(inline=True)
def rebuild_cache_nb(
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
    """Refill a state's cache from the tree and answer the query (parameters as
    :func:`find_top_cached_nb`); returns the products found.

    When the candidates are too many to rank into the row, or the row's floor had to rise
    above the ``n``-th of them (ties at the cut), the query ranks its ``n`` from the candidates.
    """
    floor = find_deep_floor_nb(value, index, state, depth, max(FLOOR_NODES, n))
    if floor == -np.inf:
        # fewer known level-2 nodes than a deep floor needs: the query's own floor
        floor = find_floor_nb(value, index, state, depth, n, top_value, top_product)
    kept = collect_above_nb(value, index, state, depth, floor, frontier)
    row = depth & 1
    size = -1
    if kept <= RANK_INTO_CACHE:
        size = rank_into_cache_nb(value, state, frontier, row, kept, cache_items)
    cache_size[state] = size
    if kept > CACHE_SLOTS and size > 0:
        # the best were kept: the floor rises to the last of them
        floor = cache_items[state, CACHE_SLOTS:].view(np.float64)[size - 1]
    cache_floor[state] = floor
    if size >= n or (size >= 0 and floor == -np.inf):
        return copy_top_nb(cache_items, state, min(size, n), top_value, top_product)
    return rank_top_nb(value, state, frontier, row, kept, n, top_value, top_product)


@jit(inline=True)
def rank_into_cache_nb(
    value: np.ndarray,
    state: int,
    frontier: np.ndarray,
    row: int,
    kept: int,
    cache_items: np.ndarray,
) -> int:
    """Rank the ``kept`` candidates of ``frontier[row]`` into the state's cache row.

    Each candidate's rank is the number of candidates ahead of it (one flat vector count
    each); the best ``CACHE_SLOTS`` are written. When more were found, the products tied with
    the first one left out leave too, so that the members are exactly the products at or above
    the last one's value. Returns the members written, or -1 when none could be kept.
    """
    keys = frontier[2].view(np.float64)
    labels = frontier[row]
    for k in range(kept):
        keys[k] = value[state, labels[k]]
    padded = -(-kept // LANES) * LANES
    for k in range(kept, padded):
        keys[k] = -np.inf
    cached = cache_items[state, CACHE_SLOTS:].view(np.float64)
    # the key ranked just after the slots, if any
    cut = -np.inf
    for k in range(kept):
        ahead = count_ahead_nb(keys, labels, padded, keys[k], labels[k])
        if ahead < CACHE_SLOTS:
            cache_items[state, ahead] = labels[k]
            cached[ahead] = keys[k]
        elif ahead == CACHE_SLOTS:
            cut = keys[k]
    size = min(kept, CACHE_SLOTS)
    if kept > CACHE_SLOTS:
        while size > 0 and cached[size - 1] == cut:
            size -= 1
        if size == 0:
            return -1
    return size


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

    A member that fell below the floor leaves (marked, and the row closed up once at the end);
    one that still reaches it moves to its new rank step by step (an update moves it a few
    ranks); a product that rose to the floor is inserted at its rank. A full row drops its
    last member (with its ties) for a newcomer and raises the floor to the new last.

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
    items = cache_items[state, :CACHE_SLOTS]
    keys = cache_items[state, CACHE_SLOTS:].view(np.float64)
    left = 0
    for i in range(products.shape[0]):
        product = products[i]
        old = previous[i]
        key = value[state, product]
        # membership is "finite and >= floor", as in the query's filter
        if old >= floor and old != -np.inf:
            at = find_member_nb(items, size, product)
            if at == size:
                # not listed: the row is not what the values say (cannot happen while the
                # values change only through the kernels); the next query rebuilds it
                cache_size[state] = -1
                return
            if key < floor:
                # a mark keeps its old key, so the row stays ranked around it
                items[at] = -1
                left += 1
                continue
            move_member_nb(items, keys, size, at, key, product)
            continue
        if key < floor:
            continue
        if left > 0:
            size = close_up_nb(items, keys, size)
            left = 0
        if size == CACHE_SLOTS:
            last = keys[size - 1]
            if key < last:
                # the newcomer stays out: the floor rises above it
                floor = last
                continue
            # the last member and its ties leave (a tied newcomer with them)
            while size > 0 and keys[size - 1] == last:
                size -= 1
            if size == 0:
                cache_size[state] = -1
                return
            floor = keys[size - 1]
            if key == last:
                continue
        at = count_ahead_nb(keys, items, size, key, product)
        for k in range(size, at, -1):
            items[k] = items[k - 1]
            keys[k] = keys[k - 1]
        items[at] = product
        keys[at] = key
        size += 1
        # after the last member left, the newcomer may be the new last
        floor = min(floor, key)
    if left > 0:
        size = close_up_nb(items, keys, size)
    cache_floor[state] = floor
    cache_size[state] = size


@jit(inline=True)
def find_member_nb(items: np.ndarray, size: int, product: int) -> int:
    """Position of ``product`` among ``items[:size]`` (``size`` if absent): a walk from the top,
    where the members a greedy slate shows are (a flat vector search over the row cost more)."""
    at = 0
    while at < size and items[at] != product:
        at += 1
    return at


@jit(inline=True)
def move_member_nb(
    items: np.ndarray, keys: np.ndarray, size: int, at: int, key: float, product: int
) -> None:
    """Move the member at ``at`` to the rank of its new ``key``, one neighbour at a time.

    Marked members keep their old keys in place, so the neighbours stay ranked.
    """
    while at + 1 < size and (
        keys[at + 1] > key or (keys[at + 1] == key and items[at + 1] < product)
    ):
        items[at] = items[at + 1]
        keys[at] = keys[at + 1]
        at += 1
    while at > 0 and (keys[at - 1] < key or (keys[at - 1] == key and items[at - 1] > product)):
        items[at] = items[at - 1]
        keys[at] = keys[at - 1]
        at -= 1
    items[at] = product
    keys[at] = key


@jit(inline=True)
def close_up_nb(items: np.ndarray, keys: np.ndarray, size: int) -> int:
    """Remove the marked (-1) members of ``items[:size]``, keeping the order; new size."""
    kept = 0
    for k in range(size):
        product = items[k]
        items[kept] = product
        keys[kept] = keys[k]
        kept += product >= 0
    return kept
