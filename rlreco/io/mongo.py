"""MongoDB sync of a run's learned tables: export a snapshot, import it back, serve visits.

Layouts, field-name escaping and the snapshot frame are described in
:mod:`rlreco.io.mongo_layout`; retries and error messages in :mod:`rlreco.io.mongo_connection`;
online visits (:func:`read_state`, :func:`apply_visit`) in :mod:`rlreco.io.mongo_visit`.

Export is idempotent and incremental. Each state's content digest is kept in ``sync_state``
(seed: keyed by state, since the seed database holds one snapshot; tidy: by run and state) and
written only after all of the state's documents, so an export interrupted at any point and run
again rewrites exactly the states whose digest is missing or different and leaves nothing
duplicated (every write is an upsert on a unique key). A state is rewritten whole: its
documents are replaced and cells absent from the snapshot are deleted; states absent from the
snapshot are deleted. The digest covers what the layout stores, not ``episodes`` or
``updated_at``, so a longer run rewrites only the states its visits changed. Writes made by
other programs (e.g. the original's code) are not detected; ``force=True`` rewrites everything.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandas as pd
from pymongo import DeleteMany, ReplaceOne
from pymongo.operations import DeleteOne, InsertOne, UpdateMany, UpdateOne

from rlreco.errors import SnapshotError, SyncError, shown
from rlreco.io.mongo_connection import (
    Document,
    MongoLink,
    RetryPolicy,
    connect,
    database_of,
    redact_uri,
)
from rlreco.io.mongo_layout import (
    CELLS,
    CELLS_INDEX,
    DEFAULT_DB,
    RUNS,
    SEED_COLLECTIONS,
    SNAPSHOT_DTYPES,
    STATE_VERSIONS,
    SYNC_STATE,
    VERSION_FIELD,
    CodeIndex,
    Layout,
    check_layout,
    check_seed_documents,
    conform_snapshot,
    decode_manifest,
    encode_manifest,
    escape_field,
    fields_of_manifest,
    frame_from_seed,
    frame_from_tidy,
    seed_documents,
    state_digests,
    state_record_id,
    state_record_scope,
    state_slices,
    tidy_documents,
    tidy_key,
    unescape_field,
)
from rlreco.io.mongo_visit import VisitResult, VisitStep, apply_visit, read_state, resolve_run_id
from rlreco.schema import DEFAULT_STATE_FIELDS

__all__ = [
    "DEFAULT_DB",
    "SNAPSHOT_DTYPES",
    "CodeIndex",
    "CollectionCounts",
    "ExportReport",
    "RetryPolicy",
    "VisitResult",
    "VisitStep",
    "apply_visit",
    "connect",
    "export_snapshot",
    "import_snapshot",
    "read_state",
    "redact_uri",
]

#: Tidy cell batches between writes of the states' digests.
DIGEST_EVERY = 8
#: Cells per seed bulk write (about 5 MB of BSON), far below the 48 MB message limit.
MAX_SEED_CELLS_PER_BULK = 250_000
_WriteOp = (
    ReplaceOne[Document] | UpdateOne | UpdateMany | DeleteOne | DeleteMany | InsertOne[Document]
)


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


@dataclass
class _Exporter:
    """State shared by the steps of one export."""

    link: MongoLink
    layout: Layout
    run_id: str | None
    ordered: pd.DataFrame
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

    def write_seed(
        self, changed: list[tuple[str, int, int]], stored: Mapping[str, str], force: bool
    ) -> None:
        for group in _seed_groups(changed, self.batch_size):
            # Documents holding the state key under another _id (the original's ObjectIds) would
            # shadow ours for readers that look a state up by its key: remove them once.
            strays: list[_WriteOp] = [
                DeleteMany({escape_field(state): {"$exists": True}, "_id": {"$ne": state}})
                for state, _, _ in group
                if force or state not in stored
            ]
            for column, name in SEED_COLLECTIONS.items():
                docs = seed_documents(self.ordered, group, column)
                ops: list[_WriteOp] = [ReplaceOne({"_id": d["_id"]}, d, upsert=True) for d in docs]
                self.bulk(name, ops + strays)
            self.record_digests([state for state, _, _ in group])

    def write_tidy(self, changed: list[tuple[str, int, int]], episodes: int, fresh: bool) -> None:
        run_id = str(self.run_id)
        codes = self.ordered["product_code"].tolist()
        ops: list[_WriteOp] = []
        done: list[str] = []  # states whose cells are all written or in ``ops``
        filled = 0
        batches = 0

        def flush(final: bool = False) -> None:
            nonlocal batches
            if ops:
                self.bulk(CELLS, ops)
                ops.clear()
                batches += 1
            # Digests go after their cells, a few batches at a time: an interrupted export
            # redoes at most DIGEST_EVERY batches of cells.
            if done and (final or batches % DIGEST_EVERY == 0 or len(done) >= self.batch_size):
                self.record_digests(done)
                done.clear()

        for state, start, stop in changed:
            pos = start
            while pos < stop:
                end = min(stop, pos + self.batch_size - filled)
                docs = tidy_documents(
                    self.ordered, pos, end, run_id=run_id, episodes=episodes, now=self.now
                )
                for doc in docs:
                    key = tidy_key(run_id, state, doc["product_code"])
                    ops.append(ReplaceOne(key, doc, upsert=True))
                filled += end - pos
                pos = end
                if pos == stop:  # the state's last cells are in this batch
                    if not fresh:
                        codes_now = codes[start:stop]
                        ops.append(
                            DeleteMany(
                                {
                                    "run_id": run_id,
                                    "state": state,
                                    "product_code": {"$nin": codes_now},
                                }
                            )
                        )
                    done.append(state)
                if filled >= self.batch_size:
                    flush()
                    filled = 0
        flush(final=True)

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


_KIND: dict[type, str] = {
    ReplaceOne: "update",
    UpdateOne: "update",
    UpdateMany: "update",
    DeleteOne: "delete",
    DeleteMany: "delete",
    InsertOne: "insert",
}


def export_snapshot(
    client_or_db: Any,
    snapshot: pd.DataFrame,
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
    snapshot : pandas.DataFrame
        Long-form cells with the columns of :data:`SNAPSHOT_DTYPES` (cast to those dtypes).
    manifest : mapping
        The run's JSON-serialisable manifest; ``run_id`` (str) is required for the tidy
        layout, ``episodes`` (int) is recorded on tidy cells.
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
        One line: unreachable server, failed authentication, refused write, or a transient
        fault that outlasted the retries.
    """
    started = time.perf_counter()
    kind = check_layout(layout)
    if batch_size < 1:
        raise SyncError(f"batch_size must be at least 1, got {batch_size}")
    frame = conform_snapshot(snapshot, fields=fields_of_manifest(manifest))
    manifest_doc = _json_manifest(manifest)
    run_id = _manifest_run_id(manifest_doc) if kind == "tidy" else None
    episodes = manifest_doc.get("episodes", 0)
    if not isinstance(episodes, int) or isinstance(episodes, bool):
        raise SnapshotError(f"manifest key 'episodes' must be an integer, got {episodes!r}")
    link = MongoLink(database_of(client_or_db, db), policy or RetryPolicy())
    ordered, slices = state_slices(frame)
    if kind == "seed":
        check_seed_documents(ordered, slices)  # before anything is written
    digests = state_digests(ordered, slices, kind)
    scope = state_record_scope(kind, run_id)
    stored = {
        str(d["state"]): str(d.get("digest"))
        for d in link.find_all(SYNC_STATE, scope, {"state": 1, "digest": 1})
    }
    changed = [s for s in slices if force or stored.get(s[0]) != digests[s[0]]]
    vanished = sorted(set(stored) - set(digests))
    exporter = _Exporter(link, kind, run_id, ordered, digests, batch_size, datetime.now(UTC))
    same = {s for s, _, _ in slices} - {s for s, _, _ in changed}
    if kind == "seed":
        for name in SEED_COLLECTIONS.values():
            exporter.tally(name, unchanged=len(same))
    else:
        sizes = {s: b - a for s, a, b in slices}
        exporter.tally(CELLS, unchanged=sum(sizes[s] for s in same))
        cells = link.db[CELLS]
        link.run(
            f"index creation on {link.db.name}.{CELLS}",
            lambda: cells.create_index(
                [("run_id", 1), ("state", 1), ("product_code", 1)], unique=True, name=CELLS_INDEX
            ),
        )
    exporter.reset_versions([s for s, _, _ in changed] + vanished)
    if kind == "seed":
        exporter.write_seed(changed, stored, force)
    else:
        fresh = (
            not stored
            and link.run(
                f"read of {link.db.name}.{CELLS}",
                lambda: link.db[CELLS].find_one({"run_id": run_id}, {"_id": 1}),
            )
            is None
        )
        exporter.write_tidy(changed, episodes, fresh)
    exporter.remove_states(vanished)
    if kind == "tidy":
        exporter.write_manifest(encode_manifest(manifest_doc))
    return ExportReport(
        layout=kind,
        database=link.db.name,
        run_id=run_id,
        states_written=len(changed),
        states_unchanged=len(same),
        states_deleted=len(vanished),
        collections={name: CollectionCounts(*row) for name, row in exporter.counts.items()},
        round_trips=link.round_trips,
        seconds=time.perf_counter() - started,
    )


