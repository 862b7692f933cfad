"""The tables a process's sweep cells change: one buffer reused from cell to cell.

A cell starts from the run's starting tables and changes them. A new copy per cell would fault
in its pages again every time (about 75 MB, a tenth of a second, on the UCI data), so a process
keeps one buffer (the tables and their top-n index) and, after each cell, resets the rows the
cell changed from the starting tables' known cells (:meth:`~rlreco.engine.tables.Tables.
reset_rows`) and the same rows of the index from the starting index: between cells the buffer
holds the starting tables again, bit for bit.

The first buffer of the process that loaded the run is the loaded tables themselves. A process
that only hands the cells to workers it forks loads the known cells alone (no dense tables:
:class:`CellBuffers` with ``tables=None``), and each worker builds its buffer from them; a
forked worker of a process that did load the tables builds its own too
(:meth:`CellBuffers.use_own_buffer`), since the loaded tables are shared copy-on-write, in
transparent huge pages (numpy asks for them for large arrays), and a cell's first write to a
page copies it and splits the huge page it sits in into 4 KiB pages: the cells then run a few
per cent slower on every page they touch, cell after cell.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import cast

import numpy as np

from rlreco.engine.tables import Tables, copy_rows


@dataclass
class CellTables:
    """A cell's copy of the run's starting tables and of their top-n index
    (:meth:`CellBuffers.cell_tables`).

    Attributes
    ----------
    tables : Tables
        The copy, the cell's to change.
    index : ndarray of float64, shape (n_states, index_width(W))
        The top-n index of the copy (64-byte aligned), the cell's to change with it
        (:class:`~rlreco.engine.simulation.Simulator`'s ``index``).
    shown_per_state : ndarray of int64, shape (n_states,)
        The copy's recommendation counts summed per state (read only).
    changed : ndarray of int64 or None
        Sorted ids of the only states whose rows the cell changed, set by the cell once its
        visits are done; None (a cell that failed): any row may have changed.
    """

    tables: Tables
    index: np.ndarray
    shown_per_state: np.ndarray
    changed: np.ndarray | None = None


def shown_per_state(known: Mapping[str, np.ndarray], n_states: int, n_products: int) -> np.ndarray:
    """Recommendation counts summed per state, int64 (n_states,), from the known cells of
    :meth:`~rlreco.engine.tables.Tables.known_cells` (in cell order): the row sums of the
    tables' ``reco_count`` (unknown cells count 0), exactly, without the tables."""
    states = known["cell"] // n_products
    total = np.concatenate(([0], np.cumsum(known["reco_count"], dtype=np.int64)))
    bounds = np.searchsorted(states, np.arange(n_states + 1))
    return total[bounds[1:]] - total[bounds[:-1]]


class CellBuffers:
    """The cell buffers of one process over a run's starting tables.

    Parameters
    ----------
    known : dict of ndarray
        The starting tables' :meth:`~rlreco.engine.tables.Tables.known_cells` (checked).
    shape : (int, int)
        ``(n_states, n_products)``.
    tables : Tables or None
        The starting tables as loaded, this process's first buffer; None: not loaded (each
        buffer is built from ``known``).
    """

    def __init__(
        self, known: Mapping[str, np.ndarray], shape: tuple[int, int], tables: Tables | None
    ) -> None:
        self.known = known
        self.shape = shape
        # what every cell's simulator starts from, and changed_rows compares with
        self.shown_per_state = shown_per_state(known, *shape)
        self._loaded = tables
        # the starting tables' top-n index, which a buffer's index is reset from (built with
        # the first buffer)
        self._index: np.ndarray | None = None
        # the buffer of the next cell when no cell of this process is using it
        self._spare: tuple[Tables, np.ndarray] | None = None
        if tables is not None:
            self._spare = (tables, self._index_of(tables))
        self._lock = threading.Lock()

    @property
    def loaded(self) -> Tables:
        """The starting tables as loaded (built from the known cells where the load skipped
        them; the starting tables whenever no cell of this process is using them)."""
        if self._loaded is None:
            self._loaded = Tables.from_known_cells(self.known, *self.shape)
        return self._loaded

    def _index_of(self, tables: Tables) -> np.ndarray:
        """A new copy of the starting index, 64-byte aligned, built from ``tables`` (which
        must be the starting tables) the first time."""
        from rlreco.engine.kernels.records import aligned_empty
        from rlreco.engine.kernels.topn import new_index

        if self._index is None:
            self._index = new_index(tables.padded)
        index = aligned_empty(self._index.shape, np.float64)
        index[...] = self._index
        return index

    @contextlib.contextmanager
    def cell_tables(self) -> Iterator[CellTables]:
        """The starting tables and their top-n index, for one cell to change.

        The buffer of this process (see the module docstring), or a new one where it is in
        use: cells running at once in threads (a Dask worker) get their own buffers. When the
        cell is done, the buffer's rows that the cell says it changed
        (:attr:`CellTables.changed`), else all of them, are reset.
        """
        with self._lock:
            buffer, self._spare = self._spare, None
        if buffer is None:
            tables = Tables.from_known_cells(self.known, *self.shape)
            buffer = (tables, self._index_of(tables))
        tables, index = buffer
        cell = CellTables(tables, index, self.shown_per_state)
        try:
            yield cell
        finally:
            rows = np.arange(tables.shape[0]) if cell.changed is None else cell.changed
            tables.reset_rows(self.known, rows)
            copy_rows(cast(np.ndarray, self._index), index, rows)  # built with the buffer
            with self._lock:
                self._spare = buffer

    def use_own_buffer(self) -> None:
        """Let this process's next cell build a buffer of its own rather than change the loaded
        tables: what a worker forked from the process that loaded them does first (see the
        module docstring)."""
        with self._lock:
            if self._spare is not None and self._spare[0] is self._loaded:
                self._spare = None

    def changed_rows(self, shown: np.ndarray) -> np.ndarray:
        """The states whose rows a cell changed, from its simulator's
        :attr:`~rlreco.engine.simulation.Simulator.shown_per_state` at the end of its run."""
        return np.flatnonzero(shown != self.shown_per_state)
