"""The softmax sum tree's update: a state's row brought up to date after a visit.

The tree, its build and the slate draws live in :mod:`~rlreco.engine.kernels.sum_tree`, whose
module docstring gives the rule applied here: the row is rebuilt when a value rises above the
top grid cell or ``top`` falls to 0, and otherwise only the slate's leaf paths are repaired,
so the row always equals a rebuild from the tables, bit for bit. The update (the path repair
and the rebuild decision) writes the tree after a visit, the draws only read it, so it has its
own module. :func:`update_softmax_nb` is compiled without reference counting (the fused loop
calls it; its inlined helpers would otherwise count their array arguments on every call).
"""

from __future__ import annotations

import numpy as np

from rlreco.engine.kernels.jit import jit
from rlreco.engine.kernels.sum_tree import (
    FANOUT_BITS,
    GRID_TAUS,
    SumTree,
    grid_cell_nb,
    level_start_nb,
    rebuild_softmax_row_nb,
    sibling_sum_nb,
    tree_depth_nb,
)


@jit(refcount=False)
def update_softmax_nb(
    tree: SumTree,
    value: np.ndarray,
    state: int,
    catalogue: np.ndarray,
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
    catalogue : ndarray of int32, shape (K,)
        The state's segment catalogue.
    tau : float
    slate : ndarray of int64, shape (n,)
        Distinct catalogue products.
    previous_value : ndarray of float64, shape (n,)
        Their values before the visit (``-inf``: the product became known).
    """
    depth = tree_depth_nb(tree)
    row = tree.node[state]
    leaf0 = level_start_nb(depth)
    offset = tree.offset[state]
    cell = np.rint(offset / (GRID_TAUS * tau) - 0.5) if offset != -np.inf else -np.inf
    rebuild = False
    for i in range(slate.shape[0]):
        v = value[state, slate[i]]
        before = previous_value[i]
        if before == -np.inf:
            tree.known[state] += 1
        elif grid_cell_nb(before, tau) == cell:
            tree.top[state] -= 1
        after = grid_cell_nb(v, tau)
        if after > cell:
            rebuild = True
        elif after == cell:
            tree.top[state] += 1
        if not rebuild:
            row[np.uint64(leaf0 + slate[i])] = np.exp((v - offset) / tau)
    if rebuild or tree.top[state] == 0:
        rebuild_softmax_row_nb(value, state, catalogue, tau, tree)
    else:
        repair_paths_nb(tree, state, slate, depth)


@jit(inline=True)
def repair_paths_nb(tree: SumTree, state: int, slate: np.ndarray, depth: int) -> None:
    """Recompute the slate's leaf paths (leaves already written) level by level, bottom-up: a
    level with no more nodes than the slate is recomputed whole, so the ancestors all leaves
    share (the root, the first level) are summed once instead of once per leaf. Positions are
    unsigned: no load pays for Python's negative-index check."""
    n = slate.shape[0]
    row = tree.node[state]
    for level in range(depth - 1, -1, -1):
        start = np.uint64(level_start_nb(level))
        below = np.uint64(level_start_nb(level + 1))
        if (1 << (FANOUT_BITS * level)) <= n:
            for j in range(1 << (FANOUT_BITS * level)):
                node = np.uint64(j)
                row[start + node] = sibling_sum_nb(row, below + (node << np.uint64(FANOUT_BITS)))
        else:
            shift = np.uint64(FANOUT_BITS * (depth - level))
            for i in range(n):
                node = np.uint64(slate[i]) >> shift
                row[start + node] = sibling_sum_nb(row, below + (node << np.uint64(FANOUT_BITS)))
