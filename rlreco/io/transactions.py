"""Transactions loader: a CSV (optionally gzip), Parquet or XLSX file -> one canonical frame.

The file's columns are mapped to rlreco's canonical names by :class:`rlreco.config.Columns`;
other columns are dropped. Values are checked and normalised once, here, so that the same
transactions give the same frame whatever the file format:

- ``order_id``, ``product_id``, ``customer_id``: text, stripped; whole numbers read as numbers
  (``17850.0`` in Parquet, ``85123`` in XLSX, ``"17850.0"`` in a CSV written from such a frame)
  become their integer text (``"17850"``, ``"85123"``). Blank values are missing. A missing
  order or product id is an error; a missing customer id is allowed (the row is kept).
- ``product``: the description, stripped; blank values are missing.
- ``quantity`` (int64) and ``unit_price`` (float64): every value must be a finite number, and
  quantities whole numbers. Cancellations (negative quantities) are kept.
- ``order_date``: text is parsed with the configured ``date_format`` (vectorised, never per
  row); native date-time columns (Parquet, XLSX) are taken as they are. Stored as
  ``datetime64[us]`` wall-clock time (a time zone, if any, is dropped).

Derived columns follow the original design: ``day_number``, ``year``, ``month``, ``day``,
``month_half``, ``weekday``, ``hour``, ``weekday_name``, ``month_name`` and ``gross``.

Bad input raises :class:`~rlreco.errors.DataError` with one line naming the file, the column and
the first offending data rows (data row 1 is the first row below the header, or the first row
of a Parquet file). Nothing is ever written.
"""

from __future__ import annotations

import codecs
import csv
import importlib.util
import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from rlreco.config import DataConfig
from rlreco.errors import DataError, shown
from rlreco.io.transaction_values import (
    as_dates,
    as_numbers,
    as_text,
    as_whole_numbers,
    error_reason,
    is_missing,
)
from rlreco.schema import MONTH_NAMES, WEEKDAY_NAMES

#: lower-case file suffix -> format name
SUFFIX_FORMATS = {
    ".csv": "csv",
    ".txt": "csv",
    ".gz": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".xlsx": "xlsx",
    ".xlsm": "xlsx",
}
SUPPORTED_FORMATS = "CSV (.csv, .txt, .csv.gz, .gz), Parquet (.parquet, .pq), XLSX (.xlsx, .xlsm)"

#: canonical columns read from the file, in output order
SOURCE_COLUMNS = (
    "order_id", "product_id", "product", "quantity", "order_date", "unit_price", "customer_id",
)  # fmt: skip
DERIVED_COLUMNS = (
    "day_number", "year", "month", "day", "month_half", "weekday", "hour", "weekday_name",
    "month_name", "gross",
)  # fmt: skip

_READ_ERRORS = (pa.ArrowException, OSError, ValueError, EOFError, UnicodeError, LookupError)
_HEADER_BYTES = 1 << 16
_MAX_SAMPLES = 3
_MAX_SAMPLE_CHARS = 40
_MAX_LISTED = 12


@dataclass(frozen=True)
class LoadReport:
    """What :func:`load_transactions` read.

    Attributes
    ----------
    path : str
        The file read.
    format : str
        ``"csv"``, ``"parquet"`` or ``"xlsx"``.
    rows_read : int
        Data rows in the file.
    rows_without_customer : int
        Rows whose customer id is missing (kept, with ``customer_id`` NA).
    rows : int
        Rows returned; equal to ``rows_read`` (no row is dropped).
    """

    path: str
    format: str
    rows_read: int
    rows_without_customer: int
    rows: int


