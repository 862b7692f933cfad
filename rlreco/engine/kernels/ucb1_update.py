"""The UCB1 update: a state's untried set and count-grouped row brought up to date after a visit.

The row and the visit's merge (:class:`~rlreco.engine.kernels.ucb1_cache.Ucb1Cache`,
:func:`~rlreco.engine.kernels.ucb1_cache.choose_ucb1_slate_nb`) live in
:mod:`~rlreco.engine.kernels.ucb1_cache`, whose module docstring gives the rule applied here
(each placed product moves to the group of its new count, untried products enter the group of
count 1). The update is a separate concern from the ranking (it writes the row, the merge only
reads it), so it has its own module; the kernels are moved verbatim, with the same inlining and
reference counting settings (``update_ucb1_nb`` is called from the visit loop, not inlined:
see :mod:`~rlreco.engine.kernels.ucb1_cache`).
"""

from __future__ import annotations

import numpy as np

from rlreco.engine.kernels.jit import jit
from rlreco.engine.kernels.ucb1_cache import Ucb1Cache, Ucb1Work, group_end_nb
from rlreco.engine.kernels.untried_set import Untried, remove_untried_nb


@jit(inline=True)
def find_group_nb(cache: Ucb1Cache, state: int, count: int) -> int:
    """Index of the group of ``count`` (present), by bisection of the descending counts."""
    lo = 0
    hi = cache.groups[state] - 1
    while lo < hi:
        mid = (lo + hi) >> 1
        if cache.tries[state, mid] > count:
            lo = mid + 1
        else:
            hi = mid
    return lo


@jit(inline=True)
def place_in_nb(cache: Ucb1Cache, state: int, lo: int, hi: int, v: float, product: int) -> int:
    """First entry of ``lo .. hi - 1`` (one group) that ``(v, product)`` comes before (``hi``
    if none), by bisection."""
    while lo < hi:
        mid = (lo + hi) >> 1
        other = cache.value[state, mid]
        if other > v or (other == v and cache.product[state, mid] < product):
            lo = mid + 1
        else:
            hi = mid
    return lo


@jit(inline=True)
def shift_right_nb(cache: Ucb1Cache, state: int, lo: int, hi: int) -> None:
    """Move entries ``lo .. hi - 1`` to ``lo + 1 .. hi`` (overwriting entry ``hi``)."""
    value = cache.value[state]
    product = cache.product[state]
    for j in range(hi, lo, -1):
        value[j] = value[j - 1]
    for j in range(hi, lo, -1):
        product[j] = product[j - 1]


@jit(inline=True)
def open_group_nb(cache: Ucb1Cache, state: int, g: int, count: int, first: int) -> None:
    """Insert a group of ``count`` starting at entry ``first`` at table index ``g``."""
    groups = cache.groups[state]
    for j in range(groups, g, -1):
        cache.tries[state, j] = cache.tries[state, j - 1]
        cache.start[state, j] = cache.start[state, j - 1]
        cache.head[state, j] = cache.head[state, j - 1]
    cache.tries[state, g] = count
    cache.start[state, g] = first
    cache.groups[state] = groups + 1


@jit(inline=True)
def close_group_nb(cache: Ucb1Cache, state: int, g: int) -> None:
    """Remove group ``g`` (empty) from the table."""
    groups = cache.groups[state] - 1
    for j in range(g, groups):
        cache.tries[state, j] = cache.tries[state, j + 1]
        cache.start[state, j] = cache.start[state, j + 1]
        cache.head[state, j] = cache.head[state, j + 1]
    cache.groups[state] = groups


@jit(inline=True)
def move_entry_nb(cache: Ucb1Cache, state: int, entry: int, count: int, v: float) -> None:
    """Entry ``entry`` of the group of ``count - 1`` now has ``count`` and value ``v``: move it
    into the group of ``count`` (just before its own), shifting the entries in between."""
    g = find_group_nb(cache, state, count - 1)
    first = cache.start[state, g]
    product = cache.product[state, entry]
    end = group_end_nb(cache, state, g, cache.groups[state])
    target = g
    if g > 0 and cache.tries[state, g - 1] == count:
        target = g - 1
        place = place_in_nb(cache, state, cache.start[state, target], first, v, product)
        shift_right_nb(cache, state, place, entry)
    elif end > first + 1:
        # no group of count yet: a new one, of this entry, where the old group started
        place = first
        open_group_nb(cache, state, g, count, first)
        g += 1
        shift_right_nb(cache, state, place, entry)
    else:
        # the old group's only entry: the group takes the new count
        place = first
        g = -1
        cache.tries[state, target] = count
    cache.value[state, place] = v
    cache.product[state, place] = product
    if g >= 0:
        # the old group now starts one entry later (or is empty)
        cache.start[state, g] = first + 1
        if first + 1 == end:
            close_group_nb(cache, state, g)
        else:
            cache.head[state, g] = cache.value[state, first + 1]
    cache.head[state, target] = cache.value[state, cache.start[state, target]]


