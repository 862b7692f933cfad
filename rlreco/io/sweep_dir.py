"""Sweep directories: one folder per sweep, resumable cell by cell.

Layout::

    SWEEP_DIR/
      sweep.json                 base of every cell (run id, snapshot, seed, visits per cell,
                                 metric block) and the grid of the latest invocation
      cells/<cell-key>.parquet   per-block metrics of one finished cell (replicate of a setting);
                                 the setting, replicate, wall time and base ride in the metadata
      cells/<cell-key>.error.txt last failure of a cell, removed when the cell succeeds
      results.parquet            every finished cell of the current grid, one row per block
      summary.parquet            one row per setting: means and 95% confidence bounds
      summary.json               the same, the best setting per metric, and failed cells
      plots/*.png                learning curves and final metrics vs epsilon

Every file is written to a temporary name and renamed into place, so a cell file exists only
when its cell is complete: an interrupted sweep loses at most the cells that were running.
A cell's numbers depend only on the base and on the cell itself, so cells of any grid over
the same base can be reused; a directory whose base differs is refused (or wiped with
``force``).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from rlreco.errors import ConfigError, SnapshotError, shown
from rlreco.io.atomic_files import atomic_path, write_json
from rlreco.io.parquet_tables import SCHEMAS, read_tagged

SWEEP_SCHEMA_VERSION = 1
#: Columns of a cell's per-block metrics: the block and the run directory's metric sums.
CELL_COLUMNS: tuple[str, ...] = (
    "block",
    *(n for n in SCHEMAS["metrics"].names if n not in ("block", "first_visit")),
)
SWEEP_FILE = "sweep.json"
_META_KEY = b"rlreco"


def _write_frame(path: Path, kind: str, frame: pd.DataFrame, meta: Mapping[str, Any]) -> None:
    """Write a frame as Parquet with rlreco metadata (kind, schema version, ``meta``)."""
    info = {"kind": kind, "schema_version": SWEEP_SCHEMA_VERSION, **meta}
    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.replace_schema_metadata(
        {**(table.schema.metadata or {}), _META_KEY: json.dumps(info, sort_keys=True).encode()}
    )
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def _read_frame(path: Path, kind: str) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Read a Parquet file written by :func:`_write_frame`; check its kind and version."""
    table, info = read_tagged(path, kind, SWEEP_SCHEMA_VERSION)
    try:
        # written without an index: pandas metadata is not needed (and may be corrupt)
        return table.to_pandas(ignore_metadata=True), info
    except (pa.ArrowException, ValueError, OverflowError) as exc:
        raise SnapshotError(f"{path}: values cannot be read ({shown(str(exc), 120)})") from None


def _numbers(frame: pd.DataFrame, column: str) -> bool:
    """Whether ``column`` is one column of plain numbers (integers or floats) without NaN."""
    if list(frame.columns).count(column) != 1:
        return False
    series = frame[column]
    kind = series.dtype
    if not isinstance(kind, np.dtype) or kind.kind not in "iuf":
        return False  # text, booleans, times, categories, nullable extension types
    return not (kind.kind == "f" and bool(np.isnan(series.to_numpy()).any()))


