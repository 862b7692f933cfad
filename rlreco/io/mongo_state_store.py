"""One state's documents in MongoDB, read and written in the seed or the tidy layout.

:func:`rlreco.io.mongo_visit.apply_visit` runs the same visit protocol (read, commit, write)
over both layouts; a :class:`StateStore` is the layout-specific part: reading a state's
documents as cells with their versions (``_v``), telling whether a committed visit is not yet
written, and writing a visit's values guarded by version. It is separate from the protocol
because it knows the layouts' documents, while the protocol knows only versions and records.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from pymongo import UpdateOne
from pymongo.errors import BulkWriteError, DuplicateKeyError

from rlreco.errors import SyncError, shown
from rlreco.io.mongo_connection import Document, MongoLink, only_duplicate_keys
from rlreco.io.mongo_layout import (
    CELL_NUMBERS,
    CELLS,
    SEED_COLLECTIONS,
    VERSION_FIELD,
    CodeIndex,
    Layout,
    escape_field,
    frame_from_seed,
    frame_from_tidy,
    older_than,
    parse_state,
    state_record_id,
    tidy_key,
    unescape_field,
)


@dataclass
class StateRead:
    """One read of a state's documents."""

    frame: pd.DataFrame
    versions: dict[str, int]  # seed: collection -> _v; tidy: product code -> _v
    ids: dict[str, Any] = field(default_factory=dict)  # seed: collection -> document _id
    episodes: int = 0  # tidy: run episodes recorded on the state's cells


class StateStore(abc.ABC):
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
    def read(self) -> StateRead:
        """The state's documents as cells, with their versions."""

    @abc.abstractmethod
    def lags(self, read: StateRead, pending: Mapping[str, Any], version: int) -> bool:
        """Whether documents the pending visit touches are older than ``version``."""

    @abc.abstractmethod
    def write(self, pending: Mapping[str, Any], version: int, read: StateRead) -> None:
        """Write a committed visit's values with version ``version`` (guarded, idempotent)."""


class SeedStore(StateStore):
    layout: Layout = "seed"

    def __init__(
        self, link: MongoLink, state: str, index: CodeIndex | None, fields: tuple[str, ...]
    ) -> None:
        super().__init__(link, state, None, fields)
        self.field = escape_field(state)
        self.index = index

    def read(self) -> StateRead:
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
        return StateRead(frame_from_seed(tables, self.index, self.fields), versions, ids)

    def lags(self, read: StateRead, pending: Mapping[str, Any], version: int) -> bool:
        return any(v < version for v in read.versions.values())

    def write(self, pending: Mapping[str, Any], version: int, read: StateRead) -> None:
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


class TidyStore(StateStore):
    layout: Layout = "tidy"

    def read(self) -> StateRead:
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
        return StateRead(frame, versions, episodes=episodes)

    def lags(self, read: StateRead, pending: Mapping[str, Any], version: int) -> bool:
        return any(read.versions.get(c["product_code"], 0) < version for c in pending["cells"])

    def write(self, pending: Mapping[str, Any], version: int, read: StateRead) -> None:
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


def stored_int(value: Any, name: str, where: str) -> int:
    """A version or visit count read from MongoDB: an integer >= 0, else one-line SyncError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SyncError(f"{where}: {name} = {shown(value)}: expected an integer >= 0")
    return value
