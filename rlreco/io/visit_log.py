"""Visit logs: one row per shown slot, written by rlreco or read from other systems.

rlreco's own layout (``RUN_DIR/logs/part-<first visit>.parquet``, one file per chunk of
visits, each written to a temporary name and renamed like a snapshot) has the columns of
:data:`LOG_SCHEMA`: ``run_id``, the fields of :data:`rlreco.schema.LOG_DTYPE` (``visit``,
``state``, ``position``, ``product``, ``outcome``, ``reward``, ``propensity``; a NaN
propensity is stored as null), the state's string id ``state_name``, the product's
``product_code``, the logging ``policy`` and its parameter ``param``, and ``timestamp`` (UTC,
null for simulated visits).

A log written elsewhere (Parquet, or CSV / CSV.gz) is read through a :class:`ColumnMap`: a
state is a distinct tuple of the context columns, a product is the item column's value
(read as a string), and slots group into visits by the visit column, or else by runs of rows of
one context whose positions increase (a row whose position does not exceed the previous row's,
or whose context differs, starts a new visit); without a position column every row is a visit of
one slot. Positions are 0-based slot indices, and the slots of a visit must be positions
``0, 1, ..., m - 1`` (the estimators need every slot above a slot). Both readers return
:class:`LogSlots`, the log in names (state labels and product codes), which the application
maps to a run's integer ids.

Every problem is one :class:`~rlreco.errors.DataError` line naming the file, the column and the
first bad row (0-based data row): a missing or mistyped column, a missing value, a propensity
outside (0, 1], a negative position, a visit whose positions are not ``0..m-1``, an empty log.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from rlreco.errors import DataError, SnapshotError
from rlreco.io.run_dir import atomic_path, read_tagged, record_fields
from rlreco.schema import LOG_DTYPE

LOG_KIND = "visit_log"
LOG_SCHEMA_VERSION = 1
LOG_FOLDER = "logs"
_META_KEY = b"rlreco"
#: separator of the context values in a log-derived state label (escaped inside values)
CONTEXT_SEPARATOR = "|"

#: Arrow schema of rlreco's visit log parts, derived from :data:`LOG_DTYPE`.
LOG_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        *record_fields(LOG_DTYPE),
        ("state_name", pa.string()),
        ("product_code", pa.string()),
        ("policy", pa.string()),
        ("param", pa.float64()),
        ("timestamp", pa.timestamp("us", tz="UTC")),
    ]
)


@dataclass(frozen=True)
class ColumnMap:
    """Which columns of a foreign log hold what.

    Attributes
    ----------
    context : tuple of str
        Context columns; a state is a distinct tuple of their values.
    item : str
        Product column (values read as strings).
    position : str, optional
        0-based slot of the row within its visit.
    reward : str, optional
        Numeric reward of the slot.
    click, buy : str, optional
        0/1 (or true/false) click and purchase flags; they give the outcome, and the reward
        when no reward column is mapped (the click flag, 1 or 0).
    propensity : str, optional
        Logging propensity in (0, 1] (required by ``ips``, ``snips`` and ``dr``).
    timestamp : str, optional
        Time of the visit (parsed as UTC).
    visit : str, optional
        Visit key; rows sharing it form one slate.
    """

    context: tuple[str, ...]
    item: str
    position: str | None = None
    reward: str | None = None
    click: str | None = None
    buy: str | None = None
    propensity: str | None = None
    timestamp: str | None = None
    visit: str | None = None

    def columns(self) -> list[str]:
        """Every mapped column, each once, in option order."""
        names = [*self.context, self.item]
        for name in (self.position, self.reward, self.click, self.buy, self.propensity,
                     self.timestamp, self.visit):  # fmt: skip
            if name is not None:
                names.append(name)
        return list(dict.fromkeys(names))

    def check(self) -> None:
        """Reject a map that cannot describe a log."""
        if not self.context or any(not c for c in self.context):
            raise DataError("--context-cols: expected one or more column names")
        if not self.item:
            raise DataError("--item-col: expected a column name")
        if self.reward is None and self.click is None:
            raise DataError("a foreign log needs --reward-col or --click-col")

    def to_dict(self) -> dict[str, object]:
        """JSON-compatible form (stored in a log-derived run's manifest)."""
        return {
            "context": list(self.context),
            "item": self.item,
            "position": self.position,
            "reward": self.reward,
            "click": self.click,
            "buy": self.buy,
            "propensity": self.propensity,
            "timestamp": self.timestamp,
            "visit": self.visit,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, object]) -> ColumnMap:
        """Inverse of :meth:`to_dict`."""
        context = raw.get("context")
        if not isinstance(context, list) or not all(isinstance(c, str) for c in context):
            raise SnapshotError("manifest: 'log.columns.context' is not a list of names")

        def opt(key: str) -> str | None:
            value = raw.get(key)
            return value if isinstance(value, str) else None

        return cls(
            context=tuple(context),
            item=str(raw.get("item")),
            position=opt("position"),
            reward=opt("reward"),
            click=opt("click"),
            buy=opt("buy"),
            propensity=opt("propensity"),
            timestamp=opt("timestamp"),
            visit=opt("visit"),
        )


