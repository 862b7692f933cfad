"""The unranked reserve behind a state's ranked candidate cache, and the layout of a cache row.

A cache row (``cache_items[s]``, int64) holds two tiers of the state's best known products:

* the ranked *members* (:mod:`rlreco.engine.kernels.candidate_cache`): the products in columns
  ``0 .. CACHE_SLOTS - 1`` and the bits of their values in ``CACHE_SLOTS .. 2 * CACHE_SLOTS - 1``,
  exactly the known products at or above the cache's floor ``F1``, best first;
* the unranked *reserve*: header columns :data:`RESERVE_HEAD` (the entries) and
  ``RESERVE_HEAD + 1`` (the bits of the reserve's floor ``F2 <= F1``), then the products in
  columns ``RESERVE_START ..`` and the bits of their values :data:`RESERVE_SLOTS` further on:
  exactly the known products in ``[F2, F1)``, with their current values, in no order.

So every known product at or above ``F2`` is listed, with its exact value. Under a constant step
a shown member drops by a tenth of its distance to the reward, below ``F1`` but usually not below
``F2``: it moves to the reserve instead of being lost, and when the members run dry the best of
the reserve are ranked into the row (:func:`refill_members_nb`) without reading the tree. Only
when members and reserve together hold fewer than ``n`` products is the row rebuilt from the tree.

Entries are found by a flat, branch-free scan of the reserve's products (explored products, about
one per visit, are the only ones looked up there), added at its end and removed by moving the
last entry into the gap. A full reserve drops its lowest quarter or so at once (its floor rises to
a sampled value, :func:`pick_threshold_nb`), so that adding stays O(1) between such drops.
"""

from __future__ import annotations

import numpy as np

from rlreco.engine.kernels.jit import jit
from rlreco.engine.kernels.ranking import count_ahead_nb
from rlreco.engine.kernels.records import LANES

#: Ranked members a state's cache holds at most.
CACHE_SLOTS = 64
#: Entries of a state's reserve at most.
RESERVE_SLOTS = 192
#: Column of a cache row holding the reserve's entries (then the bits of its floor).
RESERVE_HEAD = 2 * CACHE_SLOTS
#: Column of a cache row where the reserve's products start (their values' bits follow).
RESERVE_START = RESERVE_HEAD + LANES
#: Columns of a cache row.
CACHE_CAPACITY = RESERVE_START + 2 * RESERVE_SLOTS
#: Members a refill or a rebuild ranks at most (fewer, cheaper rankings; more, fewer refills).
FILL_TARGET = 40
#: Values of a span tried as thresholds by :func:`pick_threshold_nb`.
THRESHOLD_SAMPLES = 12


@jit(inline=True)
def reserve_of_nb(cache_items: np.ndarray, state: int) -> tuple[np.ndarray, np.ndarray]:
    """The reserve's products (int64) and values (float64) of a state, as views of its row.

    Its capacity is the row's: :data:`RESERVE_SLOTS` in a row of :data:`CACHE_CAPACITY`
    columns (a narrower row, as in the tests, holds a smaller reserve).
    """
    slots = (cache_items.shape[1] - RESERVE_START) // 2
    items = cache_items[state, RESERVE_START : RESERVE_START + slots]
    keys = cache_items[state, RESERVE_START + slots : RESERVE_START + 2 * slots].view(np.float64)
    return items, keys


@jit(inline=True)
def reserve_floor_nb(cache_items: np.ndarray, state: int) -> float:
    """The reserve's floor ``F2`` of a state (valid while its cache is)."""
    return cache_items[state, RESERVE_HEAD : RESERVE_HEAD + 2].view(np.float64)[1]


@jit(inline=True)
def set_reserve_nb(cache_items: np.ndarray, state: int, size: int, floor: float) -> None:
    """Write the reserve's entry count and floor into the row's header."""
    head = cache_items[state, RESERVE_HEAD : RESERVE_HEAD + 2]
    head[0] = size
    head.view(np.float64)[1] = floor


@jit(inline=True)
def count_at_or_above_nb(keys: np.ndarray, size: int, threshold: float) -> int:
    """Number of ``keys[:size]`` at or above ``threshold`` (one flat, vectorised loop)."""
    reached = 0
    for k in range(size):
        reached += keys[k] >= threshold
    return reached


