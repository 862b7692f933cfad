"""Softmax slates sampled from a per-state sum tree, ``O(n log K)`` per visit.

Structure (:class:`SumTree`, one row per state, a pure function of the tables)
    An 8-ary tree whose leaves are product ids ``0 .. 8**depth - 1``: leaf ``p`` holds
    ``w_p = exp((value - offset_s) / tau)`` for a known product of the state's catalogue and
    0 otherwise; every internal node is the sum of its 8 children, added pairwise. A node
    is always recomputed from its children (never adjusted by a difference), so the row is a
    function of the leaves alone. The offset is a function of the values too:
    ``offset_s = G * (cell(max_s) + 1/2)``, ``cell(v) = ceil(v / G - 1/2)``, with ``max_s``
    the largest known catalogue value and the grid ``G = GRID_TAUS * tau``, so the largest
    leaf lies in ``(exp(-GRID_TAUS), 1]`` (no overflow; the total stays far above
    ``FALLBACK_BELOW``). ``top`` counts the known catalogue products in the top grid cell;
    an update rebuilds the row when a value rises above the top cell or ``top`` falls to 0,
    and otherwise only repairs the slate's leaf paths. After any sequence of updates the row
    therefore equals a rebuild from the tables, bit for bit: a run resumed from its tables
    draws exactly as an uninterrupted one. The update is
    :mod:`~rlreco.engine.kernels.sum_tree_update`'s ``update_softmax_nb``.

    Layout: level ``l`` starts at ``level_start(l)`` = 0, 8, 16, 80, 592, ... (every level
    padded to a multiple of 8 nodes) and rows are 64-byte aligned, so the 8 children of a
    node share one cache line: a descent or a path repair touches one line per level. Node
    ``p >= 8`` has its children from ``8 * p - 48`` and node ``p >= 16`` its parent at
    ``(p + 48) >> 3``, so a walk carries one position, unsigned (no load pays for Python's
    negative-index check).

``softmax`` (temperature ``tau``): sampling without replacement
    A *descent* of ``u`` goes from the root: at each node, the children's weights are added
    left to right into running sums, the first child whose running sum exceeds ``u`` is taken
    and ``u`` less the running sum before it goes on (the sums do not depend on ``u``, so a
    step is a branch-free count); should rounding carry ``u`` past every running sum, the last
    child of nonzero weight is taken.
    With ``d = min(n, known)`` slots to draw, ``total`` the root: while slots remain, a *round*
    draws ``u_b = rng.random() * total`` for each remaining slot, descends the tree with each
    (level by level, all at once, so their cache misses overlap), and accepts in order each
    leaf not yet in the slate (rejection: a draw, given that it is new, is a draw from the
    softmax over the products not yet in the slate). Before a round, should the accepted
    leaves still in the tree weigh more than ``total / 2`` (the slate holds most of the weight,
    small ``tau``), they are set to 0 (paths recomputed, old paths saved) and ``total``
    becomes the new root; after the last round the taken leaves' paths are written back in
    reverse order (bit-exact, no arithmetic). Each slot is thus a softmax draw over the
    products not yet in the slate, the Plackett-Luce distribution of the Gumbel top-n
    definition. Should the root fall below ``FALLBACK_BELOW`` after leaves are taken out
    (tiny ``tau``: the drawn products held all the weight), each remaining slot is drawn by
    the same inverse-CDF rule over the remaining known catalogue products in catalogue
    order, with weights ``exp((value - max) / tau)`` relative to their own maximum.
    Fewer than ``n`` known products: the slate is padded with catalogue products drawn
    ``below(K)`` until new, as in epsilon-greedy exploration.

Memory per state: ``level_start(depth) + 8**depth`` float64 (4,688 for 4,070 products: 37 KB;
21.6 MB for 576 states) and two scalars. Build: one pass over the catalogue per state.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from rlreco.engine.kernels.draw import draw_below_nb, is_in_nb
from rlreco.engine.kernels.jit import jit
from rlreco.engine.kernels.prefetch import prefetch_nb
from rlreco.engine.kernels.records import aligned_empty

#: Children per node.
FANOUT = 8
FANOUT_BITS = 3
#: Node ``p >= 8`` has its children from ``8 * p - UP``; node ``p >= 16`` its parent at
#: ``(p + UP) >> 3`` (:func:`level_start`: ``level_start(l + 1) = 8 * level_start(l) - UP``).
UP = 6 * FANOUT

#: Offset grid in temperatures: the largest leaf lies in ``(exp(-GRID_TAUS), 1]``. Wide, so
#: that the largest value rarely crosses a grid line (each crossing is a rebuild), with the
#: lines at half cells: away from 0, where reward means hover.
GRID_TAUS = 256.0
#: A remaining total below this is sampled by the catalogue scan (module docstring).
FALLBACK_BELOW = 1e-150


class SumTree(NamedTuple):
    """Per-state softmax sum trees (module docstring); ``L = 8**depth >= width`` leaves.

    Attributes
    ----------
    node : ndarray of float64, shape (n_states, level_start(depth) + L), rows 64-byte aligned
        Level ``l`` (``8**l`` nodes) starts at ``level_start(l)``; the last level holds the
        leaves, leaf ``p`` at ``level_start(depth) + p``.
    offset : ndarray of float64, shape (n_states,)
        Value subtracted before scaling (``-inf`` while the state has no known product).
    known : ndarray of int64, shape (n_states,)
        Known products of the state's catalogue.
    top : ndarray of int64, shape (n_states,)
        Known catalogue products in the top grid cell (module docstring).
    """

    node: np.ndarray
    offset: np.ndarray
    known: np.ndarray
    top: np.ndarray


def sum_tree_depth(width: int) -> int:
    """Levels below the root for ``width`` leaves."""
    depth = 1
    while FANOUT**depth < width:
        depth += 1
    return depth


class SumTreeWork(NamedTuple):
    """Per-call workspace of :func:`choose_softmax_slate_nb`.

    Attributes
    ----------
    saved_path : ndarray of float64, shape (n, depth + 1)
        The paths of the leaves taken out.
    batch_u : ndarray of float64, shape (n,)
        One round's uniforms.
    batch_leaf : ndarray of int64, shape (n,)
        One round's leaves.
    """

    saved_path: np.ndarray
    batch_u: np.ndarray
    batch_leaf: np.ndarray


def new_sum_tree_work(slate_size: int, width: int) -> SumTreeWork:
    """Workspace for slates of ``slate_size`` over ``width`` leaves."""
    return SumTreeWork(
        np.empty((slate_size, sum_tree_depth(width) + 1), dtype=np.float64),
        np.empty(slate_size, dtype=np.float64),
        np.empty(slate_size, dtype=np.int64),
    )


def level_start(level: int) -> int:
    """Index of the first node of a level: 0, 8, 16, 80, 592, ..."""
    return 0 if level == 0 else FANOUT + (FANOUT**level - FANOUT) // (FANOUT - 1)


def new_sum_tree(n_states: int, width: int) -> SumTree:
    """Allocate (uninitialised) sum trees; fill them with :func:`build_softmax_nb`."""
    depth = sum_tree_depth(width)
    nodes = level_start(depth) + FANOUT**depth
    # rows of a multiple of 8 float64 from a 64-byte aligned base: one line per sibling group
    return SumTree(
        node=aligned_empty((n_states, nodes), np.float64),
        offset=np.empty(n_states, dtype=np.float64),
        known=np.empty(n_states, dtype=np.int64),
        top=np.empty(n_states, dtype=np.int64),
    )


@jit(inline=True)
def level_start_nb(level: int) -> int:
    """Index of the first node of a level (:func:`level_start`)."""
    if level == 0:
        return 0
    return FANOUT + ((1 << (FANOUT_BITS * level)) - FANOUT) // (FANOUT - 1)


@jit(inline=True)
def tree_depth_nb(tree: SumTree) -> int:
    """Levels below the root."""
    nodes = tree.node.shape[1]
    depth = 1
    while level_start_nb(depth) + (1 << (FANOUT_BITS * depth)) < nodes:
        depth += 1
    return depth


@jit(inline=True)
def sibling_sum_nb(row: np.ndarray, first: np.uint64) -> float:
    """Sum of the 8 nodes of ``row`` from ``first``, pairwise: ``((a+b)+(c+d))+((e+f)+(g+h))``
    (three dependent additions instead of seven)."""
    one = np.uint64(1)
    return ((row[first] + row[first + one]) + (row[first + 2 * one] + row[first + 3 * one])) + (
        (row[first + 4 * one] + row[first + 5 * one])
        + (row[first + 6 * one] + row[first + 7 * one])
    )


@jit(inline=True)
def set_leaf_nb(tree: SumTree, state: int, product: int, weight: float, depth: int) -> None:
    """Set one leaf and recompute its path (each node = :func:`sibling_sum_nb` of its
    children)."""
    row = tree.node[state]
    position = np.uint64(level_start_nb(depth) + product)
    x = weight
    for _ in range(depth):
        # the group's sum with the new child substituted, read before the child is
        # written: no load waits on a store
        slot = position & np.uint64(FANOUT - 1)
        s = substituted_sum_nb(row, position - slot, slot, x)
        row[position] = x
        x = s
        position = (position + np.uint64(UP)) >> np.uint64(FANOUT_BITS)
    row[0] = x


@jit(inline=True)
def substituted_sum_nb(row: np.ndarray, first: np.uint64, slot: np.uint64, x: float) -> float:
    """:func:`sibling_sum_nb` of the 8 nodes from ``first`` with node ``first + slot``
    replaced by ``x``."""
    a = x if slot == 0 else row[first]
    b = x if slot == 1 else row[first + np.uint64(1)]
    c = x if slot == 2 else row[first + np.uint64(2)]
    d = x if slot == 3 else row[first + np.uint64(3)]
    e = x if slot == 4 else row[first + np.uint64(4)]
    f = x if slot == 5 else row[first + np.uint64(5)]
    g = x if slot == 6 else row[first + np.uint64(6)]
    h = x if slot == 7 else row[first + np.uint64(7)]
    return ((a + b) + (c + d)) + ((e + f) + (g + h))


@jit(inline=True)
def take_leaf_nb(
    tree: SumTree, state: int, product: int, depth: int, saved: np.ndarray, slot: int
) -> None:
    """Set a leaf to 0 (its path recomputed), saving the path's old nodes (leaf first) in
    ``saved[slot]``: :func:`restore_leaf_nb`, applied in reverse order, undoes it exactly."""
    row = tree.node[state]
    path = saved[slot]
    position = np.uint64(level_start_nb(depth) + product)
    for level in range(depth):
        path[np.uint64(level)] = row[position]
        position = (position + np.uint64(UP)) >> np.uint64(FANOUT_BITS)
    path[np.uint64(depth)] = row[0]
    set_leaf_nb(tree, state, product, 0.0, depth)


@jit(inline=True)
def restore_leaf_nb(
    tree: SumTree, state: int, product: int, depth: int, saved: np.ndarray, slot: int
) -> None:
    """Write back the path :func:`take_leaf_nb` saved (no arithmetic: bit-exact)."""
    row = tree.node[state]
    path = saved[slot]
    position = np.uint64(level_start_nb(depth) + product)
    for level in range(depth):
        row[position] = path[np.uint64(level)]
        position = (position + np.uint64(UP)) >> np.uint64(FANOUT_BITS)
    row[0] = path[np.uint64(depth)]


@jit(inline=True)
def grid_cell_nb(v: float, tau: float) -> float:
    """``cell(v) = ceil(v / G - 1/2)``, ``G = GRID_TAUS * tau`` (module docstring)."""
    return np.ceil(v / (GRID_TAUS * tau) - 0.5)


@jit()
def rebuild_softmax_row_nb(
    value: np.ndarray, state: int, catalogue: np.ndarray, tau: float, tree: SumTree
) -> None:
    """Fill one state's row from its values (leaves, then every level bottom-up).

    Parameters
    ----------
    value : ndarray of float64, shape (n_states, width)
    state : int
    catalogue : ndarray of int32, shape (K,)
        The state's segment catalogue.
    tau : float
    tree : SumTree
        The row ``state`` of ``tree.node`` is overwritten; ``offset``, ``known``, ``top`` set.
    """
    depth = tree_depth_nb(tree)
    node = tree.node
    cell = -np.inf
    for k in range(catalogue.shape[0]):
        cell = max(cell, grid_cell_nb(value[state, catalogue[k]], tau))
    offset = (cell + 0.5) * (GRID_TAUS * tau)
    leaf0 = level_start_nb(depth)
    for i in range(leaf0, node.shape[1]):
        node[state, i] = 0.0
    known = 0
    top = 0
    for k in range(catalogue.shape[0]):
        product = catalogue[k]
        v = value[state, product]
        if v != -np.inf:
            node[state, leaf0 + product] = np.exp((v - offset) / tau)
            known += 1
            top += grid_cell_nb(v, tau) == cell
    for level in range(depth - 1, -1, -1):
        start = level_start_nb(level)
        child_start = level_start_nb(level + 1)
        for j in range(1 << (FANOUT_BITS * level)):
            first = np.uint64(child_start + (j << FANOUT_BITS))
            node[state, start + j] = sibling_sum_nb(node[state], first)
    for j in range(1, FANOUT):
        node[state, j] = 0.0  # padding of the root level
    tree.offset[state] = offset
    tree.known[state] = known
    tree.top[state] = top


@jit()
def build_softmax_nb(
    value: np.ndarray,
    catalogue_ptr: np.ndarray,
    catalogue_items: np.ndarray,
    state_segment: np.ndarray,
    tau: float,
    tree: SumTree,
) -> None:
    """Fill every state's sum tree from the values.

    Parameters
    ----------
    value : ndarray of float64, shape (n_states, width)
        ``-inf`` = unknown.
    catalogue_ptr : ndarray of int64, shape (n_segments + 1,)
    catalogue_items : ndarray of int32, shape (nnz,)
    state_segment : ndarray of int16, shape (n_states,)
    tau : float
        Temperature (> 0).
    tree : SumTree
        Output (allocated by :func:`new_sum_tree`).
    """
    for state in range(value.shape[0]):
        segment = state_segment[state]
        catalogue = catalogue_items[catalogue_ptr[segment] : catalogue_ptr[segment + 1]]
        rebuild_softmax_row_nb(value, state, catalogue, tau, tree)


@jit(inline=True)
def running_sums_nb(
    row: np.ndarray, first: np.uint64
) -> tuple[float, float, float, float, float, float, float, float]:
    """The running sums of the 8 children at ``first``, added left to right (the first is the
    child itself: ``0.0 + w == w`` for ``w >= 0``, the reference's first addition)."""
    one = np.uint64(1)
    a = row[first]
    b = a + row[first + one]
    c = b + row[first + 2 * one]
    d = c + row[first + 3 * one]
    e = d + row[first + 4 * one]
    f = e + row[first + 5 * one]
    g = f + row[first + 6 * one]
    return a, b, c, d, e, f, g, g + row[first + 7 * one]


@jit(inline=True)
def pick_child_nb(
    row: np.ndarray,
    first: np.uint64,
    sums: tuple[float, float, float, float, float, float, float, float],
    u: float,
) -> tuple[np.uint64, float]:
    """One descent step from the 8 children at ``first``, their :func:`running_sums_nb`
    given: the child and what is left of ``u`` (module docstring). The sums do not depend on
    ``u`` and the count has no branch, so the independent descents of a round overlap."""
    passed = 0.0
    chosen = np.uint64(0)
    for c in range(FANOUT):
        below = sums[c] <= u
        chosen += np.uint64(below)
        passed = sums[c] if below else passed
    if chosen == np.uint64(FANOUT):
        # rounding carried u past every child: the last child of nonzero weight
        chosen = np.uint64(FANOUT - 1)
        while chosen > np.uint64(0) and row[first + chosen] <= 0.0:
            chosen -= np.uint64(1)
        passed = 0.0
        for c in range(chosen):
            passed += row[first + np.uint64(c)]
    return chosen, u - passed


@jit(inline=True)
def descend_batch_nb(
    tree: SumTree, state: int, u: np.ndarray, count: int, depth: int, leaf: np.ndarray
) -> None:
    """Descents (module docstring) of ``u[:count]`` into ``leaf[:count]``, level by level, so
    the independent descents' cache misses overlap; a descent carries one unsigned position
    (the next group's first node, ``8 * p - UP`` of the node ``p`` taken). Every descent
    starts from the root's children: their running sums are added once per round."""
    row = tree.node[state]
    first = np.uint64(FANOUT)
    root_sums = running_sums_nb(row, first)
    for b in range(count):
        chosen, u[b] = pick_child_nb(row, first, root_sums, u[b])
        leaf[b] = (first + chosen) * np.uint64(FANOUT) - np.uint64(UP)
    for _ in range(1, depth):
        for b in range(count):
            first = np.uint64(leaf[b])
            chosen, u[b] = pick_child_nb(row, first, running_sums_nb(row, first), u[b])
            leaf[b] = (first + chosen) * np.uint64(FANOUT) - np.uint64(UP)
    # the last step went one level too far: back to the node, then to its leaf number
    leaf0 = level_start_nb(depth)
    for b in range(count):
        leaf[b] = (leaf[b] + UP) // FANOUT - leaf0


@jit()
def draw_remaining_nb(
    rng: np.random.Generator,
    value: np.ndarray,
    state: int,
    catalogue: np.ndarray,
    tau: float,
    slate: np.ndarray,
    filled: int,
) -> int:
    """One softmax draw over the known catalogue products not in ``slate[:filled]``, by
    inverse CDF in catalogue order (the fallback of the module docstring)."""
    top = -np.inf
    for k in range(catalogue.shape[0]):
        product = catalogue[k]
        if not is_in_nb(product, slate, filled):
            top = max(top, value[state, product])
    total = 0.0
    for k in range(catalogue.shape[0]):
        product = catalogue[k]
        v = value[state, product]
        if v != -np.inf and not is_in_nb(product, slate, filled):
            total += np.exp((v - top) / tau)
    u = rng.random() * total
    chosen = -1
    for k in range(catalogue.shape[0]):
        product = catalogue[k]
        v = value[state, product]
        if v != -np.inf and not is_in_nb(product, slate, filled):
            w = np.exp((v - top) / tau)
            if w > 0.0:
                chosen = product
                if u < w:
                    break
                u -= w
    return chosen


@jit(refcount=False)
def choose_softmax_slate_nb(
    rng: np.random.Generator,
    tree: SumTree,
    value: np.ndarray,
    cells: np.ndarray,
    state: int,
    catalogue: np.ndarray,
    tau: float,
    slate: np.ndarray,
    saved_path: np.ndarray,
    batch_u: np.ndarray,
    batch_leaf: np.ndarray,
) -> int:
    """Softmax slate without replacement from the state's sum tree (module docstring).

    Compiled without reference counting: the fused loop calls it (it is not inlined), and its
    inlined helpers would otherwise count their array arguments on every descent step.

    Parameters
    ----------
    rng : numpy.random.Generator
    tree : SumTree
        The state's row is modified during the call and restored bit for bit.
    value : ndarray of float64, shape (n_states, width)
    cells : ndarray of CELL_DTYPE, shape (n_states, width)
    state : int
    catalogue : ndarray of int32, shape (K,)
        The state's segment catalogue, ``K >= n``.
    tau : float
        Temperature (> 0), the one the tree was built with.
    slate : ndarray of int64, shape (n,)
        Output.
    saved_path : ndarray of float64, shape (n, depth + 1)
        Workspace: the paths of the leaves taken out (:class:`SumTreeWork`).
    batch_u : ndarray of float64, shape (n,)
        Workspace: one round's uniforms.
    batch_leaf : ndarray of int64, shape (n,)
        Workspace: one round's leaves.

    Returns
    -------
    int
        Explored slots: slate products never recommended in the state before.
    """
    n = slate.shape[0]
    depth = tree_depth_nb(tree)
    # the levels above the leaves are read by every descent: hint all their lines at once
    for i in range(0, level_start_nb(depth), FANOUT):
        prefetch_nb(tree.node, state, i)
    draws = min(n, tree.known[state])
    total = tree.node[state, 0]
    leaf0 = level_start_nb(depth)
    filled = 0
    taken = 0  # slate[:taken] are out of the tree
    accepted = 0.0  # weight of slate[taken:filled]
    while filled < draws:
        if accepted > 0.5 * total:
            # the slate's leaves left in the tree hold most of its weight: take them out
            for i in range(taken, filled):
                take_leaf_nb(tree, state, slate[i], depth, saved_path, i)
            taken = filled
            accepted = 0.0
            total = tree.node[state, 0]
            if total < FALLBACK_BELOW:
                for i in range(filled, draws):
                    slate[i] = draw_remaining_nb(rng, value, state, catalogue, tau, slate, i)
                filled = draws
                break
        # a round: independent descents, overlapped in memory; rejection of repeats
        need = draws - filled
        for b in range(need):
            batch_u[b] = rng.random() * total
        descend_batch_nb(tree, state, batch_u, need, depth, batch_leaf)
        for b in range(need):
            product = batch_leaf[b]
            if not is_in_nb(product, slate, filled):
                slate[filled] = product
                accepted += tree.node[state, leaf0 + product]
                filled += 1
                # the explored count and the visit's update read these lines
                prefetch_nb(cells, state, product)
                prefetch_nb(value, state, product)
    for i in range(taken - 1, -1, -1):
        restore_leaf_nb(tree, state, slate[i], depth, saved_path, i)
    size = catalogue.shape[0]
    for i in range(draws, n):
        product = catalogue[draw_below_nb(rng, size)]
        while is_in_nb(product, slate, i):
            product = catalogue[draw_below_nb(rng, size)]
        slate[i] = product
    explored = 0
    for i in range(n):
        explored += cells[state, slate[i]].reco_count == 0
    return explored
