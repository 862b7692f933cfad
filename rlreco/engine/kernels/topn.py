"""Top-n search index: an 8-ary max tree over each state's value row.

A greedy slate needs the best known products of one state. Scanning the row costs
O(n_products) per visit; the index answers the top-n query by reading a few dozen cache lines
per tree level, and is repaired for the <= n cells a visit changes
(:func:`repair_index_nb`: ``n * d`` group maxima).

Layout
------
For ``P`` products the tree has depth ``d = max(1, ceil(log8 P))`` and ``8**d`` leaves. The
leaves are the value row itself (``value[s, :]``; leaves ``p >= P`` count as ``-inf``). The
internal levels ``k = 0 .. d-1`` (0 = root) are stored in ``index[s, :]``: level ``k`` starts
at :func:`level_start_nb` ``(k)`` (0, 8, 16, 80, 592, ...: each level starts on a multiple of
8 entries) and holds ``8**k`` maxima; node ``j`` of level ``k`` is the maximum of nodes
``8j .. 8j+7`` of level ``k + 1`` (of leaves ``8j .. 8j+7`` at level ``d - 1``). With a
64-byte aligned index (:func:`new_index`) every group of 8 siblings is one cache line. For
``P = 4070``: ``d = 4``, levels of 1, 8, 64 and 512 maxima, 592 float64 per state.

Order
-----
Products are ranked by value, ties by lower product id; ``-inf`` (unknown) products are never
returned.

Top-n query (:func:`find_top_nb`)
---------------------------------
1. A *floor* ``f`` with at least ``n`` known products at or above it, so that every top-n
   product is ``>= f`` (:func:`find_floor_nb`): the largest level-1 maximum reached by ``n``
   level-2 nodes (each such node holds a distinct leaf ``>= f``).
2. Level by level, keep every child ``>= f`` of the nodes kept so far. Each group of 8
   children is one cache line, hinted to the cache before the level is read
   (:func:`prefetch_children_nb`) and filtered by a branch-free loop
   (:func:`select_reached_nb`: every lane is stored, the output position advances by the
   comparison's result), so the misses of all groups of a level overlap.
3. Rank the kept leaves (typically 15-25) by counting, for each, the candidates ahead of it
   (:func:`~rlreco.engine.kernels.ranking.rank_top_nb`).

No step branches on the data per node: a mispredicted branch per candidate would cost more
than the whole query. ``bench/bench_simulate.py`` (``bench_topn_query``) compares a query with
a full scan of the row.

Padding and vector code
-----------------------
Group loops read whole groups of 8 (no masks, no tails): value rows have a width ``W`` that is a
multiple of 8, with ``-inf`` in the columns beyond the products
(:func:`~rlreco.engine.kernels.records.padded_width`), and index levels start on multiples of 8.
Numba runs LLVM's loop vectoriser but not its SLP vectoriser, and a loop of exactly 8 is unrolled
before the loop vectoriser sees it, so the counting loops (:func:`count_reached_nb`,
:func:`~rlreco.engine.kernels.ranking.count_ahead_nb`) are flat loops over a whole span: they
compile to vector compares and adds on any instruction set. The loops of 8 that remain (the compress
of :func:`select_reached_nb`, the maximum of :func:`max_of_group_nb`) are short scalar code without
branches. Positions within a row are unsigned, which spares every element Numba's negative-index
wraparound (a conditional move per element that also blocks vectorisation).

Ranking and the candidate cache
-------------------------------
The order and the ranking kernels are :mod:`rlreco.engine.kernels.ranking`'s. The greedy
slates query through each state's cache of its best candidates
(:mod:`rlreco.engine.kernels.candidate_cache`), which is rebuilt from the products
:func:`collect_above_nb` finds above a deeper floor.
"""

from __future__ import annotations

import numpy as np

from rlreco.engine.kernels.jit import jit
from rlreco.engine.kernels.prefetch import prefetch_nb
from rlreco.engine.kernels.ranking import insert_ranked_nb, rank_top_nb
from rlreco.engine.kernels.records import LANES, aligned_empty

#: Children per node; 8 float64 maxima fill one 64-byte cache line.
FANOUT = LANES
#: The lowest finite float64: ``key >= max(floor, LOWEST)`` is "finite and >= floor".
LOWEST = float(np.finfo(np.float64).min)
#: ``FANOUT == 1 << FANOUT_BITS``: level sizes are shifts (integer ``**`` compiles with an
#: error path for negative exponents).
FANOUT_BITS = 3


