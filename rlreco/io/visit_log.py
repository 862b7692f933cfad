"""Visit logs: one row per shown slot, written by rlreco or read from other systems.

rlreco's own layout (``RUN_DIR/logs/part-<first visit>.parquet``, one file per chunk of
visits, each written to a temporary name and renamed like a snapshot) has the columns of
:data:`LOG_SCHEMA`: ``run_id``, the fields of :data:`rlreco.schema.LOG_DTYPE` (``visit``,
``state``, ``position``, ``product``, ``outcome``, ``reward``, ``propensity``; a NaN
propensity is stored as null), the state's string id ``state_name``, the product's
``product_code``, the logging ``policy`` and its parameter ``param``, and ``timestamp`` (UTC,
null for simulated visits). Every column but ``propensity`` and ``timestamp`` is required
(schema version 2, :class:`LogWriter`); version 1 parts, whose columns are all nullable, are read
the same way.

A log written elsewhere (Parquet, or CSV / CSV.gz) is read by :mod:`rlreco.io.foreign_log`
through a :class:`~rlreco.io.foreign_log.ColumnMap`: a
state is a distinct tuple of the context columns, a product is the item column's value
(read as a string), and slots group into visits by the visit column, or else by runs of rows of
one context whose positions increase (a row whose position does not exceed the previous row's,
or whose context differs, starts a new visit); without a position column every row is a visit of
one slot. Positions are 0-based slot indices, and the slots of a visit must be positions
``0, 1, ..., m - 1`` (the estimators need every slot above a slot). Both readers return
:class:`~rlreco.io.log_slots.LogSlots`, the log in names (state labels and product codes),
which the application maps to a run's integer ids.

Every problem is one :class:`~rlreco.errors.DataError` line naming the file, the column and the
first bad row (0-based data row): a missing or mistyped column, a missing value, a reward that
is not a finite number, a propensity outside (0, 1], a negative position, a visit whose
positions are not ``0..m-1``, an empty log.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from rlreco.errors import DataError, SnapshotError, shown
from rlreco.io.atomic_files import atomic_path
from rlreco.io.log_slots import LogSlots, check_finite, check_propensity, encode_column, group_slots
from rlreco.io.parquet_tables import check_no_nulls, read_tagged, record_fields
from rlreco.schema import LOG_DTYPE

LOG_KIND = "visit_log"
#: 2: every column but ``propensity`` and ``timestamp`` required; 1 (still read): all nullable
LOG_SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)
LOG_FOLDER = "logs"
_META_KEY = b"rlreco"
#: log columns with (nearly) one value per visit, delta-encoded
UNIQUE_COLUMNS = ("visit",)
#: log columns written dictionary-encoded (few distinct values)
DICTIONARY_COLUMNS = ("run_id", "state_name", "product_code", "policy", "param")
#: Parquet codec of log parts: compressing costs more CPU than the simulation of the visits
LOG_COMPRESSION = "none"
#: columns that may hold nulls (required in version 2)
NULLABLE_COLUMNS = ("propensity", "timestamp")
#: separator of the context values in a log-derived state label (escaped inside values)
CONTEXT_SEPARATOR = "|"

#: Arrow schema of rlreco's visit log parts, derived from :data:`LOG_DTYPE`.
LOG_SCHEMA = pa.schema(
    [
        pa.field(name, kind, nullable=name in NULLABLE_COLUMNS)
        for name, kind in [
            ("run_id", pa.string()),
            *record_fields(LOG_DTYPE),
            ("state_name", pa.string()),
            ("product_code", pa.string()),
            ("policy", pa.string()),
            ("param", pa.float64()),
            ("timestamp", pa.timestamp("us", tz="UTC")),
        ]
    ]
)
#: What :class:`LogWriter` hands Parquet: the string columns as dictionary arrays.
_WRITE_SCHEMA = pa.schema(
    [
        f.with_type(pa.dictionary(pa.int32(), pa.string())) if f.type == pa.string() else f
        for f in LOG_SCHEMA
    ]
)


def log_part_name(first_visit: int) -> str:
    """Path, relative to the run directory, of the part starting at ``first_visit``."""
    return f"{LOG_FOLDER}/part-{first_visit:015d}.parquet"


def write_log_part(
    run_path: Path,
    records: np.ndarray,
    *,
    run_id: str,
    state_names: np.ndarray,
    product_codes: np.ndarray,
    policy: str,
    param: float,
    timestamp: np.ndarray | None = None,
) -> Path:
    """Write one part of a run's visit log atomically; return its path.

    Parameters
    ----------
    run_path : Path
        Run directory.
    records : ndarray of LOG_DTYPE, shape (n,)
        Slots in visit order; the part is named after the first visit.
    run_id : str
    state_names, product_codes : ndarray of str
        The run's state ids and product codes by integer id.
    policy : str
    param : float
    timestamp : ndarray of datetime64, shape (n,), optional
        UTC time of each slot's visit (online visits); null otherwise.
    """
    writer = LogWriter(
        run_path,
        run_id=run_id,
        state_names=state_names,
        product_codes=product_codes,
        policy=policy,
        param=param,
    )
    return writer.write(writer.table(records, timestamp))


class LogWriter:
    """Writes the parts of one run's visit log under one logging policy.

    Encoding a part costs more than simulating its visits, so the writer does the least work per
    slot that keeps the documented columns (module docstring):

    - the run's state ids and product codes are written as Arrow dictionary arrays (the integer
      ids are the indices, the run's names the dictionary): Parquet stores them
      dictionary-encoded without hashing a string per slot, and a reader sees plain strings;
    - ``run_id`` and ``policy`` likewise (one value), ``param`` dictionary-encoded, ``visit``
      delta-encoded, the other numbers plain, no compression, statistics for ``visit`` only;
    - every column but ``propensity`` and ``timestamp`` is required (no definition levels);
    - the columns are copied out of the kernel's records into buffers the writer reuses (two
      sets, so that :meth:`table` can fill one while :meth:`write` encodes the other on another
      thread), and Arrow encodes from a pool that keeps its memory between parts: a fresh
      allocation per part would fault in every page again.

    :meth:`table` must run before the caller's ``records`` are overwritten; a table stays valid
    until the second :meth:`table` call after it. :meth:`write` only reads its table, so it may
    run on another thread while the next visits are simulated.
    """

    def __init__(
        self,
        run_path: Path,
        *,
        run_id: str,
        state_names: np.ndarray,
        product_codes: np.ndarray,
        policy: str,
        param: float,
    ) -> None:
        self.run_path = run_path
        self._state_names = pa.array(np.asarray(state_names, dtype=str), pa.string())
        self._product_codes = pa.array(np.asarray(product_codes, dtype=str), pa.string())
        self._run_id = pa.array([run_id], pa.string())
        self._policy = pa.array([policy], pa.string())
        self._param = float(param)
        self._capacity = 0
        self._buffers: list[dict[str, np.ndarray]] = []
        self._constants: dict[str, pa.Array] = {}
        self._turn = 0
        self._pool = _encoding_pool()

    def _reserve(self, n: int) -> dict[str, np.ndarray]:
        """The next set of column buffers, grown to ``n`` slots when needed."""
        if n > self._capacity:
            self._capacity = n
            names = LOG_DTYPE.names or ()
            self._buffers = [{k: np.empty(n, LOG_DTYPE[k]) for k in names} for _ in range(2)]
            self._constants = {
                "zeros": pa.array(np.zeros(n, dtype=np.int32)),
                "param": pa.array(np.full(n, self._param), pa.float64()),
                "timestamp": pa.nulls(n, LOG_SCHEMA.field("timestamp").type),
            }
        self._turn ^= 1
        return self._buffers[self._turn]

    def table(self, records: np.ndarray, timestamp: np.ndarray | None = None) -> pa.Table:
        """The part of ``records`` (LOG_DTYPE, shape (n,), n >= 1) as the table to write, its
        numbers copied into the writer's buffers (see the class docstring)."""
        if records.dtype != LOG_DTYPE or records.size == 0:
            raise ValueError("LogWriter.table: expected a non-empty LOG_DTYPE array")
        n = records.shape[0]
        buffers = self._reserve(n)
        zeros = self._constants["zeros"].slice(0, n)
        columns: dict[str, pa.Array] = {
            "run_id": pa.DictionaryArray.from_arrays(zeros, self._run_id)
        }
        for name in LOG_DTYPE.names or ():
            values = buffers[name][:n]
            np.copyto(values, records[name])
            # NaN propensities (unknown) are nulls in the file
            columns[name] = pa.array(values, from_pandas=name == "propensity")
        columns["state_name"] = _names(self._state_names, buffers["state"][:n])
        columns["product_code"] = _names(self._product_codes, buffers["product"][:n])
        columns["policy"] = pa.DictionaryArray.from_arrays(zeros, self._policy)
        columns["param"] = self._constants["param"].slice(0, n)
        if timestamp is None:
            columns["timestamp"] = self._constants["timestamp"].slice(0, n)
        else:
            stamps = pd.to_datetime(np.asarray(timestamp), utc=True)
            columns["timestamp"] = pa.array(stamps, LOG_SCHEMA.field("timestamp").type)
        return pa.Table.from_arrays([columns[f.name] for f in _WRITE_SCHEMA], schema=_WRITE_SCHEMA)

    def write(self, table: pa.Table) -> Path:
        """Write a table of :meth:`table` as the part of its first visit, atomically."""
        path = self.run_path / log_part_name(int(table.column("visit")[0].as_py()))
        meta = {"kind": LOG_KIND, "schema_version": LOG_SCHEMA_VERSION}
        with (
            atomic_path(path) as tmp,
            pq.ParquetWriter(
                tmp,
                _WRITE_SCHEMA,
                compression=LOG_COMPRESSION,
                use_dictionary=list(DICTIONARY_COLUMNS),
                column_encoding={name: "DELTA_BINARY_PACKED" for name in UNIQUE_COLUMNS},
                # min/max of the visit is the one statistic a reader filters on
                write_statistics=["visit"],
                # the Arrow schema would make readers see dictionaries; the Parquet one says
                # string, and LOG_SCHEMA is what every reader gets
                store_schema=False,
                memory_pool=self._pool,
            ) as writer,
        ):
            writer.write_table(table)
            writer.add_key_value_metadata({_META_KEY.decode(): json.dumps(meta)})
        return path


