"""Visit logs written by other systems (Parquet, or CSV / CSV.gz), read through a column map.

A state is a distinct tuple of the context columns, a product is the item column's value (read
as a string), and slots group into visits by the visit column, or else by runs of rows of one
context whose positions increase (see :mod:`rlreco.io.log_slots`, whose :class:`LogSlots` the
reader returns). Every problem is one :class:`~rlreco.errors.DataError` line naming the file,
the column and the first bad row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from rlreco.errors import DataError, SnapshotError, shown
from rlreco.io.log_slots import LogSlots, check_finite, check_propensity, encode_column, group_slots
from rlreco.io.parquet_tables import check_no_nulls
from rlreco.io.visit_log import CONTEXT_SEPARATOR


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
            check_no_nulls(table.column(name), source, name)
    state_index, state_names, context_key = _contexts(table, columns.context, source)
    product_index, product_codes = encode_column(
        _as_strings(table.column(columns.item), source, columns.item)
    )
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
        check_finite(reward, source, columns.reward)
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
        check_propensity(propensity, source, columns.propensity)
    else:
        propensity = np.full(n, np.nan)
    if columns.timestamp is not None:
        _timestamps(table.column(columns.timestamp), source, columns.timestamp)
    if columns.visit is not None:
        visit_key, _ = encode_column(
            _as_strings(table.column(columns.visit), source, columns.visit)
        )
        changes = None
    elif columns.position is not None:
        visit_key = None
        changes = context_key
    else:
        visit_key = np.arange(n, dtype=np.int64)
        changes = None
    return group_slots(
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
            table = pq.read_table(path, columns=names)
            table.validate(full=True)  # e.g. text that is not UTF-8
            return table
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
    except (pa.ArrowException, OSError, UnicodeError) as exc:  # names not UTF-8: UnicodeError
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{source}: not a readable log file ({shown(reason, 200)})") from None
    raise DataError(f"{source}: unknown log format; expected .parquet, .csv, .csv.gz or .tsv")


def _require(available: list[str], names: list[str], source: str) -> None:
    missing = [name for name in names if name not in available]
    if missing:
        raise DataError(
            f"{source}: column {shown(missing[0])} not found; the file has columns "
            f"{shown(', '.join(available), 300)}"
        )


def _as_strings(column: pa.ChunkedArray, source: str, name: str) -> pa.ChunkedArray:
    """A key column's values as text (integer-valued floats as integers)."""
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        return column
    if pa.types.is_floating(column.type):
        values = column.to_numpy()
        if np.all((np.abs(values) < 2.0**63) & (values == np.round(values))):
            # integer ids stored as floats (a column with nulls in pandas) read as integers
            return pa.chunked_array([pa.array(values.astype(np.int64)).cast(pa.string())])
    try:
        return pc.cast(column, pa.string())
    except pa.ArrowException as exc:  # e.g. bytes that are not UTF-8, nested types
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(
            f"{source}: column '{name}' of type {column.type} cannot be read as text "
            f"({shown(reason, 120)})"
        ) from None


def _contexts(
    table: pa.Table, names: tuple[str, ...], source: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """State index per row, state labels, and a per-row key of the context tuple."""
    codes = []
    values = []
    for name in names:
        code, distinct = encode_column(_as_strings(table.column(name), source, name))
        codes.append(code)
        values.append(distinct)
    stacked = np.stack(codes, axis=1)
    unique, inverse = np.unique(stacked, axis=0, return_inverse=True)
    labels = np.array(
        [context_label([values[j][u[j]] for j in range(len(names))]) for u in unique], dtype=str
    )
    inverse = inverse.reshape(-1).astype(np.int64)
    return inverse, labels, inverse


#: Largest magnitude of an integer column (positions): beyond any slate, and castable.
MAX_INTEGER = 2**31 - 1


def _integers(column: pa.ChunkedArray, source: str, name: str) -> np.ndarray:
    """An integer column (integers, or floats / text holding integers) as int64."""
    values: np.ndarray
    if pa.types.is_integer(column.type):
        values = column.to_numpy()
    else:
        values = _floats(column, source, name)
        bad = np.flatnonzero(np.isfinite(values) & (values != np.round(values)))
        if bad.size:
            row = int(bad[0])
            raise DataError(
                f"{source}: column '{name}' row {row}: {float(values[row])!r} is not an integer"
            )
    # compared as floats: uint64 values above the int64 range and inf included
    big = np.flatnonzero(~(np.abs(values.astype(np.float64)) <= MAX_INTEGER))
    if big.size:
        row = int(big[0])
        raise DataError(
            f"{source}: column '{name}' row {row}: {values[row].item()!r} is outside "
            f"[-{MAX_INTEGER}, {MAX_INTEGER}]"
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
                f"{source}: column '{name}' row {row}: {shown(text.iloc[row])} is not a number"
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
        raise DataError(
            f"{source}: column '{name}' row {row}: {shown(text.iloc[row])} is not a time"
        )
    return parsed.to_numpy()