def load_transactions(
    path: str | Path, data: DataConfig, *, split_day: int, categorical: tuple[str, ...] = ()
) -> tuple[pd.DataFrame, LoadReport]:
    """Read a transactions file into the canonical frame.

    Parameters
    ----------
    path : str or Path
        CSV (``.csv``, ``.txt``, gzip-compressed ``.csv.gz``/``.gz``), Parquet (``.parquet``,
        ``.pq``) or XLSX (``.xlsx``, ``.xlsm``; first sheet, needs ``rlreco[xlsx]``).
    data : DataConfig
        Column mapping (``data.columns``), CSV text encoding and the date format of text dates.
    split_day : int
        Day of month after which an order is in the second month-half.
    categorical : tuple of str
        Canonical names of categorical columns to read as well (state fields such as
        ``country``; their file columns come from ``data.columns``): text, stripped; a value
        may be missing only on rows without a customer id.

    Returns
    -------
    frame : DataFrame, shape (n_rows, 17 + len(categorical))
        ``order_id``, ``product_id``, ``product``, ``customer_id`` (str, missing as NA; only
        ``product`` and ``customer_id`` may be missing), ``quantity`` (int64), ``unit_price``
        (float64), ``order_date`` (datetime64[us]), and the derived ``day_number`` (int32, days
        since 1970-01-01), ``year`` (int16), ``month`` (int8, 1..12), ``day`` (int8, day of
        month), ``month_half`` (int8, 1 when ``day > split_day``), ``weekday`` (int8,
        0 = Monday), ``hour`` (int8, hour of the order time, 0..23), ``weekday_name`` and
        ``month_name`` (ordered categoricals), ``gross`` (float64, quantity x unit price), and
        the ``categorical`` columns (str, "" where missing). Rows keep the file's order.
    report : LoadReport
        Row counts.

    Raises
    ------
    DataError
        Missing or unreadable file, unsupported suffix, missing mapped column, values that are
        not numbers or do not match the date format, or no data rows.
    """
    path = Path(path)
    name = str(path)
    if not path.is_file():
        raise DataError(f"{name}: file not found")
    fmt = _format_of(path)
    mapping = {name: getattr(data.columns, name) for name in SOURCE_COLUMNS}
    for name in categorical:
        source = data.columns.source_of(name)
        if source is None:
            raise DataError(f"state field {name!r} names no column of data.columns")
        mapping[name] = source
    if fmt == "csv":
        raw = _read_csv(path, mapping, data.encoding)
        rows_note = "data row 1 = first row below the header"
    elif fmt == "parquet":
        raw = _read_parquet(path, mapping)
        rows_note = "data row 1 = first row"
    else:
        raw = _read_xlsx(path, mapping)
        rows_note = "data row 1 = first row below the header"
    if len(raw) == 0:
        raise DataError(f"{name}: no transactions (empty file)")

    def bad(canonical: str, mask: np.ndarray, problem: tuple[str, str]) -> DataError:
        source = mapping[canonical]
        return _bad_values_error(
            name, source, canonical, raw[source], mask, problem=problem, rows_note=rows_note
        )

    columns: dict[str, Any] = {}
    for canonical in ("order_id", "product_id", "product"):
        text = as_text(raw[mapping[canonical]], code=canonical != "product")
        if canonical != "product" and text.hasnans:
            raise bad(canonical, text.isna().to_numpy(), ("is missing", "are missing"))
        columns[canonical] = text
    quantity, invalid = as_whole_numbers(raw[mapping["quantity"]])
    if invalid is not None:
        raise bad("quantity", invalid, ("is not a whole number", "are not whole numbers"))
    columns["quantity"] = quantity
    order_date, invalid = as_dates(raw[mapping["order_date"]], data.date_format, name)
    if invalid is not None:
        problem = f"match date format {data.date_format!r}"
        raise bad("order_date", invalid, (f"does not {problem}", f"do not {problem}"))
    columns["order_date"] = order_date
    unit_price, invalid = as_numbers(raw[mapping["unit_price"]])
    if invalid is not None:
        raise bad("unit_price", invalid, ("is not a number", "are not numbers"))
    columns["unit_price"] = unit_price
    columns["customer_id"] = as_text(raw[mapping["customer_id"]], code=True)
    columns.update(_derived(order_date, quantity, unit_price, split_day))
    has_customer = columns["customer_id"].notna().to_numpy()
    for name in categorical:
        text = as_text(raw[mapping[name]], code=False)
        missing = text.isna().to_numpy() & has_customer
        if missing.any():
            raise bad(name, missing, ("is missing", "are missing"))
        columns[name] = text.fillna("")

    frame = pd.DataFrame(columns)
    report = LoadReport(
        path=name,
        format=fmt,
        rows_read=len(raw),
        rows_without_customer=int(frame["customer_id"].isna().sum()),
        rows=len(frame),
    )
    return frame, report


