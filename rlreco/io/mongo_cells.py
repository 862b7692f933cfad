"""A snapshot's cells in bounded batches of whole states, and their MongoDB documents.

The export never holds a whole snapshot: it reads Arrow tables (a snapshot file's row groups,
or slices of a sorted frame) and cuts them into :class:`StateBatch` objects of about
:data:`BATCH_CELLS` cells, each holding whole states. A state whose cells continue into the next
table is carried over to the next batch. Within a batch every state's cells are sorted by
product code (the order the layouts store them in) and its digest, seed-document size and
documents are built from arrays: codes are converted and escaped once per distinct code, and
Python work per cell is limited to filling the documents the driver encodes.

A snapshot file written by rlreco keeps each state's cells together. One that does not (a state
appearing in two separate runs of rows) raises :class:`StatesNotGrouped` while batches are
read, before anything is written; the caller then reads the file whole instead.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from rlreco.errors import SnapshotError
from rlreco.io.mongo_layout import (
    CELL_NUMBERS,
    Fields,
    Layout,
    escape_field,
    format_state,
    seed_key_bytes,
    seed_state_bytes,
)
from rlreco.io.parquet_tables import ROW_GROUP, schema_of

#: Cells per batch of whole states (more when one state alone has more): about 40 MB of arrays.
BATCH_CELLS = 1 << 18
#: Numbers a seed document or digest holds per cell, then the ids a tidy digest adds.
_DIGEST_COLUMNS: dict[str, tuple[str, ...]] = {
    "seed": tuple(CELL_NUMBERS),
    "tidy": (*CELL_NUMBERS, "product_id", "state_id"),
}


class StatesNotGrouped(Exception):
    """A state's cells are not in one run of consecutive rows (a snapshot not written by
    rlreco); carries the state id."""


@dataclass(frozen=True)
class StateBatch:
    """Consecutive whole states, each state's cells sorted by product code.

    Attributes
    ----------
    states : list of str
        State ids, in snapshot order.
    bounds : ndarray of int64, shape (n_states + 1,)
        State ``i`` holds cells ``bounds[i]:bounds[i + 1]``.
    field_values : list of tuple
        Each state's field values (``half`` and ``hour`` int, others str); empty if the
        fields were not read.
    columns : dict of str to ndarray
        Per cell: ``state_id``, ``product_id`` (int32, if read), ``value``, ``reward``
        (float64), ``count``, ``reco_count`` (int64).
    codes, escaped : ndarray of object
        Per cell: the product code and its escaped field name (:func:`escape_field`).
    code_bytes : bytes
        The cells' codes in UTF-8, each followed by NUL except the last.
    code_ends : ndarray of int64, shape (n_cells + 1,)
        Cell ``j``'s code is ``code_bytes[code_ends[j]:code_ends[j + 1] - 1]``.
    key_bytes : ndarray of int64, shape (n_cells,)
        UTF-8 bytes of each cell's escaped code.
    """

    states: list[str]
    bounds: np.ndarray
    field_values: list[tuple[str | int, ...]]
    columns: dict[str, np.ndarray]
    codes: np.ndarray
    escaped: np.ndarray
    code_bytes: bytes
    code_ends: np.ndarray
    key_bytes: np.ndarray

    def cells(self, i: int) -> int:
        """Known cells of state ``i``."""
        return int(self.bounds[i + 1] - self.bounds[i])

    def digest(self, i: int, layout: Layout) -> str:
        """Content digest of state ``i``: BLAKE2b of the layout's name, the state's codes
        joined by NUL and the raw bytes of the numbers (and, tidy, ids) the layout stores."""
        a, b = int(self.bounds[i]), int(self.bounds[i + 1])
        h = hashlib.blake2b(layout.encode(), digest_size=16)
        h.update(memoryview(self.code_bytes)[self.code_ends[a] : self.code_ends[b] - 1])
        for column in _DIGEST_COLUMNS[layout]:
            h.update(self.columns[column][a:b].data)
        return h.hexdigest()

    def seed_bytes(self) -> np.ndarray:
        """Upper bound of each state's seed document size (:func:`seed_state_bytes`)."""
        if not self.states:
            return np.zeros(0, dtype=np.int64)
        keys = np.add.reduceat(self.key_bytes, self.bounds[:-1])
        return seed_state_bytes(self.states, keys, np.diff(self.bounds))

    def seed_document(self, i: int, column: str) -> dict[str, Any]:
        """``{"_id": state, escaped state: {escaped code: number}}`` of one seed collection;
        numbers as Python int (counts) or float, as BSON wants them."""
        a, b = int(self.bounds[i]), int(self.bounds[i + 1])
        state = self.states[i]
        keys, numbers = self.escaped[a:b].tolist(), self.columns[column][a:b].tolist()
        return {"_id": state, escape_field(state): dict(zip(keys, numbers, strict=True))}

    def tidy_documents(
        self,
        i: int,
        start: int,
        stop: int,
        *,
        fields: Fields,
        run_id: str,
        episodes: int,
        now: datetime,
    ) -> list[dict[str, Any]]:
        """Tidy cell documents of cells ``start:stop`` (batch positions) of state ``i``: run
        id, the snapshot columns in order, ``episodes`` and ``updated_at``."""
        n = stop - start
        cols = self.columns
        values: dict[str, list[Any]] = {
            "run_id": [run_id] * n,
            "state_id": cols["state_id"][start:stop].tolist(),
            "state": [self.states[i]] * n,
        }
        for name, value in zip(fields, self.field_values[i], strict=True):
            values[name] = [value] * n
        values["product_id"] = cols["product_id"][start:stop].tolist()
        values["product_code"] = self.codes[start:stop].tolist()
        for name in CELL_NUMBERS:
            values[name] = cols[name][start:stop].tolist()
        values["episodes"] = [episodes] * n
        values["updated_at"] = [now] * n
        names = tuple(values)
        return [dict(zip(names, row, strict=True)) for row in zip(*values.values(), strict=True)]


