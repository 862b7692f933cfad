"""Export of a run's snapshot to MongoDB, streamed in bounded batches of whole states.

The export is idempotent and incremental (see :mod:`rlreco.io.mongo`). It reads the snapshot
twice, one batch of whole states at a time (:mod:`rlreco.io.mongo_cells`), so its memory does
not grow with the snapshot beyond one batch, one bulk write and a few numbers per state:

1. *Survey*: every state's digest, cells and seed-document size. A seed-layout state over the
   16 MB document limit is refused here, before anything is written.
2. *Write*: the states whose digest is missing or different in ``sync_state``, in unordered
   bulk writes of at most ``batch_size`` documents (seed: also at most
   :data:`MAX_SEED_CELLS_PER_BULK` cells); a state's digest is written after all its documents.

A snapshot file is kept open between the two passes, so a run that replaces it meanwhile does
not change what is exported.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
from pymongo import DeleteMany, ReplaceOne
from pymongo.operations import DeleteOne, InsertOne, UpdateMany, UpdateOne

from rlreco.errors import SnapshotError, SyncError
from rlreco.io.mongo_cells import StateBatch, StatesNotGrouped
from rlreco.io.mongo_connection import Document, MongoLink, RetryPolicy, database_of
from rlreco.io.mongo_layout import (
    CELL_NUMBERS,
    CELLS,
    CELLS_INDEX,
    DEFAULT_DB,
    RUNS,
    SEED_COLLECTIONS,
    STATE_VERSIONS,
    SYNC_STATE,
    Fields,
    Layout,
    check_layout,
    check_seed_sizes,
    encode_manifest,
    escape_field,
    fields_of_manifest,
    state_record_id,
    state_record_scope,
    tidy_key,
)
from rlreco.io.mongo_source import SnapshotFile, SnapshotSource

#: Tidy cell batches between writes of the states' digests.
DIGEST_EVERY = 8
#: Cells per seed bulk write (about 5 MB of BSON), far below the 48 MB message limit.
MAX_SEED_CELLS_PER_BULK = 250_000
_WriteOp = (
    ReplaceOne[Document] | UpdateOne | UpdateMany | DeleteOne | DeleteMany | InsertOne[Document]
)
_KIND: dict[type, str] = {
    ReplaceOne: "update",
    UpdateOne: "update",
    UpdateMany: "update",
    DeleteOne: "delete",
    DeleteMany: "delete",
    InsertOne: "insert",
}


@dataclass(frozen=True)
class CollectionCounts:
    """Documents of one collection written, skipped as unchanged, and deleted by an export."""

    written: int = 0
    unchanged: int = 0
    deleted: int = 0


@dataclass(frozen=True)
class ExportReport:
    """What :func:`export_snapshot` did.

    Attributes
    ----------
    layout, database, run_id
        Target (``run_id`` is None for the seed layout).
    states_written, states_unchanged, states_deleted : int
        States rewritten, skipped because their digest matched, removed.
    collections : dict
        Collection name -> :class:`CollectionCounts`.
    round_trips : int
        Commands sent, retries included (one per write-command kind of each bulk write, one
        per query batch).
    seconds : float
        Wall time.
    """

    layout: str
    database: str
    run_id: str | None
    states_written: int
    states_unchanged: int
    states_deleted: int
    collections: dict[str, CollectionCounts]
    round_trips: int
    seconds: float

    @property
    def documents_written(self) -> int:
        """Documents written over all collections."""
        return sum(c.written for c in self.collections.values())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (for ``--json``)."""
        out = asdict(self)
        out["documents_written"] = self.documents_written
        return out


@dataclass(frozen=True)
class _Survey:
    """Every state of the snapshot in export order, its cells and its digest."""

    states: list[str]
    cells: dict[str, int]
    digests: dict[str, str]


def _survey(cells: SnapshotSource, layout: Layout) -> _Survey:
    """Pass 1 over the snapshot (see the module docstring); refuses over-size seed states."""
    states: list[str] = []
    counts: list[np.ndarray] = []
    sizes: list[np.ndarray] = []
    digests: dict[str, str] = {}
    for batch in cells.batches():
        states.extend(batch.states)
        counts.append(np.diff(batch.bounds))
        if layout == "seed":
            sizes.append(batch.seed_bytes())
        for i, state in enumerate(batch.states):
            digests[state] = batch.digest(i, layout)
    per_state = np.concatenate(counts) if counts else np.zeros(0, dtype=np.int64)
    if layout == "seed" and sizes:
        check_seed_sizes(states, per_state, np.concatenate(sizes))
    return _Survey(states, dict(zip(states, per_state.tolist(), strict=True)), digests)


