"""Catalogue products grouped by recommendation count, and the exact UCB1 slate over them.

Structure (:class:`CountGroups`, one row per state)
    The state's segment catalogue lives in ``K`` *slots* ordered by ``reco_count`` ascending:
    each distinct count is one *group*, a contiguous slot range; the order inside a group is
    arbitrary (it is the history of the moves below, a deterministic function of the visits).
    ``slot_mean`` holds the product's value (``0.0`` while unknown), ``slot_count`` its
    ``reco_count``, and ``node_max`` an 8-ary max tree over ``slot_mean`` (empty slots past
    ``K`` are ``-inf``), so the best mean of any slot range is found in ``O(8 log8 K)``.
    A group directory (``group_count``, ``group_start``, ``group_head`` = the group's best
    mean, ``n_groups``) lists the groups by count.

    Counts only grow. A product whose count rises moves one group up by swapping it with the
    last slot of its group and moving the boundary (``O(1)`` swaps per group crossed, two
    tree paths repaired per swap); a new count opens a one-slot group right after the old one,
    an emptied group is dropped from the directory (``O(D)``, ``D`` distinct counts). Group
    heads are kept exact: a leaving head is recomputed by a range max over its group.

``ucb1`` (parameter ``c``), same slates and draws as the full-scan definition
    Untried products (``reco_count == 0``) come first, in the order of the definition's partial
    Fisher-Yates over the untried products in catalogue (= product id) order: step ``i``
    picks list position ``j = i + below(m - i)`` and swaps ``i`` and ``j``. The list is never
    materialised: position ``p`` of the untouched list is the ``p``-th untried product
    (found from per-word bit counts of a bitmask over product ids, then within the word),
    and the at most ``n`` positions ``j`` the swaps wrote are looked up first (position ``i``
    is never read again); an entry moved by a swap stays a reference to its untouched
    position until it reaches the slate.
    The remaining ``n - first`` slots take the largest ``value + c * sqrt(ln N_s / k)`` over
    the tried products (``k = reco_count >= 1``). The bonus depends only on ``k``, so within
    a group the ranking is by value: pass 1 computes every tried group's head key (``O(D)``)
    and keeps the ``need``-th best as a floor ``T0`` (``need`` distinct products reach it, so
    the answer's last key is ``>= T0``); pass 2 is a best-first search over (tree node,
    group) pairs, from each group whose head key is ``>= T0``, scored by ``fl(node max +
    bonus)``: it ranks members until ``need`` are ranked and no remaining score reaches the
    last of them. Keys are computed with the definition's expression, and rounding is
    monotone, so a node's ``fl(max + bonus)`` bounds its members' keys: the ranking (ties:
    lower product id) is exactly the full scan's.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from rlreco.engine.kernels.jit import jit

#: Children per node of the max tree.
FANOUT = 8
FANOUT_BITS = 3


class CountGroups(NamedTuple):
    """Per-state count groups (module docstring); ``L = 8**depth >= K_max`` slots.

    Attributes
    ----------
    slot_mean : ndarray of float64, shape (n_states, L)
        Value of the slot's product (0.0 while unknown); ``-inf`` past the catalogue.
    slot_count : ndarray of int64, shape (n_states, L)
        ``reco_count`` of the slot's product, ascending; ``2**62`` past the catalogue.
    slot_product : ndarray of int32, shape (n_states, L)
        Product id of each slot; -1 past the catalogue.
    product_slot : ndarray of int32, shape (n_states, width)
        Slot of each catalogue product; -1 for products outside the state's catalogue.
    node_max : ndarray of float64, shape (n_states, (L - 1) // 7)
        8-ary max tree over ``slot_mean``: level ``l`` (``8**l`` nodes) starts at
        ``(8**l - 1) // 7``; node ``j`` of the last level covers slots ``8j .. 8j+7``.
    group_count : ndarray of int64, shape (n_states, K_max + 1)
        ``reco_count`` of each group, ascending (one spare entry: a move opens its new group
        before it drops an emptied one).
    group_start : ndarray of int64, shape (n_states, K_max + 2)
        Group ``g`` spans slots ``group_start[g] .. group_start[g+1] - 1``;
        ``group_start[n_groups] == K``.
    group_head : ndarray of float64, shape (n_states, K_max + 1)
        Best ``slot_mean`` of each group.
    n_groups : ndarray of int64, shape (n_states,)
    """

    slot_mean: np.ndarray
    slot_count: np.ndarray
    slot_product: np.ndarray
    product_slot: np.ndarray
    node_max: np.ndarray
    group_count: np.ndarray
    group_start: np.ndarray
    group_head: np.ndarray
    n_groups: np.ndarray


class Untried(NamedTuple):
    """Per-state untried catalogue products of UCB1 (module docstring).

    Attributes
    ----------
    mask : ndarray of uint64, shape (n_states, ceil(width / 64))
        Bit ``p % 64`` of word ``p // 64`` is set if product ``p`` is an untried product of
        the state's catalogue.
    word_count : ndarray of int64, shape (n_states, ceil(width / 64))
        Set bits per word.
    size : ndarray of int64, shape (n_states,)
        Untried catalogue products per state.
    """

    mask: np.ndarray
    word_count: np.ndarray
    size: np.ndarray


#: Count of the empty slots past the catalogue (above every real count).
EMPTY_COUNT = 1 << 62


def count_groups_depth(max_catalogue: int) -> int:
    """Levels of the max tree for catalogues of up to ``max_catalogue`` products."""
    depth = 1
    while FANOUT**depth < max_catalogue:
        depth += 1
    return depth


def new_count_groups(n_states: int, width: int, max_catalogue: int) -> CountGroups:
    """Allocate (uninitialised) count groups; fill them with :func:`build_count_groups_nb`."""
    slots = FANOUT ** count_groups_depth(max_catalogue)
    return CountGroups(
        slot_mean=np.empty((n_states, slots), dtype=np.float64),
        slot_count=np.empty((n_states, slots), dtype=np.int64),
        slot_product=np.empty((n_states, slots), dtype=np.int32),
        product_slot=np.empty((n_states, width), dtype=np.int32),
        node_max=np.empty((n_states, (slots - 1) // (FANOUT - 1)), dtype=np.float64),
        group_count=np.empty((n_states, max_catalogue + 1), dtype=np.int64),
        group_start=np.empty((n_states, max_catalogue + 2), dtype=np.int64),
        group_head=np.empty((n_states, max_catalogue + 1), dtype=np.float64),
        n_groups=np.empty(n_states, dtype=np.int64),
    )


def new_untried(n_states: int, width: int) -> Untried:
    """Allocate (uninitialised) untried sets; fill them with :func:`build_untried_nb`."""
    words = -(-width // 64)
    return Untried(
        mask=np.empty((n_states, words), dtype=np.uint64),
        word_count=np.empty((n_states, words), dtype=np.int64),
        size=np.empty(n_states, dtype=np.int64),
    )


def ucb1_workspace(slate_size: int, max_catalogue: int) -> tuple[np.ndarray, ...]:
    """Per-visit workspace of :func:`choose_ucb1_slate_nb`.

    Returns ``(top_key, top_product, head_key, swap_position, swap_product, heap_score,
    heap_item)``; the heap holds at most one (node, group) pair per tree node, plus one per
    group boundary and level.
    """
    depth = count_groups_depth(max_catalogue)
    nodes = (FANOUT**depth - 1) // (FANOUT - 1)
    capacity = FANOUT * (nodes + (max_catalogue + 1) * (depth + 1))
    return (
        np.empty(slate_size + 1, dtype=np.float64),
        np.empty(slate_size + 1, dtype=np.int64),
        np.empty(slate_size + 1, dtype=np.float64),
        np.empty(slate_size, dtype=np.int64),
        np.empty(slate_size, dtype=np.int64),
        np.empty(capacity, dtype=np.float64),
        np.empty(capacity, dtype=np.int64),
    )


@jit(inline=True)
def mean_of_nb(value: float) -> float:
    """Slot mean of a value: the value, or 0.0 while unknown (``-inf``)."""
    return 0.0 if value == -np.inf else value


@jit(inline=True)
def depth_of_nb(groups: CountGroups) -> int:
    """Levels of the max tree."""
    slots = groups.slot_mean.shape[1]
    depth = 0
    while (1 << (FANOUT_BITS * depth)) < slots:
        depth += 1
    return max(depth, 1)


@jit(inline=True)
def repair_slot_nb(groups: CountGroups, state: int, slot: int, depth: int) -> None:
    """Recompute the max-tree path above one slot."""
    tree = groups.node_max
    j = slot >> FANOUT_BITS
    start = ((1 << (FANOUT_BITS * (depth - 1))) - 1) // (FANOUT - 1)
    best = -np.inf
    for c in range(j << FANOUT_BITS, (j + 1) << FANOUT_BITS):
        best = max(best, groups.slot_mean[state, c])
    tree[state, start + j] = best
    for level in range(depth - 2, -1, -1):
        child_start = start
        start = ((1 << (FANOUT_BITS * level)) - 1) // (FANOUT - 1)
        j >>= FANOUT_BITS
        best = -np.inf
        for c in range(child_start + (j << FANOUT_BITS), child_start + ((j + 1) << FANOUT_BITS)):
            best = max(best, tree[state, c])
        tree[state, start + j] = best


@jit(inline=True)
def range_max_nb(groups: CountGroups, state: int, first: int, stop: int, depth: int) -> float:
    """Best ``slot_mean`` over slots ``first .. stop - 1`` (aligned blocks of the tree)."""
    best = -np.inf
    slot = first
    while slot < stop:
        # the largest aligned block starting at ``slot`` that fits in the range
        level = depth
        size = 1
        while (
            level > 0 and slot % (size << FANOUT_BITS) == 0 and slot + (size << FANOUT_BITS) <= stop
        ):
            size <<= FANOUT_BITS
            level -= 1
        if level == depth:
            best = max(best, groups.slot_mean[state, slot])
        else:
            start = ((1 << (FANOUT_BITS * level)) - 1) // (FANOUT - 1)
            best = max(best, groups.node_max[state, start + slot // size])
        slot += size
    return best


@jit(inline=True)
def swap_slots_nb(groups: CountGroups, state: int, a: int, b: int) -> None:
    """Exchange the contents of two slots (tree not repaired)."""
    if a == b:
        return
    pa = groups.slot_product[state, a]
    pb = groups.slot_product[state, b]
    groups.slot_product[state, a] = pb
    groups.slot_product[state, b] = pa
    groups.product_slot[state, pb] = a
    groups.product_slot[state, pa] = b
    ma = groups.slot_mean[state, a]
    groups.slot_mean[state, a] = groups.slot_mean[state, b]
    groups.slot_mean[state, b] = ma
    ca = groups.slot_count[state, a]
    groups.slot_count[state, a] = groups.slot_count[state, b]
    groups.slot_count[state, b] = ca


@jit(inline=True)
def find_group_nb(groups: CountGroups, state: int, slot: int) -> int:
    """Index of the group holding ``slot`` (binary search of ``group_start``)."""
    lo = 0
    hi = groups.n_groups[state] - 1
    while lo < hi:
        mid = (lo + hi + 1) >> 1
        if groups.group_start[state, mid] <= slot:
            lo = mid
        else:
            hi = mid - 1
    return lo


@jit(inline=True)
def open_group_nb(groups: CountGroups, state: int, g: int, count: int, start: int) -> None:
    """Insert a group of ``count`` at directory index ``g`` starting at slot ``start``."""
    n_groups = groups.n_groups[state]
    groups.group_start[state, n_groups + 1] = groups.group_start[state, n_groups]
    for h in range(n_groups, g, -1):
        groups.group_count[state, h] = groups.group_count[state, h - 1]
        groups.group_start[state, h] = groups.group_start[state, h - 1]
        groups.group_head[state, h] = groups.group_head[state, h - 1]
    groups.group_count[state, g] = count
    groups.group_start[state, g] = start
    groups.group_head[state, g] = -np.inf
    groups.n_groups[state] = n_groups + 1


@jit(inline=True)
def close_group_nb(groups: CountGroups, state: int, g: int) -> None:
    """Drop the (empty) group at directory index ``g``."""
    n_groups = groups.n_groups[state] - 1
    for h in range(g, n_groups):
        groups.group_count[state, h] = groups.group_count[state, h + 1]
        groups.group_start[state, h] = groups.group_start[state, h + 1]
        groups.group_head[state, h] = groups.group_head[state, h + 1]
    groups.group_start[state, n_groups] = groups.group_start[state, n_groups + 1]
    groups.n_groups[state] = n_groups


@jit()
def move_product_nb(
    groups: CountGroups, state: int, product: int, count: int, mean: float, depth: int
) -> None:
    """Give a catalogue product a new count (``>=`` its current one) and mean, in place.

    Parameters
    ----------
    groups : CountGroups
    state : int
    product : int
        A product of the state's catalogue.
    count : int
        Its new ``reco_count``, not below the current one.
    mean : float
        Its new slot mean (value, 0.0 while unknown).
    depth : int
        Levels of the max tree.
    """
    slot = groups.product_slot[state, product]
    g = find_group_nb(groups, state, slot)
    old_mean = groups.slot_mean[state, slot]
    groups.slot_mean[state, slot] = mean
    repair_slot_nb(groups, state, slot, depth)
    if groups.group_count[state, g] == count:
        if mean >= groups.group_head[state, g]:
            groups.group_head[state, g] = mean
        elif old_mean == groups.group_head[state, g]:
            groups.group_head[state, g] = range_max_nb(
                groups, state, groups.group_start[state, g], groups.group_start[state, g + 1], depth
            )
        return
    origin = g
    while groups.group_count[state, g] != count:
        # to the last slot of group g, then across its boundary into the next group
        last = groups.group_start[state, g + 1] - 1
        if slot != last:
            swap_slots_nb(groups, state, slot, last)
            repair_slot_nb(groups, state, slot, depth)
            repair_slot_nb(groups, state, last, depth)
            slot = last
        following = g + 1
        if following < groups.n_groups[state] and groups.group_count[state, following] <= count:
            groups.group_start[state, following] = slot
        else:
            open_group_nb(groups, state, following, count, slot)
        # only the group left first can empty (a group passed through keeps its members)
        if groups.group_start[state, g] == groups.group_start[state, g + 1]:
            close_group_nb(groups, state, g)
            following = g
            origin = -1
        g = following
    groups.slot_count[state, slot] = count
    if origin >= 0 and old_mean == groups.group_head[state, origin]:
        groups.group_head[state, origin] = range_max_nb(
            groups,
            state,
            groups.group_start[state, origin],
            groups.group_start[state, origin + 1],
            depth,
        )
    groups.group_head[state, g] = max(groups.group_head[state, g], mean)


@jit()
def build_count_groups_nb(
    value: np.ndarray,
    cells: np.ndarray,
    catalogue_ptr: np.ndarray,
    catalogue_items: np.ndarray,
    state_segment: np.ndarray,
    groups: CountGroups,
) -> None:
    """Fill every state's count groups from the tables (slots by count, then product id).

    Parameters
    ----------
    value : ndarray of float64, shape (n_states, width)
        Cell values, ``-inf`` = unknown; ``width >= n_products``.
    cells : ndarray of CELL_DTYPE, shape (n_states, width)
    catalogue_ptr : ndarray of int64, shape (n_segments + 1,)
    catalogue_items : ndarray of int32, shape (nnz,)
        CSR segment catalogues, sorted product ids.
    state_segment : ndarray of int16, shape (n_states,)
    groups : CountGroups
        Output (allocated by :func:`new_count_groups`).
    """
    depth = depth_of_nb(groups)
    slots = groups.slot_mean.shape[1]
    for state in range(value.shape[0]):
        segment = state_segment[state]
        first = catalogue_ptr[segment]
        size = catalogue_ptr[segment + 1] - first
        counts = np.empty(size, dtype=np.int64)
        for k in range(size):
            counts[k] = cells[state, catalogue_items[first + k]].reco_count
        order = np.argsort(counts, kind="mergesort")
        groups.product_slot[state, :] = -1
        n_groups = 0
        for slot in range(slots):
            if slot < size:
                product = catalogue_items[first + order[slot]]
                count = counts[order[slot]]
                mean = mean_of_nb(value[state, product])
                groups.slot_product[state, slot] = product
                groups.product_slot[state, product] = slot
                groups.slot_mean[state, slot] = mean
                groups.slot_count[state, slot] = count
                if n_groups == 0 or groups.group_count[state, n_groups - 1] != count:
                    groups.group_count[state, n_groups] = count
                    groups.group_start[state, n_groups] = slot
                    groups.group_head[state, n_groups] = mean
                    n_groups += 1
                else:
                    groups.group_head[state, n_groups - 1] = max(
                        groups.group_head[state, n_groups - 1], mean
                    )
            else:
                groups.slot_product[state, slot] = -1
                groups.slot_mean[state, slot] = -np.inf
                groups.slot_count[state, slot] = EMPTY_COUNT
        groups.group_start[state, n_groups] = size
        groups.n_groups[state] = n_groups
        for j in range(slots >> FANOUT_BITS):
            repair_slot_nb(groups, state, j << FANOUT_BITS, depth)


@jit()
def build_untried_nb(
    cells: np.ndarray,
    catalogue_ptr: np.ndarray,
    catalogue_items: np.ndarray,
    state_segment: np.ndarray,
    untried: Untried,
) -> None:
    """Fill every state's untried set (catalogue products with ``reco_count == 0``).

    Parameters
    ----------
    cells : ndarray of CELL_DTYPE, shape (n_states, width)
    catalogue_ptr : ndarray of int64, shape (n_segments + 1,)
    catalogue_items : ndarray of int32, shape (nnz,)
    state_segment : ndarray of int16, shape (n_states,)
    untried : Untried
        Output (allocated by :func:`new_untried`).
    """
    one = np.uint64(1)
    for state in range(cells.shape[0]):
        untried.mask[state, :] = 0
        untried.word_count[state, :] = 0
        segment = state_segment[state]
        m = 0
        for k in range(catalogue_ptr[segment], catalogue_ptr[segment + 1]):
            product = catalogue_items[k]
            if cells[state, product].reco_count == 0:
                untried.mask[state, product >> 6] |= one << np.uint64(product & 63)
                untried.word_count[state, product >> 6] += 1
                m += 1
        untried.size[state] = m


#: De Bruijn sequence and table: the index of a word's lowest set bit in one multiply.
DE_BRUIJN = np.uint64(0x03F79D71B4CB0A89)
DE_BRUIJN_INDEX = np.array(
    [
        0, 1, 48, 2, 57, 49, 28, 3, 61, 58, 50, 42, 38, 29, 17, 4,
        62, 55, 59, 36, 53, 51, 43, 22, 45, 39, 33, 30, 24, 18, 12, 5,
        63, 47, 56, 27, 60, 41, 37, 16, 54, 35, 52, 21, 44, 32, 23, 11,
        46, 26, 40, 15, 34, 20, 31, 10, 25, 14, 19, 9, 13, 8, 7, 6,
    ],
    dtype=np.int64,
)  # fmt: skip


@jit(inline=True)
def select_untried_nb(untried: Untried, state: int, rank: int) -> int:
    """The untried product of 0-based ``rank`` in product id order (word counts, then bits)."""
    word = 0
    while rank >= untried.word_count[state, word]:
        rank -= untried.word_count[state, word]
        word += 1
    bits = untried.mask[state, word]
    for _ in range(rank):
        bits &= bits - np.uint64(1)
    lowest = bits & (~bits + np.uint64(1))
    return (word << 6) + DE_BRUIJN_INDEX[(lowest * DE_BRUIJN) >> np.uint64(58)]


@jit(inline=True)
def remove_untried_nb(untried: Untried, state: int, product: int) -> None:
    """Take a product out of the state's untried set."""
    untried.mask[state, product >> 6] &= ~(np.uint64(1) << np.uint64(product & 63))
    untried.word_count[state, product >> 6] -= 1
    untried.size[state] -= 1


@jit(inline=True)
def untried_at_nb(
    position: int, swap_position: np.ndarray, swap_item: np.ndarray, swaps: int
) -> int:
    """Entry at ``position`` of the virtual untried list after the recorded swaps.

    An entry is a product id (``>= 0``) or ``-1 - q``: the product at position ``q`` of the
    untouched list, resolved only if it reaches the slate.
    """
    for t in range(swaps - 1, -1, -1):
        if swap_position[t] == position:
            return swap_item[t]
    return -1 - position


@jit(inline=True)
def push_entry_nb(
    score: float, node: int, group: int, heap_score: np.ndarray, heap_item: np.ndarray, size: int
) -> int:
    """Push ``(score, node, group)`` onto a max-heap by score; returns the new size."""
    item = (node << 24) | group
    i = size
    while i > 0:
        parent = (i - 1) >> 1
        if heap_score[parent] >= score:
            break
        heap_score[i] = heap_score[parent]
        heap_item[i] = heap_item[parent]
        i = parent
    heap_score[i] = score
    heap_item[i] = item
    return size + 1


@jit(inline=True)
def pop_entry_nb(heap_score: np.ndarray, heap_item: np.ndarray, size: int) -> int:
    """Drop the top of the max-heap (read it first); returns the new size."""
    size -= 1
    score = heap_score[size]
    item = heap_item[size]
    i = 0
    while True:
        child = 2 * i + 1
        if child >= size:
            break
        if child + 1 < size and heap_score[child + 1] > heap_score[child]:
            child += 1
        if score >= heap_score[child]:
            break
        heap_score[i] = heap_score[child]
        heap_item[i] = heap_item[child]
        i = child
    heap_score[i] = score
    heap_item[i] = item
    return size


@jit(inline=True)
def rank_tried_nb(
    groups: CountGroups,
    state: int,
    g0: int,
    c: float,
    log_shown: float,
    floor: float,
    need: int,
    top_key: np.ndarray,
    top_product: np.ndarray,
    heap_score: np.ndarray,
    heap_item: np.ndarray,
    depth: int,
) -> int:
    """Rank the ``need`` best tried keys by a best-first search over (node, group) pairs.

    A pair's score is ``fl(node max + bonus)`` (the group's head key for its root), an upper
    bound of its members' keys; the search stops once ``need`` keys are ranked and the best
    remaining score is below the last of them. Returns the number of keys ranked.
    """
    size = 0
    for g in range(g0, groups.n_groups[state]):
        key = groups.group_head[state, g] + c * np.sqrt(log_shown / groups.group_count[state, g])
        if key >= floor:
            size = push_entry_nb(key, 0, g, heap_score, heap_item, size)
    found = 0
    while size > 0:
        bound = heap_score[0]
        item = heap_item[0]
        if found == need and bound < top_key[need - 1]:
            break
        size = pop_entry_nb(heap_score, heap_item, size)
        node = item >> 24
        g = item & ((1 << 24) - 1)
        first = groups.group_start[state, g]
        stop = groups.group_start[state, g + 1]
        bonus = c * np.sqrt(log_shown / groups.group_count[state, g])
        level = 0
        while level + 1 < depth and node >= ((1 << (FANOUT_BITS * (level + 1))) - 1) // (
            FANOUT - 1
        ):
            level += 1
        start = ((1 << (FANOUT_BITS * level)) - 1) // (FANOUT - 1)
        j = node - start
        shift = FANOUT_BITS * (depth - level)
        if level == depth - 1:
            for slot in range(max(j << shift, first), min((j + 1) << shift, stop)):
                key = groups.slot_mean[state, slot] + bonus
                if key >= floor:
                    found = insert_ranked_nb(
                        key, groups.slot_product[state, slot], top_key, top_product, found, need
                    )
            continue
        child_start = ((1 << (FANOUT_BITS * (level + 1))) - 1) // (FANOUT - 1)
        child_shift = shift - FANOUT_BITS
        for child in range(j << FANOUT_BITS, (j + 1) << FANOUT_BITS):
            if (child + 1) << child_shift <= first or child << child_shift >= stop:
                continue
            key = groups.node_max[state, child_start + child] + bonus
            if key >= floor and (found < need or key >= top_key[need - 1]):
                size = push_entry_nb(key, child_start + child, g, heap_score, heap_item, size)
    return found