def frame_tables(frame: pd.DataFrame, fields: Fields) -> Iterator[pa.Table]:
    """A conformed snapshot frame as Arrow tables sorted by (state, product_code), in slices
    of a row group (the frame is in memory already; the slices bound the batches)."""
    schema = schema_of("snapshot", fields)
    table = pa.Table.from_pandas(frame, preserve_index=False).select(schema.names).cast(schema)
    table = table.sort_by([("state", "ascending"), ("product_code", "ascending")])
    for start in range(0, table.num_rows, ROW_GROUP):
        yield table.slice(start, ROW_GROUP)


def state_batches(
    tables: Iterable[pa.Table],
    fields: Fields,
    *,
    what: str = "snapshot",
    max_cells: int = BATCH_CELLS,
) -> Iterator[StateBatch]:
    """Cut consecutive tables of snapshot rows into batches of whole states.

    Parameters
    ----------
    tables : iterable of pyarrow.Table
        Snapshot rows, each state's rows consecutive: the snapshot columns of ``fields``
        (strings plain or dictionary-encoded), or at least ``state``, ``product_code`` and
        the four numbers (the fields are then neither checked nor returned).
    fields : tuple of str
        The run's state fields.
    what : str
        Names the rows in error messages (rows are numbered from 0 over all tables).
    max_cells : int
        A batch is cut at the last state boundary once this many rows are read.

    Raises
    ------
    SnapshotError
        A state id that is not its components, or a (state, product_code) cell twice.
    StatesNotGrouped
        A state's rows are split by another state's.
    """
    pending: list[pa.Table] = []
    rows = 0  # rows pending
    first = 0  # row number of the first pending row
    seen: set[str] = set()
    for table in tables:
        if not table.num_rows:
            continue
        pending.append(table)
        rows += table.num_rows
        if rows < max_cells:
            continue
        cut = _last_state_start(pending)  # the last state may continue in the next table
        if not cut:  # one state so far: read on
            continue
        combined = pa.concat_tables(pending).unify_dictionaries()
        yield _batch(combined.slice(0, cut), fields, first, seen, what)
        pending, rows, first = [combined.slice(cut)], rows - cut, first + cut
    if rows:
        yield _batch(pa.concat_tables(pending).unify_dictionaries(), fields, first, seen, what)


def _last_state_start(tables: list[pa.Table]) -> int:
    """Row (over ``tables``) where the last row's state's last run of rows starts."""
    last = tables[-1].column("state")[-1].as_py()
    end = sum(t.num_rows for t in tables)
    for table in reversed(tables):
        end -= table.num_rows
        other = pc.not_equal(table.column("state"), pa.scalar(last))
        rows = np.flatnonzero(other.to_numpy(zero_copy_only=False))
        if rows.size:
            return end + int(rows[-1]) + 1
    return 0


