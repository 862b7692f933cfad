"""Exact UCB1 slates from a per-state candidate cache with a horizon.

Definition (the full scan of ``kernels/policy.py``): untried products first (see
:mod:`~rlreco.engine.kernels.untried_set`), then the ``need = n - first`` largest keys
``key_p(N) = value_p + c * sqrt(ln N / k_p)`` over the tried products (``k_p = reco_count >=
1``, ``N`` the recommendations made in the state, ``ln N`` computed as ``log(max(N, 1))``),
ties by lower product id. Same draws, same slates: the cache only decides which keys are
computed, and is rebuilt from the tables alone (nothing is persisted).

Cache (:class:`Ucb1Cache`, one row per state)
    A floor ``F``, a horizon ``H`` (stored as ``log_H``) and *entries*: every tried product
    with ``key_p(H) >= F``, with its value, count and ``upper = key_p(H)`` (kept in the row so
    a visit reads one contiguous row, not the tables). ``key_p(N)`` is computed with the
    definition's expression and is non-decreasing in ``ln N`` (division by ``k``, ``sqrt``,
    product by ``c >= 0`` and the sum are monotone under rounding), so for any visit with
    ``ln N <= log_H`` (compared as stored floats, so no assumption on ``log``) a product has
    ``key(N) <= upper``, and a product that is not an entry has ``key(N) < F``. Hence if at
    least ``need`` entries have ``key(N) >= F``, the top ``need`` keys are all among the
    entries.

    The entries are ordered in ``BUCKETS`` buckets of decreasing ``upper`` (a counting sort on
    equal-width bands), each with the largest ``upper`` it holds; a visit walks the buckets in
    order, skips an entry whose ``upper`` is below the current ``need``-th best key and stops
    at the first bucket whose largest ``upper`` is (no entry further on can enter), so it
    computes about ``need`` keys plus those near the cut, whatever the number of entries.
    Entries added since the last ordering (*fresh*, unordered) are walked the same way after
    the buckets; past ``capacity / 8`` of them, the live entries are bucketed again (no table
    read). Keys take their bonus from a per-visit table of ``c * sqrt(ln N / k)`` for ``k <
    BONUS_TABLE`` (the definition's expression, so the same floats).

After a visit (``update_ucb1_nb``) only the slate products changed (value and count), so no
other product's ``key(H)`` moved: each slate product's old entry becomes a tombstone (skipped,
its ``upper`` still a valid bound for the walk) and, if ``key(H) >= F`` now, it is appended as
a fresh entry. The choose call records each slot's entry in ``Ucb1Work.member`` for this.

Rebuild (``O(K)``: one pass over the catalogue's values and counts, a sampled selection, one
membership pass and a counting sort): when the row is not built, ``ln N > log_H``, fewer than
``need`` entries reach ``F``, or the row would overflow its capacity. ``F`` is about the
``RESERVE``-th largest key at the current ``N`` (``RESERVE = 3 capacity / 8``),
estimated from ``FLOOR_SAMPLE`` evenly spaced keys (``-inf`` when at most ``RESERVE`` products
are tried); ``log_H = ln N + MAX_LOG_AHEAD`` (unbounded when ``c == 0`` or ``F = -inf``).
Membership is decided by the exact float test ``key_p(H) >= F``; more than ``7 capacity / 8``
entries retry at ``log_H = ln N``, then with the exact ``RESERVE``-th key as ``F``. Should ties
still overflow, the visit ranks the whole catalogue (the definition) and the row stays
unbuilt.

Memory per state: ``capacity`` entries x 32 bytes + ``BUCKETS`` x 16 bytes + 6 scalars (33 KiB
at the default 1,024; 19 MB for 576 states, of which a visit reads the walked buckets). UCB1
picks its top keys, which then drop (their count grows): the entries above ``F`` are used up
at up to ``n`` per visit and replenished as ``N`` grows, so a rebuild comes about every
``RESERVE / n`` visits of a state in the worst case, and at the latest when ``N`` has grown by
the factor ``exp(MAX_LOG_AHEAD)``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from rlreco.engine.kernels.jit import jit
from rlreco.engine.kernels.prefetch import prefetch_nb
from rlreco.engine.kernels.ranking import insert_ranked_nb
from rlreco.engine.kernels.untried_set import Untried, draw_untried_nb, remove_untried_nb

#: Entry slots per state (the default of :func:`new_ucb1_cache`).
CAPACITY = 1024
#: Entries of a row hinted at the start of a visit (the walk reads about this many).
PREFETCH_ENTRIES = 128
#: Buckets of the entries' order.
BUCKETS = 32
#: Largest ``log_H - ln N`` at a rebuild: a near horizon keeps the bounds tight (the walk
#: stops early) at the price of a rebuild every ``~0.1 N / n`` visits of a state.
MAX_LOG_AHEAD = 0.1
#: Keys sampled to estimate the floor at a rebuild.
FLOOR_SAMPLE = 256
#: Bits of an entry index in a ranked item ``(product << ENTRY_BITS) | entry``.
ENTRY_BITS = 20
NO_ENTRY = (1 << ENTRY_BITS) - 1
#: Counts below this take their bonus from a per-visit table.
BONUS_TABLE = 64
#: ``log_H`` of a cache whose members do not depend on ``N`` (``c == 0`` or all tried).
UNBOUNDED_LOG = 1e300


class Ucb1Cache(NamedTuple):
    """Per-state UCB1 candidate caches (module docstring).

    Attributes
    ----------
    product : ndarray of int64, shape (n_states, capacity)
        Entry product ids (first ``size`` entries; -1: a tombstone).
    value : ndarray of float64, shape (n_states, capacity)
        Entry values (as in the value table).
    tries : ndarray of int64, shape (n_states, capacity)
        Entry ``reco_count``.
    upper : ndarray of float64, shape (n_states, capacity)
        Entry ``key(H)``.
    bucket_end : ndarray of int64, shape (n_states, BUCKETS)
        Bucket ``b`` holds entries ``bucket_end[b-1] .. bucket_end[b] - 1`` (from 0); the
        last end is the first fresh entry.
    bucket_top : ndarray of float64, shape (n_states, BUCKETS)
        Largest ``upper`` of each bucket (``+inf`` if empty: never a stop).
    size : ndarray of int64, shape (n_states,)
        Entries; -1 while the row is not built.
    floor : ndarray of float64, shape (n_states,)
        ``F``.
    log_horizon : ndarray of float64, shape (n_states,)
        ``log_H``.
    rebuilds : ndarray of int64, shape (n_states,)
        Rebuilds so far (a diagnostic for benchmarks; never read by the policy).
    """

    product: np.ndarray
    value: np.ndarray
    tries: np.ndarray
    upper: np.ndarray
    bucket_end: np.ndarray
    bucket_top: np.ndarray
    size: np.ndarray
    floor: np.ndarray
    log_horizon: np.ndarray
    rebuilds: np.ndarray


class Ucb1Work(NamedTuple):
    """Per-call workspace of :func:`choose_ucb1_slate_nb` (``K`` the largest catalogue).

    Attributes
    ----------
    top_key, top_product : ndarray of float64 / int64, shape (n + 1,)
        The ranked keys and items ``(product << ENTRY_BITS) | entry``.
    member : ndarray of int64, shape (n,)
        Entry of each slate slot (-1: none), from the choose call for the update.
    swap_position, swap_product : ndarray of int64, shape (n,)
    key, value, crossing : ndarray of float64, shape (max(K, capacity),)
    tries, product, entry, bucket : ndarray of int64, shape (max(K, capacity),)
    bonus : ndarray of float64, shape (BONUS_TABLE,)
        ``bonus[k] = c * sqrt(ln N / k)`` for the visit's ``N``.
    """

    top_key: np.ndarray
    top_product: np.ndarray
    member: np.ndarray
    swap_position: np.ndarray
    swap_product: np.ndarray
    key: np.ndarray
    value: np.ndarray
    tries: np.ndarray
    crossing: np.ndarray
    product: np.ndarray
    entry: np.ndarray
    bucket: np.ndarray
    bonus: np.ndarray


def new_ucb1_cache(n_states: int, capacity: int = CAPACITY) -> Ucb1Cache:
    """Caches of ``capacity`` members with every row unbuilt (built on first use)."""
    return Ucb1Cache(
        product=np.zeros((n_states, capacity), dtype=np.int64),
        value=np.zeros((n_states, capacity), dtype=np.float64),
        tries=np.ones((n_states, capacity), dtype=np.int64),
        upper=np.zeros((n_states, capacity), dtype=np.float64),
        bucket_end=np.zeros((n_states, BUCKETS), dtype=np.int64),
        bucket_top=np.zeros((n_states, BUCKETS), dtype=np.float64),
        size=np.full(n_states, -1, dtype=np.int64),
        floor=np.zeros(n_states, dtype=np.float64),
        log_horizon=np.zeros(n_states, dtype=np.float64),
        rebuilds=np.zeros(n_states, dtype=np.int64),
    )


def new_ucb1_work(slate_size: int, max_catalogue: int, capacity: int = CAPACITY) -> Ucb1Work:
    """Workspace for slates of ``slate_size`` and catalogues of up to ``max_catalogue``."""
    width = max(max_catalogue, capacity)
    return Ucb1Work(
        top_key=np.empty(slate_size + 1, dtype=np.float64),
        top_product=np.empty(slate_size + 1, dtype=np.int64),
        member=np.full(slate_size, -1, dtype=np.int64),
        swap_position=np.empty(slate_size, dtype=np.int64),
        swap_product=np.empty(slate_size, dtype=np.int64),
        key=np.empty(width, dtype=np.float64),
        value=np.empty(width, dtype=np.float64),
        tries=np.empty(width, dtype=np.int64),
        crossing=np.empty(width, dtype=np.float64),
        product=np.empty(width, dtype=np.int64),
        entry=np.empty(width, dtype=np.int64),
        bucket=np.empty(width, dtype=np.int64),
        bonus=np.zeros(BONUS_TABLE, dtype=np.float64),
    )


@jit()
def kth_smallest_nb(keys: np.ndarray, size: int, k: int) -> float:
    """The ``k``-th smallest (1-based) of ``keys[:size]``, which it reorders (quickselect)."""
    lo = 0
    hi = size - 1
    target = k - 1
    while lo < hi:
        # median of three as the pivot; Hoare partition
        mid = (lo + hi) >> 1
        a, b, c = keys[lo], keys[mid], keys[hi]
        pivot = max(min(a, b), min(max(a, b), c))
        i = lo
        j = hi
        while i <= j:
            while keys[i] < pivot:
                i += 1
            while keys[j] > pivot:
                j -= 1
            if i <= j:
                keys[i], keys[j] = keys[j], keys[i]
                i += 1
                j -= 1
        if target <= j:
            hi = j
        elif target >= i:
            lo = i
        else:
            return keys[target]
    return keys[target]


@jit(inline=True)
def estimate_floor_nb(work: Ucb1Work, tried: int, reserve: int) -> float:
    """A floor with about ``reserve`` of ``work.key[:tried]`` at or above it, from an evenly
    spaced sample of at most ``FLOOR_SAMPLE`` keys; the exact ``reserve``-th largest if that
    leaves fewer than ``reserve / 2`` keys at or above it (the floor only sets the cache size:
    any value is exact)."""
    stride = max(1, tried // FLOOR_SAMPLE)
    taken = 0
    for i in range(0, tried, stride):
        work.crossing[taken] = work.key[i]
        taken += 1
    rank = max(1, (reserve * taken) // tried)
    floor = kth_smallest_nb(work.crossing, taken, taken - rank + 1)
    above = 0
    for i in range(tried):
        above += work.key[i] >= floor
    if above < reserve // 2:
        work.crossing[:tried] = work.key[:tried]
        floor = kth_smallest_nb(work.crossing, tried, tried - reserve + 1)
    return floor


@jit()
def rebuild_ucb1_row_nb(
    value: np.ndarray,
    cells: np.ndarray,
    state: int,
    catalogue: np.ndarray,
    c: float,
    log_shown: float,
    cache: Ucb1Cache,
    work: Ucb1Work,
) -> None:
    """Rebuild one state's cache at the current ``ln N`` (module docstring).

    Parameters
    ----------
    value : ndarray of float64, shape (n_states, width)
    cells : ndarray of CELL_DTYPE, shape (n_states, width)
    state : int
    catalogue : ndarray of int32, shape (K,)
        The state's segment catalogue.
    c : float
        Exploration weight (>= 0).
    log_shown : float
        ``log(max(N, 1))``.
    cache : Ucb1Cache
        Row ``state`` overwritten (``size`` -1 on overflow).
    work : Ucb1Work
    """
    cache.rebuilds[state] += 1
    capacity = cache.product.shape[1]
    reserve = capacity * 3 // 8
    bonus = work.bonus
    table = bonus.shape[0]
    for k in range(1, table):
        bonus[k] = c * np.sqrt(log_shown / k)
    tried = 0
    for k in range(catalogue.shape[0]):
        product = catalogue[k]
        count = cells[state, product].reco_count
        if count > 0:
            v = value[state, product]
            if count < table:
                work.key[tried] = v + bonus[count]
            else:
                work.key[tried] = v + c * np.sqrt(log_shown / count)
            work.value[tried] = v
            work.tries[tried] = count
            work.product[tried] = product
            tried += 1
    floor = -np.inf
    # every tried product is an entry (or keys do not grow): no horizon needed
    log_h = UNBOUNDED_LOG if c == 0.0 or tried <= reserve else log_shown + MAX_LOG_AHEAD
    if tried > reserve:
        floor = estimate_floor_nb(work, tried, reserve)
    budget = capacity - capacity // 8
    size = -1
    for attempt in range(3):
        if attempt == 2:
            # still too many (ties at the floor): the exact floor at the narrowest horizon
            work.crossing[:tried] = work.key[:tried]
            floor = kth_smallest_nb(work.crossing, tried, tried - reserve + 1)
        for k in range(1, table):
            bonus[k] = c * np.sqrt(log_h / k)
        size = 0
        for i in range(tried):
            count = work.tries[i]
            if count < table:
                key = work.value[i] + bonus[count]
            else:
                key = work.value[i] + c * np.sqrt(log_h / count)
            work.crossing[i] = key
            if key >= floor:
                if size < budget:
                    work.entry[size] = i
                size += 1
        if size <= budget:
            break
        size = -1
        log_h = log_shown  # overflow: the narrowest horizon
    cache.size[state] = size
    cache.floor[state] = floor
    cache.log_horizon[state] = log_h
    if size > 0:
        order_entries_nb(cache, state, size, work)


@jit()
def reorder_entries_nb(cache: Ucb1Cache, state: int, work: Ucb1Work) -> None:
    """Drop the tombstones and bucket every live entry again (the fresh ones included):
    the same entries, floor and horizon, without reading the tables."""
    live = 0
    for i in range(cache.size[state]):
        if cache.product[state, i] >= 0:
            work.product[live] = cache.product[state, i]
            work.value[live] = cache.value[state, i]
            work.tries[live] = cache.tries[state, i]
            work.crossing[live] = cache.upper[state, i]
            work.entry[live] = live
            live += 1
    cache.size[state] = live
    order_entries_nb(cache, state, live, work)


@jit()
def order_entries_nb(cache: Ucb1Cache, state: int, size: int, work: Ucb1Work) -> None:
    """Place the ``size`` candidates ``work.entry[:size]`` (``upper`` in ``work.crossing``)
    into the row, bucketed by decreasing ``upper`` (equal-width bands)."""
    upper = work.crossing
    top = -np.inf
    bottom = np.inf
    for e in range(size):
        top = max(top, upper[work.entry[e]])
        bottom = min(bottom, upper[work.entry[e]])
    width = (top - bottom) / BUCKETS
    ends = cache.bucket_end[state]
    tops = cache.bucket_top[state]
    for b in range(BUCKETS):
        ends[b] = 0
        tops[b] = -np.inf
    for e in range(size):
        key = upper[work.entry[e]]
        b = 0
        if width > 0.0 and width < np.inf:
            b = min(BUCKETS - 1, int((top - key) / width))
        work.bucket[e] = b
        ends[b] += 1
        tops[b] = max(tops[b], key)
    start = 0
    for b in range(BUCKETS):
        start += ends[b]
        ends[b] = start
        if tops[b] == -np.inf:
            tops[b] = np.inf  # empty: never a stop
    for e in range(size - 1, -1, -1):
        b = work.bucket[e]
        ends[b] -= 1
        j = ends[b]
        i = work.entry[e]
        cache.product[state, j] = work.product[i]
        cache.value[state, j] = work.value[i]
        cache.tries[state, j] = work.tries[i]
        cache.upper[state, j] = upper[i]
    for b in range(BUCKETS - 1):
        ends[b] = ends[b + 1]
    ends[BUCKETS - 1] = size


@jit(inline=True)
def rank_members_nb(
    cache: Ucb1Cache, state: int, c: float, log_shown: float, need: int, work: Ucb1Work
) -> int:
    """Rank the entries' keys at ``N`` into ``work.top_key/top_product`` (bucket walk, then
    the fresh entries); returns how many."""
    bonus = work.bonus
    table = bonus.shape[0]
    for k in range(1, table):
        bonus[k] = c * np.sqrt(log_shown / k)
    product = cache.product[state]
    value = cache.value[state]
    tries = cache.tries[state]
    upper = cache.upper[state]
    ends = cache.bucket_end[state]
    tops = cache.bucket_top[state]
    top_key = work.top_key
    found = 0
    start = 0
    # buckets 0 .. BUCKETS - 1 (stop at the first whose largest upper is below the need-th
    # best: no later entry can enter), then one pass over the fresh entries
    for b in range(BUCKETS + 1):
        if b < BUCKETS:
            stop = ends[b]
            if found == need and tops[b] < top_key[need - 1]:
                start = ends[BUCKETS - 1]
                stop = cache.size[state]
        else:
            stop = cache.size[state]
        for i in range(start, stop):
            p = product[i]
            # a tombstone, or an entry whose bound is below the need-th best: skip
            if p < 0 or (found == need and upper[i] < top_key[need - 1]):
                continue
            count = tries[i]
            if count < table:
                key = value[i] + bonus[count]
            else:
                key = value[i] + c * np.sqrt(log_shown / count)
            if found < need or key >= top_key[need - 1]:
                found = insert_ranked_nb(
                    key, (p << ENTRY_BITS) | i, top_key, work.top_product, found, need
                )
        start = stop
        if stop == cache.size[state]:
            break
    return found


@jit(inline=True)
def rank_catalogue_nb(
    value: np.ndarray,
    cells: np.ndarray,
    state: int,
    catalogue: np.ndarray,
    c: float,
    log_shown: float,
    need: int,
    work: Ucb1Work,
) -> int:
    """Rank every tried catalogue product (the definition's scan)."""
    found = 0
    for k in range(catalogue.shape[0]):
        product = catalogue[k]
        count = cells[state, product].reco_count
        if count > 0:
            key = value[state, product] + c * np.sqrt(log_shown / count)
            found = insert_ranked_nb(
                key, (product << ENTRY_BITS) | NO_ENTRY, work.top_key, work.top_product, found,
                need,
            )  # fmt: skip
    return found


@jit()
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
        The state's row is rebuilt when the module docstring says so.
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
    # the walk reads the row's first entries of each array: their misses overlap
    for i in range(0, min(PREFETCH_ENTRIES, cache.product.shape[1]), 8):
        prefetch_nb(cache.upper, state, i)
        prefetch_nb(cache.product, state, i)
        prefetch_nb(cache.value, state, i)
        prefetch_nb(cache.tries, state, i)
    prefetch_nb(cache.bucket_end, state, 0)
    prefetch_nb(cache.bucket_top, state, 0)
    first = draw_untried_nb(rng, untried, state, slate, work.swap_position, work.swap_product)
    for i in range(n):
        work.member[i] = -1
    need = n - first
    if need == 0:
        return first
    log_shown = np.log(max(shown, 1))
    size = cache.size[state]
    if size < 0 or log_shown > cache.log_horizon[state]:
        rebuild_ucb1_row_nb(value, cells, state, catalogue, c, log_shown, cache, work)
    elif size - cache.bucket_end[state, BUCKETS - 1] > cache.product.shape[1] // 8:
        reorder_entries_nb(cache, state, work)
    found = 0
    if cache.size[state] >= 0:
        found = rank_members_nb(cache, state, c, log_shown, need, work)
        if found < need or work.top_key[need - 1] < cache.floor[state]:
            rebuild_ucb1_row_nb(value, cells, state, catalogue, c, log_shown, cache, work)
            if cache.size[state] >= 0:
                found = rank_members_nb(cache, state, c, log_shown, need, work)
    if cache.size[state] < 0:
        found = rank_catalogue_nb(value, cells, state, catalogue, c, log_shown, need, work)
    for i in range(need):
        item = work.top_product[i]
        slate[first + i] = item >> ENTRY_BITS
        entry = item & NO_ENTRY
        work.member[first + i] = -1 if entry == NO_ENTRY else entry
    return first


@jit()
def update_ucb1_nb(
    untried: Untried,
    cache: Ucb1Cache,
    value: np.ndarray,
    cells: np.ndarray,
    state: int,
    c: float,
    slate: np.ndarray,
    work: Ucb1Work,
) -> None:
    """Bring the state's untried set and cache up to date after a visit updated the slate.

    Parameters
    ----------
    untried : Untried
        Updated in place.
    cache : Ucb1Cache
        Row ``state`` updated in place (unbuilt on overflow).
    value : ndarray of float64, shape (n_states, width)
        Values after the visit.
    cells : ndarray of CELL_DTYPE, shape (n_states, width)
        Cells after the visit (each slate product's ``reco_count`` grew by one).
    state : int
    c : float
        Exploration weight the cache was built with.
    slate : ndarray of int64, shape (n,)
        Distinct catalogue products.
    work : Ucb1Work
        As the visit's :func:`choose_ucb1_slate_nb` left it (``member``).
    """
    size = cache.size[state]
    log_h = cache.log_horizon[state]
    floor = cache.floor[state]
    for i in range(slate.shape[0]):
        product = slate[i]
        count = cells[state, product].reco_count
        if count == 1:
            remove_untried_nb(untried, state, product)
        if size < 0:
            continue
        if work.member[i] >= 0:
            cache.product[state, work.member[i]] = -1
        v = value[state, product]
        upper = v + c * np.sqrt(log_h / count)
        if upper >= floor:
            if size == cache.product.shape[1]:
                size = -1
                continue
            cache.product[state, size] = product
            cache.value[state, size] = v
            cache.tries[state, size] = count
            cache.upper[state, size] = upper
            size += 1
    cache.size[state] = size
