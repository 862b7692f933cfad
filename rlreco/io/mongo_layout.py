"""MongoDB document layouts of a learned-table snapshot (pure conversions, no I/O).

Two layouts hold the same long-form snapshot (one row per known (state, product) cell):

``seed``
    The original design's database: collections :data:`SEED_COLLECTIONS` (``rlQuantdic`` count,
    ``rlValuedic`` value, ``rlRewarddic`` reward, ``rlRecotrack`` reco_count), one document per
    state per collection shaped ``{"_id": "<state id>", "<state id>": {"<StockCode>": number}}``.
    Counts are stored as integers, values and rewards as doubles. There is no run id and no
    manifest; ``state_id`` and ``product_id`` are not stored.

``tidy``
    Collection :data:`CELLS` with one document per (run, state, product) holding the state's
    components, both ids, the four numbers, ``episodes`` (the run's visit count when the state
    was last exported) and ``updated_at``; unique index (run_id, state, product_code).
    Collection :data:`RUNS` holds each run's manifest under ``_id = run_id``.

Field-name escaping (seed layout, where state ids and StockCodes become field names, and the
keys of a stored manifest): ``%`` -> ``%25``, ``.`` -> ``%2E``, ``$`` -> ``%24``, NUL -> ``%00``.
Every ``%`` of an escaped name starts one of these four escapes, so decoding is a single
left-to-right pass and the scheme is reversible for any string; names without those characters
are stored unchanged.

A manifest is stored with its keys escaped and each integer outside BSON's int64 range (a
PCG64 generator state has 128-bit integers) as ``{"%int": "<decimal digits>"}``; no escaped key
can be ``%int``, so :func:`decode_manifest` inverts :func:`encode_manifest` exactly.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa

from rlreco.errors import SnapshotError, SyncError, shown
from rlreco.io.parquet_tables import schema_of
from rlreco.schema import DEFAULT_STATE_FIELDS, format_state_id, parse_state_id

Layout = Literal["seed", "tidy"]
LAYOUTS: tuple[Layout, ...] = ("seed", "tidy")

#: Default database: the original design's (its spelling).
DEFAULT_DB = "rlRecomendation"
#: Seed collections by snapshot column, in the order an online visit writes them.
SEED_COLLECTIONS: dict[str, str] = {
    "count": "rlQuantdic",
    "reco_count": "rlRecotrack",
    "value": "rlValuedic",
    "reward": "rlRewarddic",
}
#: Tidy collections.
CELLS = "cells"
RUNS = "runs"
CELLS_INDEX = "run_state_product"
#: Bookkeeping collections shared by both layouts (never read by the original's code).
SYNC_STATE = "sync_state"
STATE_VERSIONS = "state_versions"
#: Per-document version field written by online visits (absent means 0).
VERSION_FIELD = "_v"

Fields = tuple[str, ...]


def snapshot_dtypes(fields: Fields = DEFAULT_STATE_FIELDS) -> dict[str, str]:
    """Columns and dtypes of the long-form snapshot frame of a run with these state fields, in
    order (the run directory's snapshot schema)."""
    return {
        f.name: "str" if pa.types.is_string(f.type) else str(f.type.to_pandas_dtype()().dtype)
        for f in schema_of("snapshot", fields)
    }


#: :func:`snapshot_dtypes` of the default state fields.
SNAPSHOT_DTYPES: dict[str, str] = snapshot_dtypes()
#: Numbers stored per cell, with the Python type BSON gets.
CELL_NUMBERS: dict[str, type] = {"value": float, "reward": float, "count": int, "reco_count": int}

#: Key of the stand-in for an integer that BSON cannot hold (see the module docstring).
BIG_INT = "%int"
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def _int_range(dtype: str) -> tuple[int, int]:
    """Range of an integer id column of the snapshot (state_id, half, product_id)."""
    info = np.iinfo(np.dtype(dtype))
    return int(info.min), int(info.max)


_ESCAPES = {"%": "%25", ".": "%2E", "$": "%24", "\x00": "%00"}
_UNESCAPES = {v: k for k, v in _ESCAPES.items()}
_NEEDS_ESCAPE = re.compile(r"[%.$\x00]")
_ESCAPED = re.compile(r"%(?:25|2E|24|00)?")


@dataclass(frozen=True)
class CodeIndex:
    """Integer indices of the caller's state space, used where a layout does not store them.

    Attributes
    ----------
    states : Mapping[str, int]
        State id string -> ``state_id``.
    products : Mapping[str, int]
        StockCode -> ``product_id``.
    """

    states: Mapping[str, int]
    products: Mapping[str, int]


def check_layout(layout: str) -> Layout:
    """Return ``layout`` if it names a layout, else raise :class:`SyncError`."""
    if layout == "seed":
        return "seed"
    if layout == "tidy":
        return "tidy"
    raise SyncError(f"MongoDB layout must be 'seed' or 'tidy', got {layout!r}")


def escape_field(name: str) -> str:
    """Escape ``name`` into a valid MongoDB field name (see the module docstring)."""
    if _NEEDS_ESCAPE.search(name) is None:
        return name
    return "".join(_ESCAPES.get(ch, ch) for ch in name)


def unescape_field(name: str) -> str:
    """Invert :func:`escape_field`.

    Raises
    ------
    SyncError
        If a ``%`` of ``name`` starts none of the four escapes (no escaped name has one).
    """
    if "%" not in name:
        return name

    def unescape(match: re.Match[str]) -> str:
        if match.group(0) == "%":
            raise SyncError(
                f"field name {shown(name)} does not decode: each '%' must start %25, %2E, %24 "
                "or %00"
            )
        return _UNESCAPES[match.group(0)]

    return _ESCAPED.sub(unescape, name)


def cell_number(value: Any, column: str, where: str) -> int | float:
    """A stored cell number checked and converted to its column's type (:data:`CELL_NUMBERS`).

    Integers may be stored as doubles with no fraction (other writers); booleans, text and
    anything else are refused.

    Raises
    ------
    SyncError
        One line naming ``where``, the column and the value.
    """
    kind = CELL_NUMBERS[column]
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if kind is float and number:
        return float(value)
    whole = number and (isinstance(value, int) or (math.isfinite(value) and value.is_integer()))
    if whole and _INT64_MIN <= int(value) <= _INT64_MAX:
        return int(value)
    allowed = "a number" if kind is float else "an integer"
    raise SyncError(f"{where}: {column} = {shown(value)}: expected {allowed}")


def encode_manifest(value: Any) -> Any:
    """A JSON-like manifest as BSON can store it (see the module docstring)."""
    if isinstance(value, Mapping):
        return {escape_field(str(k)): encode_manifest(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [encode_manifest(v) for v in value]
    big = isinstance(value, int) and not _INT64_MIN <= value <= _INT64_MAX
    if big and not isinstance(value, bool):
        return {BIG_INT: str(value)}
    return value


def decode_manifest(value: Any) -> Any:
    """Invert :func:`encode_manifest`."""
    if isinstance(value, Mapping):
        if set(value) == {BIG_INT}:
            return int(value[BIG_INT])
        return {unescape_field(str(k)): decode_manifest(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode_manifest(v) for v in value]
    return value


def format_state(*values: object) -> str:
    """The state id of field values: escaped values joined by ``_``
    (``format_state("Q1", "December", 0, "Thursday") == "Q1_December_0_Thursday"``)."""
    return format_state_id(values)


def parse_state(state: str, fields: Fields = DEFAULT_STATE_FIELDS) -> tuple[str | int, ...]:
    """Split a state id into its field values (``half`` and ``hour`` as int).

    Raises
    ------
    SyncError
        If ``state`` does not have one non-empty value per field.
    """
    values = parse_state_id(state, fields)
    if values is None:
        raise SyncError(
            f"state id {state!r} is not of the form {'_'.join(fields)} (one value per state "
            "field; half and hour integers)"
        )
    return values


def fields_of_manifest(manifest: Mapping[str, Any]) -> Fields:
    """A run's state fields from its manifest (the default fields for older runs)."""
    fields = manifest.get("state_fields")
    if fields is None:
        return DEFAULT_STATE_FIELDS
    if not isinstance(fields, list) or not all(isinstance(f, str) for f in fields):
        raise SnapshotError(f"manifest key 'state_fields' = {fields!r}: expected field names")
    return tuple(fields)


def empty_snapshot(fields: Fields = DEFAULT_STATE_FIELDS) -> pd.DataFrame:
    """A snapshot frame with no rows and the right dtypes."""
    return pd.DataFrame({c: pd.Series([], dtype=d) for c, d in snapshot_dtypes(fields).items()})


def conform_snapshot(
    frame: pd.DataFrame, what: str = "snapshot", fields: Fields = DEFAULT_STATE_FIELDS
) -> pd.DataFrame:
    """Check a snapshot frame and return it with exactly the snapshot columns and dtypes.

    Parameters
    ----------
    frame : pandas.DataFrame
        Long-form cells with at least the columns of :func:`snapshot_dtypes`.
    what : str
        Name used in error messages.
    fields : tuple of str
        The run's state fields.

    Returns
    -------
    pandas.DataFrame
        New frame, columns in :data:`SNAPSHOT_DTYPES` order, fresh RangeIndex.

    Raises
    ------
    SnapshotError
        Missing column, value not castable, missing strings, state id not matching its
        components, or a (state, product_code) pair present twice.
    """
    dtypes = snapshot_dtypes(fields)
    missing = [c for c in dtypes if c not in frame.columns]
    if missing:
        raise SnapshotError(
            f"{what} lacks column(s) {', '.join(missing)}; required: {', '.join(dtypes)}"
        )
    result = frame[list(dtypes)].reset_index(drop=True)
    holes = result.isna().to_numpy().any(axis=0)
    if holes.any():
        col = list(dtypes)[int(np.flatnonzero(holes)[0])]
        raise SnapshotError(f"{what} column {col!r} has missing values")
    for col, dtype in dtypes.items():
        series = result[col]
        if series.dtype == dtype:
            continue
        try:
            cast = series.astype(dtype)
        except (TypeError, ValueError) as exc:
            raise SnapshotError(f"{what} column {col!r} cannot be read as {dtype}: {exc}") from exc
        if dtype.startswith("int") and not np.array_equal(
            cast.to_numpy(np.float64), series.to_numpy(np.float64)
        ):
            raise SnapshotError(f"{what} column {col!r} has values that are not {dtype}")
        result[col] = cast
    # Plain Python over the rows: cheaper than vectorised string ops for small frames and
    # about 0.1 s for a full snapshot.
    states = result["state"].tolist()
    parts = (result[c].tolist() for c in fields)
    for row, (state, *pieces) in enumerate(zip(states, *parts, strict=True)):
        if state != format_state(*pieces):
            raise SnapshotError(
                f"{what} row {row}: state {state!r} is not {'_'.join(fields)} of its "
                f"components ({format_state(*pieces)!r})"
            )
    codes = result["product_code"].tolist()
    if len(set(zip(states, codes, strict=True))) != len(codes):
        row = int(np.flatnonzero(result.duplicated(["state", "product_code"]).to_numpy())[0])
        raise SnapshotError(
            f"{what} row {row}: cell (state {states[row]!r}, product {codes[row]!r}) "
            "appears more than once"
        )
    return result


def sort_snapshot(frame: pd.DataFrame) -> pd.DataFrame:
    """Canonical row order: (state_id, product_id, state, product_code)."""
    return frame.sort_values(
        ["state_id", "product_id", "state", "product_code"], kind="stable", ignore_index=True
    )


def state_slices(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[tuple[str, int, int]]]:
    """Sort cells by (state, product_code) and cut them into per-state row ranges.

    Returns
    -------
    sorted_frame : pandas.DataFrame
        ``frame`` sorted by (state, product_code), fresh RangeIndex.
    slices : list of (state, start, stop)
        Half-open row ranges of ``sorted_frame``, one per state, in state order.
    """
    ordered = frame.sort_values(["state", "product_code"], kind="stable", ignore_index=True)
    states = ordered["state"].to_numpy(dtype=object)
    if states.size == 0:
        return ordered, []
    starts = np.concatenate(([0], np.flatnonzero(states[1:] != states[:-1]) + 1))
    stops = np.concatenate((starts[1:], [states.size]))
    return ordered, [(str(states[a]), int(a), int(b)) for a, b in zip(starts, stops, strict=True)]


#: MongoDB's largest BSON document.
MAX_DOCUMENT_BYTES = 16 * 1024 * 1024


def seed_key_bytes(codes: Iterable[str]) -> np.ndarray:
    """UTF-8 bytes of each code as a seed-document field name (escaped), int64."""
    return np.array([len(escape_field(c).encode()) for c in codes], dtype=np.int64)


def seed_state_bytes(states: list[str], key_bytes: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """Upper bound of the BSON size of each state's seed document (one per collection).

    Per cell: a type byte, the escaped code (``key_bytes``, summed per state) and its NUL, and
    8 bytes (a double or an int64); per document the ``_id`` and state fields and framing
    (escaping at most triples the state id).
    """
    framing = np.array([3 * (len(s.encode()) * 3 + 32) for s in states], dtype=np.int64)
    return np.asarray(key_bytes, dtype=np.int64) + 10 * np.asarray(cells, np.int64) + framing


def check_seed_sizes(states: list[str], cells: np.ndarray, sizes: np.ndarray) -> None:
    """Refuse states whose seed documents would exceed the 16 MB limit.

    Raises
    ------
    SyncError
        Naming the first such state, its cells and estimated bytes.
    """
    over = np.flatnonzero(np.asarray(sizes) > MAX_DOCUMENT_BYTES)
    if over.size:
        k = int(over[0])
        raise SyncError(
            f"state {states[k]!r} has {int(cells[k]):,} known cells: its seed documents would be "
            f"about {int(sizes[k]):,} bytes, over MongoDB's {MAX_DOCUMENT_BYTES:,}-byte document "
            f"limit ({over.size} such states); export with --layout tidy (one document per cell)"
        )


def check_seed_documents(ordered: pd.DataFrame, slices: list[tuple[str, int, int]]) -> None:
    """:func:`check_seed_sizes` of a frame sorted by :func:`state_slices`.

    Raises
    ------
    SyncError
        Naming the first state over the limit.
    """
    keys = np.concatenate(([0], np.cumsum(seed_key_bytes(ordered["product_code"].tolist()))))
    states = [state for state, _, _ in slices]
    cells = np.array([b - a for _, a, b in slices], dtype=np.int64)
    key_bytes = np.array([keys[b] - keys[a] for _, a, b in slices], dtype=np.int64)
    check_seed_sizes(states, cells, seed_state_bytes(states, key_bytes, cells))


def tidy_key(run_id: str, state: str, product_code: str) -> dict[str, str]:
    """Filter selecting one tidy cell by its unique key."""
    return {"run_id": run_id, "state": state, "product_code": product_code}


def frame_from_tidy(
    docs: Iterable[Mapping[str, Any]], fields: Fields = DEFAULT_STATE_FIELDS
) -> pd.DataFrame:
    """Snapshot frame from tidy cell documents (extra fields ignored), canonical order.

    Raises
    ------
    SyncError
        A document lacking a field (e.g. a state field of another run) or holding a value of
        the wrong type (one line naming the document's state and product code).
    """
    dtypes = snapshot_dtypes(fields)
    columns: dict[str, list[Any]] = {c: [] for c in dtypes}
    for doc in docs:
        where = (
            f"{CELLS} document (state {shown(doc.get('state'))}, product "
            f"{shown(doc.get('product_code'))})"
        )
        for col, values in columns.items():
            if col not in doc:
                raise SyncError(
                    f"{where}: field {col!r} is missing (the run's state fields are "
                    f"{', '.join(fields)})"
                )
            value = doc[col]
            if col in CELL_NUMBERS:
                value = cell_number(value, col, where)
            elif dtypes[col] == "str":
                if not isinstance(value, str):
                    raise SyncError(f"{where}: {col} = {shown(value)}: expected a string")
            else:
                low, high = _int_range(dtypes[col])
                whole = isinstance(value, int) and not isinstance(value, bool)
                if not whole or not low <= value <= high:
                    raise SyncError(f"{where}: {col} = {shown(value)}: expected an integer")
            values.append(value)
    return _frame(columns, dtypes)


def frame_from_seed(
    tables: Mapping[str, Mapping[str, Mapping[str, Any]]],
    index: CodeIndex | None,
    fields: Fields = DEFAULT_STATE_FIELDS,
) -> pd.DataFrame:
    """Snapshot frame from the four seed tables.

    Parameters
    ----------
    tables : mapping
        Snapshot column (``count``, ``reco_count``, ``value``, ``reward``) -> state id ->
        StockCode -> number, with field names already unescaped.
    index : CodeIndex or None
        Gives ``state_id`` and ``product_id``; without it both are -1.
    fields : tuple of str
        The run's state fields, parsed from each state id.

    Returns
    -------
    pandas.DataFrame
        One row per product present in any of the four tables of a state; a number missing from
        one table is 0 there. Canonical order.

    Raises
    ------
    SyncError
        A state id that does not parse, or a code missing from ``index``.
    """
    dtypes = snapshot_dtypes(fields)
    columns: dict[str, list[Any]] = {c: [] for c in dtypes}
    states = sorted(set().union(*(t.keys() for t in tables.values())))
    for state in states:
        values = parse_state(state, fields)
        per_column = {c: tables[c].get(state, {}) for c in CELL_NUMBERS}
        codes = sorted(set().union(*(d.keys() for d in per_column.values())))
        state_id = _lookup(index.states, state, "state") if index else -1
        for code in codes:
            columns["state_id"].append(state_id)
            columns["state"].append(state)
            for name, value in zip(fields, values, strict=True):
                columns[name].append(value)
            columns["product_id"].append(_lookup(index.products, code, "product") if index else -1)
            columns["product_code"].append(code)
            for col in CELL_NUMBERS:
                where = f"{SEED_COLLECTIONS[col]} document {shown(state)}, field {shown(code)}"
                columns[col].append(cell_number(per_column[col].get(code, 0), col, where))
    return _frame(columns, dtypes)


def _frame(columns: Mapping[str, list[Any]], dtypes: Mapping[str, str]) -> pd.DataFrame:
    """Snapshot frame from column lists, canonical order."""
    typed = {
        col: pd.array(values, dtype="str") if dtype == "str" else np.asarray(values, dtype=dtype)
        for (col, values), dtype in zip(columns.items(), dtypes.values(), strict=True)
    }
    return sort_snapshot(pd.DataFrame(typed))


def _lookup(mapping: Mapping[str, int], key: str, kind: str) -> int:
    try:
        return int(mapping[key])
    except KeyError:
        raise SyncError(
            f"{kind} {key!r} found in MongoDB is not in the given {kind} index"
        ) from None


def state_record_id(layout: Layout, run_id: str | None, state: str) -> dict[str, str]:
    """``_id`` of a state's records in :data:`SYNC_STATE` and :data:`STATE_VERSIONS`.

    The seed layout holds one snapshot per database, so its records are keyed by state alone;
    tidy records by (run, state). Records also carry these fields flat, for queries.
    """
    if layout == "seed":
        return {"layout": layout, "state": state}
    return {"layout": layout, "run_id": str(run_id), "state": state}


def state_record_scope(layout: Layout, run_id: str | None) -> dict[str, str]:
    """Filter selecting every state record of a layout (seed) or of a run (tidy)."""
    if layout == "seed":
        return {"layout": layout}
    return {"layout": layout, "run_id": str(run_id)}


def older_than(version: int) -> dict[str, Any]:
    """Filter matching documents whose version field is below ``version`` (absent counts 0)."""
    return {"$or": [{VERSION_FIELD: {"$exists": False}}, {VERSION_FIELD: {"$lt": version}}]}
