"""Softmax slates sampled from a per-state sum tree, ``O(n log K)`` per visit.

Structure (:class:`SumTree`, one row per state)
    An 8-ary tree whose leaves are product ids ``0 .. 8**depth - 1``: leaf ``p`` holds
    ``w_p = exp((value - offset_s) / tau)`` for a known product of the state's catalogue and
    0 otherwise; every internal node is the sum of its 8 children, added left to right. A node
    is always recomputed from its children (never adjusted by a difference), so the row is a
    function of the leaves alone: after any sequence of updates it equals a rebuild with the
    same offset, bit for bit. ``offset_s`` is the largest known catalogue value at the row's
    last rebuild, so ``exp`` neither overflows nor underflows the total. A row is rebuilt
    when an updated value gets ``(value - offset_s) / tau > REBUILD_ABOVE`` (or the state
    had no known product), or when its total falls below ``exp(-REBUILD_ABOVE)``.

``softmax`` (temperature ``tau``): sampling without replacement
    Slot ``i`` (while known products remain) draws ``u = rng.random() * total`` and descends
    from the root: at each node, the first child (left to right) whose weight exceeds what is
    left of ``u`` is taken, ``u`` minus the weights passed; should rounding carry ``u`` past
    every child, the last child of nonzero weight is taken. The drawn leaf is set to 0 (its
    path recomputed) for the next slot, and every drawn leaf is restored after the slate is
    full. Each slot is thus a softmax draw over the products not yet in the slate, which is
    the Plackett-Luce distribution of the Gumbel top-n definition. Should the remaining total
    fall below ``FALLBACK_BELOW`` (tiny ``tau``: the drawn products held all the weight), the
    slot is drawn by the same inverse-CDF rule over the remaining known catalogue products in
    catalogue order, with weights ``exp((value - max) / tau)`` relative to their own maximum.
    Fewer than ``n`` known products: the slate is padded with catalogue products drawn
    ``below(K)`` until new, as in epsilon-greedy exploration.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from rlreco.engine.kernels.count_groups import FANOUT, FANOUT_BITS, draw_below_nb
from rlreco.engine.kernels.jit import jit

#: Largest scaled value ``(value - offset) / tau`` kept without a rebuild of the row.
REBUILD_ABOVE = 64.0
#: A remaining total below this is sampled by the catalogue scan (module docstring).
FALLBACK_BELOW = 1e-150


class SumTree(NamedTuple):
    """Per-state softmax sum trees (module docstring); ``L = 8**depth >= width`` leaves.

    Attributes
    ----------
    node : ndarray of float64, shape (n_states, (8 * L - 1) // 7)
        Level ``l`` (``8**l`` nodes) starts at ``(8**l - 1) // 7``; the last level holds the
        leaves, leaf ``p`` at ``(L - 1) // 7 + p``.
    offset : ndarray of float64, shape (n_states,)
        Value subtracted before scaling (``-inf`` while the state has no known product).
    known : ndarray of int64, shape (n_states,)
        Known products of the state's catalogue.
    """

    node: np.ndarray
    offset: np.ndarray
    known: np.ndarray


def sum_tree_depth(width: int) -> int:
    """Levels below the root for ``width`` leaves."""
    depth = 1
    while FANOUT**depth < width:
        depth += 1
    return depth


def new_sum_tree(n_states: int, width: int) -> SumTree:
    """Allocate (uninitialised) sum trees; fill them with :func:`build_softmax_nb`."""
    leaves = FANOUT ** sum_tree_depth(width)
    return SumTree(
        node=np.empty((n_states, (FANOUT * leaves - 1) // (FANOUT - 1)), dtype=np.float64),
        offset=np.empty(n_states, dtype=np.float64),
        known=np.empty(n_states, dtype=np.int64),
    )


@jit(inline=True)
def tree_depth_nb(tree: SumTree) -> int:
    """Levels below the root."""
    nodes = tree.node.shape[1]
    depth = 0
    while (((1 << (FANOUT_BITS * (depth + 1))) * FANOUT) - 1) // (FANOUT - 1) <= nodes:
        depth += 1
    return depth


@jit(inline=True)
def level_start_nb(level: int) -> int:
    """Index of the first node of a level."""
    return ((1 << (FANOUT_BITS * level)) - 1) // (FANOUT - 1)


@jit(inline=True)
def set_leaf_nb(tree: SumTree, state: int, product: int, weight: float, depth: int) -> None:
    """Set one leaf and recompute its path (each node = left-to-right sum of its children)."""
    node = tree.node
    j = product
    node[state, level_start_nb(depth) + j] = weight
    for level in range(depth - 1, -1, -1):
        child_start = level_start_nb(level + 1)
        j >>= FANOUT_BITS
        total = 0.0
        for c in range(child_start + (j << FANOUT_BITS), child_start + ((j + 1) << FANOUT_BITS)):
            total += node[state, c]
        node[state, level_start_nb(level) + j] = total


@jit()
def fill_softmax_row_nb(
    value: np.ndarray,
    catalogue_items: np.ndarray,
    first: int,
    size: int,
    state: int,
    tau: float,
    offset: float,
    tree: SumTree,
) -> None:
    """Fill one state's row with the given offset (leaves, then every level bottom-up).

    Parameters
    ----------
    value : ndarray of float64, shape (n_states, width)
    catalogue_items : ndarray of int32, shape (nnz,)
    first, size : int
        The state's catalogue is ``catalogue_items[first:first + size]``.
    state : int
    tau : float
    offset : float
    tree : SumTree
        The row ``state`` of ``tree.node`` is overwritten; ``offset``/``known`` are set.
    """
    depth = tree_depth_nb(tree)
    node = tree.node
    leaf0 = level_start_nb(depth)
    for i in range(leaf0, node.shape[1]):
        node[state, i] = 0.0
    known = 0
    for k in range(first, first + size):
        product = catalogue_items[k]
        v = value[state, product]
        if v != -np.inf:
            node[state, leaf0 + product] = np.exp((v - offset) / tau)
            known += 1
    for level in range(depth - 1, -1, -1):
        start = level_start_nb(level)
        child_start = level_start_nb(level + 1)
        for j in range(1 << (FANOUT_BITS * level)):
            total = 0.0
            for c in range(
                child_start + (j << FANOUT_BITS), child_start + ((j + 1) << FANOUT_BITS)
            ):
                total += node[state, c]
            node[state, start + j] = total
    tree.offset[state] = offset
    tree.known[state] = known


@jit()
def rebuild_softmax_row_nb(
    value: np.ndarray,
    catalogue_items: np.ndarray,
    first: int,
    size: int,
    state: int,
    tau: float,
    tree: SumTree,
) -> None:
    """Fill one state's row with the offset = its largest known catalogue value."""
    offset = -np.inf
    for k in range(first, first + size):
        offset = max(offset, value[state, catalogue_items[k]])
    fill_softmax_row_nb(value, catalogue_items, first, size, state, tau, offset, tree)


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
        first = catalogue_ptr[segment]
        rebuild_softmax_row_nb(
            value, catalogue_items, first, catalogue_ptr[segment + 1] - first, state, tau, tree
        )


@jit(inline=True)
def descend_nb(tree: SumTree, state: int, u: float, depth: int) -> int:
    """The leaf (product) that ``u`` in ``[0, total)`` selects (module docstring)."""
    node = tree.node
    j = 0
    for level in range(1, depth + 1):
        child_start = level_start_nb(level) + (j << FANOUT_BITS)
        chosen = -1
        last = 0
        for c in range(FANOUT):
            w = node[state, child_start + c]
            if w > 0.0:
                last = c
                if u < w:
                    chosen = c
                    break
                u -= w
        if chosen < 0:
            chosen = last
        j = (j << FANOUT_BITS) + chosen
    return j


@jit()
def draw_remaining_nb(
    rng: np.random.Generator,
    value: np.ndarray,
    state: int,
    catalogue_items: np.ndarray,
    first: int,
    size: int,
    tau: float,
    slate: np.ndarray,
    filled: int,
) -> int:
    """One softmax draw over the known catalogue products not in ``slate[:filled]``, by
    inverse CDF in catalogue order (the fallback of the module docstring)."""
    top = -np.inf
    for k in range(first, first + size):
        product = catalogue_items[k]
        if not is_in_nb(product, slate, filled):
            top = max(top, value[state, product])
    total = 0.0
    for k in range(first, first + size):
        product = catalogue_items[k]
        v = value[state, product]
        if v != -np.inf and not is_in_nb(product, slate, filled):
            total += np.exp((v - top) / tau)
    u = rng.random() * total
    chosen = -1
    for k in range(first, first + size):
        product = catalogue_items[k]
        v = value[state, product]
        if v != -np.inf and not is_in_nb(product, slate, filled):
            w = np.exp((v - top) / tau)
            if w > 0.0:
                chosen = product
                if u < w:
                    break
                u -= w
    return chosen


@jit(inline=True)
def is_in_nb(product: int, slate: np.ndarray, filled: int) -> bool:
    """Whether ``product`` is among the first ``filled`` entries of ``slate``."""
    found = False
    for j in range(filled):
        found |= slate[j] == product
    return found


@jit()
def choose_softmax_slate_nb(
    rng: np.random.Generator,
    tree: SumTree,
    value: np.ndarray,
    cells: np.ndarray,
    state: int,
    catalogue_items: np.ndarray,
    first: int,
    size: int,
    tau: float,
    slate: np.ndarray,
    drawn_weight: np.ndarray,
) -> int:
    """Softmax slate without replacement from the state's sum tree (module docstring).

    Parameters
    ----------
    rng : numpy.random.Generator
    tree : SumTree
        The state's row is modified during the call and restored bit for bit.
    value : ndarray of float64, shape (n_states, width)
    cells : ndarray of CELL_DTYPE, shape (n_states, width)
    state : int
    catalogue_items : ndarray of int32, shape (nnz,)
    first, size : int
        The state's catalogue is ``catalogue_items[first:first + size]``, ``size >= n``.
    tau : float
        Temperature (> 0), the one the tree was built with.
    slate : ndarray of int64, shape (n,)
        Output.
    drawn_weight : ndarray of float64, shape (n,)
        Workspace: the leaves taken out.

    Returns
    -------
    int
        Explored slots: slate products never recommended in the state before.
    """
    n = slate.shape[0]
    depth = tree_depth_nb(tree)
    draws = min(n, tree.known[state])
    leaf0 = level_start_nb(depth)
    for i in range(draws):
        total = tree.node[state, 0]
        if total < FALLBACK_BELOW:
            product = draw_remaining_nb(
                rng, value, state, catalogue_items, first, size, tau, slate, i
            )
        else:
            product = descend_nb(tree, state, rng.random() * total, depth)
        slate[i] = product
        drawn_weight[i] = tree.node[state, leaf0 + product]
        set_leaf_nb(tree, state, product, 0.0, depth)
    for i in range(draws):
        set_leaf_nb(tree, state, slate[i], drawn_weight[i], depth)
    for i in range(draws, n):
        product = catalogue_items[first + draw_below_nb(rng, size)]
        while is_in_nb(product, slate, i):
            product = catalogue_items[first + draw_below_nb(rng, size)]
        slate[i] = product
    explored = 0
    for i in range(n):
        explored += cells[state, slate[i]].reco_count == 0
    return explored


@jit()
def update_softmax_nb(
    tree: SumTree,
    value: np.ndarray,
    state: int,
    catalogue_items: np.ndarray,
    first: int,
    size: int,
    tau: float,
    slate: np.ndarray,
    previous_value: np.ndarray,
) -> None:
    """Bring the state's sum tree up to date after a visit changed the slate's values.

    Parameters
    ----------
    tree : SumTree
        Updated in place (the row rebuilt when the module docstring's rule says so).
    value : ndarray of float64, shape (n_states, width)
        Values after the visit.
    state : int
    catalogue_items : ndarray of int32, shape (nnz,)
    first, size : int
        The state's catalogue bounds.
    tau : float
    slate : ndarray of int64, shape (n,)
        Distinct catalogue products.
    previous_value : ndarray of float64, shape (n,)
        Their values before the visit (``-inf``: the product became known).
    """
    depth = tree_depth_nb(tree)
    offset = tree.offset[state]
    rebuild = False
    for i in range(slate.shape[0]):
        v = value[state, slate[i]]
        if previous_value[i] == -np.inf and v != -np.inf:
            tree.known[state] += 1
        scaled = (v - offset) / tau
        if scaled > REBUILD_ABOVE or offset == -np.inf:
            rebuild = True
        elif not rebuild:
            set_leaf_nb(tree, state, slate[i], np.exp(scaled), depth)
    if rebuild or (tree.known[state] > 0 and tree.node[state, 0] < np.exp(-REBUILD_ABOVE)):
        rebuild_softmax_row_nb(value, catalogue_items, first, size, state, tau, tree)
