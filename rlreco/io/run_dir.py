"""Run directories: a self-describing folder per run, written atomically.

Layout::

    RUN_DIR/
      manifest.json                       schema version, run id, config, seed, episodes,
                                          RNG state, package versions, data file hash, files
      state_space/states.parquet          state_id, state, one column per state field, weight
      state_space/products.parquet        product_id, product_code, description
      state_space/catalogues.parquet      segment, product_id
      snapshots/episodes-<N>.parquet      long-form tables after N visits (one row per known
                                          cell), in row groups of at most ROW_GROUP cells
      metrics.parquet                     per-block simulation metrics (after the first simulate)
      policy_state/episodes-<N>.parquet   per-state state of the run's policy after N visits
                                          (e.g. decaying's visits per state), when it keeps any

Every file is written to a temporary name in the same folder and renamed into place; the
manifest is written last and is the commit point, so a crash leaves the previous consistent
run. ``prepare`` builds the whole folder under a temporary name and renames it.
Every Parquet file carries ``rlreco`` metadata (kind and schema version) checked on load.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rlreco.errors import SnapshotError, shown
from rlreco.schema import (
    CELL_DTYPE,
    DEFAULT_STATE_FIELDS,
    INTEGER_STATE_FIELDS,
    METRICS_DTYPE,
    format_state_id,
)

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
INITIAL_EPISODES = 0
_META_KEY = b"rlreco"


#: glibc ``mallopt`` parameter: allocations of at least this many bytes are mapped on their own
#: and given back to the operating system when freed.
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD = 1 << 16


def use_system_allocator() -> None:
    """Allocate row groups so that freed memory goes back to the operating system.

    Arrow's default pool (mimalloc) keeps the buffers of every row group read or written, and
    glibc raises its mmap threshold after the first large free, after which row-group sized
    arrays come from the heap and stay there; either would make a command's peak memory grow
    with the snapshot. Arrow gets the C library's allocator, and glibc (when present) a fixed
    64 KiB threshold.
    """
    pa.set_memory_pool(pa.system_memory_pool())
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)


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


@contextlib.contextmanager
def staged_directory(path: Path, *, force: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder next to ``path``; rename it onto ``path`` on success.

    An existing ``path`` is replaced only with ``force``. On an exception the temporary folder
    is removed and ``path`` is left untouched.

    Raises
    ------
    SnapshotError
        If ``path`` exists and ``force`` is false.
    """
    if path.exists() and not force:
        raise SnapshotError(f"{path}: already exists; choose another --out or pass --force")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; rename it onto ``target`` on success.

    On an exception the temporary file is removed and ``target`` is left untouched.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", encoding="utf-8")


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
    """Every column of one Parquet file, single-threaded, through the file reader (a third of
    ``pq.read_table``'s cost on small files); raises what Arrow raises (``ArrowException``,
    ``OSError``, ``UnicodeError`` for names that are not UTF-8)."""
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
            raise SnapshotError(
                f"{path}: column '{field.name}' has {col.null_count} missing values"
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
    if not path.is_file():
        raise SnapshotError(f"{path}: file not found")
    try:
        parquet = pq.ParquetFile(path)
        schema = parquet.schema_arrow
    except (pa.ArrowException, OSError, UnicodeError) as exc:
        raise _corrupt(path, exc) from None
    _check_tag(path, schema, "snapshot", SCHEMA_VERSION)
    expected = schema_of("snapshot", fields_of_columns("snapshot", schema.names))
    if not schema.remove_metadata().equals(expected):
        raise SnapshotError(
            f"{path}: columns {schema.names} with types {[str(t) for t in schema.types]} do "
            f"not match the snapshot schema {expected.names}"
        )
    wanted = pa.schema([expected.field(c) for c in columns]) if columns else expected
    try:
        for group in range(parquet.num_row_groups):
            table = parquet.read_row_group(group, columns=wanted.names, use_threads=False)
            table.validate(full=True)
            yield _numpy_columns(path, table, wanted)
    except (pa.ArrowException, OSError, UnicodeError) as exc:
        raise _corrupt(path, exc) from None


def _check_manifest(mpath: Path, manifest: Mapping[str, Any]) -> None:
    """Types of the manifest keys a run directory is read by (one-line SnapshotError)."""

    def bad(key: str, allowed: str) -> SnapshotError:
        return SnapshotError(
            f"{mpath}: key '{key}' = {shown(manifest.get(key), 60)}: expected {allowed}"
        )

    episodes = manifest["episodes"]
    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 0:
        raise bad("episodes", "an integer >= 0")
    if not isinstance(manifest["run_id"], str) or not manifest["run_id"]:
        raise bad("run_id", "a non-empty string")
    if not isinstance(manifest["config"], dict):
        raise bad("config", "a JSON object")
    for key in ("snapshot", "initial_snapshot", "metrics"):
        name = manifest.get(key)
        if key == "metrics" and name is None:
            continue
        if not isinstance(name, str) or not name.isprintable():
            raise bad(key, "the relative path of a file in the run directory")
        parts = Path(name).parts
        if not parts or Path(name).is_absolute() or ".." in parts:
            raise bad(key, "the relative path of a file in the run directory")
    seed = manifest.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise bad("seed", "an integer >= 0")
    if not isinstance(manifest.get("rng_state"), dict | None):
        raise bad("rng_state", "a JSON object or null")
    if not isinstance(manifest.get("simulations", []), list):
        raise bad("simulations", "a list")


def _check_space(folder: Path, space: Mapping[str, Mapping[str, np.ndarray]]) -> None:
    """The three state space tables agree (one-line SnapshotError naming the file and row)."""
    states, products, catalogues = space["states"], space["products"], space["catalogues"]

    def bad(kind: str, row: int, what: str) -> SnapshotError:
        return SnapshotError(f"{folder / kind}.parquet: row {row}: {what}")

    for kind, ids, name in (
        ("states", states["state_id"], "state_id"),
        ("products", products["product_id"], "product_id"),
    ):
        if ids.size == 0:
            raise SnapshotError(f"{folder / kind}.parquet: no rows")
        wrong = np.flatnonzero(ids != np.arange(ids.size))
        if wrong.size:
            row = int(wrong[0])
            raise bad(kind, row, f"{name} {ids[row]}, expected {row} (ids are 0..n-1 in order)")
    fields = fields_of_columns("states", list(states))
    if "segment" not in fields:  # catalogues are per segment: the field is required
        raise SnapshotError(f"{folder / 'states'}.parquet: no 'segment' column (it is required)")
    if "half" in fields:
        wrong = np.flatnonzero(~np.isin(states["half"], (0, 1)))
        if wrong.size:
            raise bad("states", int(wrong[0]), f"half {states['half'][wrong[0]]}, expected 0 or 1")
    # a log-derived state space has no calendar: its ids are the logs' context labels, its
    # months and weekdays empty (rlreco.engine.state_space)
    labelled = fields == DEFAULT_STATE_FIELDS and all(
        not np.any(np.asarray(states[f]).astype(str) != "") for f in ("month", "weekday")
    )
    components = zip(*(states[f].tolist() for f in fields), strict=True)
    for row, (state, parts) in enumerate(zip(states["state"].tolist(), components, strict=True)):
        if labelled:
            break
        if state != format_state_id(list(parts)):
            raise bad(
                "states", row, f"state {shown(state)} is not its fields {'_'.join(fields)} joined"
            )
    weight = states["weight"]
    wrong = np.flatnonzero(~(np.isfinite(weight) & (weight >= 0)))
    if wrong.size:
        raise bad("states", int(wrong[0]), f"weight {weight[wrong[0]]}, expected a number >= 0")
    for kind, values, name in (
        ("states", states["state"], "state"),
        ("products", products["product_code"], "product_code"),
    ):
        _, first, counts = np.unique(values, return_index=True, return_counts=True)
        if (counts > 1).any():
            row = int(np.sort(first[counts > 1])[0])
            raise bad(kind, row, f"{name} {shown(values[row])} appears more than once")
    product = catalogues["product_id"]
    wrong = np.flatnonzero((product < 0) | (product >= products["product_id"].size))
    if wrong.size:
        raise bad("catalogues", int(wrong[0]), f"product_id {product[wrong[0]]} is not a product")
    segments = set(states["segment"].tolist())
    for row, segment in enumerate(catalogues["segment"].tolist()):
        if segment not in segments:
            raise bad("catalogues", row, f"segment {shown(segment)} has no state")
    pairs = np.unique(
        np.stack([np.unique(catalogues["segment"], return_inverse=True)[1], product]), axis=1
    )
    if pairs.shape[1] != product.size:
        raise SnapshotError(f"{folder / 'catalogues'}.parquet: a (segment, product) pair repeats")
    missing = segments - set(catalogues["segment"].tolist())
    if missing:
        raise SnapshotError(
            f"{folder / 'catalogues'}.parquet: segment {shown(min(missing))} has no products"
        )


def policy_state_name(episodes: int) -> str:
    """File name of the policy state saved after ``episodes`` visits."""
    return f"policy_state/episodes-{episodes:015d}.parquet"


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
            raise SnapshotError(f"{path}: column '{name}' is not a complete numeric column")
        out[name] = np.array(column.to_numpy())  # writable: a policy updates its state
    return out


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def snapshot_name(episodes: int) -> str:
    """File name of the snapshot taken after ``episodes`` visits."""
    return f"snapshots/episodes-{episodes:015d}.parquet"


class RunDir:
    """An existing, validated run directory.

    Use :meth:`create` to write a new one and :meth:`open` to load one.
    """

    def __init__(self, path: Path, manifest: dict[str, Any]) -> None:
        self.path = path
        self.manifest = manifest

    @classmethod
    def create(
        cls,
        path: str | Path,
        *,
        manifest: dict[str, Any],
        space: Mapping[str, Columns],
        snapshot: Snapshot,
        extra: Sequence[Callable[[Path], None]] = (),
        force: bool = False,
    ) -> RunDir:
        """Write a new run directory atomically (built under a temporary name, then renamed).

        Each of ``extra`` is called with the staging folder to write more files into it (e.g.
        the held-out truth tables), before the manifest.

        Raises
        ------
        SnapshotError
            If ``path`` exists and ``force`` is false.
        """
        path = Path(path)
        with staged_directory(path, force=force) as tmp:
            for kind in ("states", "products", "catalogues"):
                write_table(tmp / "state_space" / f"{kind}.parquet", kind, space[kind])
            name = snapshot_name(INITIAL_EPISODES)
            write_snapshot(tmp / name, snapshot)
            for write in extra:
                write(tmp)
            manifest = {
                **manifest,
                "schema_version": SCHEMA_VERSION,
                "episodes": INITIAL_EPISODES,
                "snapshot": name,
                "initial_snapshot": name,
                "metrics": None,
                "rng_state": None,
                "policy_state": None,
            }
            write_json(tmp / MANIFEST, manifest)
        return cls(path, manifest)

    @classmethod
    def open(cls, path: str | Path) -> RunDir:
        """Open and validate a run directory's manifest."""
        path = Path(path)
        mpath = path / MANIFEST
        if not path.is_dir():
            raise SnapshotError(f"{path}: run directory not found (create one with rlreco prepare)")
        if not mpath.is_file():
            raise SnapshotError(f"{path}: not a run directory ({MANIFEST} missing)")
        try:
            manifest = json.loads(mpath.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise SnapshotError(f"{mpath}: corrupt manifest ({exc})") from None
        if not isinstance(manifest, dict):
            raise SnapshotError(f"{mpath}: corrupt manifest (not a JSON object)")
        required = (
            "schema_version",
            "run_id",
            "config",
            "episodes",
            "snapshot",
            "initial_snapshot",
        )
        missing = [k for k in required if k not in manifest]
        if missing:
            raise SnapshotError(f"{mpath}: manifest lacks {', '.join(missing)}")
        if manifest["schema_version"] != SCHEMA_VERSION:
            raise SnapshotError(
                f"{mpath}: schema version {shown(manifest['schema_version'])}, "
                f"expected {SCHEMA_VERSION}"
            )
        _check_manifest(mpath, manifest)
        return cls(path, manifest)

    @property
    def episodes(self) -> int:
        """Visits simulated so far."""
        return int(self.manifest["episodes"])

    def read_space(self) -> dict[str, dict[str, np.ndarray]]:
        """Columns of the states, products and catalogues tables, checked against each other.

        Raises
        ------
        SnapshotError
            A file is missing or corrupt, or the tables disagree (ids not 0..n-1, a state id
            that is not its components, a catalogue product or segment that does not exist).
        """
        folder = self.path / "state_space"
        space = {
            kind: read_table(folder / f"{kind}.parquet", kind)
            for kind in ("states", "products", "catalogues")
        }
        _check_space(folder, space)
        return space

    @property
    def fields(self) -> tuple[str, ...]:
        """The run's state fields (``state_fields`` of the manifest; the default fields for a
        run directory written before fields were configurable)."""
        fields = self.manifest.get("state_fields")
        if fields is None:
            return DEFAULT_STATE_FIELDS
        if not isinstance(fields, list) or not all(isinstance(f, str) for f in fields):
            raise SnapshotError(f"{self.path / MANIFEST}: corrupt 'state_fields' entry")
        return tuple(fields)

    def read_snapshot(self, which: str = "latest") -> dict[str, np.ndarray]:
        """Columns of the latest (or ``"initial"``) snapshot, all at once."""
        key = "initial_snapshot" if which == "initial" else "snapshot"
        return read_table(self.path / self.manifest[key], "snapshot")

    def iter_snapshot(
        self, which: str = "latest", columns: Sequence[str] | None = None
    ) -> Iterator[dict[str, np.ndarray]]:
        """Row groups of the latest (or ``"initial"``) snapshot, one at a time."""
        key = "initial_snapshot" if which == "initial" else "snapshot"
        return iter_snapshot(self.path / self.manifest[key], columns)

    def truths(self) -> list[dict[str, Any]]:
        """The held-out truths of a run prepared with a holdout (``[]`` otherwise), in order:
        ``name``, ``file`` (relative path of the truth table) and ``rows``."""
        holdout = self.manifest.get("holdout") or {}
        truths = holdout.get("truths", []) if isinstance(holdout, dict) else []
        if not isinstance(truths, list) or not all(
            isinstance(t, dict) and isinstance(t.get(key), str)
            for t in truths
            for key in ("name", "file")
        ):
            raise SnapshotError(f"{self.path / MANIFEST}: corrupt 'holdout.truths' entry")
        return truths

    def truth_path(self, name: str) -> Path:
        """Path of the held-out truth ``name``.

        Raises
        ------
        SnapshotError
            The run has no held-out truth of that name.
        """
        truths = self.truths()
        for truth in truths:
            if truth["name"] == name:
                return self.path / truth["file"]
        if not truths:
            raise SnapshotError(
                f"{self.path}: prepared without a holdout, so it has no held-out truth "
                "(rlreco prepare --holdout customers:F or time:YYYY-MM-DD)"
            )
        raise SnapshotError(
            f"{self.path}: no held-out truth {name!r}; it has "
            + ", ".join(repr(t["name"]) for t in truths)
        )

    def read_state_weights(self, name: str) -> np.ndarray:
        """Held-out rows per state of the truth ``name``, shape (n_states,)."""
        self.truth_path(name)
        columns = read_table(self.path / "holdout" / "state_weights.parquet", "state_weights")
        n_states = int(self.manifest["prepare"]["states_total"])
        mine = columns["truth"] == name
        state = columns["state_id"][mine].astype(np.int64)
        if state.size and (state.min() < 0 or state.max() >= n_states):
            raise SnapshotError(f"{self.path}: holdout/state_weights.parquet: bad state_id")
        weight = np.zeros(n_states)
        weight[state] = columns["weight"][mine]
        return weight

    def read_policy_state(self, policy: str) -> dict[str, np.ndarray]:
        """The per-state state ``policy`` resumes from: ``{}`` when the run keeps none, and
        also when the saved state belongs to another policy (it has to start afresh; the caller
        checks that it may)."""
        entry = self.manifest.get("policy_state")
        if not entry:
            return {}
        if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
            raise SnapshotError(f"{self.path / MANIFEST}: corrupt 'policy_state' entry")
        if entry.get("policy") != policy:
            return {}
        return read_policy_state(self.path / entry["file"], policy)

    def read_metrics(self) -> dict[str, np.ndarray] | None:
        """Per-block metrics columns, or None before the first simulation."""
        name = self.manifest.get("metrics")
        return read_table(self.path / name, "metrics") if name else None

    def commit(
        self,
        *,
        episodes: int,
        snapshot: Snapshot,
        metrics: Columns | None,
        updates: Mapping[str, Any],
        policy_state: tuple[str, Columns] | None = None,
    ) -> None:
        """Write a new snapshot, metrics and policy state, then the manifest (the commit point).

        ``metrics=None`` keeps the current metrics (e.g. after an online visit, which is not part
        of a simulated block). ``policy_state`` is (policy name, per-state arrays) after
        ``episodes`` visits, saved under a name of its own (no arrays: the run keeps none);
        None drops any saved policy state. The previous snapshot and policy state are removed
        only after the new manifest is in place; the initial snapshot is always kept.
        """
        name = snapshot_name(episodes)
        previous = self.manifest["snapshot"]
        previous_state = self.manifest.get("policy_state")
        state_entry = None
        if policy_state is not None and policy_state[1]:
            state_entry = {"policy": policy_state[0], "file": policy_state_name(episodes)}
        manifest = {
            **self.manifest,
            **updates,
            "episodes": episodes,
            "snapshot": name,
            "metrics": "metrics.parquet" if metrics is not None else self.manifest.get("metrics"),
            "policy_state": state_entry,
        }
        metrics_path = self.path / "metrics.parquet"
        backup = self.path / ".metrics.parquet.previous"
        had_metrics = metrics_path.is_file()
        old_file = previous_state.get("file") if isinstance(previous_state, dict) else None
        try:
            write_snapshot(self.path / name, snapshot)
            if policy_state is not None and state_entry is not None:
                write_policy_state(self.path / state_entry["file"], *policy_state)
            if metrics is not None:
                if had_metrics:
                    shutil.copyfile(metrics_path, backup)
                write_table(metrics_path, "metrics", metrics)
            write_json(self.path / MANIFEST, manifest)
        except BaseException:
            # Not committed: put the files the manifest names back as they were.
            if name not in (previous, self.manifest["initial_snapshot"]):
                (self.path / name).unlink(missing_ok=True)
            if state_entry is not None and state_entry["file"] != old_file:
                (self.path / state_entry["file"]).unlink(missing_ok=True)
            if metrics is not None and backup.is_file():
                os.replace(backup, metrics_path)
            elif metrics is not None and not had_metrics:
                metrics_path.unlink(missing_ok=True)
            raise
        finally:
            backup.unlink(missing_ok=True)
        self.manifest = manifest
        if previous not in (name, manifest["initial_snapshot"]):
            (self.path / previous).unlink(missing_ok=True)
        if isinstance(old_file, str) and (state_entry is None or old_file != state_entry["file"]):
            (self.path / old_file).unlink(missing_ok=True)

    def derive(
        self,
        path: str | Path,
        *,
        snapshot: Snapshot,
        updates: Mapping[str, Any],
        force: bool = False,
    ) -> RunDir:
        """Write a new run directory with this run's state space and ``snapshot`` as its tables.

        The state space files are copied byte for byte and the manifest is this one's with
        ``updates`` applied (``episodes`` among them, default this run's). With episodes 0 the
        snapshot is also the new run's initial snapshot; otherwise this run's initial snapshot
        is copied too. Metrics are copied when the episodes are this run's (they count exactly
        those visits) and dropped otherwise. Built under a temporary name and renamed, like
        :meth:`create`.

        Raises
        ------
        SnapshotError
            If ``path`` exists and ``force`` is false, or ``path`` is this run directory.
        """
        path = Path(path)
        if path.resolve() == self.path.resolve():
            raise SnapshotError(f"{path}: is the run directory being derived from; choose another")
        manifest = {**self.manifest, **updates}
        episodes = int(manifest["episodes"])
        name = snapshot_name(episodes)
        same = episodes == self.episodes
        metrics = self.manifest.get("metrics") if same else None
        state = self.manifest.get("policy_state") if same else None
        with staged_directory(path, force=force) as tmp:
            shutil.copytree(self.path / "state_space", tmp / "state_space")
            initial = name
            if episodes != INITIAL_EPISODES:
                initial = self.manifest["initial_snapshot"]
                (tmp / initial).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(self.path / initial, tmp / initial)
            if metrics:
                shutil.copyfile(self.path / metrics, tmp / metrics)
            if state:
                (tmp / state["file"]).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(self.path / state["file"], tmp / state["file"])
            write_snapshot(tmp / name, snapshot)
            manifest.update(
                episodes=episodes,
                snapshot=name,
                initial_snapshot=initial,
                metrics=metrics,
                policy_state=state,
            )
            write_json(tmp / MANIFEST, manifest)
        return type(self)(path, manifest)
