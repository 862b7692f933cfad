"""Online visits against MongoDB: read one state, write it back without losing concurrent visits.

Protocol (both layouts). Each state has a version record in :data:`STATE_VERSIONS`
(``_id`` from :func:`state_record_id`) holding ``v``, the number of visits committed since the
state was last exported, and ``pending``, the absolute new values of the cells the last visit
changed. Data documents carry a version field ``_v`` (absent means 0): the four per-state
documents of the seed layout, the cell documents of the tidy layout.

1. *Read.* Read the record (version V), then the state's documents. A document newer than V
   means a visit is being written right now: read again. A document the record's pending visit
   touches that is older than V means that visit was committed but not (fully) written, e.g. its
   writer died: write it (roll forward), then read again.
2. *Compute.* Call the caller's ``step`` on the state's cells; it returns the new values of the
   cells the visit changes (existing or new products).
3. *Commit.* Compare-and-swap the record from V to V + 1 with the new values as ``pending``.
   Losing the race means another visit committed first: back off, go to 1 with fresh cells.
4. *Write.* Set the new values and ``_v = V + 1`` on the documents, each guarded by
   ``_v < V + 1`` so a late or repeated write never overwrites a newer one; seed collections in
   the order rlQuantdic, rlRecotrack, rlValuedic, rlRewarddic.

Guarantee: visits to one state are serialisable: each sees the result of all visits committed
before it and none is lost or applied twice (a commit whose reply is lost is recognised by its
token in the record's ``recent`` list). A visit interrupted after its commit is completed by the
next read of the state. Readers that do not use this module (the original's code) may see a
visit half written across the four seed collections. An export rewrites the states it writes
and resets their version records; do not run it while visits to those states are in flight.
"""

from __future__ import annotations

import abc
import contextlib
import random
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandas as pd
from pymongo import UpdateOne
from pymongo.errors import BulkWriteError, DuplicateKeyError

from rlreco.errors import RlrecoError, SyncError, shown
from rlreco.io.mongo_connection import (
    Document,
    MongoLink,
    RetryPolicy,
    database_of,
    only_duplicate_keys,
)
from rlreco.io.mongo_layout import (
    CELL_NUMBERS,
    CELLS,
    DEFAULT_DB,
    RUNS,
    SEED_COLLECTIONS,
    STATE_VERSIONS,
    SYNC_STATE,
    VERSION_FIELD,
    CodeIndex,
    Layout,
    cell_number,
    check_layout,
    conform_snapshot,
    escape_field,
    frame_from_seed,
    frame_from_tidy,
    older_than,
    parse_state,
    state_record_id,
    tidy_key,
    unescape_field,
)
from rlreco.schema import DEFAULT_STATE_FIELDS

#: A visit: the state's current cells in, the changed cells' new values out (snapshot columns).
VisitStep = Callable[[pd.DataFrame], pd.DataFrame]

#: Reads of a state before giving up on seeing it consistent (~2.5 s of waiting).
READ_ATTEMPTS = 60
#: Longest pause after a lost commit (short: the winner's next visit would otherwise starve
#: the losers).
CONFLICT_BACKOFF_S = 0.01
#: Commit tokens kept per state to recognise a commit whose reply was lost.
RECENT_TOKENS = 32


@dataclass(frozen=True)
class VisitResult:
    """Outcome of :func:`apply_visit`.

    Attributes
    ----------
    state : str
        State id.
    version : int
        Visits committed to the state since its last export, this one included.
    cells : pandas.DataFrame
        The rows the visit wrote (snapshot columns).
    attempts : int
        1 + the number of times a concurrent visit won the commit and ``step`` was re-run.
    applied : bool
        False if the visit is committed but writing its documents failed; the next read of
        the state writes them (do not repeat the visit).
    """

    state: str
    version: int
    cells: pd.DataFrame
    attempts: int
    applied: bool