@dataclass(frozen=True)
class LogSlots:
    """A visit log in names, one entry per slot, sorted by visit then position.

    Attributes
    ----------
    source : str
        File or folder read (for messages).
    visit : ndarray of int64, shape (n,)
        Visit number, 0, 1, 2, ... in log order (consecutive slots of a visit share it).
    position : ndarray of int16, shape (n,)
        Slot, ``0..m-1`` within each visit.
    state_index, product_index : ndarray of int64, shape (n,)
        Indices into ``state_names`` and ``product_codes``.
    state_names, product_codes : ndarray of str
        Distinct state labels and product codes.
    outcome : ndarray of int8, shape (n,)
        0 ignored, 1 clicked, 2 bought, -1 unknown.
    reward : ndarray of float64, shape (n,)
    propensity : ndarray of float64, shape (n,)
        NaN where unknown.
    row : ndarray of int64, shape (n,)
        Data row of each slot in the source (for messages).
    policy : str or None
        Logging policy and parameter, when the log is one of rlreco's (of its first row).
    run_id : str or None
        Run that wrote the log (rlreco logs).
    buys_known : bool
        Whether a slot's outcome tells purchases apart (false for a foreign log with a click
        column but no purchase column: its buy rate is unknown).
    """

    source: str
    visit: np.ndarray
    position: np.ndarray
    state_index: np.ndarray
    state_names: np.ndarray
    product_index: np.ndarray
    product_codes: np.ndarray
    outcome: np.ndarray
    reward: np.ndarray
    propensity: np.ndarray
    row: np.ndarray
    policy: str | None = None
    run_id: str | None = None
    buys_known: bool = True

    @property
    def n_slots(self) -> int:
        """Number of logged slots."""
        return int(self.visit.shape[0])

    @property
    def n_visits(self) -> int:
        """Number of visits."""
        return int(self.visit[-1]) + 1 if self.visit.size else 0


# --------------------------------------------------------------------------- rlreco's layout


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
    if records.dtype != LOG_DTYPE or records.size == 0:
        raise ValueError("write_log_part: expected a non-empty LOG_DTYPE array")
    n = records.shape[0]
    columns: dict[str, pa.Array] = {"run_id": pa.array(np.full(n, run_id), pa.string())}
    for name in LOG_DTYPE.names or ():
        values = np.ascontiguousarray(records[name])
        kind = LOG_SCHEMA.field(name).type
        # NaN propensities (unknown) are nulls in the file
        columns[name] = pa.array(values, kind, from_pandas=name == "propensity")
    columns["state_name"] = pa.array(np.asarray(state_names)[records["state"]], pa.string())
    columns["product_code"] = pa.array(np.asarray(product_codes)[records["product"]], pa.string())
    columns["policy"] = pa.array(np.full(n, policy), pa.string())
    columns["param"] = pa.array(np.full(n, float(param)), pa.float64())
    if timestamp is None:
        columns["timestamp"] = pa.nulls(n, LOG_SCHEMA.field("timestamp").type)
    else:
        stamps = pd.to_datetime(np.asarray(timestamp), utc=True)
        columns["timestamp"] = pa.array(stamps, LOG_SCHEMA.field("timestamp").type)
    meta = {"kind": LOG_KIND, "schema_version": LOG_SCHEMA_VERSION}
    schema = LOG_SCHEMA.with_metadata({_META_KEY: json.dumps(meta).encode()})
    table = pa.Table.from_arrays([columns[f.name] for f in LOG_SCHEMA], schema=schema)
    path = run_path / log_part_name(int(records["visit"][0]))
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return path


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
    except (pa.ArrowException, OSError):
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
        a propensity outside (0, 1], or visits whose slots are not ``0..m-1``.
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
            table, _ = read_tagged(part, LOG_KIND, LOG_SCHEMA_VERSION)
        except SnapshotError as exc:
            raise DataError(str(exc)) from None
        if not table.schema.remove_metadata().equals(LOG_SCHEMA):
            raise DataError(f"{part}: columns {table.schema.names} do not match the visit log")
        tables.append(table.replace_schema_metadata(None))
    table = pa.concat_tables(tables)
    source = str(path)
    if table.num_rows == 0:
        raise DataError(f"{source}: the log is empty (no rows)")
    for name in ("run_id", "visit", "state_name", "position", "product_code", "outcome",
                 "reward", "policy", "param"):  # fmt: skip
        _no_nulls(table.column(name), source, name)
    visit_key = table.column("visit").to_numpy()
    state_index, state_names = _encode(table.column("state_name"))
    product_index, product_codes = _encode(table.column("product_code"))
    propensity = table.column("propensity").to_numpy(zero_copy_only=False).astype(np.float64)
    _check_propensity(propensity, source, "propensity")
    outcome = table.column("outcome").to_numpy().astype(np.int8)
    bad = np.flatnonzero((outcome < 0) | (outcome > 2))
    if bad.size:
        raise DataError(f"{source}: column 'outcome' row {int(bad[0])}: expected 0, 1 or 2")
    policy = table.column("policy")[0].as_py()
    param = table.column("param")[0].as_py()
    return _group(
        source,
        visit_key=visit_key,
        position=table.column("position").to_numpy().astype(np.int64),
        context_changes=None,
        state_index=state_index,
        state_names=state_names,
        product_index=product_index,
        product_codes=product_codes,
        outcome=outcome,
        reward=table.column("reward").to_numpy().astype(np.float64),
        propensity=propensity,
        policy=f"{policy} {param:g}",
        run_id=str(table.column("run_id")[0].as_py()),
    )