def index_depth(n_products: int) -> int:
    """Depth ``d`` of the tree over ``n_products`` leaves (``8**d >= n_products``, ``d >= 1``)."""
    depth = 1
    while FANOUT**depth < n_products:
        depth += 1
    return depth


def index_width(n_products: int) -> int:
    """Entries per state of the index array: the start of level ``d``."""
    return int(level_start_nb(index_depth(n_products)))


def new_index(value: np.ndarray) -> np.ndarray:
    """Allocate and build the (64-byte aligned) index of a value table.

    Parameters
    ----------
    value : ndarray of float64, shape (n_states, W)
        Padded values (``W`` a multiple of 8).

    Returns
    -------
    ndarray of float64, shape (n_states, index_width(W))
    """
    n_states, n_products = value.shape
    index = aligned_empty((n_states, index_width(n_products)), np.float64)
    build_index_nb(value, index)
    return index


@jit(inline=True)
def level_start_nb(level: int) -> int:
    """Offset of internal level ``level`` (0 = root) in an index row."""
    if level == 0:
        return 0
    return FANOUT + ((1 << (FANOUT_BITS * level)) - FANOUT) // (FANOUT - 1)


@jit()
def depth_of_width_nb(width: int) -> int:
    """Depth of an index with ``width`` entries per state (inverse of :func:`index_width`)."""
    depth = 1
    while level_start_nb(depth) < width:
        depth += 1
    return depth


@jit()
def build_index_nb(value: np.ndarray, index: np.ndarray) -> None:
    """Rebuild every state's tree from the value table.

    Parameters
    ----------
    value : ndarray of float64, shape (n_states, n_products)
        Cell values, ``-inf`` where unknown.
    index : ndarray of float64, shape (n_states, index_width(n_products))
        Output. Padding entries (root group beyond the root) are set to ``-inf``.
    """
    n_states, n_products = value.shape
    depth = depth_of_width_nb(index.shape[1])
    for s in range(n_states):
        row = index[s]
        row[:] = -np.inf
        bottom = level_start_nb(depth - 1)
        for j in range(1 << (FANOUT_BITS * (depth - 1))):
            best = -np.inf
            for p in range(j * FANOUT, min((j + 1) * FANOUT, n_products)):
                best = max(best, value[s, p])
            row[bottom + j] = best
        for level in range(depth - 2, -1, -1):
            start = level_start_nb(level)
            child = level_start_nb(level + 1)
            for j in range(1 << (FANOUT_BITS * level)):
                best = -np.inf
                for c in range(child + j * FANOUT, child + (j + 1) * FANOUT):
                    best = max(best, row[c])
                row[start + j] = best


@jit(inline=True)
def count_reached_nb(keys: np.ndarray, row: int, start: int, stop: int, floor: float) -> int:
    """Number of finite ``keys[row, start:stop]`` at or above ``floor``.

    One flat loop: LLVM's loop vectoriser turns it into vector compares and adds (a loop of
    exactly 8 would be unrolled first and stay scalar, Numba runs no SLP vectoriser).
    """
    # the lowest finite float: ">= bound" is "finite and >= floor" in one compare
    bound = max(floor, LOWEST)
    # unsigned positions: no negative-index wraparound per element
    at_row = np.uint64(row)
    reached = 0
    for at in range(np.uint64(start), np.uint64(stop)):
        reached += keys[at_row, at] >= bound
    return reached


@jit(inline=True)
def select_reached_nb(
    keys: np.ndarray,
    row: int,
    start: int,
    floor: float,
    out: np.ndarray,
    out_row: int,
    at: int,
    first_label: int,
) -> int:
    """Write ``first_label + i`` to ``out[out_row, at:]`` for each finite
    ``keys[row, start + i] >= floor`` (``i < 8``), in order; return how many.

    Branch-free: every lane is stored at the current position, which advances only for the
    lanes that qualify, so ``out[out_row, at:at + 8]`` must exist.
    """
    bound = max(floor, LOWEST)
    # unsigned positions: no negative-index wraparound per lane
    key_row = np.uint64(row)
    key_at = np.uint64(start)
    label_row = np.uint64(out_row)
    found = np.uint64(at)
    for lane in range(LANES):
        out[label_row, found] = first_label + lane
        found += np.uint64(keys[key_row, key_at + np.uint64(lane)] >= bound)
    return int(found) - at