def _names(names: pa.Array, ids: np.ndarray) -> pa.DictionaryArray:
    """``names[ids]`` as a dictionary array: the run's names with the ids as indices, or for a
    part shorter than the names (an online visit) only the names it uses."""
    if ids.size < len(names):
        used, index = np.unique(ids, return_inverse=True)
        return pa.DictionaryArray.from_arrays(
            pa.array(index.reshape(-1).astype(np.int32)), names.take(pa.array(used))
        )
    return pa.DictionaryArray.from_arrays(pa.array(ids), names)


def _encoding_pool() -> pa.MemoryPool:
    """Arrow's mimalloc pool when built in (it keeps a part's buffers for the next part, a
    bounded working set), else the current pool."""
    try:
        return pa.mimalloc_memory_pool()
    except pa.ArrowException:  # a build without mimalloc (Arrow says: not implemented)
        return pa.default_memory_pool()


def remove_log_parts_from(run_path: Path, first_visit: int) -> list[Path]:
    """Delete the parts of a run's log that start at or after ``first_visit``; return them.

    ``rlreco simulate`` calls it with the committed visit count before it resumes: parts
    written after the last commit (an interrupted call) are regenerated bit for bit.
    """
    folder = run_path / LOG_FOLDER
    removed = []
    for part in sorted(folder.glob("part-*.parquet")) if folder.is_dir() else []:
        start = part.stem.removeprefix("part-")
        if start.isdigit() and int(start) >= first_visit:
            part.unlink()
            removed.append(part)
    return removed


