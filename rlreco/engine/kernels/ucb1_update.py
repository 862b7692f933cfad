"""The UCB1 update: a state's untried set and count-grouped row brought up to date after a visit.

The row and the visit's merge (:class:`~rlreco.engine.kernels.ucb1_cache.Ucb1Cache`,
:func:`~rlreco.engine.kernels.ucb1_cache.choose_ucb1_slate_nb`) live in
:mod:`~rlreco.engine.kernels.ucb1_cache`, whose module docstring gives the rule applied here
(each placed product moves to the group of its new count, untried products enter the group of
count 1; a product enters a group's rest, or its block when it comes before the block's last).
The update is a separate concern from the ranking (it writes the row, the merge only reads it),
so it has its own module (``update_ucb1_nb`` is called from the visit loop, not inlined: see
:mod:`~rlreco.engine.kernels.ucb1_cache`).

A move touches only entries before its own (the freed first slot of its group, the block
before it, the group before), so the moves run in increasing order of their entries and none
disturbs an entry still to be moved (each is a block entry, which the moves before it leave in
place).
"""

from __future__ import annotations

import numpy as np

from rlreco.engine.kernels.jit import jit
from rlreco.engine.kernels.ucb1_cache import (
    Ucb1Cache,
    Ucb1Work,
    comes_before_nb,
    extend_block_nb,
    group_end_nb,
)
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
def shift_right_nb(cache: Ucb1Cache, state: int, lo: int, hi: int) -> None:
    """Move entries ``lo .. hi - 1`` to ``lo + 1 .. hi`` (overwriting entry ``hi``)."""
    row = cache.entry[state]
    for j in range(hi, lo, -1):
        row[j] = row[j - 1]


@jit(inline=True)
def copy_entry_nb(cache: Ucb1Cache, state: int, source: int, target: int) -> None:
    """Entry ``source`` copied to ``target``."""
    cache.entry[state, target] = cache.entry[state, source]


@jit(inline=True)
def open_group_nb(cache: Ucb1Cache, state: int, g: int, count: int, first: int) -> None:
    """Insert a group of ``count`` starting at entry ``first`` at table index ``g``, its block
    that one entry (``head`` and ``block`` set; the entry is the caller's)."""
    groups = cache.groups[state]
    for j in range(groups, g, -1):
        cache.tries[state, j] = cache.tries[state, j - 1]
        cache.start[state, j] = cache.start[state, j - 1]
        cache.block[state, j] = cache.block[state, j - 1]
        cache.head[state, j] = cache.head[state, j - 1]
    cache.tries[state, g] = count
    cache.start[state, g] = first
    cache.block[state, g] = 1
    cache.head[state, g] = cache.entry[state, first].value
    cache.groups[state] = groups + 1


@jit(inline=True)
def close_group_nb(cache: Ucb1Cache, state: int, g: int) -> None:
    """Remove group ``g`` (empty) from the table."""
    groups = cache.groups[state] - 1
    for j in range(g, groups):
        cache.tries[state, j] = cache.tries[state, j + 1]
        cache.start[state, j] = cache.start[state, j + 1]
        cache.block[state, j] = cache.block[state, j + 1]
        cache.head[state, j] = cache.head[state, j + 1]
    cache.groups[state] = groups


@jit(inline=True)
def take_out_nb(cache: Ucb1Cache, state: int, g: int, entry: int, end: int) -> bool:
    """Remove block entry ``entry`` (the merge places block entries only) from group ``g``
    (``end`` one past it): the block entries before it move down one, freeing the group's
    first slot (``start`` one later; the group may be left empty, or with an empty block).
    Returns whether the group is left with entries but an empty block."""
    first = cache.start[state, g]
    shift_right_nb(cache, state, first, entry)
    cache.block[state, g] -= 1
    cache.start[state, g] = first + 1
    if first + 1 < end:
        cache.head[state, g] = cache.entry[state, first + 1].value
    return first + 1 < end and cache.block[state, g] == 0


@jit(inline=True)
def put_in_nb(cache: Ucb1Cache, state: int, g: int, slot: int, v: float, product: int) -> None:
    """Entry ``(v, product)`` into group ``g``, which has grown by its last slot ``slot``:
    there (the rest) unless it comes before the block's last, else into the block in order."""
    first = cache.start[state, g]
    h = cache.block[state, g]
    last = first + h - 1
    if h == 0 or not comes_before_nb(
        v, product, cache.entry[state, last].value, cache.entry[state, last].product
    ):
        cache.entry[state, slot].value = v
        cache.entry[state, slot].product = product
        return
    # the block grows by one: the first of the rest (if any) moves to the free slot
    if first + h < slot:
        copy_entry_nb(cache, state, first + h, slot)
    # its place by a scan from the block's end, shifting as it goes: the lines the shift
    # touches anyway (a bisection would read lines of the block it need not move)
    row = cache.entry[state]
    j = first + h
    while j > first and comes_before_nb(v, product, row[j - 1].value, row[j - 1].product):
        row[j] = row[j - 1]
        j -= 1
    row[j].value = v
    row[j].product = product
    # a longer block would make every entry entering it dearer: its last drops to the rest
    cache.block[state, g] = min(h + 1, cache.block_max)
    cache.head[state, g] = cache.entry[state, first].value


@jit(inline=True)
def move_entry_nb(cache: Ucb1Cache, state: int, entry: int, count: int, v: float) -> bool:
    """Entry ``entry`` of the group of ``count - 1`` now has ``count`` and value ``v``: move it
    into the group of ``count``, just before its own (made if missing). Returns whether it
    left its old group with entries but an empty block."""
    g = find_group_nb(cache, state, count - 1)
    first = cache.start[state, g]
    product = cache.entry[state, entry].product
    end = group_end_nb(cache, state, g, cache.groups[state])
    emptied = False
    if g > 0 and cache.tries[state, g - 1] == count:
        emptied = take_out_nb(cache, state, g, entry, end)
        put_in_nb(cache, state, g - 1, first, v, product)
        if first + 1 == end:
            close_group_nb(cache, state, g)
    elif end > first + 1:
        # no group of count yet: a new one, of this entry, where the old group started
        emptied = take_out_nb(cache, state, g, entry, end)
        cache.entry[state, first].value = v
        cache.entry[state, first].product = product
        open_group_nb(cache, state, g, count, first)
    else:
        # the old group's only entry: the group takes the new count
        cache.tries[state, g] = count
        cache.entry[state, first].value = v
        cache.head[state, g] = v
    return emptied


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
    # the moves in increasing order of their entries (module docstring)
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
    emptied = False
    for j in range(moves):
        i = work.order[j]
        product = slate[i]
        emptied |= move_entry_nb(
            cache, state, work.member[i], cells[state, product].reco_count, value[state, product]
        )
    # the untried products join the group of count 1, the last, each in its last slot
    for i in range(n):
        if work.member[i] < 0:
            product = slate[i]
            groups = cache.groups[state]
            size = cache.size[state]
            cache.size[state] = size + 1
            if groups == 0 or cache.tries[state, groups - 1] != 1.0:
                cache.entry[state, size].value = value[state, product]
                cache.entry[state, size].product = product
                open_group_nb(cache, state, groups, 1, size)
            else:
                put_in_nb(cache, state, groups - 1, size, value[state, product], product)
    if emptied:
        # an emptied block: refilled from its rest, so the group's head is its best entry again
        groups = cache.groups[state]
        for g in range(groups):
            if cache.block[state, g] == 0:
                extend_block_nb(cache, state, g, group_end_nb(cache, state, g, groups))