@jit(inline=True)
def insert_ranked_nb(
    key: float, item: int, keys: np.ndarray, items: np.ndarray, size: int, capacity: int
) -> int:
    """Insert ``(key, item)`` into a list ranked by key descending, ties by lower item.

    A full list drops its last entry (or rejects the new one). Returns the new length.
    """
    if size == capacity:
        last = size - 1
        if key < keys[last] or (key == keys[last] and item > items[last]):
            return size
        position = last
    else:
        position = size
        size += 1
    while position > 0 and (
        key > keys[position - 1] or (key == keys[position - 1] and item < items[position - 1])
    ):
        keys[position] = keys[position - 1]
        items[position] = items[position - 1]
        position -= 1
    keys[position] = key
    items[position] = item
    return size


@jit(inline=True)
def draw_below_nb(rng: np.random.Generator, m: int) -> int:
    """Uniform integer in ``[0, m)`` from one ``rng.random()`` draw (as the visit loop)."""
    return min(int(rng.random() * m), m - 1)


@jit()
def choose_ucb1_slate_nb(
    rng: np.random.Generator,
    groups: CountGroups,
    untried: Untried,
    state: int,
    c: float,
    shown: int,
    slate: np.ndarray,
    top_key: np.ndarray,
    top_product: np.ndarray,
    head_key: np.ndarray,
    swap_position: np.ndarray,
    swap_product: np.ndarray,
    heap_score: np.ndarray,
    heap_item: np.ndarray,
) -> int:
    """UCB1 slate, untried products first (module docstring); same draws as the full scan.

    Parameters
    ----------
    rng : numpy.random.Generator
    groups : CountGroups
        The state's row is read only.
    untried : Untried
        Read only.
    state : int
    c : float
        Exploration weight (>= 0).
    shown : int
        ``N_s``: recommendations made in the state so far.
    slate : ndarray of int64, shape (n,)
        Output.
    top_key, top_product, head_key : ndarray, shape (n + 1,)
        Workspace (float64, int64, float64).
    swap_position, swap_product : ndarray of int64, shape (n,)
        Workspace: the list entries the swaps moved (position ``i`` is never read again).
    heap_score, heap_item : ndarray, shape (see :func:`ucb1_workspace`)
        Workspace (float64, int64): the best-first search's heap.

    Returns
    -------
    int
        Explored slots: the untried products placed (``min(m, n)``).
    """
    n = slate.shape[0]
    m = untried.size[state]
    first = min(m, n)
    # step i records one swap (position i is never read again)
    for i in range(first):
        j = i + draw_below_nb(rng, m - i)
        at_i = untried_at_nb(i, swap_position, swap_product, i)
        at_j = untried_at_nb(j, swap_position, swap_product, i)
        if at_j < 0:
            at_j = select_untried_nb(untried, state, -1 - at_j)
        swap_position[i] = j
        swap_product[i] = at_i
        slate[i] = at_j
    need = n - first
    if need == 0:
        return first
    depth = depth_of_nb(groups)
    log_shown = np.log(max(shown, 1))
    n_groups = groups.n_groups[state]
    g0 = 0
    while g0 < n_groups and groups.group_count[state, g0] == 0:
        g0 += 1
    # pass 1: the need-th best group head key bounds the answer from below
    heads = 0
    for g in range(g0, n_groups):
        key = groups.group_head[state, g] + c * np.sqrt(log_shown / groups.group_count[state, g])
        if heads < need:
            heads = insert_key_nb(key, head_key, heads)
        elif key > head_key[need - 1]:
            heads = insert_key_nb(key, head_key, need - 1)
    floor = head_key[need - 1] if heads == need else -np.inf
    # pass 2: best-first over the groups whose head reaches the floor
    rank_tried_nb(
        groups,
        state,
        g0,
        c,
        log_shown,
        floor,
        need,
        top_key,
        top_product,
        heap_score,
        heap_item,
        depth,
    )
    for i in range(need):
        slate[first + i] = top_product[i]
    return first