def log_documents(
    records: np.ndarray,
    *,
    run_id: str,
    state_names: np.ndarray,
    product_codes: np.ndarray,
    policy: str,
    param: float,
    timestamp: datetime,
) -> list[dict[str, Any]]:
    """One MongoDB document per logged slot: the Parquet columns, ``_id`` = ``{run_id, visit,
    position}`` (a retried visit rewrites the same documents), a null propensity for NaN."""
    docs = []
    for row in records.tolist():
        visit, state, position, product, outcome, reward, propensity = row
        docs.append(
            {
                "_id": {"run_id": run_id, "visit": int(visit), "position": int(position)},
                "run_id": run_id,
                "visit": int(visit),
                "state": int(state),
                "position": int(position),
                "product": int(product),
                "outcome": int(outcome),
                "reward": float(reward),
                "propensity": None if np.isnan(propensity) else float(propensity),
                "state_name": str(state_names[state]),
                "product_code": str(product_codes[product]),
                "policy": policy,
                "param": float(param),
                "timestamp": timestamp,
            }
        )
    return docs


def is_rlreco_log(path: str | Path) -> bool:
    """Whether ``path`` is a run's log folder, a run directory with logs, or a log part."""
    path = Path(path)
    if path.is_dir():
        folder = path / LOG_FOLDER if (path / LOG_FOLDER).is_dir() else path
        return any(folder.glob("part-*.parquet"))
    if path.suffix != ".parquet" or not path.is_file():
        return False
    try:
        meta = pq.read_schema(path).metadata or {}
    except (pa.ArrowException, OSError, UnicodeError):  # names not UTF-8: UnicodeError
        return False
    try:
        info = json.loads(meta.get(_META_KEY, b"{}"))
    except ValueError:
        return False
    return isinstance(info, dict) and info.get("kind") == LOG_KIND


