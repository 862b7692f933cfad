"""Parquet tables of run directories: Arrow schemas, tagged writes and checked reads.

Every Parquet file carries ``rlreco`` metadata (kind and schema version) checked on load.
Snapshots are written and read one row group at a time; a policy's per-state state is a
table of its own, tagged with the policy's name.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rlreco.errors import DataError, SnapshotError, shown
from rlreco.io.atomic_files import atomic_path
from rlreco.schema import CELL_DTYPE, DEFAULT_STATE_FIELDS, INTEGER_STATE_FIELDS, METRICS_DTYPE

SCHEMA_VERSION = 1
_META_KEY = b"rlreco"


#: glibc ``mallopt`` parameters: allocations of at least ``_M_MMAP_THRESHOLD`` bytes are mapped
#: on their own and given back to the operating system when freed; free heap above
#: ``_M_TRIM_THRESHOLD`` bytes is given back too.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD = 1 << 16
#: glibc's default trim threshold, and the largest mmap threshold it accepts (64-bit)
_DEFAULT_TRIM_THRESHOLD = 128 * 1024
_LARGEST_MMAP_THRESHOLD = 32 * 1024 * 1024


def _glibc() -> Any | None:
    """The C library when it is glibc (it has ``mallopt``), else None."""
    try:
        libc: Any = ctypes.CDLL("libc.so.6")
        libc.mallopt  # noqa: B018 (an AttributeError here: not glibc)
    except (OSError, AttributeError):
        return None
    return libc


def use_system_allocator() -> None:
    """Allocate row groups so that freed memory goes back to the operating system.

    Arrow's default pool (mimalloc) keeps the buffers of every row group read or written, and
    glibc raises its mmap threshold after the first large free, after which row-group sized
    arrays come from the heap and stay there; either would make a command's peak memory grow
    with the snapshot. Arrow gets the C library's allocator, and glibc (when present) a fixed
    64 KiB threshold.
    """
    pa.set_memory_pool(pa.system_memory_pool())
    libc = _glibc()
    if libc is not None:
        libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)


@contextlib.contextmanager
def reused_heap() -> Iterator[None]:
    """Let freed blocks up to 32 MiB be reused from the heap for the duration of the block.

    For work that allocates and frees the same temporaries many times, such as a response
    model's Newton iterations: under the 64 KiB mmap threshold of :func:`use_system_allocator`,
    each would be a fresh mapping whose pages fault in again (about 270,000 page faults and 0.6 s
    of system time for the ``popularity`` model on the UCI data, against 14,000 here).
    Afterwards the heap is trimmed and :func:`use_system_allocator`'s setting restored. Nothing
    changes without glibc.
    """
    libc = _glibc()
    if libc is not None:
        libc.mallopt(_M_MMAP_THRESHOLD, _LARGEST_MMAP_THRESHOLD)
        libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30)
    try:
        yield
    finally:
        if libc is not None:
            libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)
            libc.malloc_trim(0)
            use_system_allocator()


def record_fields(dtype: np.dtype) -> list[tuple[str, pa.DataType]]:
    """Arrow fields of a record dtype's fields, in order (the one source of both layouts)."""
    return [(name, pa.from_numpy_dtype(dtype[name])) for name in dtype.names or ()]


#: Most cells per Parquet row group of a snapshot: writing and reading hold one group at a time.
ROW_GROUP = 1 << 15


def state_columns(fields: Sequence[str]) -> list[tuple[str, pa.DataType]]:
    """A state's id and field values: the first columns of the states table and of every
    snapshot (``half`` and ``hour`` int8, other fields strings)."""
    return [
        ("state_id", pa.int32()),
        ("state", pa.string()),
        *((f, pa.int8() if f in INTEGER_STATE_FIELDS else pa.string()) for f in fields),
    ]


def _snapshot_schema(fields: Sequence[str]) -> pa.Schema:
    return pa.schema(
        [
            *state_columns(fields),
            ("product_id", pa.int32()),
            ("product_code", pa.string()),
            ("value", pa.float64()),
            *record_fields(CELL_DTYPE),
        ]
    )


def schema_of(kind: str, fields: Sequence[str] = DEFAULT_STATE_FIELDS) -> pa.Schema:
    """Arrow schema of a table kind; ``states`` and ``snapshot`` depend on the state fields."""
    if kind == "states":
        return pa.schema([*state_columns(fields), ("weight", pa.float64())])
    if kind == "snapshot":
        return _snapshot_schema(fields)
    return SCHEMAS[kind]