class SweepDir:
    """A sweep directory whose base matches the sweep being run.

    Use :meth:`prepare` to open or create one.
    """

    def __init__(self, path: Path, base: dict[str, Any], created: bool = False) -> None:
        self.path = path
        self.base = base
        #: whether :meth:`prepare` made the directory (absent, or wiped with ``force``)
        self.created = created

    def discard_if_unused(self) -> None:
        """Remove the directory if :meth:`prepare` made it and no cell has been written
        (finished or failed): what a sweep that fails before its first cell leaves behind."""
        if self.created and not any((self.path / "cells").iterdir()):
            shutil.rmtree(self.path, ignore_errors=True)

    @classmethod
    def prepare(
        cls, path: str | Path, base: Mapping[str, Any], grid: Mapping[str, Any], *, force: bool
    ) -> SweepDir:
        """Open ``path`` for a sweep with this base, creating it when absent.

        Parameters
        ----------
        path : path
            Sweep directory.
        base : mapping
            JSON-compatible values every cell's numbers depend on besides the cell itself.
        grid : mapping
            JSON-compatible description of the grid being run (recorded, not checked).
        force : bool
            Wipe an existing directory whose base differs (or that is not a sweep directory)
            instead of refusing it.

        Raises
        ------
        ConfigError
            If ``path`` holds another sweep (different base) or other files, and not ``force``.
        """
        path = Path(path)
        sweep_file = path / SWEEP_FILE
        wanted: dict[str, Any] = json.loads(json.dumps(dict(base)))  # tuples become lists
        if path.exists() and not path.is_dir():
            raise ConfigError(f"{path}: exists and is not a directory; choose another --out")
        created = not path.exists()
        if path.is_dir() and any(path.iterdir()):
            found = cls._read_base(sweep_file)
            if found != wanted:
                if not force:
                    raise ConfigError(cls._mismatch(path, found, wanted))
                shutil.rmtree(path)
                created = True  # wiped: made again below
            else:
                cls.check(path, wanted)  # before anything is written
        (path / "cells").mkdir(parents=True, exist_ok=True)
        write_json(
            sweep_file,
            {"schema_version": SWEEP_SCHEMA_VERSION, "base": wanted, "grid": dict(grid)},
        )
        return cls(path, wanted, created)

    @classmethod
    def check(cls, path: str | Path, base: Mapping[str, Any]) -> None:
        """Check every finished cell of an existing sweep directory (see :meth:`read_cell`).

        Raises
        ------
        SnapshotError
            One line naming the first corrupt or foreign cell file.
        """
        sweep = cls(Path(path), dict(base))
        for cell in sorted((sweep.path / "cells").glob("*.parquet")):
            sweep.read_cell(cell.name.removesuffix(".parquet"))

    @staticmethod
    def _read_base(sweep_file: Path) -> dict[str, Any] | None:
        if not sweep_file.is_file():
            return None
        try:
            info = json.loads(sweep_file.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError, OSError):
            return None
        if not isinstance(info, dict) or info.get("schema_version") != SWEEP_SCHEMA_VERSION:
            return None
        base = info.get("base")
        return base if isinstance(base, dict) else None

    @staticmethod
    def _mismatch(path: Path, found: dict[str, Any] | None, base: dict[str, Any]) -> str:
        hint = "choose another --out or pass --force to discard it"
        if found is None:
            return f"{path}: not empty and not a sweep directory; {hint}"
        keys = sorted(k for k in set(found) | set(base) if found.get(k) != base.get(k))
        diffs = ", ".join(f"{k} {found.get(k)!r} (now {base.get(k)!r})" for k in keys)
        return f"{path}: holds a sweep with a different {diffs}; {hint}"

    # ---- cells -------------------------------------------------------------------------------

    def cell_path(self, key: str) -> Path:
        """Parquet file of one finished cell."""
        return self.path / "cells" / f"{key}.parquet"

    def error_path(self, key: str) -> Path:
        """Text file with the last failure of one cell."""
        return self.path / "cells" / f"{key}.error.txt"

    def finished(self, key: str) -> bool:
        """Whether the cell's result file exists (written atomically, so it is complete)."""
        return self.cell_path(key).is_file()

    def write_cell(self, key: str, frame: pd.DataFrame, meta: Mapping[str, Any]) -> None:
        """Store one finished cell's per-block metrics and clear its failure record."""
        _write_frame(self.cell_path(key), "sweep_cell", frame, {"key": key, **meta})
        self.error_path(key).unlink(missing_ok=True)

    def read_cell(self, key: str) -> tuple[pd.DataFrame, dict[str, Any]]:
        """Per-block metrics and metadata of one finished cell.

        Raises
        ------
        SnapshotError
            If the file is corrupt, foreign, or was computed on another base.
        """
        path = self.cell_path(key)
        hint = "delete it to re-run the cell"
        try:
            frame, info = _read_frame(path, "sweep_cell")
        except SnapshotError as exc:
            raise SnapshotError(f"{exc}; {hint}") from None
        if info.get("key") != key or info.get("base") != self.base:
            raise SnapshotError(f"{path}: belongs to another cell or sweep; {hint}")
        seconds = info.get("seconds")
        if not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds < 0:
            raise SnapshotError(f"{path}: cell time {shown(seconds)} is not a number >= 0; {hint}")
        wrong = [c for c in CELL_COLUMNS if not _numbers(frame, c)]
        if wrong:
            raise SnapshotError(
                f"{path}: column {wrong[0]!r} is missing or not numbers; a cell has columns "
                f"{', '.join(CELL_COLUMNS)}; {hint}"
            )
        if not frame["block"].equals(pd.Series(range(len(frame)), dtype=frame["block"].dtype)):
            raise SnapshotError(f"{path}: blocks are not numbered 0..n-1; {hint}")
        return frame[list(CELL_COLUMNS)], info

    def write_failure(self, key: str, message: str) -> None:
        """Record the failure of one cell."""
        path = self.error_path(key)
        with atomic_path(path) as tmp:
            tmp.write_text(message + "\n", encoding="utf-8")

    # ---- combined outputs --------------------------------------------------------------------

    @property
    def plots_dir(self) -> Path:
        """Folder of the PNG plots."""
        return self.path / "plots"

    def write_results(self, frame: pd.DataFrame) -> Path:
        """Write the combined per-block results of the current grid."""
        path = self.path / "results.parquet"
        _write_frame(path, "sweep_results", frame, {"base": self.base})
        return path

    def write_summary(self, frame: pd.DataFrame, document: Mapping[str, Any]) -> Path:
        """Write the per-setting summary as Parquet and, with extras, as JSON."""
        _write_frame(self.path / "summary.parquet", "sweep_summary", frame, {"base": self.base})
        path = self.path / "summary.json"
        write_json(path, document)
        return path

    def read_results(self) -> pd.DataFrame:
        """The combined per-block results last written."""
        return _read_frame(self.path / "results.parquet", "sweep_results")[0]
