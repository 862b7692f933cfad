"""Dense (state x product) tables of value, reward, count and recommendation count.

``value`` is its own float64 array (the top-n search reads it in groups of 8 neighbours) and
``-inf`` marks an unknown cell: a cell is known exactly when its value is finite. It is a view
of :attr:`Tables.padded`, the layout the kernels work on: rows of whole 64-byte cache lines,
64-byte aligned, with ``-inf`` beyond the last product, so a group of 8 products is one line
and the kernels need no tail loops. ``cells`` is a record array
(:data:`~rlreco.schema.CELL_DTYPE`) holding the reward sum, count and
recommendation count of each cell together, so updating one slate product touches one line.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rlreco.engine.kernels.records import aligned_empty, padded_width
from rlreco.engine.state_space import StateSpace
from rlreco.errors import SnapshotError
from rlreco.schema import CELL_DTYPE

#: Arrays of :meth:`Tables.known_cells` and their dtypes.
KNOWN_CELL_DTYPES = {
    "cell": np.dtype(np.int64),
    "value": np.dtype(np.float64),
    "reward": np.dtype(np.float64),
    "count": np.dtype(np.int64),
    "reco_count": np.dtype(np.int64),
}
KNOWN_CELL_ARRAYS = tuple(KNOWN_CELL_DTYPES)
#: The numbers of a cell record (:data:`~rlreco.schema.CELL_DTYPE`) among them.
CELL_NUMBERS = ("reward", "count", "reco_count")

#: Most cells per group of :meth:`Tables.iter_columns` (a snapshot's Parquet row group).
GROUP_CELLS = 1 << 15


def round_cents(x: np.ndarray) -> np.ndarray:
    """Round to 2 decimals the way every kernel does: ``rint(x * 100) / 100``."""
    return np.rint(x * 100.0) / 100.0


def padded_values(value: np.ndarray) -> np.ndarray:
    """A copy of a value table in the kernels' layout (see the module docstring).

    Parameters
    ----------
    value : ndarray of float64, shape (n_states, n_products)

    Returns
    -------
    ndarray of float64, shape (n_states, padded_width(n_products))
        64-byte aligned; columns ``n_products..`` are ``-inf``.
    """
    n_states, n_products = value.shape
    padded = aligned_empty((n_states, padded_width(n_products)), np.float64)
    padded[:, n_products:] = -np.inf
    padded[:, :n_products] = value
    return padded


@dataclass
class Tables:
    """Mutable learned tables of shape (n_states, n_products).

    ``Tables(value, cells)`` copies ``value`` into a new padded buffer and keeps ``cells``.

    Attributes
    ----------
    value : ndarray of float64, shape (n_states, n_products)
        Incremental-mean value of each cell; ``-inf`` where the cell is unknown. A view of
        :attr:`padded` (not C-contiguous when ``n_products`` is not a multiple of 8).
    cells : ndarray of CELL_DTYPE, shape (n_states, n_products)
        Fields ``reward`` (float64 sum of rewards), ``count`` (int64: historical quantity plus
        recommendations) and ``reco_count`` (int64 recommendations).
    padded : ndarray of float64, shape (n_states, padded_width(n_products))
        The values in the kernels' layout (:func:`padded_values`); the kernels update it in
        place, which updates ``value``. Its padding columns must stay ``-inf``.
    """

    value: np.ndarray
    cells: np.ndarray
    padded: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        value = np.asarray(self.value, dtype=np.float64)
        if value.ndim != 2:
            raise SnapshotError(f"tables: value has {value.ndim} dimensions, expected 2")
        self.padded = padded_values(value)
        self.value = self.padded[:, : value.shape[1]]

    def __reduce__(self) -> tuple[Any, ...]:
        # pickles (worker payloads) rebuild the padded buffer, so value stays its view
        return (Tables, (np.ascontiguousarray(self.value), self.cells))

    @property
    def shape(self) -> tuple[int, int]:
        """(n_states, n_products)."""
        return (int(self.value.shape[0]), int(self.value.shape[1]))

    @property
    def known(self) -> np.ndarray:
        """Boolean mask of known cells, shape (n_states, n_products)."""
        return np.isfinite(self.value)

    @property
    def reward(self) -> np.ndarray:
        """Reward sums (a view), float64 (n_states, n_products)."""
        return self.cells["reward"]

    @property
    def count(self) -> np.ndarray:
        """Counts (a view), int64 (n_states, n_products)."""
        return self.cells["count"]

    @property
    def reco_count(self) -> np.ndarray:
        """Recommendation counts (a view), int64 (n_states, n_products)."""
        return self.cells["reco_count"]

    def copy(self) -> Tables:
        """Deep copy."""
        return Tables(self.value, self.cells.copy())

    @classmethod
    def _adopt(cls, padded: np.ndarray, cells: np.ndarray, n_products: int) -> Tables:
        """Tables over ``padded`` (the kernels' layout, its padding already ``-inf``) and
        ``cells`` themselves, without the copy of ``Tables(value, cells)``."""
        tables = cls.__new__(cls)
        tables.padded = padded
        tables.value = padded[:, :n_products]
        tables.cells = cells
        return tables

    def reset_rows(self, known: Mapping[str, np.ndarray], rows: np.ndarray) -> None:
        """Make the rows ``rows`` (distinct state ids) those of the tables that
        :meth:`known_cells` gave ``known`` (checked by :func:`check_known_cells`), padding
        included: each row is rewritten whole, in one pass
        (:func:`~rlreco.engine.kernels.table_rows.reset_rows_nb`)."""
        # imported here: building and reading tables needs no compiled kernel
        from rlreco.engine.kernels.table_rows import reset_rows_nb

        rows = np.ascontiguousarray(rows, dtype=np.int64)
        if rows.size == 0:
            return
        n_states = self.value.shape[0]
        if rows.min() < 0 or rows.max() >= n_states:
            raise IndexError(f"reset_rows: a row outside 0..{n_states - 1}")
        arrays = (np.ascontiguousarray(known[name]) for name in KNOWN_CELL_ARRAYS)
        reset_rows_nb(self.padded, self.cells, rows, *arrays)

    def _write_known(self, known: Mapping[str, np.ndarray], part: slice) -> None:
        """Write the known cells ``part`` of ``known`` (:meth:`known_cells`) into the tables."""
        ids = known["cell"][part]
        state, product = np.divmod(ids, self.value.shape[1])
        self.padded.reshape(-1)[state * self.padded.shape[1] + product] = known["value"][part]
        flat = self.cells.reshape(-1)
        for name in CELL_NUMBERS:
            flat[name][ids] = known[name][part]

    def equals(self, other: Tables) -> bool:
        """Bit-identical comparison (NaN-free; -inf compares equal)."""
        return bool(
            self.value.shape == other.value.shape
            and np.array_equal(self.value.view(np.int64), other.value.view(np.int64))
            and np.array_equal(self.cells.view(np.uint8), other.cells.view(np.uint8))
        )

    @classmethod
    def empty(cls, n_states: int, n_products: int) -> Tables:
        """All cells unknown, zero counts."""
        padded = aligned_empty((n_states, padded_width(n_products)), np.float64)
        padded.fill(-np.inf)
        cells = np.zeros((n_states, n_products), dtype=CELL_DTYPE)
        return cls._adopt(padded, cells, n_products)

    def known_cells(self) -> dict[str, np.ndarray]:
        """The known cells as flat arrays in (state, product) order: ``cell`` (int64, ``state *
        n_products + product``), ``value``, ``reward``, ``count`` and ``reco_count``; what
        :meth:`from_known_cells` rebuilds the tables from."""
        n_products = self.value.shape[1]
        # found in the padded layout (contiguous; its padding is -inf, never known)
        at = np.flatnonzero(np.isfinite(self.padded))
        state, product = np.divmod(at, self.padded.shape[1])
        cell = state * n_products + product
        flat = self.cells.reshape(-1)[cell]
        return {
            "cell": cell,
            "value": self.padded.reshape(-1)[at],
            **{name: flat[name].copy() for name in CELL_NUMBERS},
        }

    @classmethod
    def from_known_cells(
        cls, known: Mapping[str, np.ndarray], n_states: int, n_products: int
    ) -> Tables:
        """Rebuild tables from :meth:`known_cells`, checked: cells strictly increasing and in
        range, values finite, every array of one length and of its dtype.

        Raises
        ------
        SnapshotError
            Arrays that :meth:`known_cells` could not have given.
        """
        check_known_cells(known, n_states, n_products)
        tables = cls.empty(n_states, n_products)
        tables._write_known(known, slice(None))
        return tables

    def to_columns(self, space: StateSpace) -> dict[str, np.ndarray]:
        """Long-form columns, one row per known cell in (state, product) order.

        ``state_id``, ``state``, one column per state field, ``product_id``, ``product_code``,
        ``value``, ``reward``, ``count``, ``reco_count``. Holds every known cell at once (about
        200 bytes each); :meth:`iter_columns` streams them in bounded groups.
        """
        groups = list(self.iter_columns(space, max_cells=max(1, self.value.size)))
        return groups[0]

    def iter_columns(
        self, space: StateSpace, max_cells: int = GROUP_CELLS
    ) -> Iterator[dict[str, np.ndarray]]:
        """:meth:`to_columns` in consecutive groups of :meth:`iter_cells`."""
        ids = space.state_ids
        field_values = {name: space.field_values(name) for name in space.fields}
        for cells in self.iter_cells(space, max_cells):
            state, product = cells["state_id"], cells["product_id"]
            columns = {"state_id": state, "state": ids[state]}
            for name, values in field_values.items():
                columns[name] = values[state]
            columns["product_id"] = product
            columns["product_code"] = space.product_codes[product]
            columns.update({k: cells[k] for k in ("value", "reward", "count", "reco_count")})
            yield columns

    def iter_cells(
        self, space: StateSpace, max_cells: int = GROUP_CELLS
    ) -> Iterator[dict[str, np.ndarray]]:
        """The known cells in (state, product) order, in consecutive groups of whole states of
        at most ``max_cells`` cells each (or one state, if a state has more), read straight
        from the dense arrays; always at least one group (possibly empty).

        Each group holds ``state_id``, ``product_id`` (int32), ``value``, ``reward``, ``count``
        and ``reco_count``: the snapshot columns without the labels looked up by id.
        """
        n_s, n_p = space.n_states, space.n_products
        # blocks of an eighth of a group: groups fill to at least 7/8 of ``max_cells``
        step = max(1, max_cells // max(8 * n_p, 1))
        states: list[np.ndarray] = []
        products: list[np.ndarray] = []
        pending = 0
        emitted = False
        for first in range(0, n_s, step):
            s, p = np.nonzero(np.isfinite(self.value[first : first + step, :n_p]))
            if s.size:
                states.append(s + first)
                products.append(p)
                pending += s.size
            last = first + step >= n_s
            if last or pending + step * n_p > max_cells:
                if pending or (last and not emitted):
                    state = np.concatenate(states) if states else np.zeros(0, dtype=np.int64)
                    product = np.concatenate(products) if products else state
                    flat = self.cells[state, product]
                    yield {
                        "state_id": state.astype(np.int32),
                        "product_id": product.astype(np.int32),
                        "value": self.value[state, product],
                        "reward": flat["reward"].copy(),
                        "count": flat["count"].copy(),
                        "reco_count": flat["reco_count"].copy(),
                    }
                    emitted = True
                states, products, pending = [], [], 0

    @classmethod
    def from_columns(cls, columns: Mapping[str, np.ndarray], space: StateSpace) -> Tables:
        """Rebuild dense tables from long-form columns, checking them against the state space."""
        return cls.from_groups([columns], space)

    @classmethod
    def from_groups(cls, groups: Iterable[Mapping[str, np.ndarray]], space: StateSpace) -> Tables:
        """Rebuild dense tables from groups of long-form columns (e.g. a snapshot's row groups,
        read one at a time), checking them against the state space.

        Only ``state_id``, ``product_id``, ``product_code`` and the four numbers are read.
        """
        tables = cls.empty(space.n_states, space.n_products)
        for columns in groups:
            tables._fill(columns, space)
        return tables

    def _fill(self, columns: Mapping[str, np.ndarray], space: StateSpace) -> None:
        """Write one group of long-form cells into the tables (cells must be new)."""
        state = np.asarray(columns["state_id"], dtype=np.int64)
        product = np.asarray(columns["product_id"], dtype=np.int64)
        n_s, n_p = space.n_states, space.n_products
        if state.size and (state.min() < 0 or state.max() >= n_s):
            raise SnapshotError(f"snapshot: state_id outside 0..{n_s - 1}")
        if product.size and (product.min() < 0 or product.max() >= n_p):
            raise SnapshotError(f"snapshot: product_id outside 0..{n_p - 1}")
        value = np.asarray(columns["value"], dtype=np.float64)
        if not np.all(np.isfinite(value)):
            raise SnapshotError("snapshot: value column holds a non-finite number")
        # a cell seen before (earlier group: already finite) or twice in this group
        if (
            np.unique(state * n_p + product).size != state.size
            or np.isfinite(self.value[state, product]).any()
        ):
            raise SnapshotError("snapshot: a (state_id, product_id) cell appears twice")
        if state.size and not np.array_equal(
            np.asarray(columns["product_code"]).astype(str), space.product_codes[product]
        ):
            raise SnapshotError("snapshot: product codes do not match the run's products")
        self.value[state, product] = value
        self.cells["reward"][state, product] = np.asarray(columns["reward"], dtype=np.float64)
        self.cells["count"][state, product] = np.asarray(columns["count"], dtype=np.int64)
        self.cells["reco_count"][state, product] = np.asarray(columns["reco_count"], dtype=np.int64)


def copy_rows(source: np.ndarray, target: np.ndarray, rows: np.ndarray) -> None:
    """Copy rows ``rows`` (sorted, distinct) of ``source`` into ``target`` (same shape), run by
    run of consecutive rows: no temporary copy of the rows, as fancy indexing would make."""
    rows = np.asarray(rows, dtype=np.int64)
    if rows.size == 0:
        return
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    starts = rows[np.concatenate(([0], breaks))].tolist()
    ends = (rows[np.concatenate((breaks - 1, [rows.size - 1]))] + 1).tolist()
    for first, last in zip(starts, ends, strict=True):
        target[first:last] = source[first:last]


def known_counts(known: Mapping[str, np.ndarray], n_states: int, n_products: int) -> np.ndarray:
    """The ``count`` table, int64 (n_states, n_products), of the tables that
    :meth:`Tables.known_cells` gave ``known``, without the rest of them."""
    count = np.zeros((n_states, n_products), dtype=np.int64)
    count.reshape(-1)[known["cell"]] = known["count"]
    return count


def check_known_cells(known: Mapping[str, np.ndarray], n_states: int, n_products: int) -> None:
    """Check arrays of :meth:`Tables.known_cells` for tables of shape (n_states, n_products):
    one value of its dtype per cell in every array, cells strictly increasing and in range,
    values finite.

    Raises
    ------
    SnapshotError
        Arrays that :meth:`Tables.known_cells` could not have given.
    """
    cell = known["cell"]
    n = cell.shape[0] if cell.ndim == 1 else -1
    for name in KNOWN_CELL_ARRAYS:
        array = known[name]
        if array.shape != (n,) or array.dtype != KNOWN_CELL_DTYPES[name]:
            dtype = KNOWN_CELL_DTYPES[name]
            raise SnapshotError(f"known cells: {name!r} is not one {dtype} per cell")
    if n and (cell[0] < 0 or cell[-1] >= n_states * n_products or np.any(cell[1:] <= cell[:-1])):
        raise SnapshotError("known cells: cell ids not increasing within the tables")
    if not np.all(np.isfinite(known["value"])):
        raise SnapshotError("known cells: a value is not finite")


def build_initial_tables(
    space: StateSpace,
    row_state: np.ndarray,
    row_product: np.ndarray,
    row_quantity: np.ndarray,
    rng: np.random.Generator,
) -> Tables:
    """Initial tables from history.

    ``count`` is the summed historical quantity of each (state, product); a cell is known when
    it has at least one history row; known cells get ``value`` and ``reward`` drawn
    N(count, 1) and rounded to 2 decimals (value first, then reward, each in row-major cell
    order); ``reco_count`` is 0.

    Parameters
    ----------
    space : StateSpace
    row_state : ndarray of int64, shape (n_rows,)
        State of each history row, -1 for rows without a customer (ignored).
    row_product : ndarray of int32, shape (n_rows,)
    row_quantity : ndarray of int64, shape (n_rows,)
    rng : numpy.random.Generator
        Stream for the initial draws.
    """
    n_s, n_p = space.n_states, space.n_products
    use = row_state >= 0
    flat = row_state[use] * n_p + row_product[use]
    # sparse: only cells with history rows are touched (a state space of 10^8 cells needs no
    # dense temporaries); np.unique gives them in row-major order, the order of the draws
    idx, cell_of_row = np.unique(flat, return_inverse=True)
    count = np.zeros(idx.size, dtype=np.int64)
    np.add.at(count, cell_of_row, row_quantity[use].astype(np.int64))
    tables = Tables.empty(n_s, n_p)
    tables.cells["count"].reshape(-1)[idx] = count
    mean = count.astype(np.float64)
    # value is a view of the padded buffer: index it by (state, product), never through a copy
    tables.value[idx // n_p, idx % n_p] = round_cents(mean + rng.standard_normal(idx.size))
    tables.cells["reward"].reshape(-1)[idx] = round_cents(mean + rng.standard_normal(idx.size))
    return tables