def _format_of(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in SUFFIX_FORMATS:
        raise DataError(
            f"{path}: unsupported file type {suffix or '(no suffix)'!r}; "
            f"supported are {SUPPORTED_FORMATS}"
        )
    return SUFFIX_FORMATS[suffix]


def _check_columns(
    name: str, available: list[str], mapping: dict[str, str], hint: str = ""
) -> None:
    """Raise when a mapped column is not in the file, listing the file's first columns."""
    have = set(available)
    missing = [(src, canon) for canon, src in mapping.items() if src not in have]
    if not missing:
        return
    columns = ", ".join(_column_name(c) for c in available[:_MAX_LISTED])
    more = f", ... ({len(available)} in all)" if len(available) > _MAX_LISTED else ""
    fields = [(src, canon) for src, canon in missing if canon not in SOURCE_COLUMNS]
    if fields:
        src, canon = fields[0]
        raise DataError(
            f"{name}: key 'states.fields' value {canon!r}: column {shown(src)} "
            f"(key 'data.columns.{canon}') not found; columns are: {columns}{more}{hint}"
        )
    listed = ", ".join(f"{shown(src)} ({canon})" for src, canon in missing)
    noun = "column" if len(missing) == 1 else "columns"
    raise DataError(f"{name}: {noun} {listed} not found; columns are: {columns}{more}{hint}")


def _column_name(name: str) -> str:
    """A column name as listed in an error: bare when plain, else quoted and escaped."""
    plain = name.isprintable() and name == name.strip() and "," not in name
    return name if plain and len(name) <= _MAX_SAMPLE_CHARS else shown(name, 24)


def _unique_sources(mapping: dict[str, str]) -> list[str]:
    return list(dict.fromkeys(mapping.values()))


def _read_csv(path: Path, mapping: dict[str, str], encoding: str) -> pd.DataFrame:
    """Read the mapped columns of a CSV file, all as text (converted later, explicitly)."""
    name = str(path)
    try:
        codec = codecs.lookup(encoding).name
    except LookupError:
        raise DataError(f"{name}: unknown text encoding {encoding!r}") from None
    # Arrow skips transcoding only for the exact name "utf8".
    arrow_encoding = "utf8" if codec == "utf-8" else encoding
    compression = "gzip" if path.suffix.lower() == ".gz" else None
    try:
        header = _csv_header(path, codec, compression)
    except _READ_ERRORS as exc:
        raise DataError(f"{name}: cannot read as CSV: {error_reason(exc)}") from None
    if not header:
        raise DataError(f"{name}: no transactions (empty file)")
    garbled = any("\x00" in c or "\ufffd" in c for c in header)
    hint = f" (is the text encoding {encoding!r} right?)" if garbled else ""
    _check_columns(name, header, mapping, hint)
    sources = _unique_sources(mapping)
    try:
        with pa.input_stream(str(path), compression=compression) as stream:
            table = pa_csv.read_csv(
                stream,
                read_options=pa_csv.ReadOptions(encoding=arrow_encoding),
                parse_options=pa_csv.ParseOptions(newlines_in_values=True),
                convert_options=pa_csv.ConvertOptions(
                    include_columns=sources,
                    column_types=dict.fromkeys(sources, pa.string()),
                ),
            )
    except _READ_ERRORS as exc:
        raise DataError(f"{name}: cannot read as CSV: {error_reason(exc)}") from None
    return table.to_pandas()


def _csv_header(path: Path, encoding: str, compression: str | None) -> list[str]:
    """Column names of a CSV file: its first non-blank row ([] for an empty file)."""
    with pa.input_stream(str(path), compression=compression) as stream:
        head = stream.read(_HEADER_BYTES)
    text = head.decode(encoding, errors="replace").removeprefix("\ufeff")
    # newline="": a lone "\r" ends a row, as it does for Arrow's parser below
    for row in csv.reader(io.StringIO(text, newline="")):
        if any(cell.strip() for cell in row):
            return row
    return []


def _read_parquet(path: Path, mapping: dict[str, str]) -> pd.DataFrame:
    """Read the mapped columns of a Parquet file; dictionary columns are decoded.

    pandas metadata (index, categoricals) is ignored: rows are always numbered from 0.
    """
    name = str(path)
    try:
        schema = pq.read_schema(path)
    except _READ_ERRORS as exc:
        raise DataError(f"{name}: cannot read as Parquet: {error_reason(exc)}") from None
    _check_columns(name, list(schema.names), mapping)
    try:
        table = pq.read_table(path, columns=_unique_sources(mapping))
        table.validate(full=True)  # e.g. text that is not UTF-8
    except _READ_ERRORS as exc:
        raise DataError(f"{name}: cannot read as Parquet: {error_reason(exc)}") from None
    columns: dict[str, pd.Series] = {}
    for source, col in zip(table.column_names, table.columns, strict=True):
        if pa.types.is_dictionary(col.type):
            col = pc.dictionary_decode(col)  # noqa: PLW2901
        try:
            # per column, to name the one whose values pandas cannot hold (e.g. year 0 dates)
            columns[source] = col.to_pandas()
        except (pa.ArrowException, ValueError, OverflowError) as exc:
            raise DataError(
                f"{name}: column {shown(source)}: cannot convert values of type {col.type}: "
                f"{error_reason(exc)}"
            ) from None
    return pd.DataFrame(columns)


def _read_xlsx(path: Path, mapping: dict[str, str]) -> pd.DataFrame:
    """Read the first sheet of an XLSX workbook with pandas and openpyxl."""
    name = str(path)
    if importlib.util.find_spec("openpyxl") is None:
        raise DataError(f"{name}: reading XLSX needs openpyxl: pip install rlreco[xlsx]")
    try:
        with warnings.catch_warnings():
            # openpyxl warns about harmless workbook features (styles, data validation)
            warnings.filterwarnings("ignore", category=UserWarning, module="openpyxl")
            frame = pd.read_excel(path, sheet_name=0, engine="openpyxl")
    except Exception as exc:  # corrupt workbooks raise many types (zip, XML, KeyError)
        raise DataError(f"{name}: cannot read as XLSX: {error_reason(exc)}") from None
    if frame.shape[1] == 0:
        raise DataError(f"{name}: no transactions (empty file)")
    frame.columns = [str(c) for c in frame.columns]
    _check_columns(name, list(frame.columns), mapping)
    return frame[_unique_sources(mapping)].reset_index(drop=True)


def _derived(
    order_date: np.ndarray, quantity: np.ndarray, unit_price: np.ndarray, split_day: int
) -> dict[str, Any]:
    """Calendar columns of the original design and the gross amount.

    The calendar fields are computed once per day of the covered date range and gathered,
    which is cheaper than converting every row.
    """
    day_number = order_date.astype("datetime64[D]").astype(np.int64)
    first = int(day_number.min())
    offset = day_number - first
    calendar = np.arange(first, int(day_number.max()) + 1).astype("datetime64[D]")
    months = calendar.astype("datetime64[M]")
    month0 = (months.astype(np.int64) % 12).astype(np.int8)[offset]  # 0 = January
    day = ((calendar - months).astype(np.int64) + 1).astype(np.int8)[offset]
    year = (calendar.astype("datetime64[Y]").astype(np.int64) + 1970).astype(np.int16)[offset]
    weekday = ((day_number + 3) % 7).astype(np.int8)  # 1970-01-01 was a Thursday (3)
    hours = order_date.astype("datetime64[h]").astype(np.int64) - day_number * 24
    return {
        "day_number": day_number.astype(np.int32),
        "year": year,
        "month": month0 + np.int8(1),
        "day": day,
        "month_half": (day > split_day).astype(np.int8),
        "weekday": weekday,
        "hour": hours.astype(np.int8),
        "weekday_name": pd.Categorical.from_codes(weekday, WEEKDAY_NAMES, ordered=True),
        "month_name": pd.Categorical.from_codes(month0, MONTH_NAMES, ordered=True),
        "gross": quantity * unit_price,
    }


def _sample(value: Any) -> str:
    if is_missing(value):
        return "missing"
    return shown(str(value), _MAX_SAMPLE_CHARS)


def _bad_values_error(
    name: str,
    source: str,
    canonical: str,
    values: pd.Series,
    invalid: np.ndarray,
    *,
    problem: tuple[str, str],
    rows_note: str,
) -> DataError:
    """One-line error: count of bad values, their first data rows (1-based) and samples."""
    rows = np.flatnonzero(invalid)
    first = rows[:_MAX_SAMPLES]
    count = int(rows.size)
    what = f"1 value {problem[0]}" if count == 1 else f"{count} values {problem[1]}"
    at = ", ".join(str(int(i) + 1) for i in first)
    more = ", ..." if count > _MAX_SAMPLES else ""
    samples = ", ".join(_sample(values.iloc[int(i)]) for i in first)
    label = "data row" if count == 1 else "data rows"
    return DataError(
        f"{name}: column {shown(source)} ({canonical}): {what} "
        f"(first at {label} {at}{more}: {samples}; {rows_note})"
    )