# --------------------------------------------------------------------------- foreign logs


def read_foreign_log(path: str | Path, columns: ColumnMap) -> LogSlots:
    """Read a log written elsewhere (Parquet, CSV or CSV.gz) through a column map.

    Raises
    ------
    DataError
        One line naming the file, column and first bad row (see the module docstring).
    """
    columns.check()
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise DataError(f"{source}: log not found")
    table = _read_columns(path, columns.columns())
    if table.num_rows == 0:
        raise DataError(f"{source}: the log is empty (no rows)")
    n = table.num_rows
    for name in columns.columns():
        if name != columns.propensity:
            _no_nulls(table.column(name), source, name)
    state_index, state_names, context_key = _contexts(table, columns.context, source)
    product_index, product_codes = _encode(_as_strings(table.column(columns.item)))
    if columns.position is not None:
        position = _integers(table.column(columns.position), source, columns.position)
        negative = np.flatnonzero(position < 0)
        if negative.size:
            row = int(negative[0])
            raise DataError(
                f"{source}: column '{columns.position}' row {row}: position {position[row]} is "
                "negative (positions are 0-based slots)"
            )
    else:
        position = np.zeros(n, dtype=np.int64)
    click = _flags(table.column(columns.click), source, columns.click) if columns.click else None
    buy = _flags(table.column(columns.buy), source, columns.buy) if columns.buy else None
    if columns.reward is not None:
        reward = _floats(table.column(columns.reward), source, columns.reward)
    else:
        assert click is not None  # ColumnMap.check
        reward = click.astype(np.float64)
    if click is None and buy is None:
        outcome = np.full(n, -1, dtype=np.int8)
    else:
        clicked = click if click is not None else np.zeros(n, dtype=bool)
        bought = buy if buy is not None else np.zeros(n, dtype=bool)
        outcome = np.where(bought, 2, np.where(clicked, 1, 0)).astype(np.int8)
    if columns.propensity is not None:
        propensity = _floats(
            table.column(columns.propensity), source, columns.propensity, nullable=False
        )
        _check_propensity(propensity, source, columns.propensity)
    else:
        propensity = np.full(n, np.nan)
    if columns.timestamp is not None:
        _timestamps(table.column(columns.timestamp), source, columns.timestamp)
    if columns.visit is not None:
        visit_key, _ = _encode(_as_strings(table.column(columns.visit)))
        changes = None
    elif columns.position is not None:
        visit_key = None
        changes = context_key
    else:
        visit_key = np.arange(n, dtype=np.int64)
        changes = None
    return _group(
        source,
        visit_key=visit_key,
        position=position,
        context_changes=changes,
        state_index=state_index,
        state_names=state_names,
        product_index=product_index,
        product_codes=product_codes,
        outcome=outcome,
        reward=reward,
        propensity=propensity,
        policy=None,
        run_id=None,
        buys_known=buy is not None,
    )