@dataclass
class _Exporter:
    """State shared by the steps of one export."""

    link: MongoLink
    layout: Layout
    run_id: str | None
    digests: dict[str, str]
    batch_size: int
    now: datetime
    counts: dict[str, list[int]] = field(default_factory=dict)

    def tally(
        self, collection: str, written: int = 0, unchanged: int = 0, deleted: int = 0
    ) -> None:
        row = self.counts.setdefault(collection, [0, 0, 0])
        row[0] += written
        row[1] += unchanged
        row[2] += deleted

    def bulk(self, collection: str, ops: Sequence[_WriteOp]) -> None:
        """One unordered bulk write (idempotent ops only), retried as a whole."""
        if not ops:
            return
        coll = self.link.db[collection]
        kinds = {_KIND[type(op)] for op in ops}
        result = self.link.run(
            f"bulk write to {self.link.db.name}.{collection}",
            lambda: coll.bulk_write(list(ops), ordered=False),
            commands=len(kinds),
        )
        self.tally(
            collection,
            written=result.upserted_count + result.matched_count,
            deleted=result.deleted_count,
        )

    def scope(self) -> Document:
        return state_record_scope(self.layout, self.run_id)

    def record_digests(self, states: Sequence[str]) -> None:
        ops = []
        for state in states:
            key = state_record_id(self.layout, self.run_id, state)
            record = {"_id": key, **key, "digest": self.digests[state], "updated_at": self.now}
            ops.append(ReplaceOne({"_id": key}, record, upsert=True))
        for part in _chunks(ops, self.batch_size):
            self.bulk(SYNC_STATE, part)

    def reset_versions(self, states: Sequence[str]) -> None:
        """Drop the version records of states about to be rewritten (before their documents)."""
        if not states:
            return
        versions = self.link.db[STATE_VERSIONS]
        if (
            self.link.run(
                f"read of {self.link.db.name}.{STATE_VERSIONS}",
                lambda: versions.find_one(self.scope(), {"_id": 1}),
            )
            is None
        ):
            return
        for part in _chunks(list(states), self.batch_size):
            self.bulk(STATE_VERSIONS, [DeleteMany({**self.scope(), "state": {"$in": part}})])

    def remove_states(self, states: Sequence[str]) -> None:
        for part in _chunks(list(states), self.batch_size):
            if self.layout == "seed":
                for name in SEED_COLLECTIONS.values():
                    self.bulk(name, [DeleteMany({"_id": {"$in": part}})])
            else:
                self.bulk(CELLS, [DeleteMany({"run_id": self.run_id, "state": {"$in": part}})])
            self.bulk(SYNC_STATE, [DeleteMany({**self.scope(), "state": {"$in": part}})])

    def write_manifest(self, manifest: Document) -> None:
        runs = self.link.db[RUNS]
        stored = self.link.run(
            f"read of {self.link.db.name}.{RUNS}", lambda: runs.find_one({"_id": self.run_id})
        )
        if stored is not None and stored.get("manifest") == manifest:
            self.tally(RUNS, unchanged=1)
            return
        record = {"_id": self.run_id, "manifest": manifest, "updated_at": self.now}
        self.bulk(RUNS, [ReplaceOne({"_id": self.run_id}, record, upsert=True)])


class _SeedWriter:
    """Changed states, fed in export order, written in groups of consecutive states: at most
    ``batch_size`` states and :data:`MAX_SEED_CELLS_PER_BULK` cells per bulk write."""

    def __init__(self, exporter: _Exporter, stored: Mapping[str, str], force: bool) -> None:
        self.exporter = exporter
        self.stored = stored
        self.force = force
        self.group: list[tuple[StateBatch, int]] = []
        self.cells = 0

    def add(self, batch: StateBatch, i: int) -> None:
        size = batch.cells(i)
        if self.group and (
            len(self.group) >= self.exporter.batch_size
            or self.cells + size > MAX_SEED_CELLS_PER_BULK
        ):
            self.finish()
        self.group.append((batch, i))
        self.cells += size

    def finish(self) -> None:
        """Write the pending group."""
        if not self.group:
            return
        states = [batch.states[i] for batch, i in self.group]
        # Documents holding the state key under another _id (the original's ObjectIds) would
        # shadow ours for readers that look a state up by its key: remove them once.
        strays: list[_WriteOp] = [
            DeleteMany({escape_field(state): {"$exists": True}, "_id": {"$ne": state}})
            for state in states
            if self.force or state not in self.stored
        ]
        for column, name in SEED_COLLECTIONS.items():
            ops: list[_WriteOp] = [
                ReplaceOne({"_id": batch.states[i]}, batch.seed_document(i, column), upsert=True)
                for batch, i in self.group
            ]
            self.exporter.bulk(name, ops + strays)
        self.exporter.record_digests(states)
        self.group, self.cells = [], 0


