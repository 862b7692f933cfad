"""Per-state ranked candidate cache of the top-n search, with an unranked reserve behind it.

The cache of state ``s`` lists exactly the known products whose value is at or above its floor
``cache_floor[s]``, best first (value descending, ties by lower product id), with their values:
row ``cache_items[s]`` holds the products in columns ``0 .. CACHE_SLOTS - 1`` and the bits of
their values (float64) in columns ``CACHE_SLOTS .. 2 * CACHE_SLOTS - 1``; ``cache_size[s]``
members are listed (-1: not valid). Behind them the row holds a reserve: exactly the known
products between a deeper floor and the cache's, with their values, unranked
(:mod:`rlreco.engine.kernels.candidate_reserve`, which gives the row's layout). While the cache
holds at least ``n`` members (or every known product: floor ``-inf``), a query copies the first
``n`` (:func:`find_top_cached_nb`), reading no tree line and no value line; when it ran dry, the
best of the reserve are ranked into it; only when both together hold fewer than ``n`` products
is the row rebuilt from the tree.

A rebuild sets a deep floor, one reached by :data:`FLOOR_NODES` nodes of the tree's level 2
(:func:`find_deep_floor_nb`), collects the products at or above it from the tree
(:func:`~rlreco.engine.kernels.topn.collect_above_nb`) and splits them
(:func:`split_into_cache_nb`): the best (at most
:data:`~rlreco.engine.kernels.candidate_reserve.FILL_TARGET`, ties together) are ranked into
the row, the rest go to the reserve.

After every visit :func:`refresh_cache_nb` keeps both exact without reading the tree (the new
values of the slate's products are known exactly): a member that fell below the floor leaves
(to the reserve if it still reaches the reserve's floor), one that still reaches it moves to its
new rank, a product that rose to the floor joins, and the reserve's entries follow their values.
"""

from __future__ import annotations

import numpy as np

from rlreco.engine.kernels.candidate_reserve import (
    CACHE_CAPACITY,
    CACHE_SLOTS,
    FILL_TARGET,
    RESERVE_HEAD,
    RESERVE_SLOTS,
    add_to_reserve_nb,
    count_at_or_above_nb,
    find_in_reserve_nb,
    pick_threshold_nb,
    rank_after_members_nb,
    refill_members_nb,
    remove_from_reserve_nb,
    reserve_floor_nb,
    reserve_of_nb,
    set_reserve_nb,
)
from rlreco.engine.kernels.jit import jit
from rlreco.engine.kernels.ranking import count_ahead_nb, rank_top_nb
from rlreco.engine.kernels.topn import (
    FANOUT,
    collect_above_nb,
    count_reached_nb,
    find_floor_nb,
    find_top_nb,
    level_start_nb,
)

__all__ = ["CACHE_CAPACITY", "CACHE_SLOTS", "find_top_cached_nb", "refresh_cache_nb"]