def context_label(values: Sequence[str]) -> str:
    """State label of one context tuple: the values joined by ``|`` (``%`` and ``|`` inside a
    value escaped as ``%25`` and ``%7C``, so distinct tuples get distinct labels)."""
    return CONTEXT_SEPARATOR.join(v.replace("%", "%25").replace("|", "%7C") for v in values)


def _read_columns(path: Path, names: list[str]) -> pa.Table:
    """The named columns of a Parquet or CSV file (CSV columns as strings)."""
    source = str(path)
    suffixes = "".join(path.suffixes[-2:]).lower()
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            available = pq.read_schema(path).names
            _require(available, names, source)
            return pq.read_table(path, columns=names)
        if suffixes.endswith((".csv", ".csv.gz", ".tsv", ".tsv.gz")):
            delimiter = "\t" if ".tsv" in suffixes else ","
            parse = pacsv.ParseOptions(delimiter=delimiter)
            with pacsv.open_csv(path, parse_options=parse) as reader:
                available = reader.schema.names
            _require(available, names, source)
            convert = pacsv.ConvertOptions(
                include_columns=names,
                column_types={name: pa.string() for name in names},
                strings_can_be_null=True,
            )
            return pacsv.read_csv(path, parse_options=parse, convert_options=convert)
    except (pa.ArrowException, OSError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{source}: not a readable log file ({reason})") from None
    raise DataError(f"{source}: unknown log format; expected .parquet, .csv, .csv.gz or .tsv")


def _require(available: list[str], names: list[str], source: str) -> None:
    missing = [name for name in names if name not in available]
    if missing:
        raise DataError(
            f"{source}: column '{missing[0]}' not found; the file has columns "
            f"{', '.join(available)}"
        )


def _no_nulls(column: pa.ChunkedArray, source: str, name: str) -> None:
    if column.null_count:
        row = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
        raise DataError(f"{source}: column '{name}' row {row}: missing value")


def _encode(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """Dictionary codes (int64, in order of first appearance) and the distinct values (str)."""
    coded = column.combine_chunks().dictionary_encode()
    names = np.asarray(coded.dictionary.to_pylist(), dtype=str)
    return coded.indices.to_numpy().astype(np.int64), names


def _as_strings(column: pa.ChunkedArray) -> pa.ChunkedArray:
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        return column
    if pa.types.is_floating(column.type):
        values = column.to_numpy()
        if np.all(values == np.round(values)):
            # integer ids stored as floats (a column with nulls in pandas) read as integers
            return pa.chunked_array([pa.array(values.astype(np.int64)).cast(pa.string())])
    return pc.cast(column, pa.string())


def _contexts(
    table: pa.Table, names: tuple[str, ...], source: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """State index per row, state labels, and a per-row key of the context tuple."""
    codes = []
    values = []
    for name in names:
        code, distinct = _encode(_as_strings(table.column(name)))
        codes.append(code)
        values.append(distinct)
    stacked = np.stack(codes, axis=1)
    unique, inverse = np.unique(stacked, axis=0, return_inverse=True)
    labels = np.array(
        [context_label([values[j][u[j]] for j in range(len(names))]) for u in unique], dtype=str
    )
    inverse = inverse.reshape(-1).astype(np.int64)
    return inverse, labels, inverse


def _integers(column: pa.ChunkedArray, source: str, name: str) -> np.ndarray:
    if pa.types.is_integer(column.type):
        return column.to_numpy().astype(np.int64)
    values = _floats(column, source, name)
    bad = np.flatnonzero(values != np.round(values))
    if bad.size:
        row = int(bad[0])
        raise DataError(
            f"{source}: column '{name}' row {row}: {float(values[row])!r} is not an integer"
        )
    return values.astype(np.int64)


def _floats(
    column: pa.ChunkedArray, source: str, name: str, *, nullable: bool = False
) -> np.ndarray:
    kind = column.type
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind):
        values = column.to_numpy(zero_copy_only=False).astype(np.float64)
    elif pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        text = pd.Series(column.to_numpy(zero_copy_only=False), dtype=object)
        values = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64)
        bad = np.flatnonzero(np.isnan(values) & text.notna().to_numpy())
        bad = bad[[str(text.iloc[i]).strip().lower() != "nan" for i in bad]]
        if bad.size:
            row = int(bad[0])
            raise DataError(
                f"{source}: column '{name}' row {row}: {text.iloc[row]!r} is not a number"
            )
    else:
        raise DataError(f"{source}: column '{name}' has type {column.type}, expected numbers")
    missing = np.flatnonzero(np.isnan(values))
    if missing.size and not nullable:
        raise DataError(f"{source}: column '{name}' row {int(missing[0])}: missing value")
    return values


def _flags(column: pa.ChunkedArray, source: str, name: str) -> np.ndarray:
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        text = np.char.lower(np.asarray(column.to_numpy(zero_copy_only=False), dtype=str))
        words = {"true": 1.0, "false": 0.0, "yes": 1.0, "no": 0.0}
        mapped = np.array([words.get(t.strip(), np.nan) for t in text])
        numeric = np.isnan(mapped)
        if numeric.any():
            parsed = _floats(pa.chunked_array([pa.array(text[numeric])]), source, name)
            mapped[numeric] = parsed
        values = mapped
    else:
        values = _floats(column, source, name)
    bad = np.flatnonzero((values != 0.0) & (values != 1.0))
    if bad.size:
        row = int(bad[0])
        raise DataError(
            f"{source}: column '{name}' row {row}: {float(values[row])!r} is not 0 or 1"
        )
    return values.astype(bool)


def _timestamps(column: pa.ChunkedArray, source: str, name: str) -> np.ndarray:
    if pa.types.is_timestamp(column.type):
        return column.to_numpy()
    text = pd.Series(column.to_numpy(zero_copy_only=False), dtype=object)
    parsed = pd.to_datetime(text, utc=True, errors="coerce", format="mixed")
    bad = np.flatnonzero(parsed.isna().to_numpy())
    if bad.size:
        row = int(bad[0])
        raise DataError(f"{source}: column '{name}' row {row}: {text.iloc[row]!r} is not a time")
    return parsed.to_numpy()


def _check_propensity(propensity: np.ndarray, source: str, name: str) -> None:
    known = ~np.isnan(propensity)
    bad = np.flatnonzero(known & ~((propensity > 0.0) & (propensity <= 1.0)))
    if bad.size:
        row = int(bad[0])
        raise DataError(
            f"{source}: column '{name}' row {row}: propensity {float(propensity[row])!r} is "
            "outside (0, 1]"
        )


def _group(
    source: str,
    *,
    visit_key: np.ndarray | None,
    position: np.ndarray,
    context_changes: np.ndarray | None,
    state_index: np.ndarray,
    state_names: np.ndarray,
    product_index: np.ndarray,
    product_codes: np.ndarray,
    outcome: np.ndarray,
    reward: np.ndarray,
    propensity: np.ndarray,
    policy: str | None,
    run_id: str | None,
    buys_known: bool = True,
) -> LogSlots:
    """Number the visits, sort slots by (visit, position) and check positions are 0..m-1."""
    n = position.shape[0]
    if visit_key is None:
        assert context_changes is not None
        starts = np.ones(n, dtype=bool)
        starts[1:] = (position[1:] <= position[:-1]) | (context_changes[1:] != context_changes[:-1])
        visit = np.cumsum(starts) - 1
        order = np.arange(n)
    else:
        # number visits in order of first appearance, keep each visit's rows together
        _, first, inverse = np.unique(visit_key, return_index=True, return_inverse=True)
        rank = np.empty(first.size, dtype=np.int64)
        rank[np.argsort(first, kind="stable")] = np.arange(first.size)
        visit = rank[inverse.reshape(-1)]
        order = np.lexsort((position, visit))
        visit = visit[order]
    row = order.astype(np.int64)
    position = position[order]
    starts = np.ones(n, dtype=bool)
    starts[1:] = visit[1:] != visit[:-1]
    first_slot = np.maximum.accumulate(np.where(starts, np.arange(n), 0))
    expected = np.arange(n) - first_slot
    bad = np.flatnonzero(position != expected)
    if bad.size:
        i = int(bad[0])
        raise DataError(
            f"{source}: row {int(row[i])}: position {int(position[i])} where slot "
            f"{int(expected[i])} of its visit was expected (each visit must log positions "
            "0, 1, ..., m-1 once)"
        )
    state = state_index[order]
    mixed = np.flatnonzero(~starts & (np.concatenate([[0], np.diff(state)]) != 0))
    if mixed.size:
        raise DataError(
            f"{source}: row {int(row[mixed[0]])}: the slots of one visit have different states"
        )
    return LogSlots(
        source=source,
        visit=visit.astype(np.int64),
        position=position.astype(np.int16),
        state_index=state,
        state_names=state_names,
        product_index=product_index[order],
        product_codes=product_codes,
        outcome=outcome[order],
        reward=reward[order],
        propensity=propensity[order],
        row=row,
        policy=policy,
        run_id=run_id,
        buys_known=buys_known,
    )