def import_snapshot(
    client_or_db: Any,
    *,
    db: str = DEFAULT_DB,
    layout: str = "seed",
    run_id: str | None = None,
    index: CodeIndex | None = None,
    policy: RetryPolicy | None = None,
    fields: tuple[str, ...] = DEFAULT_STATE_FIELDS,
) -> tuple[pd.DataFrame, dict[str, Any] | None]:
    """Read a snapshot back from MongoDB.

    Parameters
    ----------
    client_or_db, db, layout, policy
        As for :func:`export_snapshot`.
    run_id : str, optional
        Tidy layout: the run (default: the only run in ``runs``).
    index : CodeIndex, optional
        Seed layout, which stores no integer ids: maps state ids and StockCodes to
        ``state_id``/``product_id``; without it both columns are -1.
    fields : tuple of str
        State fields of the run the tables belong to (the state ids are parsed into them).

    Returns
    -------
    snapshot : pandas.DataFrame
        Snapshot columns and dtypes, sorted by (state_id, product_id, state, product_code);
        bit-identical numbers to what was exported.
    manifest : dict or None
        The run's manifest (tidy), None for the seed layout.

    Raises
    ------
    SyncError
        Unknown run, several runs and no ``run_id``, a state id that does not parse, a code
        missing from ``index``, or a database error.
    """
    kind = check_layout(layout)
    link = MongoLink(database_of(client_or_db, db), policy or RetryPolicy())
    if kind == "seed":
        tables = {column: _seed_table(link, name) for column, name in SEED_COLLECTIONS.items()}
        return frame_from_seed(tables, index, fields), None
    run = resolve_run_id(link, run_id)
    runs = link.db[RUNS]
    record = link.run(f"read of {link.db.name}.{RUNS}", lambda: runs.find_one({"_id": run}))
    hidden = {"_id": 0, "run_id": 0, "episodes": 0, "updated_at": 0, VERSION_FIELD: 0}
    docs = link.find_all(CELLS, {"run_id": run}, hidden)
    if record is None and not docs:
        raise SyncError(f"run {run!r} not found in {link.db.name}.{RUNS} or .{CELLS}")
    stored = record.get("manifest") if record is not None else None
    manifest = decode_manifest(stored) if stored is not None else None
    if manifest is not None:
        _check_stored_manifest(manifest, f"{link.db.name}.{RUNS} document {run!r}")
    return frame_from_tidy(docs, fields), manifest


