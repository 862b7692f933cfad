"""Rows of the dense tables made those of a set of known cells again, in one pass per row.

What a sweep does between two cells on the same buffer (:meth:`Tables.reset_rows
<rlreco.engine.tables.Tables.reset_rows>`): a cell of a thousand visits changes a few cells in
most rows, so the rows are rewritten whole, each while it is in the cache: its values and
padding, then its cell records, then its known cells over them.
"""

from __future__ import annotations

import numpy as np

from rlreco.engine.kernels.jit import jit


@jit()
def reset_rows_nb(
    padded: np.ndarray,
    cells: np.ndarray,
    rows: np.ndarray,
    cell: np.ndarray,
    value: np.ndarray,
    reward: np.ndarray,
    count: np.ndarray,
    reco_count: np.ndarray,
) -> None:
    """Make rows of the tables those of the known cells: every other cell of a row unknown.

    Parameters
    ----------
    padded : ndarray of float64, shape (S, W)
        Values in the kernels' layout (``W >= P``); a row's columns ``P..W-1`` become ``-inf``.
    cells : ndarray of CELL_DTYPE, shape (S, P)
        Cell records; a row's cells outside the known ones become all zero.
    rows : ndarray of int64, shape (m,)
        The states whose rows are reset.
    cell : ndarray of int64, shape (k,)
        Known cells, ``state * P + product``, strictly increasing.
    value, reward : ndarray of float64, shape (k,)
    count, reco_count : ndarray of int64, shape (k,)
        The known cells' numbers.
    """
    n_products = cells.shape[1]
    for i in range(rows.shape[0]):
        state = rows[i]
        padded[state, :] = -np.inf
        for product in range(n_products):
            record = cells[state, product]
            record["reward"] = 0.0
            record["count"] = 0
            record["reco_count"] = 0
        first = state * n_products
        # the row's known cells: one slice of the sorted ids
        low = np.searchsorted(cell, first)
        high = np.searchsorted(cell, first + n_products)
        for k in range(low, high):
            product = cell[k] - first
            padded[state, product] = value[k]
            record = cells[state, product]
            record["reward"] = reward[k]
            record["count"] = count[k]
            record["reco_count"] = reco_count[k]