class _TidyWriter:
    """Changed states' cells, fed in export order, upserted ``batch_size`` cells per bulk
    write; a rewritten state's other cells are deleted in the write of its last cells."""

    def __init__(self, exporter: _Exporter, fields: Fields, episodes: int, fresh: bool) -> None:
        self.exporter = exporter
        self.fields = fields
        self.episodes = episodes
        self.fresh = fresh
        self.run_id = str(exporter.run_id)
        self.ops: list[_WriteOp] = []
        self.done: list[str] = []  # states whose cells are all written or in ``ops``
        self.filled = 0
        self.batches = 0

    def add(self, batch: StateBatch, i: int) -> None:
        state, size = batch.states[i], self.exporter.batch_size
        start, stop = int(batch.bounds[i]), int(batch.bounds[i + 1])
        pos = start
        while pos < stop:
            end = min(stop, pos + size - self.filled)
            docs = batch.tidy_documents(
                i,
                pos,
                end,
                fields=self.fields,
                run_id=self.run_id,
                episodes=self.episodes,
                now=self.exporter.now,
            )
            for doc in docs:
                key = tidy_key(self.run_id, state, doc["product_code"])
                self.ops.append(ReplaceOne(key, doc, upsert=True))
            self.filled += end - pos
            pos = end
            if pos == stop:  # the state's last cells are in this batch
                if not self.fresh:
                    codes = batch.codes[start:stop].tolist()
                    self.ops.append(
                        DeleteMany(
                            {"run_id": self.run_id, "state": state, "product_code": {"$nin": codes}}
                        )
                    )
                self.done.append(state)
            if self.filled >= size:
                self.flush()
                self.filled = 0

    def flush(self, final: bool = False) -> None:
        if self.ops:
            self.exporter.bulk(CELLS, self.ops)
            self.ops = []
            self.batches += 1
        # Digests go after their cells, a few batches at a time: an interrupted export redoes
        # at most DIGEST_EVERY batches of cells.
        if self.done and (
            final or self.batches % DIGEST_EVERY == 0 or len(self.done) >= self.exporter.batch_size
        ):
            self.exporter.record_digests(self.done)
            self.done = []

    def finish(self) -> None:
        self.flush(final=True)


def export_snapshot(
    client_or_db: Any,
    snapshot: pd.DataFrame | SnapshotFile,
    manifest: Mapping[str, Any],
    *,
    db: str = DEFAULT_DB,
    layout: str = "seed",
    batch_size: int = 1000,
    policy: RetryPolicy | None = None,
    force: bool = False,
) -> ExportReport:
    """Write a run's snapshot to MongoDB in the seed or tidy layout (module docstring).

    Parameters
    ----------
    client_or_db : pymongo.MongoClient or pymongo.database.Database
        Target; with a client, database ``db`` is used.
    snapshot : pandas.DataFrame or SnapshotFile
        Long-form cells with the columns of :func:`snapshot_dtypes` (cast to those dtypes), or
        a snapshot file, read one row group at a time.
    manifest : mapping
        The run's JSON-serialisable manifest; ``run_id`` (str) is required for the tidy
        layout, ``episodes`` (int) is recorded on tidy cells, ``state_fields`` names the
        state fields (default fields if absent).
    db : str
        Database name when ``client_or_db`` is a client.
    layout : {"seed", "tidy"}
        Document layout.
    batch_size : int
        Most documents per bulk write (seed writes also stop at 250,000 cells).
    policy : RetryPolicy, optional
        Retries of transient faults (default :class:`RetryPolicy`).
    force : bool
        Rewrite every state even if its digest matches.

    Returns
    -------
    ExportReport

    Raises
    ------
    SnapshotError
        Malformed snapshot or manifest.
    SyncError
        One line: a seed-layout state over the 16 MB document limit (before anything is
        written), unreachable server, failed authentication, refused write, or a transient
        fault that outlasted the retries.
    """
    started = time.perf_counter()
    kind = check_layout(layout)
    if batch_size < 1:
        raise SyncError(f"batch_size must be at least 1, got {batch_size}")
    fields = fields_of_manifest(manifest)
    cells = SnapshotSource(snapshot, fields)
    try:
        manifest_doc = _json_manifest(manifest)
        run_id = _manifest_run_id(manifest_doc) if kind == "tidy" else None
        episodes = manifest_doc.get("episodes", 0)
        if not isinstance(episodes, int) or isinstance(episodes, bool):
            raise SnapshotError(f"manifest key 'episodes' must be an integer, got {episodes!r}")
        link = MongoLink(database_of(client_or_db, db), policy or RetryPolicy())
        try:
            survey = _survey(cells, kind)  # before anything is written
        except StatesNotGrouped:
            cells.read_whole()
            survey = _survey(cells, kind)
        exporter = _Exporter(link, kind, run_id, survey.digests, batch_size, datetime.now(UTC))
        report = _write(exporter, cells, survey, manifest_doc, episodes, force)
    finally:
        cells.close()
    return ExportReport(
        **report, round_trips=link.round_trips, seconds=time.perf_counter() - started
    )


