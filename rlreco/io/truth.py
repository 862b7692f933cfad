"""Reading a user-supplied truth table: the true click and buy probability of every cell.

A truth table is a Parquet file with one row per (state, catalogue product) and the columns
``state_id`` (the state's string id, e.g. ``Q1_December_0_Thursday``), ``product_id`` (the
product code, StockCode), ``p_click`` and ``p_buy`` (probabilities in [0, 1]). This module checks
the file on its own; :func:`rlreco.engine.truth_table.truth_from_frame` checks it against a run's
state space.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from rlreco.errors import DataError, shown
from rlreco.io.atomic_files import atomic_path
from rlreco.io.parquet_tables import check_no_nulls, read_parquet

#: Columns of a truth table, in order.
TRUTH_COLUMNS = ("state_id", "product_id", "p_click", "p_buy")


def read_truth_table(path: str | Path) -> pd.DataFrame:
    """Read and check a truth-table Parquet file.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    DataFrame
        Columns ``state_id`` and ``product_id`` (str), ``p_click`` and ``p_buy`` (float64), in
        file order.

    Raises
    ------
    DataError
        One line naming the file and the first offending column or row: file missing or not
        Parquet, a column missing, ids that are not strings (integer product codes are
        accepted), missing values, probabilities outside [0, 1] or empty tables.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: truth table not found")
    try:
        table = read_parquet(path)
        table.validate(full=True)  # e.g. text that is not UTF-8
    except (pa.ArrowException, OSError, UnicodeError) as exc:  # names not UTF-8: UnicodeError
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{path}: not a readable Parquet file ({reason})") from None
    missing = [name for name in TRUTH_COLUMNS if name not in table.column_names]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {', '.join(missing)}; a truth table has columns "
            f"{', '.join(TRUTH_COLUMNS)}"
        )
    if table.num_rows == 0:
        raise DataError(f"{path}: the truth table has no rows")
    columns: dict[str, np.ndarray] = {}
    for name in ("state_id", "product_id"):
        column = table.column(name)
        kind = column.type
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)) and not (
            name == "product_id" and pa.types.is_integer(kind)
        ):
            raise DataError(f"{path}: column '{name}' has type {kind}; expected strings")
        check_no_nulls(column, str(path), name)
        columns[name] = np.asarray(column.cast(pa.string()).to_pylist(), dtype=str)
    for name in ("p_click", "p_buy"):
        column = table.column(name)
        if not (pa.types.is_floating(column.type) or pa.types.is_integer(column.type)):
            raise DataError(f"{path}: column '{name}' has type {column.type}; expected numbers")
        check_no_nulls(column, str(path), name)
        values = column.to_numpy().astype(np.float64)
        bad = np.flatnonzero(~((values >= 0.0) & (values <= 1.0)))
        if bad.size:
            row = int(bad[0])
            raise DataError(
                f"{path}: row {row} ({shown(str(columns['state_id'][row]))}, "
                f"{shown(str(columns['product_id'][row]))}): {name} = {float(values[row])!r} is "
                "not a probability in [0, 1]"
            )
        columns[name] = values
    return pd.DataFrame(columns)


def write_truth_table(path: str | Path, columns: dict[str, np.ndarray]) -> None:
    """Write a truth table (the format :func:`read_truth_table` reads), atomically.

    Parameters
    ----------
    path : str or Path
    columns : dict of ndarray
        ``state_id`` and ``product_id`` (str), ``p_click`` and ``p_buy`` (float64).
    """
    schema = pa.schema(
        [
            ("state_id", pa.string()),
            ("product_id", pa.string()),
            ("p_click", pa.float64()),
            ("p_buy", pa.float64()),
        ]
    )
    table = pa.Table.from_arrays(
        [pa.array(np.asarray(columns[f.name]), type=f.type) for f in schema], schema=schema
    )
    target = Path(path)
    with atomic_path(target) as tmp:
        pq.write_table(table, tmp, compression="zstd")