@jit(inline=True)
def pick_threshold_nb(keys: np.ndarray, size: int, most: int) -> float:
    """A value of ``keys[:size]`` (finite) that at most ``most`` of them reach, as low as found.

    :data:`THRESHOLD_SAMPLES` values spread over the span are tried (one flat count each); if
    none qualifies, the largest value (unless more than ``most`` tie at it). ``inf`` if none.
    """
    best = np.inf
    stride = max(1, size // THRESHOLD_SAMPLES)
    for at in range(0, size, stride):
        threshold = keys[at]
        reached = count_at_or_above_nb(keys, size, threshold)
        best = min(best, threshold if reached <= most else np.inf)
    if best == np.inf and size > 0:
        top = keys[0]
        for k in range(size):
            top = max(top, keys[k])
        if count_at_or_above_nb(keys, size, top) <= most:
            best = top
    return best


@jit(inline=True)
def find_in_reserve_nb(items: np.ndarray, size: int, product: int) -> int:
    """Position of ``product`` in ``items[:size]``, -1 if absent (products are distinct, so one
    flat sum of the matching positions finds it without a branch per entry)."""
    matches = 0
    at = 0
    for k in range(size):
        hit = items[k] == product
        matches += hit
        at += k * hit
    return at if matches == 1 else -1


@jit(inline=True)
def drop_below_nb(items: np.ndarray, keys: np.ndarray, size: int, threshold: float) -> int:
    """Keep only the entries of ``items/keys[:size]`` at or above ``threshold``; new size."""
    kept = 0
    for k in range(size):
        key = keys[k]
        items[kept] = items[k]
        keys[kept] = key
        kept += key >= threshold
    return kept


@jit(inline=True)
def add_to_reserve_nb(
    cache_items: np.ndarray, state: int, product: int, key: float, floor: float
) -> None:
    """Add a product whose value ``key`` lies in ``[F2, floor)`` to the state's reserve.

    A full reserve first drops its lowest entries (its floor rises to a sampled value about a
    quarter of the entries fail to reach, or to ``floor`` if none fits); the product is kept
    only if it still reaches the new floor.
    """
    size = cache_items[state, RESERVE_HEAD]
    items, keys = reserve_of_nb(cache_items, state)
    slots = items.shape[0]
    if size == slots:
        # at least one entry goes: room for the product
        threshold = pick_threshold_nb(keys, size, slots - max(1, slots // 4))
        threshold = min(threshold, floor)
        size = drop_below_nb(items, keys, size, threshold)
        set_reserve_nb(cache_items, state, size, threshold)
        if key < threshold:
            return
    items[size] = product
    keys[size] = key
    cache_items[state, RESERVE_HEAD] = size + 1


@jit(inline=True)
def remove_from_reserve_nb(cache_items: np.ndarray, state: int, at: int) -> None:
    """Remove the reserve's entry at ``at`` (the last entry takes its place)."""
    size = cache_items[state, RESERVE_HEAD] - 1
    items, keys = reserve_of_nb(cache_items, state)
    items[at] = items[size]
    keys[at] = keys[size]
    cache_items[state, RESERVE_HEAD] = size


@jit(inline=True)
def rank_after_members_nb(
    cache_items: np.ndarray,
    state: int,
    size: int,
    labels: np.ndarray,
    keys: np.ndarray,
    count: int,
) -> int:
    """Rank ``count`` products (``labels``, values ``keys``, all below every member) into the
    row after its ``size`` members; returns the new member count.

    Each one's rank is the number of them ahead of it (one flat vector count each), so
    ``keys`` is padded with ``-inf`` to a multiple of 8 (it needs that room).
    """
    padded = -(-count // LANES) * LANES
    for k in range(count, padded):
        keys[k] = -np.inf
    members = cache_items[state, :CACHE_SLOTS]
    cached = cache_items[state, CACHE_SLOTS : 2 * CACHE_SLOTS].view(np.float64)
    for k in range(count):
        at = size + count_ahead_nb(keys, labels, padded, keys[k], labels[k])
        members[at] = labels[k]
        cached[at] = keys[k]
    return size + count


@jit(inline=True)
def refill_members_nb(
    cache_floor: np.ndarray,
    cache_size: np.ndarray,
    cache_items: np.ndarray,
    state: int,
    n: int,
    frontier: np.ndarray,
) -> int:
    """Rank the best of the reserve after the members until at least ``n`` are listed or the
    reserve is empty (no tree read); returns the members, -1 if the row must be rebuilt.

    Each round moves the entries at or above a sampled threshold reached by at most
    :data:`FILL_TARGET` of them (ties move together), and the floor falls to it (to the
    reserve's floor once the reserve is empty). ``frontier`` rows 0 and 2 are scratch.
    """
    size = cache_size[state]
    rsize = cache_items[state, RESERVE_HEAD]
    items, keys = reserve_of_nb(cache_items, state)
    labels = frontier[0]
    moved_keys = frontier[2].view(np.float64)
    while size < n and rsize > 0:
        threshold = pick_threshold_nb(keys, rsize, min(FILL_TARGET, CACHE_SLOTS - size))
        if threshold == np.inf:
            cache_size[state] = -1
            return -1
        moved = 0
        kept = 0
        for k in range(rsize):
            product = items[k]
            key = keys[k]
            # both sides are written, each position advances by its side's test
            labels[moved] = product
            moved_keys[moved] = key
            items[kept] = product
            keys[kept] = key
            up = key >= threshold
            moved += up
            kept += 1 - up
        rsize = kept
        size = rank_after_members_nb(cache_items, state, size, labels, moved_keys, moved)
        cache_floor[state] = threshold if rsize > 0 else reserve_floor_nb(cache_items, state)
    cache_items[state, RESERVE_HEAD] = rsize
    cache_size[state] = size
    return size