#: Level-2 nodes the floor of a rebuild must be reached by (each holds a distinct member).
FLOOR_NODES = 48
#: Every this many level-2 maxima is tried as the floor of a rebuild.
FLOOR_STRIDE = 4
#: A rebuild that collects more candidates than this (a floor of ``-inf``, or a dense top)
#: ranks only the query's ``n`` and leaves the cache invalid.
SPLIT_LIMIT = 4 * (FILL_TARGET + RESERVE_SLOTS)


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
    ranked cache, refilled from its reserve when it ran dry; otherwise rebuilt from the tree.

    Parameters
    ----------
    value, index, state, depth, n, top_value, top_product, frontier
        As for :func:`~rlreco.engine.kernels.topn.find_top_nb` (``frontier`` at least
        ``CACHE_CAPACITY`` wide).
    cache_floor : ndarray of float64, shape (n_states,)
    cache_size : ndarray of int64, shape (n_states,)
        Members cached per state; -1 when the cache is not valid.
    cache_items : ndarray of int64, shape (n_states, CACHE_CAPACITY)
        Members best first, the bits of their values, then the reserve
        (:mod:`rlreco.engine.kernels.candidate_reserve`).
    """
    size = cache_size[state]
    if size >= n or (size >= 0 and cache_floor[state] == -np.inf):
        return copy_top_nb(cache_items, state, min(size, n), top_value, top_product)
    if size >= 0 and cache_items[state, RESERVE_HEAD] > 0:
        size = refill_members_nb(cache_floor, cache_size, cache_items, state, n, frontier)
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
    value: np.ndarray, index: np.ndarray, state: int, depth: int, nodes: int, n: int
) -> float:
    """A level-2 maximum reached by ``nodes`` level-2 nodes (seven eighths of the known ones
    if fewer, but at least ``n``), the largest of those tried (``-inf`` if none is): at least
    that many products are at or above it, one per such node.

    Every :data:`FLOOR_STRIDE`-th of the 64 level-2 maxima is tried as a threshold, by one flat
    vector count over all 64 (no data-dependent branch).
    """
    if depth < 2:
        return -np.inf
    keys = value if depth == 2 else index
    start = 0 if depth == 2 else level_start_nb(2)
    stop = start + (min(FANOUT * FANOUT, value.shape[1]) if depth == 2 else FANOUT * FANOUT)
    # a row of few products has few level-2 nodes: seven eighths of the known ones
    known = count_reached_nb(keys, state, start, stop, -np.inf)
    nodes = min(nodes, max(known - known // 8, n))
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
    """Refill a state's cache and reserve from the tree and answer the query (parameters as
    :func:`find_top_cached_nb`); returns the products found.

    When the candidates are too many to split into the row, the query ranks its ``n`` from
    them and the cache stays invalid.
    """
    floor = find_deep_floor_nb(value, index, state, depth, FLOOR_NODES, n)
    if floor == -np.inf:
        # fewer known level-2 nodes than a deep floor needs: the query's own floor
        floor = find_floor_nb(value, index, state, depth, n, top_value, top_product)
    kept = collect_above_nb(value, index, state, depth, floor, frontier)
    row = depth & 1
    size = -1
    if kept <= SPLIT_LIMIT:
        size = split_into_cache_nb(
            value, state, frontier, row, kept, floor, cache_floor, cache_items
        )
    cache_size[state] = size
    if size < 0:
        return rank_top_nb(value, state, frontier, row, kept, n, top_value, top_product)
    if size < n and cache_floor[state] != -np.inf:
        size = refill_members_nb(cache_floor, cache_size, cache_items, state, n, frontier)
    if size >= n or (size >= 0 and cache_floor[state] == -np.inf):
        return copy_top_nb(cache_items, state, min(size, n), top_value, top_product)
    # ties the reserve could not split (the candidates were overwritten): the plain query
    return find_top_nb(value, index, state, depth, n, top_value, top_product, frontier)


@jit(inline=True)
def split_into_cache_nb(
    value: np.ndarray,
    state: int,
    frontier: np.ndarray,
    row: int,
    kept: int,
    floor: float,
    cache_floor: np.ndarray,
    cache_items: np.ndarray,
) -> int:
    """Split the ``kept`` candidates of ``frontier[row]`` (every known product at or above
    ``floor``) into the state's ranked members and its reserve.

    The members are the candidates at or above a sampled threshold reached by at most
    :data:`~rlreco.engine.kernels.candidate_reserve.FILL_TARGET` of them (all of them if they
    are that few), ranked; the rest go to the reserve, whose floor rises (to a sampled value)
    when they do not fit. Returns the members written, or -1 (nothing written to the row) when
    more than ``FILL_TARGET`` candidates tie at the best value.
    """
    keys = frontier[2].view(np.float64)
    labels = frontier[row]
    for k in range(kept):
        keys[k] = value[state, labels[k]]
    top = floor
    members = kept
    if kept > FILL_TARGET:
        top = pick_threshold_nb(keys, kept, FILL_TARGET)
        if top == np.inf:
            return -1
        members = count_at_or_above_nb(keys, kept, top)
    items, reserve = reserve_of_nb(cache_items, state)
    reserve_floor = floor
    if kept - members > items.shape[0]:
        # ``top`` itself qualifies: the threshold is finite, and at most ``top``
        reserve_floor = min(pick_threshold_nb(keys, kept, members + items.shape[0]), top)
    listed = 0
    stored = 0
    for k in range(kept):
        product = labels[k]
        key = keys[k]
        # the members close up in place, ahead of the candidates still to read
        labels[listed] = product
        keys[listed] = key
        listed += key >= top
        if key < top and key >= reserve_floor:
            items[stored] = product
            reserve[stored] = key
            stored += 1
    set_reserve_nb(cache_items, state, stored, reserve_floor)
    cache_floor[state] = top
    return rank_after_members_nb(cache_items, state, 0, labels, keys, listed)


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
    """Keep a state's cache and reserve exact after ``products`` changed value (from
    ``previous``).

    A member that fell below the floor leaves (marked, and the row closed up once at the end),
    to the reserve if it still reaches the reserve's floor; one that still reaches the floor
    moves to its new rank step by step (an update moves it a few ranks); a product that rose to
    the floor is inserted at its rank (and leaves the reserve if it was there). A full row drops
    its last member (with its ties) to the reserve for a newcomer and raises the floor to the
    new last. A product of the reserve that stays below the floor has its value updated there,
    or leaves it; one that rose to the reserve's floor is added.

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
    keys = cache_items[state, CACHE_SLOTS : 2 * CACHE_SLOTS].view(np.float64)
    reserve = reserve_of_nb(cache_items, state)[1]
    left = 0
    for i in range(products.shape[0]):
        product = products[i]
        old = previous[i]
        key = value[state, product]
        # membership is "finite and >= floor", as in the query's filter; a product not yet
        # refreshed is listed by its old value
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
                if key >= reserve_floor_nb(cache_items, state) and key != -np.inf:
                    add_to_reserve_nb(cache_items, state, product, key, floor)
                continue
            move_member_nb(items, keys, size, at, key, product)
            continue
        low = reserve_floor_nb(cache_items, state)
        if old >= low and old != -np.inf:
            at = find_in_reserve_nb(
                reserve_of_nb(cache_items, state)[0], cache_items[state, RESERVE_HEAD], product
            )
            if at < 0:
                cache_size[state] = -1
                return
            if key < floor and key >= low and key != -np.inf:
                reserve[at] = key
                continue
            remove_from_reserve_nb(cache_items, state, at)
        elif key < floor:
            if key >= low and key != -np.inf:
                add_to_reserve_nb(cache_items, state, product, key, floor)
            continue
        if key < floor:
            continue
        if left > 0:
            size = close_up_nb(items, keys, size)
            left = 0
        if size == CACHE_SLOTS:
            last = keys[size - 1]
            if key < last:
                # the newcomer goes to the reserve: the floor rises above it
                floor = last
                add_to_reserve_nb(cache_items, state, product, key, floor)
                continue
            # the last member and its ties leave for the reserve (a tied newcomer with them)
            while size > 0 and keys[size - 1] == last:
                size -= 1
                add_to_reserve_nb(cache_items, state, items[size], last, last)
            if size == 0:
                cache_size[state] = -1
                return
            floor = keys[size - 1]
            if key == last:
                add_to_reserve_nb(cache_items, state, product, key, floor)
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
