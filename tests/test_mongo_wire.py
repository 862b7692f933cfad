"""Wire-level faults against mockupdb, the driver team's MongoDB wire-protocol test server.

mockupdb 1.8.1 speaks OP_MSG and works with pymongo 4.20. Behind it, :class:`WireStore` keeps
just enough state (replacements keyed by their filter, equality finds) for an export to run, so
the tests can drop connections, send error replies or stay silent at chosen commands and then
check what the "server" holds and how many commands it received.
"""

from __future__ import annotations

import math
import socket
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from mockupdb import Matcher, MockupDB
from mongo_suite import code_index, manifest, synthetic_snapshot

from rlreco.errors import SyncError
from rlreco.io.mongo import RetryPolicy, connect, export_snapshot, import_snapshot
from rlreco.io.mongo_layout import CELLS, SYNC_STATE

WIRE_VERSION = 21  # MongoDB 7.0
QUICK = RetryPolicy(attempts=3, base_delay_s=0.01, max_delay_s=0.02)
#: Injected behaviour: (store, request, command, collection) -> True if it replied itself.
Fault = Callable[["WireStore", Any, str, str], bool]


class WireStore:
    """Minimal command handler for mockupdb (find, update, delete, createIndexes, ping)."""

    def __init__(self) -> None:
        self.docs: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
        self.commands: list[tuple[str, str]] = []
        self.fault: Fault | None = None

    def __call__(self, request: Any) -> bool:
        name = next(iter(request.doc))
        if name.lower() in ("ismaster", "hello"):
            return False  # mockupdb's own responder
        target = request.doc[name]
        coll = target if isinstance(target, str) else ""
        self.commands.append((name, coll))
        if self.fault is not None and self.fault(self, request, name, coll):
            return True
        if name == "find":
            wanted = request.doc.get("filter", {})
            docs = [
                d for d in self.docs[coll].values() if all(d.get(k) == v for k, v in wanted.items())
            ]
            limit = request.doc.get("limit") or len(docs)
            request.ok(
                cursor={"id": 0, "ns": f"{request.doc['$db']}.{coll}", "firstBatch": docs[:limit]}
            )
        elif name == "update":
            self.apply_updates(request, coll, len(request.doc["updates"]))
        elif name == "delete":
            request.ok(n=0)
        else:
            request.ok()
        return True

    def apply_updates(self, request: Any, coll: str, stop: int, reply: bool = True) -> None:
        """Store the first ``stop`` replacements of an update command (keyed by filter)."""
        updates = request.doc["updates"]
        upserted, matched = [], 0
        for i, op in enumerate(updates[:stop]):
            key = repr(sorted(op["q"].items()))
            if key in self.docs[coll]:
                matched += 1
            else:
                upserted.append({"index": i, "_id": i})
            self.docs[coll][key] = dict(op["u"])
        if reply:
            request.ok(n=len(updates), nModified=matched, upserted=upserted)

    def sent(self, name: str, coll: str | None = None) -> int:
        """Number of ``name`` commands received (on ``coll`` if given)."""
        return sum(1 for n, c in self.commands if n == name and coll in (None, c))


@pytest.fixture(scope="module")
def server() -> Iterator[MockupDB]:
    """One mockupdb server per module (stopping one takes a second)."""
    mock = MockupDB(auto_ismaster=True, max_wire_version=WIRE_VERSION)
    mock.run()
    try:
        yield mock
    finally:
        mock.stop()


@pytest.fixture
def wire(server: MockupDB) -> Iterator[tuple[MockupDB, WireStore]]:
    """The server with a fresh, empty :class:`WireStore` answering its commands."""
    store = WireStore()
    responder = server.autoresponds(Matcher(), store)
    try:
        yield server, store
    finally:
        responder.cancel()


def _host(server: MockupDB) -> str:
    return f"localhost:{server.port}"


def _nth(command: str, coll: str, n: int, act: Callable[[WireStore, Any], None]) -> Fault:
    """Fault running ``act`` on the ``n``-th ``command`` to ``coll`` (1-based), once."""
    seen = {"k": 0}

    def fault(store: WireStore, request: Any, name: str, target: str) -> bool:
        if (name, target) != (command, coll):
            return False
        seen["k"] += 1
        if seen["k"] != n:
            return False
        act(store, request)
        return True

    return fault


def test_round_trips_counted_by_the_export_match_the_wire(
    wire: tuple[MockupDB, WireStore],
) -> None:
    server, store = wire
    frame = synthetic_snapshot(20, 150, 400)  # 3,000 cells
    client = connect(server.uri, 2000)
    try:
        before = len(store.commands)
        report = export_snapshot(client, frame, manifest(), layout="tidy", batch_size=1000)
    finally:
        client.close()
    assert report.round_trips == len(store.commands) - before
    assert len(store.docs[CELLS]) == 3000 and report.collections[CELLS].written == 3000
    # one cells command per 1,000 documents, the 20 digests in one command
    assert store.sent("update", CELLS) == math.ceil(3000 / 1000)
    assert store.sent("update", SYNC_STATE) == 1


