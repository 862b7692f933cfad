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

import random
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pandas as pd
from pymongo import ReplaceOne
from pymongo.errors import DuplicateKeyError

from rlreco.errors import RlrecoError, SyncError, shown
from rlreco.io.mongo_connection import Document, MongoLink, RetryPolicy, database_of
from rlreco.io.mongo_layout import (
    CELL_NUMBERS,
    DEFAULT_DB,
    RUNS,
    STATE_VERSIONS,
    SYNC_STATE,
    CodeIndex,
    cell_number,
    check_layout,
    conform_snapshot,
    parse_state,
)
from rlreco.io.mongo_state_store import SeedStore, StateRead, StateStore, TidyStore, stored_int
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
) -> StateStore:
    kind = check_layout(layout)
    parse_state(state, fields)
    link = MongoLink(database_of(client_or_db, db), policy or RetryPolicy())
    if kind == "seed":
        return SeedStore(link, state, index, fields)
    return TidyStore(link, state, resolve_run_id(link, run_id), fields)


#: Collection of online visit logs: one document per shown slot (:mod:`rlreco.io.visit_log`).
VISIT_LOG = "visit_log"


def write_visit_log(
    client_or_db: Any,
    documents: list[dict[str, Any]],
    *,
    db: str = DEFAULT_DB,
    policy: RetryPolicy | None = None,
) -> None:
    """Upsert visit log documents (:func:`rlreco.io.visit_log.log_documents`) into
    :data:`VISIT_LOG`, by ``_id``: writing the same visit again changes nothing."""
    if not documents:
        return
    link = MongoLink(database_of(client_or_db, db), policy or RetryPolicy())
    ops = [ReplaceOne({"_id": d["_id"]}, d, upsert=True) for d in documents]
    collection = link.db[VISIT_LOG]
    link.run(
        f"bulk write to {link.db.name}.{VISIT_LOG}",
        lambda: collection.bulk_write(ops, ordered=False),
    )


def _read_consistent(store: StateStore) -> tuple[int, StateRead]:
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


def _pending(changed: pd.DataFrame, read: StateRead, token: str) -> Document:
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


def _commit(store: StateStore, version: int, pending: Document, token: str) -> bool:
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
