"""The snapshot an export reads: a conformed frame or an open snapshot file, in state batches.

:func:`rlreco.io.mongo_export.export_snapshot` reads the snapshot twice (survey, then write),
one batch of whole states at a time. :class:`SnapshotSource` is that reading: it checks a
snapshot file's columns, keeps the file open between the passes (so a run that replaces it
meanwhile does not change what is exported), and falls back to one sorted frame for a file
whose states are not grouped. It is separate from the export because it is about reading
Parquet and frames, not about writing MongoDB documents.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from rlreco.errors import SnapshotError
from rlreco.io.mongo_cells import StateBatch, frame_tables, state_batches
from rlreco.io.mongo_layout import Fields, conform_snapshot, snapshot_dtypes
from rlreco.io.parquet_tables import open_snapshot, read_snapshot_group, schema_of


@dataclass(frozen=True)
class SnapshotFile:
    """A run directory's snapshot file, exported one row group at a time."""

    path: Path


class SnapshotSource:
    """The snapshot being exported, read in batches of whole states as often as needed: a
    conformed frame, or a snapshot file kept open until :meth:`close`."""

    def __init__(self, snapshot: pd.DataFrame | SnapshotFile, fields: Fields) -> None:
        self.fields = fields
        self.frame: pd.DataFrame | None = None
        self.file: tuple[pq.ParquetFile, Path] | None = None
        if not isinstance(snapshot, SnapshotFile):
            self.frame = conform_snapshot(snapshot, fields=fields)
            return
        parquet, schema = open_snapshot(snapshot.path, dictionaries=True)
        self.file = (parquet, snapshot.path)
        missing = [c for c in snapshot_dtypes(fields) if c not in schema.names]
        if missing:
            self.close()
            raise SnapshotError(
                f"snapshot lacks column(s) {', '.join(missing)}; required: "
                f"{', '.join(snapshot_dtypes(fields))}"
            )

    def batches(self, columns: Sequence[str] = ()) -> Iterator[StateBatch]:
        """Batches of every column, or (a file) of ``columns`` only."""
        return state_batches(self._tables(columns), self.fields)

    def _tables(self, columns: Sequence[str]) -> Iterator[pa.Table]:
        if self.file is None:
            assert self.frame is not None
            yield from frame_tables(self.frame, self.fields)
            return
        parquet, path = self.file
        wanted = schema_of("snapshot", self.fields)
        if columns:
            wanted = pa.schema([wanted.field(name) for name in columns])
        for group in range(parquet.num_row_groups):
            yield read_snapshot_group(parquet, path, group, wanted)

    def read_whole(self) -> None:
        """Hold the file as one sorted frame (a file whose states are not grouped)."""
        wanted = schema_of("snapshot", self.fields)
        table = pa.concat_tables(t.cast(wanted) for t in self._tables(()))
        self.close()
        self.frame = conform_snapshot(table.to_pandas(), fields=self.fields)

    def close(self) -> None:
        if self.file is not None:
            self.file[0].close()
            self.file = None