def fields_of_columns(kind: str, names: Sequence[str]) -> tuple[str, ...]:
    """The state fields of a ``states`` or ``snapshot`` table from its column names (the
    columns between ``state`` and ``weight`` / ``product_id``); () for other kinds."""
    end = {"states": "weight", "snapshot": "product_id"}.get(kind)
    names = list(names)
    if end is None or "state" not in names or end not in names:
        return ()
    return tuple(names[names.index("state") + 1 : names.index(end)])


#: Arrow schema of every Parquet table a run directory holds, by kind (states and snapshots
#: with the default state fields; see :func:`schema_of`).
SCHEMAS: dict[str, pa.Schema] = {
    "states": schema_of("states"),
    "products": pa.schema(
        [("product_id", pa.int32()), ("product_code", pa.string()), ("description", pa.string())]
    ),
    "catalogues": pa.schema([("segment", pa.string()), ("product_id", pa.int32())]),
    "snapshot": _snapshot_schema(DEFAULT_STATE_FIELDS),
    # weights of the states a held-out truth speaks for (its rows per state), one set per truth
    "state_weights": pa.schema(
        [("truth", pa.string()), ("state_id", pa.int32()), ("weight", pa.float64())]
    ),
    "metrics": pa.schema(
        [("block", pa.int64()), ("first_visit", pa.int64()), *record_fields(METRICS_DTYPE)]
    ),
}

Columns = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class CellStream:
    """A snapshot to write from groups of cells, one Parquet row group per group.

    Attributes
    ----------
    groups : iterable of columns
        ``state_id``, ``product_id``, ``value``, ``reward``, ``count``, ``reco_count`` of each
        group of known cells (at least one group, possibly empty).
    states : columns
        The states table's ``state`` and state-field columns, indexed by ``state_id``.
    product_codes : ndarray of str
        Product code of each ``product_id``.
    """

    groups: Iterable[Columns]
    states: Columns
    product_codes: np.ndarray


#: A snapshot to write: all columns at once, or a stream of cell groups.
Snapshot = Columns | CellStream


def write_table(path: Path, kind: str, columns: Columns) -> None:
    """Write columns as a Parquet file of the given kind, atomically.

    Parameters
    ----------
    path : Path
    kind : str
        A key of :data:`SCHEMAS`; columns are cast to that schema.
    columns : mapping of str to ndarray
    """
    schema = _tagged(kind, schema_of(kind, fields_of_columns(kind, list(columns))))
    table = _arrow_table(columns, schema)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, **_write_options(schema))


def _write_options(schema: pa.Schema) -> dict[str, Any]:
    """zstd, dictionary-encoding only the string columns: their values repeat; numbers rarely
    do, and a dictionary per numeric column costs the writer tens of MB of hash tables."""
    strings = [f.name for f in schema if pa.types.is_string(f.type)]
    return {"compression": "zstd", "use_dictionary": strings}


def _tagged(kind: str, schema: pa.Schema) -> pa.Schema:
    return schema.with_metadata(
        {_META_KEY: json.dumps({"kind": kind, "schema_version": SCHEMA_VERSION}).encode()}
    )


def _arrow_table(columns: Columns, schema: pa.Schema) -> pa.Table:
    arrays = []
    for f in schema:
        col = columns[f.name]
        arrays.append(
            col.cast(f.type)
            if isinstance(col, pa.Array)
            else pa.array(np.asarray(col), type=f.type)
        )
    return pa.Table.from_arrays(arrays, schema=schema)


def write_snapshot(path: Path, snapshot: Snapshot) -> None:
    """Write a snapshot atomically: all columns, or a :class:`CellStream` written one row
    group at a time (string columns taken from the labels by id), so a snapshot never needs
    more than one group's columns in memory."""
    if not isinstance(snapshot, CellStream):
        write_table(path, "snapshot", snapshot)
        return
    fields = fields_of_columns("states", [*snapshot.states, "weight"])
    schema = _tagged("snapshot", schema_of("snapshot", fields))
    labels = {
        name: pa.array(np.asarray(snapshot.states[name]), type=schema.field(name).type)
        for name in ("state", *fields)
    }
    codes = pa.array(np.asarray(snapshot.product_codes).astype(str), type=pa.string())
    options = _write_options(schema)
    with atomic_path(path) as tmp, pq.ParquetWriter(tmp, schema, **options) as writer:
        for group in snapshot.groups:
            state = pa.array(np.asarray(group["state_id"], dtype=np.int32))
            product = pa.array(np.asarray(group["product_id"], dtype=np.int32))
            columns: dict[str, Any] = {"state_id": state}
            columns.update({name: labels[name].take(state) for name in labels})
            columns["product_id"] = product
            columns["product_code"] = codes.take(product)
            for name in ("value", "reward", "count", "reco_count"):
                columns[name] = group[name]
            writer.write_table(_arrow_table(columns, schema), row_group_size=ROW_GROUP)