@jit(inline=True)
def max_of_group_nb(keys: np.ndarray, row: int, start: int) -> float:
    """Maximum of ``keys[row, start:start + 8]`` (a tree of pairwise maxima: exact, and short
    dependency chains)."""
    # unsigned positions: no negative-index wraparound per lane
    r = np.uint64(row)
    at = np.uint64(start)
    a = max(keys[r, at], keys[r, at + np.uint64(4)])
    b = max(keys[r, at + np.uint64(1)], keys[r, at + np.uint64(5)])
    c = max(keys[r, at + np.uint64(2)], keys[r, at + np.uint64(6)])
    d = max(keys[r, at + np.uint64(3)], keys[r, at + np.uint64(7)])
    low = max(a, c)
    high = max(b, d)
    return max(low, high)


@jit(inline=True)
def find_floor_nb(
    value: np.ndarray,
    index: np.ndarray,
    state: int,
    depth: int,
    n: int,
    top_value: np.ndarray,
    top_product: np.ndarray,
) -> float:
    """A lower bound on the ``n``-th best value of a state, from its two upper tree levels.

    Any value reached by ``n`` distinct level-2 nodes qualifies (each holds a distinct leaf at
    or above it). Tried in turn: the largest level-1 maximum that qualifies (8 thresholds x 64
    level-2 nodes, vector compares, no data-dependent branches; found for ~99% of states in a
    long run), the ``n``-th best level-2 maximum (64 ranked inserts), and ``-inf`` (fewer than
    ``n`` level-2 nodes are known).

    Parameters
    ----------
    value : ndarray of float64, shape (n_states, W)
    index : ndarray of float64, shape (n_states, index_width(W))
    state : int
    depth : int
    n : int
    top_value : ndarray of float64, shape (>= n,)
        Workspace.
    top_product : ndarray of int64, shape (>= n,)
        Workspace.

    Returns
    -------
    float
    """
    if depth < 2:
        return -np.inf
    # level 2 is the leaf level of a depth-2 tree
    keys = value if depth == 2 else index
    start = 0 if depth == 2 else level_start_nb(2)
    stop = start + (min(FANOUT * FANOUT, value.shape[1]) if depth == 2 else FANOUT * FANOUT)
    floor = -np.inf
    for parent in range(level_start_nb(1), level_start_nb(1) + FANOUT):
        threshold = index[state, parent]
        reached = count_reached_nb(keys, state, start, stop, threshold)
        floor = max(floor, threshold if reached >= n else -np.inf)
    if floor != -np.inf:
        return floor
    found = 0
    for child in range(start, stop):
        key = keys[state, child]
        if key != -np.inf:
            found = insert_ranked_nb(key, child, top_value, top_product, found, n)
    return top_value[n - 1] if found == n else -np.inf


@jit(inline=True)
def prefetch_children_nb(
    value: np.ndarray,
    index: np.ndarray,
    state: int,
    depth: int,
    level: int,
    nodes: np.ndarray,
    row: int,
    kept: int,
) -> None:
    """Hint the child groups at ``level`` of ``nodes[row, :kept]`` (one line each), so that
    their misses overlap (parameters as :func:`descend_nb`)."""
    start = level_start_nb(level)
    for k in range(kept):
        first = nodes[row, k] * FANOUT
        if level == depth:
            prefetch_nb(value, state, first)
        else:
            prefetch_nb(index, state, start + first)


@jit(inline=True)
def descend_nb(
    value: np.ndarray,
    index: np.ndarray,
    state: int,
    depth: int,
    level: int,
    floor: float,
    nodes: np.ndarray,
    row: int,
    kept: int,
    out: np.ndarray,
    out_row: int,
) -> int:
    """The children at ``level`` of ``nodes[row, :kept]`` that reach ``floor``, in ``out[out_row]``.

    Parameters
    ----------
    value : ndarray of float64, shape (n_states, W)
    index : ndarray of float64, shape (n_states, index_width(W))
    state, depth, level : int
        Children at ``level`` (``depth``: the leaves, i.e. products) of nodes at ``level - 1``.
    floor : float
    nodes : ndarray of int64, shape (rows, capacity)
    row, kept : int
    out : ndarray of int64, shape (out_rows, >= 8 * kept)
        Output row ``out_row`` (may be another row of ``nodes``).
    out_row : int

    Returns
    -------
    int
        Number of children written.
    """
    start = level_start_nb(level)
    found = 0
    for k in range(kept):
        first = nodes[row, k] * FANOUT
        # a kept node is finite, so its children lie within the padded row
        if level == depth:
            found += select_reached_nb(value, state, first, floor, out, out_row, found, first)
        else:
            found += select_reached_nb(
                index, state, start + first, floor, out, out_row, found, first
            )
    return found