#: Types of the manifest keys an import takes from a stored run (absent keys are allowed).
_MANIFEST_TYPES: dict[str, tuple[type, ...]] = {
    "run_id": (str,),
    "episodes": (int,),
    "seed": (int,),
    "config": (dict,),
    "rng_state": (dict, type(None)),
}


def _check_stored_manifest(manifest: Any, where: str) -> None:
    """One-line SyncError unless a stored manifest is an object with keys of the right types."""
    if not isinstance(manifest, dict):
        raise SyncError(f"{where}: manifest = {shown(manifest)}: expected a document")
    for key, types in _MANIFEST_TYPES.items():
        value = manifest.get(key)
        if key in manifest and (not isinstance(value, types) or isinstance(value, bool)):
            allowed = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise SyncError(f"{where}: manifest key {key!r} = {shown(value)}: expected {allowed}")


def _seed_table(link: MongoLink, name: str) -> dict[str, dict[str, Any]]:
    """State id -> StockCode -> number, from one seed collection (names unescaped)."""
    table: dict[str, dict[str, Any]] = {}
    for doc in link.find_all(name, {}):
        for key, cells in doc.items():
            if key in ("_id", VERSION_FIELD):
                continue
            if not isinstance(cells, Mapping):
                raise SyncError(
                    f"{link.db.name}.{name} document {doc['_id']!r}: field {key!r} is not a "
                    "document of StockCode -> number"
                )
            table[unescape_field(key)] = {unescape_field(c): v for c, v in cells.items()}
    return table


def _seed_groups(
    changed: list[tuple[str, int, int]], batch_size: int
) -> list[list[tuple[str, int, int]]]:
    """Consecutive states per bulk write: at most ``batch_size`` states and ~250k cells."""
    groups: list[list[tuple[str, int, int]]] = []
    cells = 0
    for item in changed:
        size = item[2] - item[1]
        if not groups or len(groups[-1]) >= batch_size or cells + size > MAX_SEED_CELLS_PER_BULK:
            groups.append([])
            cells = 0
        groups[-1].append(item)
        cells += size
    return groups


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