def read_visit_log(path: str | Path) -> LogSlots:
    """Read one of rlreco's visit logs: a part file, a log folder, or a run directory.

    Raises
    ------
    DataError
        Nothing to read, a part that is not an rlreco visit log of this schema, an empty log,
        a reward that is not finite, a propensity outside (0, 1], or visits whose slots are
        not ``0..m-1``.
    """
    path = Path(path)
    if path.is_dir():
        folder = path / LOG_FOLDER if (path / LOG_FOLDER).is_dir() else path
        parts = sorted(folder.glob("part-*.parquet"))
        if not parts:
            raise DataError(f"{path}: no visit log parts (part-*.parquet) found")
    elif path.is_file():
        parts = [path]
    else:
        raise DataError(f"{path}: log not found")
    tables = []
    for part in parts:
        try:
            table, _ = read_tagged(part, LOG_KIND, _schema_version(part))
        except SnapshotError as exc:
            raise DataError(str(exc)) from None
        # version 1 parts hold the same columns, all nullable (nulls are checked below)
        if [(f.name, f.type) for f in table.schema] != _LOG_COLUMNS:
            raise DataError(
                f"{part}: columns {shown(table.schema.names, 300)} do not match the visit log "
                f"({', '.join(LOG_SCHEMA.names)})"
            )
        tables.append(pa.Table.from_arrays(table.columns, schema=_READ_SCHEMA))
    table = pa.concat_tables(tables)
    source = str(path)
    if table.num_rows == 0:
        raise DataError(f"{source}: the log is empty (no rows)")
    for name in ("run_id", "visit", "state_name", "position", "product_code", "outcome",
                 "reward", "policy", "param"):  # fmt: skip
        check_no_nulls(table.column(name), source, name)
    visit_key = table.column("visit").to_numpy()
    state_index, state_names = encode_column(table.column("state_name"))
    product_index, product_codes = encode_column(table.column("product_code"))
    propensity = table.column("propensity").to_numpy(zero_copy_only=False).astype(np.float64)
    check_propensity(propensity, source, "propensity")
    reward = table.column("reward").to_numpy().astype(np.float64)
    check_finite(reward, source, "reward")
    outcome = table.column("outcome").to_numpy().astype(np.int8)
    bad = np.flatnonzero((outcome < 0) | (outcome > 2))
    if bad.size:
        raise DataError(f"{source}: column 'outcome' row {int(bad[0])}: expected 0, 1 or 2")
    policy = table.column("policy")[0].as_py()
    param = table.column("param")[0].as_py()
    return group_slots(
        source,
        visit_key=visit_key,
        position=table.column("position").to_numpy().astype(np.int64),
        context_changes=None,
        state_index=state_index,
        state_names=state_names,
        product_index=product_index,
        product_codes=product_codes,
        outcome=outcome,
        reward=reward,
        propensity=propensity,
        policy=f"{policy} {param:g}",
        run_id=str(table.column("run_id")[0].as_py()),
    )


_LOG_COLUMNS = [(f.name, f.type) for f in LOG_SCHEMA]
#: The columns as read from any version (nullable: a part may be a version 1 part).
_READ_SCHEMA = pa.schema([f.with_nullable(True) for f in LOG_SCHEMA])


def _schema_version(part: Path) -> int:
    """The schema version a part says it has when it is one :func:`read_visit_log` reads,
    else the current one (so that :func:`read_tagged` names what is wrong)."""
    try:
        info = json.loads((pq.read_schema(part).metadata or {}).get(_META_KEY, b"{}"))
    except (pa.ArrowException, OSError, UnicodeError, ValueError):
        return LOG_SCHEMA_VERSION
    version = info.get("schema_version") if isinstance(info, dict) else None
    return version if version in READABLE_VERSIONS else LOG_SCHEMA_VERSION