@dataclass
class _Read:
    """One read of a state's documents."""

    frame: pd.DataFrame
    versions: dict[str, int]  # seed: collection -> _v; tidy: product code -> _v
    ids: dict[str, Any] = field(default_factory=dict)  # seed: collection -> document _id
    episodes: int = 0  # tidy: run episodes recorded on the state's cells


class _StateStore(abc.ABC):
    """Reads and writes one state's documents in one layout."""

    layout: Layout

    def __init__(
        self, link: MongoLink, state: str, run_id: str | None, fields: tuple[str, ...]
    ) -> None:
        self.link = link
        self.state = state
        self.run_id = run_id
        self.fields = fields
        self.record_id = state_record_id(self.layout, run_id, state)

    @abc.abstractmethod
    def read(self) -> _Read:
        """The state's documents as cells, with their versions."""

    @abc.abstractmethod
    def lags(self, read: _Read, pending: Mapping[str, Any], version: int) -> bool:
        """Whether documents the pending visit touches are older than ``version``."""

    @abc.abstractmethod
    def write(self, pending: Mapping[str, Any], version: int, read: _Read) -> None:
        """Write a committed visit's values with version ``version`` (guarded, idempotent)."""


class _SeedStore(_StateStore):
    layout: Layout = "seed"

    def __init__(
        self, link: MongoLink, state: str, index: CodeIndex | None, fields: tuple[str, ...]
    ) -> None:
        super().__init__(link, state, None, fields)
        self.field = escape_field(state)
        self.index = index

    def read(self) -> _Read:
        tables: dict[str, dict[str, dict[str, Any]]] = {}
        versions: dict[str, int] = {}
        ids: dict[str, Any] = {}
        for column, name in SEED_COLLECTIONS.items():
            coll = self.link.db[name]
            doc = self.link.run(
                f"read of state {self.state} from {self.link.db.name}.{name}",
                lambda coll=coll: coll.find_one(  # type: ignore[misc]
                    {self.field: {"$exists": True}}, {self.field: 1, VERSION_FIELD: 1}
                ),
            )
            ids[name] = doc["_id"] if doc else self.state
            where = f"{self.link.db.name}.{name} document {shown(ids[name])}"
            versions[name] = (
                stored_int(doc.get(VERSION_FIELD, 0), VERSION_FIELD, where) if doc else 0
            )
            cells = doc[self.field] if doc else {}
            if not isinstance(cells, Mapping):
                raise SyncError(
                    f"{self.link.db.name}.{name} document {ids[name]!r}: field {self.field!r} "
                    "is not a document of StockCode -> number"
                )
            tables[column] = {self.state: {unescape_field(k): v for k, v in cells.items()}}
        return _Read(frame_from_seed(tables, self.index, self.fields), versions, ids)

    def lags(self, read: _Read, pending: Mapping[str, Any], version: int) -> bool:
        return any(v < version for v in read.versions.values())

    def write(self, pending: Mapping[str, Any], version: int, read: _Read) -> None:
        for column, name in SEED_COLLECTIONS.items():
            if read.versions[name] >= version:
                continue
            values: Document = {
                f"{self.field}.{escape_field(c['product_code'])}": c[column]
                for c in pending["cells"]
            }
            values[VERSION_FIELD] = version
            query = {"_id": read.ids[name], **older_than(version)}
            coll = self.link.db[name]

            def update(
                coll: Any = coll, values: Document = values, query: Document = query
            ) -> None:
                # A duplicate key means the document already holds this or a newer version.
                with contextlib.suppress(DuplicateKeyError):
                    coll.update_one(query, {"$set": values}, upsert=True)

            self.link.run(f"write of state {self.state} to {self.link.db.name}.{name}", update)