@jit(inline=True)
def insert_key_nb(key: float, keys: np.ndarray, size: int) -> int:
    """Insert ``key`` into ``keys[:size]`` ranked descending; returns ``size + 1``."""
    position = size
    while position > 0 and key > keys[position - 1]:
        keys[position] = keys[position - 1]
        position -= 1
    keys[position] = key
    return size + 1


@jit()
def update_ucb1_nb(
    groups: CountGroups,
    untried: Untried,
    value: np.ndarray,
    cells: np.ndarray,
    state: int,
    slate: np.ndarray,
    previous_value: np.ndarray,
) -> None:
    """Bring the state's structures up to date after a visit updated the slate's cells.

    Parameters
    ----------
    groups : CountGroups
        Updated in place.
    untried : Untried
        Updated in place.
    value : ndarray of float64, shape (n_states, width)
        Values after the visit.
    cells : ndarray of CELL_DTYPE, shape (n_states, width)
        Cells after the visit (each slate product's ``reco_count`` grew by one).
    state : int
    slate : ndarray of int64, shape (n,)
        Distinct catalogue products.
    previous_value : ndarray of float64, shape (n,)
        Values before the visit (unused: counts say which products were untried; kept for the
        common update contract).
    """
    depth = depth_of_nb(groups)
    for i in range(slate.shape[0]):
        product = slate[i]
        count = cells[state, product].reco_count
        if count == 1:
            remove_untried_nb(untried, state, product)
        move_product_nb(groups, state, product, count, mean_of_nb(value[state, product]), depth)
