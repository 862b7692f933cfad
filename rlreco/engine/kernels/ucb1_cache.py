"""Exact UCB1 slates from the tried products grouped by count (a k-way merge of the groups).

Definition (the full scan of ``kernels/policy.py``): untried products first (see
:mod:`~rlreco.engine.kernels.untried_set`), then the ``need = n - first`` largest keys
``key_p = value_p + c * sqrt(ln N / k_p)`` over the tried products (``k_p = reco_count >= 1``,
``N`` the recommendations made in the state, ``ln N`` computed as ``log(max(N, 1))``), ties by
lower product id.

The bonus depends on the count alone, so the products of one count (a *group*) rank by value
in every visit: with ``b = c * sqrt(ln N / k)`` computed once per group (the definition's
expression, so the same float), ``v + b`` is non-decreasing in ``v`` under rounding. The
*row order* is (value descending, product id ascending). Each state's row
(:class:`Ucb1Cache`) holds its tried products by group, groups by count descending, and a
table of its groups: count, first entry, the length of its *block* and the value of its first
entry (the *head*). A group's block is its first entries: the group's best ``h >= 1`` entries
in row order; the rest of the group follows in no order, every one of them after the block's
last in row order. A visit

1. computes each group's ``b`` and head key (one flat loop over the group table);
2. ranks the heads into the top ``need`` (keys and items ``(product << ENTRY_BITS) |
   entry``);
3. walks down the block of every group whose head key is at least the ``need``-th best key,
   inserting entries until one falls below it (a group's later entries have no larger key);
   a walk that reaches the end of a block with its last key still at or above the cut (or
   fewer than ``need`` keys ranked) first extends the block by the best ``block_max`` of the
   rest (:func:`extend_block_nb`: a quickselect over the rest), then goes on.

An entry it never computes has a key below the final ``need``-th best, so the slate is the
definition's, with ties by product id (an entry whose key equals the cut is always ranked:
rounding can give two values of a group the same key, in either product order; within a run
of equal values a rejected tie rejects the rest of the run, which has larger ids). Cost: one
key per group (about 45-65 on the real state space) plus the few entries near the cut.

After a visit (``update_ucb1_nb``, in :mod:`~rlreco.engine.kernels.ucb1_update`) only the
slate products changed: each product the merge placed (always a block entry) moves from its
group (count ``k``) to the group of ``k + 1``, which comes just before it in the row, and an
untried product enters the group of count 1, the last one. The group a product enters grows by
its last slot; it goes there (the rest) unless it comes before the block's last, when the
block makes room for it in order (its last entry may drop to the rest: a block holds at most
``block_max``). Both are ``O(block_max)``, where a fully sorted group shifted every entry
between the new and the old place (hundreds to thousands under the ``seed`` response, whose
values are close). A block that empties is refilled by :func:`extend_block_nb`.
The row is a function of the tables up to the order of each group's rest (built on first use
from the catalogue; nothing is persisted): the slates are the definition's whatever that order.

The per-visit kernels take the bundles, so they are called, not inlined into the visit loop
(inlined, their writes through the bundles were lost in the loop compiled without reference
counting), and compiled without reference counting themselves (a call would otherwise update
the count of every array in the bundles).

Memory per state: ``K`` entries x 12 bytes and ``K`` groups x 24 bytes (``K`` the largest
catalogue: 120 KiB at 3,423; 71 MB for 576 states), of which a visit reads the group table
and the entries near the cut.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from rlreco.engine.kernels.jit import jit
from rlreco.engine.kernels.prefetch import prefetch_nb
from rlreco.engine.kernels.ranking import insert_ranked_nb
from rlreco.engine.kernels.untried_set import Untried, draw_untried_nb

#: Bits of an entry index in a ranked item ``(product << ENTRY_BITS) | entry``.
ENTRY_BITS = 32
ENTRY_MASK = (1 << ENTRY_BITS) - 1
#: Group table entries hinted at the start of a visit (a visit reads the whole table).
PREFETCH_GROUPS = 128
#: A row entry: 12 bytes, so an entry's value and product share a cache line (mostly).
ENTRY_DTYPE = np.dtype([("value", np.float64), ("product", np.int32)])
#: Default longest block (:attr:`Ucb1Cache.block_max`).
BLOCK_MAX = 64


class Ucb1Cache(NamedTuple):
    """Per-state rows of tried products grouped by count (module docstring).

    Attributes
    ----------
    entry : ndarray of ENTRY_DTYPE, shape (n_states, K)
        Entries: value (as in the value table) and product id, side by side (a visit reads
        both of the few it touches), first ``size`` used, by group (count descending); each
        group its block in row order, then its rest.
    tries : ndarray of float64, shape (n_states, K)
        Count ``k`` of each group (descending; a float for the vectorised bonus loop: exact).
    start : ndarray of int32, shape (n_states, K)
        First entry of each group (a group ends where the next starts, the last at ``size``).
    block : ndarray of int32, shape (n_states, K)
        Length of each group's block (at least 1 between visits; at most ``block_max`` after
        an update, twice that after an extension).
    head : ndarray of float64, shape (n_states, K)
        Value of each group's first entry.
    size : ndarray of int64, shape (n_states,)
        Entries (tried catalogue products); -1 while the row is not built.
    groups : ndarray of int64, shape (n_states,)
        Groups (distinct counts).
    block_max : int
        Longest block kept by an update (an entry entering a block shifts at most this many),
        and the entries an extension adds (one pass over a rest serves this many moves).
    """

    entry: np.ndarray
    tries: np.ndarray
    start: np.ndarray
    block: np.ndarray
    head: np.ndarray
    size: np.ndarray
    groups: np.ndarray
    block_max: int


class Ucb1Work(NamedTuple):
    """Per-call workspace of the UCB1 kernels (``K`` the largest catalogue).

    Attributes
    ----------
    top_key, top_product : ndarray of float64 / int64, shape (n + 1,)
        The ranked keys and items ``(product << ENTRY_BITS) | entry``.
    member : ndarray of int64, shape (n,)
        Entry of each slate slot (-1: an untried product), from the choose call for the update.
    swap_position, swap_product : ndarray of int64, shape (n,)
    key, bonus : ndarray of float64, shape (K,)
        Each group's head key and bonus in this visit.
    order, merged : ndarray of int64, shape (K,)
        Sort scratch of a build (``order[:n]``: the moves of an update).
    tries : ndarray of int64, shape (K,)
    value : ndarray of float64, shape (K,)
    product : ndarray of int64, shape (K,)
        The tried products of a build.
    """

    top_key: np.ndarray
    top_product: np.ndarray
    member: np.ndarray
    swap_position: np.ndarray
    swap_product: np.ndarray
    key: np.ndarray
    bonus: np.ndarray
    order: np.ndarray
    merged: np.ndarray
    tries: np.ndarray
    value: np.ndarray
    product: np.ndarray


def new_ucb1_cache(n_states: int, max_catalogue: int, block_max: int = BLOCK_MAX) -> Ucb1Cache:
    """Rows for catalogues of up to ``max_catalogue`` products, every row unbuilt (built on
    first use); blocks of up to ``block_max >= 1`` entries (tests use short ones)."""
    width = max(max_catalogue, 1)
    return Ucb1Cache(
        entry=np.zeros((n_states, width), dtype=ENTRY_DTYPE),
        tries=np.ones((n_states, width), dtype=np.float64),
        start=np.zeros((n_states, width), dtype=np.int32),
        block=np.zeros((n_states, width), dtype=np.int32),
        head=np.zeros((n_states, width), dtype=np.float64),
        size=np.full(n_states, -1, dtype=np.int64),
        groups=np.zeros(n_states, dtype=np.int64),
        block_max=block_max,
    )


def new_ucb1_work(slate_size: int, max_catalogue: int) -> Ucb1Work:
    """Workspace for slates of ``slate_size`` and catalogues of up to ``max_catalogue``."""
    width = max(max_catalogue, slate_size, 1)
    return Ucb1Work(
        top_key=np.empty(slate_size + 1, dtype=np.float64),
        top_product=np.empty(slate_size + 1, dtype=np.int64),
        member=np.full(slate_size, -1, dtype=np.int64),
        swap_position=np.empty(slate_size, dtype=np.int64),
        swap_product=np.empty(slate_size, dtype=np.int64),
        key=np.empty(width, dtype=np.float64),
        bonus=np.empty(width, dtype=np.float64),
        order=np.empty(width, dtype=np.int64),
        merged=np.empty(width, dtype=np.int64),
        tries=np.empty(width, dtype=np.int64),
        value=np.empty(width, dtype=np.float64),
        product=np.empty(width, dtype=np.int64),
    )


@jit(inline=True)
def comes_before_nb(value_a: float, product_a: int, value_b: float, product_b: int) -> bool:
    """Whether entry ``a`` precedes ``b`` in row order: larger value, then lower product id."""
    return value_a > value_b or (value_a == value_b and product_a < product_b)


@jit()
def build_ucb1_row_nb(
    value: np.ndarray,
    cells: np.ndarray,
    state: int,
    catalogue: np.ndarray,
    cache: Ucb1Cache,
    work: Ucb1Work,
) -> None:
    """Build one state's row from the tables (a bottom-up merge sort of its tried products by
    count, then row order: every group sorted, its block its first ``block_max`` entries).

    Parameters
    ----------
    value : ndarray of float64, shape (n_states, width)
    cells : ndarray of CELL_DTYPE, shape (n_states, width)
    state : int
    catalogue : ndarray of int32, shape (K,)
        The state's segment catalogue.
    cache : Ucb1Cache
        Row ``state`` overwritten.
    work : Ucb1Work
    """
    tried = 0
    for k in range(catalogue.shape[0]):
        product = catalogue[k]
        count = cells[state, product].reco_count
        if count > 0:
            work.tries[tried] = count
            work.value[tried] = value[state, product]
            work.product[tried] = product
            work.order[tried] = tried
            tried += 1
    source, target = work.order, work.merged
    run = 1
    while run < tried:
        for lo in range(0, tried, 2 * run):
            mid = min(lo + run, tried)
            hi = min(lo + 2 * run, tried)
            i, j = lo, mid
            for out in range(lo, hi):
                take_left = i < mid
                if take_left and j < hi:
                    a, b = source[i], source[j]
                    # b before a: a larger count, or the same count and b first in row order
                    take_left = not (
                        work.tries[b] > work.tries[a]
                        or (
                            work.tries[b] == work.tries[a]
                            and comes_before_nb(
                                work.value[b], work.product[b], work.value[a], work.product[a]
                            )
                        )
                    )
                if take_left:
                    target[out] = source[i]
                    i += 1
                else:
                    target[out] = source[j]
                    j += 1
        source, target = target, source
        run *= 2
    groups = 0
    previous = -1
    for e in range(tried):
        i = source[e]
        cache.entry[state, e].value = work.value[i]
        cache.entry[state, e].product = work.product[i]
        if work.tries[i] != previous:
            previous = work.tries[i]
            cache.tries[state, groups] = previous
            cache.start[state, groups] = e
            cache.head[state, groups] = work.value[i]
            groups += 1
    for g in range(groups):
        end = cache.start[state, g + 1] if g + 1 < groups else tried
        cache.block[state, g] = min(end - cache.start[state, g], cache.block_max)
    cache.size[state] = tried
    cache.groups[state] = groups


@jit(inline=True)
def group_end_nb(cache: Ucb1Cache, state: int, g: int, groups: int) -> int:
    """One past the last entry of group ``g``."""
    return cache.start[state, g + 1] if g + 1 < groups else cache.size[state]


@jit(inline=True)
def swap_entries_nb(row: np.ndarray, i: int, j: int) -> None:
    """Swap entries ``i`` and ``j`` of a row (ENTRY_DTYPE, shape (K,))."""
    v = row[i].value
    p = row[i].product
    row[i] = row[j]  # a record copy
    row[j].value = v
    row[j].product = p


@jit(inline=True)
def extend_block_nb(cache: Ucb1Cache, state: int, g: int, end: int) -> None:
    """Append the best ``block_max`` entries of group ``g``'s rest (``end`` one past the
    group) to its block, in row order: a quickselect moves them to the head of the rest
    (about two passes over it), an insertion sort orders them."""
    first = cache.start[state, g] + cache.block[state, g]
    m = min(cache.block_max, end - first)
    if m <= 0:
        return
    row = cache.entry[state]
    stop = first + m
    lo = first
    hi = end - 1
    while lo < hi and stop <= hi:
        # median of three in row order as the pivot; Hoare partition (products are distinct,
        # so the order is strict and the pivot stops both scans)
        mid = (lo + hi) >> 1
        if comes_before_nb(row[mid].value, row[mid].product, row[lo].value, row[lo].product):
            swap_entries_nb(row, lo, mid)
        if comes_before_nb(row[hi].value, row[hi].product, row[lo].value, row[lo].product):
            swap_entries_nb(row, lo, hi)
        if comes_before_nb(row[hi].value, row[hi].product, row[mid].value, row[mid].product):
            swap_entries_nb(row, mid, hi)
        pivot_value = row[mid].value
        pivot_product = row[mid].product
        i = lo
        j = hi
        while i <= j:
            while comes_before_nb(row[i].value, row[i].product, pivot_value, pivot_product):
                i += 1
            while comes_before_nb(pivot_value, pivot_product, row[j].value, row[j].product):
                j -= 1
            if i <= j:
                swap_entries_nb(row, i, j)
                i += 1
                j -= 1
        # entries lo..j come before i..hi: keep the side holding the cut at stop
        if stop - 1 <= j:
            hi = j
        elif stop > i:
            lo = i
        else:
            break
    for i in range(first + 1, stop):
        v = row[i].value
        p = row[i].product
        j = i
        while j > first and comes_before_nb(v, p, row[j - 1].value, row[j - 1].product):
            row[j] = row[j - 1]
            j -= 1
        row[j].value = v
        row[j].product = p
    cache.block[state, g] += m
    cache.head[state, g] = row[cache.start[state, g]].value


@jit(inline=True)
def rank_groups_nb(
    cache: Ucb1Cache, state: int, c: float, log_shown: float, need: int, work: Ucb1Work
) -> int:
    """Rank the ``need`` largest keys of the row into ``work.top_key/top_product`` (the
    merge of the module docstring); returns how many (``need`` unless fewer are tried)."""
    groups = cache.groups[state]
    tries = cache.tries[state]
    head = cache.head[state]
    start = cache.start[state]
    block = cache.block[state]
    row = cache.entry[state]
    key = work.key
    bonus = work.bonus
    top_key = work.top_key
    top_product = work.top_product
    for g in range(groups):
        b = c * np.sqrt(log_shown / tries[g])
        bonus[g] = b
        key[g] = head[g] + b
    found = 0
    for g in range(groups):
        if found < need or key[g] >= top_key[need - 1]:
            s = start[g]
            found = insert_ranked_nb(
                key[g], (int(row[s].product) << ENTRY_BITS) | s, top_key, top_product, found,
                need,
            )  # fmt: skip
    # a group whose head key is below the cut has no entry above it
    for g in range(groups):
        if found == need and key[g] < top_key[need - 1]:
            continue
        b = bonus[g]
        end = group_end_nb(cache, state, g, groups)
        if g > 0:
            # an entry placed from this group enters the one before at its block's end
            prefetch_nb(cache.entry, state, start[g - 1] + max(block[g - 1] - 1, 0))
        i = start[g] + 1
        while i < end:
            if i == start[g] + block[g]:
                # past the block: the rest has no key above its last one
                if found == need and row[i - 1].value + b < top_key[need - 1]:
                    break
                extend_block_nb(cache, state, g, end)
            k = row[i].value + b
            item = (int(row[i].product) << ENTRY_BITS) | i
            if found == need and (
                k < top_key[need - 1] or (k == top_key[need - 1] and item > top_product[need - 1])
            ):
                if k < top_key[need - 1]:
                    break
                # a rejected tie: the rest of its run of equal values has larger ids
                v = row[i].value
                while i + 1 < start[g] + block[g] and row[i + 1].value == v:
                    i += 1
            else:
                found = insert_ranked_nb(k, item, top_key, top_product, found, need)
            i += 1
    return found


@jit(refcount=False)
def choose_ucb1_slate_nb(
    rng: np.random.Generator,
    untried: Untried,
    cache: Ucb1Cache,
    value: np.ndarray,
    cells: np.ndarray,
    state: int,
    catalogue: np.ndarray,
    c: float,
    shown: int,
    slate: np.ndarray,
    work: Ucb1Work,
) -> int:
    """UCB1 slate, untried products first (module docstring); same draws as the full scan.

    Parameters
    ----------
    rng : numpy.random.Generator
    untried : Untried
        Read only.
    cache : Ucb1Cache
        The state's row is built on first use; a block may be extended.
    value : ndarray of float64, shape (n_states, width)
    cells : ndarray of CELL_DTYPE, shape (n_states, width)
    state : int
    catalogue : ndarray of int32, shape (K,)
        The state's segment catalogue, ``K >= n``.
    c : float
        Exploration weight (>= 0).
    shown : int
        ``N``: recommendations made in the state so far.
    slate : ndarray of int64, shape (n,)
        Output.
    work : Ucb1Work

    Returns
    -------
    int
        Explored slots: the untried products placed (``min(m, n)``).
    """
    n = slate.shape[0]
    # the merge reads the whole group table: its misses overlap the untried draws
    for g in range(0, min(PREFETCH_GROUPS, cache.tries.shape[1]), 8):
        prefetch_nb(cache.tries, state, g)
        prefetch_nb(cache.head, state, g)
    for g in range(0, min(PREFETCH_GROUPS, cache.start.shape[1]), 16):
        prefetch_nb(cache.start, state, g)
        prefetch_nb(cache.block, state, g)
    first = draw_untried_nb(rng, untried, state, slate, work.swap_position, work.swap_product)
    for i in range(n):
        work.member[i] = -1
    need = n - first
    if need == 0:
        return first
    if cache.size[state] < 0:
        build_ucb1_row_nb(value, cells, state, catalogue, cache, work)
    # the walks read the head of many groups: their misses overlap instead of one by one
    for g in range(cache.groups[state]):
        prefetch_nb(cache.entry, state, cache.start[state, g])
    rank_groups_nb(cache, state, c, np.log(max(shown, 1)), need, work)
    for i in range(need):
        item = work.top_product[i]
        slate[first + i] = item >> ENTRY_BITS
        work.member[first + i] = item & ENTRY_MASK
    return first