class _TidyStore(_StateStore):
    layout: Layout = "tidy"

    def read(self) -> _Read:
        docs = self.link.find_all(
            CELLS, {"run_id": self.run_id, "state": self.state}, {"_id": 0, "updated_at": 0}
        )
        frame = frame_from_tidy(docs, self.fields)  # checks the cells' fields
        where = f"{self.link.db.name}.{CELLS} document of state {shown(self.state)}"
        versions = {
            d["product_code"]: stored_int(d.get(VERSION_FIELD, 0), VERSION_FIELD, where)
            for d in docs
        }
        episodes = max(
            (stored_int(d.get("episodes", 0), "episodes", where) for d in docs), default=0
        )
        return _Read(frame, versions, episodes=episodes)

    def lags(self, read: _Read, pending: Mapping[str, Any], version: int) -> bool:
        return any(read.versions.get(c["product_code"], 0) < version for c in pending["cells"])

    def write(self, pending: Mapping[str, Any], version: int, read: _Read) -> None:
        parsed = parse_state(self.state, self.fields)
        fixed = {"state_id": pending["state_id"], **dict(zip(self.fields, parsed, strict=True))}
        ops = []
        for cell in pending["cells"]:
            code = cell["product_code"]
            if read.versions.get(code, 0) >= version:
                continue
            values = {
                **fixed,
                "product_id": cell["product_id"],
                **{c: cell[c] for c in CELL_NUMBERS},
                VERSION_FIELD: version,
                "updated_at": pending["at"],
            }
            ops.append(
                UpdateOne(
                    {**tidy_key(str(self.run_id), self.state, code), **older_than(version)},
                    {"$set": values, "$setOnInsert": {"episodes": pending["episodes"]}},
                    upsert=True,
                )
            )
        if not ops:
            return
        coll = self.link.db[CELLS]

        def bulk() -> None:
            try:
                coll.bulk_write(ops, ordered=False)
            except BulkWriteError as exc:
                if not only_duplicate_keys(exc):
                    raise  # duplicate keys only mean a newer version is already there

        self.link.run(f"write of state {self.state} to {self.link.db.name}.{CELLS}", bulk)


def read_state(
    client_or_db: Any,
    state: str,
    *,
    layout: str = "seed",
    db: str = DEFAULT_DB,
    run_id: str | None = None,
    index: CodeIndex | None = None,
    policy: RetryPolicy | None = None,
    fields: tuple[str, ...] = DEFAULT_STATE_FIELDS,
) -> pd.DataFrame:
    """The current cells of one state (completing a visit left half written, if any).

    Parameters
    ----------
    client_or_db : pymongo.MongoClient or pymongo.database.Database
        Target; with a client, database ``db`` is used.
    state : str
        State id: the run's state field values joined by ``_``.
    layout : {"seed", "tidy"}
        Document layout.
    db : str
        Database name when ``client_or_db`` is a client.
    run_id : str, optional
        Tidy layout: the run (default: the only run in ``runs``).
    index : CodeIndex, optional
        Seed layout: gives ``state_id``/``product_id`` (else -1).
    fields : tuple of str
        The run's state fields (a state id holds one value of each).
    policy : RetryPolicy, optional
        Retries of transient faults.

    Returns
    -------
    pandas.DataFrame
        Snapshot columns, one row per known product of the state, canonical order; no rows for
        a state without documents.

    Raises
    ------
    SyncError
        Malformed state id, unreachable server, or documents that stay inconsistent.
    """
    store = _open_store(
        client_or_db,
        state,
        layout=layout,
        db=db,
        run_id=run_id,
        index=index,
        policy=policy,
        fields=fields,
    )
    return _read_consistent(store)[1].frame