def read_parquet(path: Path) -> pa.Table:
    """Every column of one Parquet file, single-threaded (the file reader directly: a third of
    ``pq.read_table``'s cost on small files, which goes through the dataset machinery).

    Raises whatever Arrow raises for a file it cannot read (``ArrowException``, ``OSError``,
    ``UnicodeError`` for names that are not UTF-8).
    """
    with pq.ParquetFile(path) as parquet:
        return parquet.read(use_threads=False)


def read_tagged(path: Path, kind: str, version: int) -> tuple[pa.Table, dict[str, Any]]:
    """Read a Parquet file and check its ``rlreco`` metadata (kind and schema version).

    Raises
    ------
    SnapshotError
        If the file is missing, not Parquet, or not an rlreco file of this kind and version.
    """
    if not path.is_file():
        raise SnapshotError(f"{path}: file not found")
    try:
        table = read_parquet(path)
        table.validate(full=True)  # e.g. text that is not UTF-8
    except (pa.ArrowException, OSError, UnicodeError) as exc:  # names not UTF-8: UnicodeError
        raise _corrupt(path, exc) from None
    return table, _check_tag(path, table.schema, kind, version)


def _corrupt(path: Path, exc: BaseException) -> SnapshotError:
    """One line for a file Arrow cannot read."""
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return SnapshotError(f"{path}: corrupt or not a Parquet file ({shown(reason, 200)})")


def _check_tag(path: Path, schema: pa.Schema, kind: str, version: int) -> dict[str, Any]:
    """The ``rlreco`` metadata of a Parquet schema, checked for kind and schema version."""
    meta = (schema.metadata or {}).get(_META_KEY)
    try:
        info = json.loads(meta) if meta else None
    except ValueError:
        info = None
    if not isinstance(info, dict) or info.get("kind") != kind:
        found = info.get("kind") if isinstance(info, dict) else "no rlreco metadata"
        raise SnapshotError(f"{path}: not an rlreco {kind} file ({found})")
    if info.get("schema_version") != version:
        raise SnapshotError(
            f"{path}: schema version {info.get('schema_version')}, expected {version}"
        )
    return info


def read_table(path: Path, kind: str) -> dict[str, np.ndarray]:
    """Read and validate a Parquet file of the given kind into numpy columns.

    Raises
    ------
    SnapshotError
        If the file is missing, not Parquet, not an rlreco file of this kind, or its columns
        do not match the schema.
    """
    table, _ = read_tagged(path, kind, SCHEMA_VERSION)
    expected = schema_of(kind, fields_of_columns(kind, table.schema.names))
    if not table.schema.remove_metadata().equals(expected):
        raise SnapshotError(
            f"{path}: columns {table.schema.names} with types "
            f"{[str(t) for t in table.schema.types]} do not match the {kind} schema "
            f"{expected.names}"
        )
    if len(set(expected.names)) < len(expected.names):  # e.g. two extra state fields named ""
        raise SnapshotError(f"{path}: a column name appears twice in {shown(expected.names, 200)}")
    return _numpy_columns(path, table, expected)


def _numpy_columns(
    path: Path, table: pa.Table | pa.RecordBatch, expected: pa.Schema
) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for field in expected:
        col = table.column(field.name)
        if col.null_count:
            # the name comes from the file: shown escaped (a '\r' would break the line)
            raise SnapshotError(
                f"{path}: column {shown(field.name)} has {col.null_count} missing values"
            )
        if pa.types.is_string(field.type):
            # string columns repeat a few values (state ids, codes): convert each value once
            if isinstance(col, pa.ChunkedArray):
                col = col.combine_chunks()
            coded = col.dictionary_encode()
            names = np.asarray(coded.dictionary.to_pylist(), dtype=str)
            out[field.name] = names[coded.indices.to_numpy()] if len(col) else names[:0]
        else:
            out[field.name] = np.asarray(col.to_numpy())
    return out


def iter_snapshot(
    path: Path, columns: Sequence[str] | None = None
) -> Iterator[dict[str, np.ndarray]]:
    """The row groups of a snapshot file as numpy columns, one group at a time.

    Parameters
    ----------
    path : Path
    columns : sequence of str, optional
        Only these columns (default all).

    Raises
    ------
    SnapshotError
        Missing, corrupt or foreign file, schema mismatch, or missing values.
    """
    parquet, expected = open_snapshot(path)
    with parquet:
        wanted = pa.schema([expected.field(c) for c in columns]) if columns else expected
        for group in range(parquet.num_row_groups):
            yield _numpy_columns(path, read_snapshot_group(parquet, path, group, wanted), wanted)


