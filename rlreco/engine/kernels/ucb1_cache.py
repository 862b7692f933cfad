"""Exact UCB1 slates from the tried products grouped by count (a k-way merge of the groups).

Definition (the full scan of ``kernels/policy.py``): untried products first (see
:mod:`~rlreco.engine.kernels.untried_set`), then the ``need = n - first`` largest keys
``key_p = value_p + c * sqrt(ln N / k_p)`` over the tried products (``k_p = reco_count >= 1``,
``N`` the recommendations made in the state, ``ln N`` computed as ``log(max(N, 1))``), ties by
lower product id.

The bonus depends on the count alone, so the products of one count (a *group*) rank by value
in every visit: with ``b = c * sqrt(ln N / k)`` computed once per group (the definition's
expression, so the same float), ``v + b`` is non-decreasing in ``v`` under rounding. Each
state's row (:class:`Ucb1Cache`) holds its tried products sorted by (count descending, value
descending, product id ascending), and a table of its groups: count, first entry and the
value of that first entry (the *head*). A visit

1. computes each group's ``b`` and head key (one flat loop over the group table);
2. ranks the heads into the top ``need`` (keys and items ``(product << ENTRY_BITS) |
   entry``);
3. walks down every group whose head key is at least the ``need``-th best key, inserting
   entries until one falls below it (a group's later entries have no larger key).

An entry it never computes has a key below the final ``need``-th best, so the slate is the
definition's, with ties by product id (an entry whose key equals the cut is always ranked:
rounding can give two values of a group the same key, in either product order). Cost: one key
per group (about 45-65 on the real state space) plus the few entries near the cut.

After a visit (``update_ucb1_nb``, in :mod:`~rlreco.engine.kernels.ucb1_update`) only the
slate products changed: each product the merge placed moves from its group (count ``k``) to
the group of ``k + 1``, which comes just before it in the row: the entries between its old and
new place shift by one (in increasing order of the old places, so no move shifts an entry
still to be moved); an untried product enters the group of count 1, the last one. A group
that empties leaves the table, a new count enters it.
The shifts are the update's cost: about 150 entries per visit on the real state space, 1,400
on ``bench_simulate.py``'s synthetic one (large groups of close values).
The row is a function of the tables alone (built on first use from the catalogue, sorted;
nothing is persisted).

The per-visit kernels take the bundles, so they are called, not inlined into the visit loop
(inlined, their writes through the bundles were lost in the loop compiled without reference
counting), and compiled without reference counting themselves (a call would otherwise update
the count of every array in the bundles).

Memory per state: ``K`` entries x 12 bytes and ``K`` groups x 20 bytes (``K`` the largest
catalogue: 110 KiB at 3,423; 63 MB for 576 states), of which a visit reads the group table
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


class Ucb1Cache(NamedTuple):
    """Per-state rows of tried products grouped by count (module docstring).

    Attributes
    ----------
    value : ndarray of float64, shape (n_states, K)
        Entry values (as in the value table), first ``size`` entries, sorted by (count
        descending, value descending, product ascending).
    product : ndarray of int32, shape (n_states, K)
        Entry product ids.
    tries : ndarray of float64, shape (n_states, K)
        Count ``k`` of each group (descending; a float for the vectorised bonus loop: exact).
    start : ndarray of int32, shape (n_states, K)
        First entry of each group (a group ends where the next starts, the last at ``size``).
    head : ndarray of float64, shape (n_states, K)
        Value of each group's first entry.
    size : ndarray of int64, shape (n_states,)
        Entries (tried catalogue products); -1 while the row is not built.
    groups : ndarray of int64, shape (n_states,)
        Groups (distinct counts).
    """

    value: np.ndarray
    product: np.ndarray
    tries: np.ndarray
    start: np.ndarray
    head: np.ndarray
    size: np.ndarray
    groups: np.ndarray


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


def new_ucb1_cache(n_states: int, max_catalogue: int) -> Ucb1Cache:
    """Rows for catalogues of up to ``max_catalogue`` products, every row unbuilt (built on
    first use)."""
    width = max(max_catalogue, 1)
    return Ucb1Cache(
        value=np.zeros((n_states, width), dtype=np.float64),
        product=np.zeros((n_states, width), dtype=np.int32),
        tries=np.ones((n_states, width), dtype=np.float64),
        start=np.zeros((n_states, width), dtype=np.int32),
        head=np.zeros((n_states, width), dtype=np.float64),
        size=np.full(n_states, -1, dtype=np.int64),
        groups=np.zeros(n_states, dtype=np.int64),
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
def comes_before_nb(
    count_a: int, value_a: float, product_a: int, count_b: int, value_b: float, product_b: int
) -> bool:
    """Whether entry ``a`` precedes ``b`` in a row: larger count, then larger value, then lower
    product id."""
    if count_a != count_b:
        return count_a > count_b
    if value_a != value_b:
        return value_a > value_b
    return product_a < product_b


@jit()
def build_ucb1_row_nb(
    value: np.ndarray,
    cells: np.ndarray,
    state: int,
    catalogue: np.ndarray,
    cache: Ucb1Cache,
    work: Ucb1Work,
) -> None:
    """Build one state's row from the tables (a bottom-up merge sort of its tried products).

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
                    take_left = not comes_before_nb(
                        work.tries[b], work.value[b], work.product[b],
                        work.tries[a], work.value[a], work.product[a],
                    )  # fmt: skip
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
        cache.value[state, e] = work.value[i]
        cache.product[state, e] = work.product[i]
        if work.tries[i] != previous:
            previous = work.tries[i]
            cache.tries[state, groups] = previous
            cache.start[state, groups] = e
            cache.head[state, groups] = work.value[i]
            groups += 1
    cache.size[state] = tried
    cache.groups[state] = groups


@jit(inline=True)
def group_end_nb(cache: Ucb1Cache, state: int, g: int, groups: int) -> int:
    """One past the last entry of group ``g``."""
    return cache.start[state, g + 1] if g + 1 < groups else cache.size[state]


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
    value = cache.value[state]
    product = cache.product[state]
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
                key[g], (int(product[s]) << ENTRY_BITS) | s, top_key, top_product, found,
                need,
            )  # fmt: skip
    # a group whose head key is below the cut has no entry above it
    for g in range(groups):
        if found == need and key[g] < top_key[need - 1]:
            continue
        b = bonus[g]
        for i in range(start[g] + 1, group_end_nb(cache, state, g, groups)):
            k = value[i] + b
            if found == need and k < top_key[need - 1]:
                break
            found = insert_ranked_nb(
                k, (int(product[i]) << ENTRY_BITS) | i, top_key, top_product, found, need
            )
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
        The state's row is built on first use.
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
    first = draw_untried_nb(rng, untried, state, slate, work.swap_position, work.swap_product)
    for i in range(n):
        work.member[i] = -1
    need = n - first
    if need == 0:
        return first
    if cache.size[state] < 0:
        build_ucb1_row_nb(value, cells, state, catalogue, cache, work)
    rank_groups_nb(cache, state, c, np.log(max(shown, 1)), need, work)
    for i in range(need):
        item = work.top_product[i]
        slate[first + i] = item >> ENTRY_BITS
        work.member[first + i] = item & ENTRY_MASK
    return first