def apply_visit(
    client_or_db: Any,
    state: str,
    step: VisitStep,
    *,
    layout: str = "seed",
    db: str = DEFAULT_DB,
    run_id: str | None = None,
    index: CodeIndex | None = None,
    policy: RetryPolicy | None = None,
    max_conflicts: int = 64,
    fields: tuple[str, ...] = DEFAULT_STATE_FIELDS,
) -> VisitResult:
    """Apply one visit to one state atomically with respect to other visits (module docstring).

    Parameters
    ----------
    client_or_db, state, layout, db, run_id, index, policy
        As for :func:`read_state`.
    step : callable
        ``step(cells) -> changed``: ``cells`` is the state's current cells (as
        :func:`read_state` returns them, a copy); ``changed`` has the snapshot columns and one
        row per product the visit changes, holding its new values (new products included).
        ``step`` runs again on fresh cells whenever a concurrent visit commits first, so it
        must depend only on its argument and on draws made before the call.
    max_conflicts : int
        Commits lost to concurrent visits before giving up.

    Returns
    -------
    VisitResult
        New version, the rows written, attempts.

    Raises
    ------
    SyncError
        Bad state id or step output, unreachable server, or more than ``max_conflicts`` lost
        commits. If the server fails during the commit itself, the visit may have been
        recorded: read the state before repeating it.
    """
    store = _open_store(
        client_or_db,
        state,
        layout=layout,
        db=db,
        run_id=run_id,
        index=index,
        policy=policy,
        fields=fields,
    )
    link = store.link
    token = uuid.uuid4().hex
    jitter = random.Random()
    # The next export must rewrite this state, whose documents no longer match the run.
    link.run(
        f"update of {link.db.name}.{SYNC_STATE}",
        lambda: link.db[SYNC_STATE].delete_one({"_id": store.record_id}),
    )
    for attempt in range(1, max_conflicts + 1):
        version, read = _read_consistent(store)
        changed = _checked_step(step(read.frame.copy()), state, fields)
        pending = _pending(changed, read, token)
        if _commit(store, version, pending, token):
            applied = True
            try:
                store.write(pending, version + 1, read)
            except SyncError:
                applied = False
            return VisitResult(state, version + 1, changed, attempt, applied)
        link.sleep(jitter.uniform(0.0, min(CONFLICT_BACKOFF_S, 0.0005 * 2.0**attempt)))
    raise SyncError(
        f"state {state}: {max_conflicts} concurrent visits committed first; visit not applied"
    )


def resolve_run_id(link: MongoLink, run_id: str | None) -> str:
    """``run_id``, or the only run recorded in ``runs``."""
    if run_id is not None:
        return str(run_id)
    runs = sorted(str(d["_id"]) for d in link.find_all(RUNS, {}, {"_id": 1}))
    if len(runs) == 1:
        return runs[0]
    where = f"{link.db.name}.{RUNS}"
    if not runs:
        raise SyncError(f"no run in {where}: export a run with layout 'tidy' first")
    shown = ", ".join(runs[:5]) + (", ..." if len(runs) > 5 else "")
    raise SyncError(f"{where} holds {len(runs)} runs ({shown}); choose one with run_id")


def _open_store(
    client_or_db: Any,
    state: str,
    *,
    layout: str,
    db: str,
    run_id: str | None,
    index: CodeIndex | None,
    policy: RetryPolicy | None,
    fields: tuple[str, ...],
) -> _StateStore:
    kind = check_layout(layout)
    parse_state(state, fields)
    link = MongoLink(database_of(client_or_db, db), policy or RetryPolicy())
    if kind == "seed":
        return _SeedStore(link, state, index, fields)
    return _TidyStore(link, state, resolve_run_id(link, run_id), fields)


def _read_consistent(store: _StateStore) -> tuple[int, _Read]:
    """Version and documents of a state once no visit is half written (protocol step 1)."""
    link = store.link
    versions = link.db[STATE_VERSIONS]
    for attempt in range(READ_ATTEMPTS):
        record = link.run(
            f"read of {link.db.name}.{STATE_VERSIONS}",
            lambda: versions.find_one({"_id": store.record_id}),
        )
        where = f"{link.db.name}.{STATE_VERSIONS} record {shown(store.record_id)}"
        version = stored_int(record.get("v"), "v", where) if record else 0
        read = store.read()
        pending = _checked_pending(record.get("pending"), where) if record else None
        if max(read.versions.values(), default=0) > version:
            link.sleep(min(0.05, 0.001 * 2.0**attempt))  # a visit is being written now
        elif pending is not None and store.lags(read, pending, version):
            store.write(pending, version, read)  # finish a visit whose writer stopped
        else:
            return version, read
    raise SyncError(
        f"state {store.state}: documents stay newer than version record {store.record_id} in "
        f"{link.db.name}.{STATE_VERSIONS} (an export of this state is running or was "
        "interrupted); re-run export-mongo"
    )


