"""Exact UCB1 slates from a per-state candidate cache with a horizon.

Definition (the full scan of ``kernels/policy.py``): untried products first (see
:mod:`~rlreco.engine.kernels.untried_set`), then the ``need = n - first`` largest keys
``key_p(N) = value_p + c * sqrt(ln N / k_p)`` over the tried products (``k_p = reco_count >=
1``, ``N`` the recommendations made in the state, ``ln N`` computed as ``log(max(N, 1))``),
ties by lower product id. Same draws, same slates: the cache only decides which keys are
computed.

Cache (:class:`Ucb1Cache`, one row per state, derived from the tables alone)
    A floor ``F``, a horizon ``H`` (stored as ``log_H``) and the *members*: every tried product
    with ``key_p(H) >= F``, with their value and count (kept in the row so a visit reads one
    contiguous row, not the tables). ``key_p(N)`` is computed with the definition's expression
    and is non-decreasing in ``ln N`` (division by ``k``, ``sqrt``, product by ``c >= 0`` and
    the sum are monotone under rounding), so for any visit with ``ln N <= log_H`` (compared as
    stored floats, so no assumption on ``log``) a non-member has ``key(N) <= key(H) < F``.
    Hence if at least ``need`` members have ``key(N) >= F``, the top ``need`` keys are all
    among the members: the visit computes the members' keys (a vectorised loop) and ranks
    them, without reading the catalogue.

Rebuild (``O(K)``: one pass over the catalogue's values and counts)
    When the row is not built (every row starts so: nothing is persisted), ``ln N > log_H``,
    fewer than ``need`` members reach ``F``, or a member would overflow ``CAPACITY``.
    ``F`` is the ``RESERVE``-th largest key (``RESERVE = 3 CAPACITY / 8``) at the current
    ``N`` (``-inf`` when at most ``RESERVE`` products are tried); each other product would
    reach ``F`` at ``ln N = k (F - v)^2 / c^2``, and ``log_H`` is set just below the ``(CAPACITY -
    members now)``-th smallest of these (never below ``ln N``; unbounded when ``c == 0``), so
    the cache holds about ``CAPACITY`` products. Membership is then decided by the exact
    float test ``key_p(H) >= F``. Should ties still overflow, the visit ranks the whole
    catalogue (the definition) and the row stays unbuilt.

After a visit (``update_ucb1_nb``) only the slate products changed: each is re-tested
(``key(H) >= F``) and added, refreshed or dropped; no other product's key at ``H`` moved.

Memory per state: ``CAPACITY`` members x 24 bytes + 4 scalars (24 KiB; 14 MB for 576
states). Per visit, when the cache serves it: ``BONUS_TABLE`` square roots, then one table
read and one addition per member, no catalogue read. UCB1 picks its top keys, which then drop
(their count grows), so the members above ``F`` are used up at about ``n`` per visit and
replenished as ``N`` grows: a rebuild every ``~RESERVE / n`` visits of the state in the worst case.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from rlreco.engine.kernels.jit import jit
from rlreco.engine.kernels.ranking import insert_ranked_nb
from rlreco.engine.kernels.untried_set import Untried, draw_untried_nb, remove_untried_nb

#: Member slots per state (the default of :func:`new_ucb1_cache`).
CAPACITY = 1024
#: Counts below this take their bonus from a per-visit table.
BONUS_TABLE = 64
#: ``log_H`` of a cache whose members do not depend on ``N`` (``c == 0`` or all tried).
UNBOUNDED_LOG = 1e300


class Ucb1Cache(NamedTuple):
    """Per-state UCB1 candidate caches (module docstring).

    Attributes
    ----------
    product : ndarray of int64, shape (n_states, capacity)
        Member product ids (first ``size`` entries, any order).
    value : ndarray of float64, shape (n_states, capacity)
        Member values (as in the value table).
    tries : ndarray of int64, shape (n_states, capacity)
        Member ``reco_count``.
    size : ndarray of int64, shape (n_states,)
        Members; -1 while the row is not built.
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
    size: np.ndarray
    floor: np.ndarray
    log_horizon: np.ndarray
    rebuilds: np.ndarray


class Ucb1Work(NamedTuple):
    """Per-call workspace of :func:`choose_ucb1_slate_nb` (``K`` the largest catalogue).

    Attributes
    ----------
    top_key, top_product : ndarray of float64 / int64, shape (n + 1,)
    swap_position, swap_product : ndarray of int64, shape (n,)
    key, value, crossing : ndarray of float64, shape (max(K, capacity),)
    tries, product : ndarray of int64, shape (max(K, capacity),)
    bonus : ndarray of float64, shape (BONUS_TABLE,)
        ``bonus[k] = c * sqrt(ln N / k)`` for the visit's ``N``.
    """

    top_key: np.ndarray
    top_product: np.ndarray
    swap_position: np.ndarray
    swap_product: np.ndarray
    key: np.ndarray
    value: np.ndarray
    tries: np.ndarray
    crossing: np.ndarray
    product: np.ndarray
    bonus: np.ndarray