def _encoded(column: pa.ChunkedArray) -> tuple[np.ndarray, list[Any]]:
    """Dictionary indices (int64) and distinct values of a string column (plain, or
    dictionary-encoded with one dictionary for all chunks)."""
    if not pa.types.is_dictionary(column.type):
        column = pc.dictionary_encode(column.combine_chunks())
        column = pa.chunked_array([column])
    chunks = column.chunks
    if not chunks:
        return np.zeros(0, dtype=np.int64), []
    names = chunks[0].dictionary.to_pylist()
    if len(set(names)) < len(names):  # a value twice in the dictionary: encode the values
        return _encoded(column.cast(column.type.value_type))
    indices = [c.indices.to_numpy(zero_copy_only=False) for c in chunks]
    return np.concatenate(indices).astype(np.int64), names


def _batch(table: pa.Table, fields: Fields, first: int, seen: set[str], what: str) -> StateBatch:
    """One :class:`StateBatch` of ``table`` (whole states; row numbers from ``first``)."""
    n = table.num_rows
    state_idx, state_names = _encoded(table.column("state"))
    starts = np.concatenate(([0], np.flatnonzero(state_idx[1:] != state_idx[:-1]) + 1))
    lengths = np.diff(np.append(starts, n))
    states = [state_names[k] for k in state_idx[starts].tolist()]
    for state in states:
        if state in seen:
            raise StatesNotGrouped(state)
        seen.add(state)
    run = np.repeat(np.arange(starts.size), lengths)
    names = set(table.column_names)
    # the fields are checked when they are read (not by a seed export's second pass)
    field_values = (
        _field_values(table, fields, starts, run, states, first, what)
        if names.issuperset(fields)
        else []
    )
    code_idx, code_names = _encoded(table.column("product_code"))
    rank = np.empty(len(code_names), dtype=np.int64)
    rank[sorted(range(len(code_names)), key=code_names.__getitem__)] = np.arange(len(code_names))
    key = run * max(len(code_names), 1) + rank[code_idx]
    order = np.argsort(key, kind="stable")
    twice = np.flatnonzero(key[order][1:] == key[order][:-1])
    if twice.size:
        row = int(order[twice + 1].min())
        raise SnapshotError(
            f"{what} row {first + row}: cell (state {states[run[row]]!r}, product "
            f"{code_names[code_idx[row]]!r}) appears more than once"
        )
    cell_code = code_idx[order]
    codes = np.array(code_names, dtype=object)
    encoded = [name.encode() for name in code_names]
    escaped = np.array([escape_field(name) for name in code_names], dtype=object)
    code_len = np.array([len(b) for b in encoded], dtype=np.int64)
    key_len = seed_key_bytes(code_names)
    columns = {
        name: table.column(name).to_numpy()[order]
        for name in ("state_id", "product_id", *CELL_NUMBERS)
        if name in names
    }
    return StateBatch(
        states=states,
        bounds=np.append(starts, n).astype(np.int64),
        field_values=field_values,
        columns=columns,
        codes=codes[cell_code],
        escaped=escaped[cell_code],
        code_bytes=b"\x00".join(np.array(encoded, dtype=object)[cell_code].tolist()),
        code_ends=np.concatenate(([0], np.cumsum(code_len[cell_code] + 1))),
        key_bytes=key_len[cell_code],
    )


def _field_values(
    table: pa.Table,
    fields: Fields,
    starts: np.ndarray,
    run: np.ndarray,
    states: list[str],
    first: int,
    what: str,
) -> list[tuple[str | int, ...]]:
    """Each state's field values, checked: every row's state id is its components."""
    per_field: list[list[str | int]] = []
    suspects: list[int] = []  # rows whose components differ from their state's first row's
    for name in fields:
        column = table.column(name)
        if pa.types.is_integer(column.type):
            idx = column.to_numpy().astype(np.int64)
            per_field.append(idx[starts].tolist())
        else:
            idx, names = _encoded(column)
            per_field.append([names[k] for k in idx[starts].tolist()])
        differ = np.flatnonzero(idx != idx[starts][run])
        if differ.size:
            suspects.append(int(differ[0]))
    values: list[tuple[str | int, ...]] = (
        list(zip(*per_field, strict=True)) if fields else [() for _ in states]
    )
    for state, start, pieces in zip(states, starts.tolist(), values, strict=True):
        if format_state(*pieces) != state:
            suspects.append(start)
            break
    if suspects:
        row = min(suspects)
        pieces = tuple(_row_value(table.column(name), row) for name in fields)
        state = states[int(run[row])]
        raise SnapshotError(
            f"{what} row {first + row}: state {state!r} is not {'_'.join(fields)} of its "
            f"components ({format_state(*pieces)!r})"
        )
    return values


def _row_value(column: pa.ChunkedArray, row: int) -> Any:
    return column[row].as_py()