def _write(
    exporter: _Exporter,
    cells: SnapshotSource,
    survey: _Survey,
    manifest_doc: Document,
    episodes: int,
    force: bool,
) -> dict[str, Any]:
    """Pass 2 (module docstring): the fields of the :class:`ExportReport` but its cost."""
    link, kind, run_id = exporter.link, exporter.layout, exporter.run_id
    stored = {
        str(d["state"]): str(d.get("digest"))
        for d in link.find_all(SYNC_STATE, exporter.scope(), {"state": 1, "digest": 1})
    }
    changed = [s for s in survey.states if force or stored.get(s) != survey.digests[s]]
    vanished = sorted(set(stored) - set(survey.digests))
    same = set(survey.states) - set(changed)
    if kind == "seed":
        for name in SEED_COLLECTIONS.values():
            exporter.tally(name, unchanged=len(same))
    else:
        exporter.tally(CELLS, unchanged=sum(survey.cells[s] for s in same))
        coll = link.db[CELLS]
        link.run(
            f"index creation on {link.db.name}.{CELLS}",
            lambda: coll.create_index(
                [("run_id", 1), ("state", 1), ("product_code", 1)], unique=True, name=CELLS_INDEX
            ),
        )
    exporter.reset_versions(changed + vanished)
    writer: _SeedWriter | _TidyWriter
    if kind == "seed":
        writer = _SeedWriter(exporter, stored, force)
    else:
        fresh = (
            not stored
            and link.run(
                f"read of {link.db.name}.{CELLS}",
                lambda: link.db[CELLS].find_one({"run_id": run_id}, {"_id": 1}),
            )
            is None
        )
        writer = _TidyWriter(exporter, cells.fields, episodes, fresh)
    if changed:
        wanted = set(changed)
        # the second pass of a seed export reads only what seed documents hold
        read = ("state", "product_code", *CELL_NUMBERS) if kind == "seed" else ()
        for batch in cells.batches(read):
            for i, state in enumerate(batch.states):
                if state in wanted:
                    writer.add(batch, i)
    writer.finish()
    exporter.remove_states(vanished)
    if kind == "tidy":
        exporter.write_manifest(encode_manifest(manifest_doc))
    return {
        "layout": kind,
        "database": link.db.name,
        "run_id": run_id,
        "states_written": len(changed),
        "states_unchanged": len(same),
        "states_deleted": len(vanished),
        "collections": {name: CollectionCounts(*row) for name, row in exporter.counts.items()},
    }


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _json_manifest(manifest: Mapping[str, Any]) -> Document:
    """The manifest as JSON would give it back (so a stored copy compares equal)."""
    try:
        doc = json.loads(json.dumps(dict(manifest)))
    except (TypeError, ValueError) as exc:
        raise SnapshotError(f"manifest is not JSON-serialisable: {exc}") from None
    return dict(doc)


def _manifest_run_id(manifest: Mapping[str, Any]) -> str:
    run_id = manifest.get("run_id")
    if not isinstance(run_id, str) or not run_id:
        raise SnapshotError(f"manifest key 'run_id' must be a non-empty string, got {run_id!r}")
    return run_id