def test_dropped_connection_mid_bulk_is_retried_and_duplicates_nothing(
    wire: tuple[MockupDB, WireStore],
) -> None:
    server, store = wire

    def half_then_hang_up(store: WireStore, request: Any) -> None:
        store.apply_updates(request, CELLS, len(request.doc["updates"]) // 2, reply=False)
        request.hangup()

    store.fault = _nth("update", CELLS, 2, half_then_hang_up)
    frame = synthetic_snapshot(4, 10, 30)
    client = connect(server.uri, 2000)
    try:
        started = time.perf_counter()
        export_snapshot(client, frame, manifest(), layout="tidy", batch_size=10, policy=QUICK)
        assert time.perf_counter() - started < 2.0
    finally:
        client.close()
    assert store.sent("update", CELLS) == 5  # 4 batches, the second sent twice
    cells = {(d["state"], d["product_code"]): d for d in store.docs[CELLS].values()}
    assert len(cells) == len(store.docs[CELLS]) == len(frame)
    for row in frame.itertuples():
        assert cells[(row.state, row.product_code)]["value"] == row.value


def test_not_primary_reply_is_retried(wire: tuple[MockupDB, WireStore]) -> None:
    server, store = wire
    store.fault = _nth(
        "update", CELLS, 1, lambda s, r: r.command_err(code=10107, errmsg="not primary")
    )
    frame = synthetic_snapshot(2, 5, 10)
    client = connect(server.uri, 2000)
    try:
        export_snapshot(client, frame, manifest(), layout="tidy", policy=QUICK)
    finally:
        client.close()
    assert store.sent("update", CELLS) == 2
    assert len(store.docs[CELLS]) == len(frame)


def test_non_transient_error_reply_is_one_line_and_not_retried(
    wire: tuple[MockupDB, WireStore],
) -> None:
    server, store = wire

    def refuse(store: WireStore, request: Any, name: str, coll: str) -> bool:
        if (name, coll) != ("update", CELLS):
            return False
        request.command_err(code=2, errmsg="BadValue: document\nis malformed")
        return True

    store.fault = refuse
    client = connect(server.uri, 2000)
    try:
        with pytest.raises(SyncError) as info:
            export_snapshot(
                client, synthetic_snapshot(2, 3, 6), manifest(), layout="tidy", policy=QUICK
            )
    finally:
        client.close()
    message = str(info.value)
    assert "\n" not in message
    assert _host(server) in message and "BadValue: document is malformed (code 2)" in message
    assert store.sent("update", CELLS) == 1


def test_slow_server_fails_within_the_socket_timeout_naming_the_host(
    wire: tuple[MockupDB, WireStore],
) -> None:
    server, store = wire
    store.fault = lambda s, r, name, coll: name == "find"  # never answers a query
    client = connect(server.uri, 1000, socket_timeout_ms=150)
    policy = RetryPolicy(attempts=2, base_delay_s=0.01)
    try:
        started = time.perf_counter()
        with pytest.raises(SyncError) as info:
            import_snapshot(client, layout="seed", policy=policy)
        assert time.perf_counter() - started < 1.5
    finally:
        client.close()
    message = str(info.value)
    assert "\n" not in message
    assert f"MongoDB at {_host(server)}" in message and "after 2 attempts" in message


def test_server_that_never_answers_the_handshake_fails_within_the_timeout() -> None:
    server = MockupDB(auto_ismaster=False)
    server.run()
    try:
        started = time.perf_counter()
        with pytest.raises(SyncError) as info:
            connect(server.uri, 300)
        assert time.perf_counter() - started < 1.5
    finally:
        server.stop()
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"cannot reach MongoDB at {_host(server)}")


def test_unreachable_port_fails_within_the_timeout_without_the_password() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.perf_counter()
    with pytest.raises(SyncError) as info:
        connect(f"mongodb://alice:hunter2secret@127.0.0.1:{port}/", 300)
    assert time.perf_counter() - started < 1.5
    message = str(info.value)
    assert "\n" not in message and "hunter2secret" not in message
    assert message.startswith(f"cannot reach MongoDB at 127.0.0.1:{port}")


def test_authentication_failure_is_one_line_without_the_password(
    wire: tuple[MockupDB, WireStore],
) -> None:
    server, store = wire

    def reject(store: WireStore, request: Any, name: str, coll: str) -> bool:
        if name != "saslStart":
            return False
        request.command_err(code=18, errmsg="Authentication failed.")
        return True

    store.fault = reject
    with pytest.raises(SyncError) as info:
        connect(f"mongodb://alice:hunter2secret@localhost:{server.port}/?authSource=admin", 1000)
    message = str(info.value)
    assert "\n" not in message and "hunter2secret" not in message
    assert message == (
        f"MongoDB at {_host(server)} rejected the credentials (ping): authentication failed"
    )
    assert store.sent("saslStart") == 1


@pytest.mark.parametrize(
    "uri",
    [
        "mongodb://alice:hunter2secret@db:notaport",
        "http://alice:hunter2secret@db:27017",
        "mongodb://alice:hunter2@secret@db",
    ],
)
def test_malformed_uri_is_one_line_without_the_password(uri: str) -> None:
    with pytest.raises(SyncError, match="malformed MongoDB URI") as info:
        connect(uri, 300)
    message = str(info.value)
    assert "\n" not in message and "hunter2" not in message and "secret@" not in message


def test_seed_export_and_import_over_the_wire(wire: tuple[MockupDB, WireStore]) -> None:
    server, store = wire
    frame = synthetic_snapshot(3, 4, 8)
    client = connect(server.uri, 2000)
    try:
        report = export_snapshot(client, frame, manifest(), layout="seed", policy=QUICK)
        assert report.states_written == 3
        seed_docs = [d for d in store.docs["rlValuedic"].values()]
        assert sorted(d["_id"] for d in seed_docs) == sorted(frame["state"].unique())
        got, _ = import_snapshot(client, layout="seed", index=code_index(frame), policy=QUICK)
    finally:
        client.close()
    assert got.equals(frame)