def open_snapshot(path: Path, dictionaries: bool = False) -> tuple[pq.ParquetFile, pa.Schema]:
    """A snapshot file opened to be read one row group at a time, with its tag and schema
    checked; and its schema (that of its state fields, without metadata). Close the file.

    With ``dictionaries``, string columns are read as Arrow dictionary arrays (as the file
    stores them: each distinct value decoded once per row group).

    Raises
    ------
    SnapshotError
        Missing, corrupt or foreign file, or schema mismatch.
    """
    if not path.is_file():
        raise SnapshotError(f"{path}: file not found")
    try:
        parquet = pq.ParquetFile(path)
        schema = parquet.schema_arrow
        if dictionaries:  # reopened: the columns to read as dictionaries are set at opening
            strings = [f.name for f in schema if pa.types.is_string(f.type)]
            parquet.close()
            parquet = pq.ParquetFile(path, read_dictionary=strings, metadata=parquet.metadata)
    except (pa.ArrowException, OSError, UnicodeError) as exc:
        raise _corrupt(path, exc) from None
    try:
        _check_tag(path, schema, "snapshot", SCHEMA_VERSION)
        expected = schema_of("snapshot", fields_of_columns("snapshot", schema.names))
        if not schema.remove_metadata().equals(expected):
            raise SnapshotError(
                f"{path}: columns {schema.names} with types {[str(t) for t in schema.types]} "
                f"do not match the snapshot schema {expected.names}"
            )
    except BaseException:
        parquet.close()
        raise
    return parquet, expected


def read_snapshot_group(
    parquet: pq.ParquetFile, path: Path, group: int, wanted: pa.Schema
) -> pa.Table:
    """Row group ``group`` of a file from :func:`open_snapshot`: the columns named by
    ``wanted``, validated (text is UTF-8) and complete.

    Raises
    ------
    SnapshotError
        Corrupt row group or missing values (one line naming the file and column).
    """
    try:
        table = parquet.read_row_group(group, columns=wanted.names, use_threads=False)
        table.validate(full=True)
    except (pa.ArrowException, OSError, UnicodeError) as exc:
        raise _corrupt(path, exc) from None
    for field in wanted:
        nulls = table.column(field.name).null_count
        if nulls:
            # the name comes from the file: shown escaped (a '\r' would break the line)
            raise SnapshotError(f"{path}: column {shown(field.name)} has {nulls} missing values")
    return table


def write_policy_state(path: Path, policy: str, arrays: Columns) -> None:
    """Write a policy's per-state arrays (one column each, row = state id) atomically, tagged
    with the policy's name."""
    names = sorted(arrays)
    columns = [np.asarray(arrays[name]) for name in names]
    sizes = {c.shape for c in columns}
    if len(sizes) != 1 or len(next(iter(sizes))) != 1:
        raise SnapshotError(f"policy state {names}: expected one 1-D array per state")
    table = pa.Table.from_arrays([pa.array(c) for c in columns], names=names)
    info = {"kind": "policy_state", "schema_version": SCHEMA_VERSION, "policy": policy}
    table = table.replace_schema_metadata({_META_KEY: json.dumps(info).encode()})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def read_policy_state(path: Path, policy: str) -> dict[str, np.ndarray]:
    """The per-state arrays of :func:`write_policy_state`, checked to be ``policy``'s.

    Raises
    ------
    SnapshotError
        Missing, corrupt or foreign file, another policy's state, or missing values.
    """
    table, info = read_tagged(path, "policy_state", SCHEMA_VERSION)
    if info.get("policy") != policy:
        raise SnapshotError(f"{path}: the state of policy {info.get('policy')!r}, not {policy!r}")
    out = {}
    for name in table.column_names:
        column = table.column(name)
        if column.null_count or not (
            pa.types.is_integer(column.type) or pa.types.is_floating(column.type)
        ):
            raise SnapshotError(f"{path}: column {shown(name)} is not a complete numeric column")
        out[name] = np.array(column.to_numpy())  # writable: a policy updates its state
    return out


def check_no_nulls(column: pa.ChunkedArray, source: str, name: str) -> None:
    """One-line DataError naming ``source``, the first row missing a value and the column."""
    if column.null_count:
        row = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
        raise DataError(f"{source}: row {row}: column '{name}' is missing a value")