@jit(inline=True)
def find_top_nb(
    value: np.ndarray,
    index: np.ndarray,
    state: int,
    depth: int,
    n: int,
    top_value: np.ndarray,
    top_product: np.ndarray,
    frontier: np.ndarray,
) -> int:
    """The ``n`` best known products of one state, best first (see the module docstring).

    Parameters
    ----------
    value : ndarray of float64, shape (n_states, W)
    index : ndarray of float64, shape (n_states, index_width(W))
    state : int
    depth : int
        Tree depth (:func:`index_depth`).
    n : int
        Number of products wanted.
    top_value : ndarray of float64, shape (>= n + 1,)
        Output: values, best first.
    top_product : ndarray of int64, shape (>= n + 1,)
        Output: product ids, best first.
    frontier : ndarray of int64, shape (3, 8**depth)
        Workspace: the nodes kept at the current and the next level, and ranking scratch.

    Returns
    -------
    int
        Number of products found: ``min(n, known products)``.
    """
    _, kept = collect_candidates_nb(value, index, state, depth, n, top_value, top_product, frontier)
    return rank_top_nb(value, state, frontier, depth & 1, kept, n, top_value, top_product)


@jit(inline=True)
def collect_candidates_nb(
    value: np.ndarray,
    index: np.ndarray,
    state: int,
    depth: int,
    n: int,
    top_value: np.ndarray,
    top_product: np.ndarray,
    frontier: np.ndarray,
) -> tuple[float, int]:
    """Steps 1 and 2 of the query: the floor, and every known product at or above it.

    The products are left in ``frontier[depth & 1]``; other parameters as :func:`find_top_nb`
    (``top_*`` are scratch here).

    Returns
    -------
    (float, int)
        The floor and the number of products at or above it.
    """
    if index[state, 0] == -np.inf:
        return -np.inf, 0
    floor = find_floor_nb(value, index, state, depth, n, top_value, top_product)
    return floor, collect_above_nb(value, index, state, depth, floor, frontier)


@jit(inline=True)
def collect_above_nb(
    value: np.ndarray, index: np.ndarray, state: int, depth: int, floor: float, frontier: np.ndarray
) -> int:
    """Step 2 of the query: every known product at or above ``floor``, left in
    ``frontier[depth & 1]`` (parameters as :func:`find_top_nb`); returns how many."""
    if index[state, 0] == -np.inf:
        return 0
    frontier[0, 0] = 0
    kept = 1
    for level in range(1, depth + 1):
        row = (level - 1) & 1
        prefetch_children_nb(value, index, state, depth, level, frontier, row, kept)
        kept = descend_nb(
            value, index, state, depth, level, floor, frontier, row, kept, frontier, 1 - row
        )
    return kept


@jit(inline=True)
def repair_index_nb(
    value: np.ndarray, index: np.ndarray, state: int, depth: int, products: np.ndarray
) -> None:
    """Recompute the maxima above some products of a state after their values changed.

    Level by level from the bottom, each changed product's ancestor is recomputed from its 8
    children (one group maximum each); a shared ancestor is recomputed once per product,
    except on levels with no more nodes than products, where every node is recomputed once.

    Parameters
    ----------
    value : ndarray of float64, shape (n_states, W)
        Already holds the new values.
    index : ndarray of float64, shape (n_states, index_width(W))
        Repaired in place.
    state : int
    depth : int
    products : ndarray of int64, shape (m,)
        The products whose values changed.
    """
    start = level_start_nb(depth - 1)
    for i in range(products.shape[0]):
        node = products[i] >> FANOUT_BITS
        index[state, start + node] = max_of_group_nb(value, state, node * FANOUT)
    shift = FANOUT_BITS
    for level in range(depth - 2, -1, -1):
        start = level_start_nb(level)
        children = level_start_nb(level + 1)
        shift += FANOUT_BITS
        if (1 << (FANOUT_BITS * level)) <= products.shape[0]:
            # a level with no more nodes than products: recompute each node once
            for node in range(1 << (FANOUT_BITS * level)):
                index[state, start + node] = max_of_group_nb(index, state, children + node * FANOUT)
            continue
        for i in range(products.shape[0]):
            node = products[i] >> shift
            index[state, start + node] = max_of_group_nb(index, state, children + node * FANOUT)