def new_ucb1_cache(n_states: int, capacity: int = CAPACITY) -> Ucb1Cache:
    """Caches of ``capacity`` members with every row unbuilt (built on first use)."""
    return Ucb1Cache(
        product=np.zeros((n_states, capacity), dtype=np.int64),
        value=np.zeros((n_states, capacity), dtype=np.float64),
        tries=np.ones((n_states, capacity), dtype=np.int64),
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
        swap_position=np.empty(slate_size, dtype=np.int64),
        swap_product=np.empty(slate_size, dtype=np.int64),
        key=np.empty(width, dtype=np.float64),
        value=np.empty(width, dtype=np.float64),
        tries=np.empty(width, dtype=np.int64),
        crossing=np.empty(width, dtype=np.float64),
        product=np.empty(width, dtype=np.int64),
        bonus=np.zeros(BONUS_TABLE, dtype=np.float64),
    )


@jit(inline=True)
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
    log_h = UNBOUNDED_LOG
    if tried > reserve:
        work.crossing[:tried] = work.key[:tried]
        floor = kth_smallest_nb(work.crossing, tried, tried - reserve + 1)
        if c > 0.0:
            members = 0
            outside = 0
            for i in range(tried):
                if work.key[i] >= floor:
                    members += 1
                else:
                    gap = (floor - work.value[i]) / c
                    work.crossing[outside] = work.tries[i] * gap * gap
                    outside += 1
            room = capacity - members
            if room <= 0:
                log_h = log_shown
            elif outside >= room:
                # just below the room-th crossing: about room - 1 products join
                log_h = kth_smallest_nb(work.crossing, outside, room)
                log_h = max(log_h * (1.0 - 1e-9), log_shown)
    for _ in range(2):
        for k in range(1, table):
            bonus[k] = c * np.sqrt(log_h / k)
        size = 0
        for i in range(tried):
            count = work.tries[i]
            if count < table:
                key = work.value[i] + bonus[count]
            else:
                key = work.value[i] + c * np.sqrt(log_h / count)
            if key >= floor:
                if size == capacity:
                    size = -1
                    break
                cache.product[state, size] = work.product[i]
                cache.value[state, size] = work.value[i]
                cache.tries[state, size] = work.tries[i]
                size += 1
        if size >= 0 or log_h == log_shown:
            break
        log_h = log_shown  # overflow: the narrowest horizon, then give up
    cache.size[state] = size
    cache.floor[state] = floor
    cache.log_horizon[state] = log_h


@jit(inline=True)
def rank_members_nb(
    cache: Ucb1Cache, state: int, c: float, log_shown: float, need: int, work: Ucb1Work
) -> int:
    """Rank the members' keys at ``N`` into ``work.top_key/top_product``; returns how many.

    The bonus of each count up to ``BONUS_TABLE`` is computed once (the definition's
    expression, so the same float), then a member's key is one table read and one addition.
    """
    size = cache.size[state]
    bonus = work.bonus
    for k in range(1, bonus.shape[0]):
        bonus[k] = c * np.sqrt(log_shown / k)
    table = bonus.shape[0]
    keys = work.key
    for i in range(size):
        count = cache.tries[state, i]
        if count < table:
            keys[i] = cache.value[state, i] + bonus[count]
        else:
            keys[i] = cache.value[state, i] + c * np.sqrt(log_shown / count)
    found = 0
    for i in range(size):
        key = keys[i]
        if found < need or key >= work.top_key[need - 1]:
            found = insert_ranked_nb(
                key, cache.product[state, i], work.top_key, work.top_product, found, need
            )
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
            found = insert_ranked_nb(key, product, work.top_key, work.top_product, found, need)
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
    first = draw_untried_nb(rng, untried, state, slate, work.swap_position, work.swap_product)
    need = n - first
    if need == 0:
        return first
    log_shown = np.log(max(shown, 1))
    if cache.size[state] < 0 or log_shown > cache.log_horizon[state]:
        rebuild_ucb1_row_nb(value, cells, state, catalogue, c, log_shown, cache, work)
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
        slate[first + i] = work.top_product[i]
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
        v = value[state, product]
        member = -1
        for j in range(size):
            if cache.product[state, j] == product:
                member = j
        if v + c * np.sqrt(log_h / count) >= floor:
            if member < 0:
                if size == cache.product.shape[1]:
                    size = -1
                    continue
                member = size
                size += 1
                cache.product[state, member] = product
            cache.value[state, member] = v
            cache.tries[state, member] = count
        elif member >= 0:
            size -= 1
            cache.product[state, member] = cache.product[state, size]
            cache.value[state, member] = cache.value[state, size]
            cache.tries[state, member] = cache.tries[state, size]
    cache.size[state] = size