def stored_int(value: Any, name: str, where: str) -> int:
    """A version or visit count read from MongoDB: an integer >= 0, else one-line SyncError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SyncError(f"{where}: {name} = {shown(value)}: expected an integer >= 0")
    return value


def _checked_pending(pending: Any, where: str) -> Document | None:
    """The pending visit of a version record, checked before it is written (one-line error)."""
    if pending is None:
        return None
    cells = pending.get("cells") if isinstance(pending, Mapping) else None
    fields = ("product_code", "product_id", *CELL_NUMBERS)
    if (
        not isinstance(cells, list)
        or not all(isinstance(c, Mapping) and all(f in c for f in fields) for c in cells)
        or not all(isinstance(c["product_code"], str) for c in cells)
        or "state_id" not in pending
        or "episodes" not in pending
    ):
        raise SyncError(f"{where}: pending visit is malformed; re-run export-mongo for the state")
    for cell in cells:
        for column in CELL_NUMBERS:
            cell_number(cell[column], column, f"{where} pending cell {shown(cell['product_code'])}")
    return dict(pending)


def _checked_step(changed: Any, state: str, fields: tuple[str, ...]) -> pd.DataFrame:
    if not isinstance(changed, pd.DataFrame):
        raise SyncError(
            f"visit step for state {state} returned {type(changed).__name__}, "
            "not a DataFrame of changed cells"
        )
    try:
        frame = conform_snapshot(changed, f"visit step output for state {state}", fields)
    except RlrecoError as exc:
        raise SyncError(str(exc)) from None
    foreign = frame.loc[frame["state"] != state, "state"]
    if len(foreign):
        raise SyncError(f"visit step for state {state} returned a cell of state {foreign.iloc[0]}")
    return frame


def _pending(changed: pd.DataFrame, read: _Read, token: str) -> Document:
    """Record of a visit: everything needed to write it, by anyone, any number of times."""
    columns = ["product_code", "product_id", *CELL_NUMBERS]
    rows = zip(*(changed[c].tolist() for c in columns), strict=True)
    return {
        "token": token,
        "at": datetime.now(UTC),
        "state_id": int(changed["state_id"].iloc[0]) if len(changed) else -1,
        "episodes": read.episodes,
        "cells": [dict(zip(columns, row, strict=True)) for row in rows],
    }


def _commit(store: _StateStore, version: int, pending: Document, token: str) -> bool:
    """Compare-and-swap the state's version record from ``version`` to ``version + 1``."""
    link = store.link
    versions = link.db[STATE_VERSIONS]
    query = {"_id": store.record_id, "v": version}
    update = {
        "$set": {**store.record_id, "v": version + 1, "pending": pending},
        "$push": {"recent": {"$each": [token], "$slice": -RECENT_TOKENS}},
    }

    def swap() -> bool:
        try:
            result = versions.update_one(query, update, upsert=version == 0)
        except DuplicateKeyError:
            return False  # another visit created the record first
        return result.matched_count == 1 or result.upserted_id is not None

    what = f"commit of a visit to state {store.state} in {link.db.name}.{STATE_VERSIONS}"
    if link.run(what, swap):
        return True
    # A retried swap fails if its first try landed and only the reply was lost: look for it.
    record = link.run(what, lambda: versions.find_one({"_id": store.record_id}))
    recent = record.get("recent") if record is not None else None
    return isinstance(recent, list) and token in recent