@jit(inline=True)
def insert_entries_nb(cache: Ucb1Cache, state: int, fresh: int, work: Ucb1Work) -> None:
    """Products tried for the first time (``work.value/product[:fresh]``, in row order) enter
    the group of count 1, the last: one merge from the back, so each entry after the first
    place moves once however many enter."""
    groups = cache.groups[state]
    size = cache.size[state]
    if groups == 0 or cache.tries[state, groups - 1] != 1.0:
        open_group_nb(cache, state, groups, 1, size)
        groups += 1
    first = cache.start[state, groups - 1]
    j = size - 1
    t = fresh - 1
    for out in range(size + fresh - 1, -1, -1):
        if t < 0:
            break
        v = work.value[t]
        if j >= first and (
            v > cache.value[state, j]
            or (v == cache.value[state, j] and work.product[t] < cache.product[state, j])
        ):
            cache.value[state, out] = cache.value[state, j]
            cache.product[state, out] = cache.product[state, j]
            j -= 1
        else:
            cache.value[state, out] = v
            cache.product[state, out] = work.product[t]
            t -= 1
    cache.size[state] = size + fresh
    cache.head[state, groups - 1] = cache.value[state, first]


@jit(refcount=False)
def update_ucb1_nb(
    untried: Untried,
    cache: Ucb1Cache,
    value: np.ndarray,
    cells: np.ndarray,
    state: int,
    slate: np.ndarray,
    work: Ucb1Work,
) -> None:
    """Bring the state's untried set and row up to date after a visit updated the slate.

    Parameters
    ----------
    untried : Untried
        Updated in place.
    cache : Ucb1Cache
        Row ``state`` updated in place (if built).
    value : ndarray of float64, shape (n_states, width)
        Values after the visit.
    cells : ndarray of CELL_DTYPE, shape (n_states, width)
        Cells after the visit (each slate product's ``reco_count`` grew by one).
    state : int
    slate : ndarray of int64, shape (n,)
        Distinct catalogue products.
    work : Ucb1Work
        As the visit's :func:`choose_ucb1_slate_nb` left it (``member``).
    """
    n = slate.shape[0]
    for i in range(n):
        if work.member[i] < 0:
            remove_untried_nb(untried, state, slate[i])
    if cache.size[state] >= 0:
        update_row_nb(cache, value, cells, state, slate, work)


@jit(inline=True)
def update_row_nb(
    cache: Ucb1Cache,
    value: np.ndarray,
    cells: np.ndarray,
    state: int,
    slate: np.ndarray,
    work: Ucb1Work,
) -> None:
    """The row part of :func:`update_ucb1_nb` (a built row)."""
    n = slate.shape[0]
    # the moves in increasing order of their entries: a move shifts only entries before its own
    moves = 0
    for i in range(n):
        entry = work.member[i]
        if entry >= 0:
            j = moves
            while j > 0 and work.member[work.order[j - 1]] > entry:
                work.order[j] = work.order[j - 1]
                j -= 1
            work.order[j] = i
            moves += 1
    for j in range(moves):
        i = work.order[j]
        product = slate[i]
        move_entry_nb(
            cache, state, work.member[i], cells[state, product].reco_count, value[state, product]
        )
    # the untried products, sorted into row order (value descending, then product id)
    fresh = 0
    for i in range(n):
        if work.member[i] < 0:
            product = slate[i]
            v = value[state, product]
            j = fresh
            while j > 0 and (
                work.value[j - 1] < v or (work.value[j - 1] == v and work.product[j - 1] > product)
            ):
                work.value[j] = work.value[j - 1]
                work.product[j] = work.product[j - 1]
                j -= 1
            work.value[j] = v
            work.product[j] = product
            fresh += 1
    if fresh > 0:
        insert_entries_nb(cache, state, fresh, work)
