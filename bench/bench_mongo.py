"""MongoDB export figures on a full-size synthetic snapshot (576 states x 460 products).

These are plumbing figures, not database speeds: no MongoDB server can run on the development
machines. mongomock is an in-process fake without indexes (every filter scans its collection,
so a tidy export, one upsert per cell, is quadratic there); mockupdb is a wire-protocol server
that decodes every message in Python. Round trips are exact: counted by the export and, over the
wire, by a pymongo command listener.

Run with ``make bench`` (pytest-benchmark) or ``.venv/bin/python bench/bench_mongo.py`` (table).
"""

from __future__ import annotations

import sys
import time
from functools import cache
from pathlib import Path
from typing import Any

import pandas as pd
from mockupdb import Matcher, MockupDB
from pymongo import MongoClient, monitoring

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from mongo_suite import manifest, new_mongomock_db, synthetic_snapshot
from test_mongo_wire import WIRE_VERSION, WireStore

from rlreco.io.mongo import ExportReport, export_snapshot

#: The real data's shape: 576 states, ~460 known products per state, 4,070 products.
STATES, PER_STATE, PRODUCTS = 576, 460, 4070
#: Cells of the reduced tidy export against mongomock (quadratic there).
SMALL_TIDY = 2000


class CommandCounter(monitoring.CommandListener):
    """Counts the commands a client sends."""

    def __init__(self) -> None:
        self.count = 0

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.count += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


@cache
def full_snapshot() -> pd.DataFrame:
    """The full-size synthetic snapshot (264,960 cells)."""
    return synthetic_snapshot(STATES, PER_STATE, PRODUCTS)


def changed_two_states(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with one value changed in each of two states."""
    out = frame.copy()
    for state in out["state"].unique()[[7, 300]]:
        row = out.index[out["state"] == state][0]
        out.loc[row, "value"] += 0.5
    return out


def figures(report: ExportReport, seconds: float, commands: int | None = None) -> dict[str, Any]:
    """Throughput and round trips of one export."""
    docs = report.documents_written
    return {
        "documents": docs,
        "seconds": round(seconds, 3),
        "documents_per_s": round(docs / seconds) if seconds else None,
        "round_trips": report.round_trips,
        "wire_commands": commands,
        "round_trips_per_1000_documents": round(1000 * report.round_trips / docs, 2)
        if docs
        else None,
    }


def seed_on_mongomock() -> dict[str, Any]:
    """Full seed export, then a re-export with two states changed, against mongomock."""
    frame = full_snapshot()
    db = new_mongomock_db()
    started = time.perf_counter()
    full = export_snapshot(db, frame, manifest(), layout="seed")
    full_s = time.perf_counter() - started
    started = time.perf_counter()
    again = export_snapshot(db, changed_two_states(frame), manifest(), layout="seed")
    return {
        "full": figures(full, full_s),
        "two_states": figures(again, time.perf_counter() - started),
    }


def tidy_over_the_wire() -> dict[str, Any]:
    """Full tidy export, then two states changed, through pymongo to mockupdb."""
    frame = full_snapshot()
    server = MockupDB(auto_ismaster=True, max_wire_version=WIRE_VERSION)
    server.run()
    store = WireStore()
    server.autoresponds(Matcher(), store)
    counter = CommandCounter()
    client: MongoClient[dict[str, Any]] = MongoClient(server.uri, event_listeners=[counter])
    try:
        started = time.perf_counter()
        full = export_snapshot(client, frame, manifest(), layout="tidy")
        full_fig = figures(full, time.perf_counter() - started, counter.count)
        sent = counter.count
        started = time.perf_counter()
        # the fake server's finds return what it stored, so the digests are seen
        again = export_snapshot(client, changed_two_states(frame), manifest(), layout="tidy")
        two = figures(again, time.perf_counter() - started, counter.count - sent)
    finally:
        client.close()
        server.stop()
    return {"full": full_fig, "two_states": two}


def tidy_on_mongomock(cells: int = SMALL_TIDY) -> dict[str, Any]:
    """A reduced tidy export against mongomock (it is quadratic in the cells there)."""
    frame = synthetic_snapshot(cells // 50, 50, 400)
    db = new_mongomock_db()
    started = time.perf_counter()
    report = export_snapshot(db, frame, manifest(), layout="tidy")
    return figures(report, time.perf_counter() - started)


def bench_seed_export_full_size_mongomock(benchmark: Any) -> None:
    result = benchmark.pedantic(seed_on_mongomock, rounds=1, iterations=1)
    benchmark.extra_info.update(result)
    assert result["full"]["documents"] == 5 * STATES  # 4 collections + digests
    assert result["two_states"]["documents"] == 5 * 2


def bench_tidy_export_full_size_over_the_wire(benchmark: Any) -> None:
    result = benchmark.pedantic(tidy_over_the_wire, rounds=1, iterations=1)
    benchmark.extra_info.update(result)
    assert result["full"]["round_trips"] == result["full"]["wire_commands"]
    assert result["full"]["round_trips_per_1000_documents"] <= 3


def bench_tidy_export_reduced_mongomock(benchmark: Any) -> None:
    result = benchmark.pedantic(tidy_on_mongomock, rounds=1, iterations=1)
    benchmark.extra_info.update(result)


def main() -> None:
    """Print the figures as a table."""
    frame = full_snapshot()
    print(f"snapshot: {frame['state'].nunique()} states, {len(frame):,} cells")
    rows = []
    for name, result in (
        ("seed / mongomock", seed_on_mongomock()),
        ("tidy / mockupdb wire", tidy_over_the_wire()),
    ):
        for kind in ("full", "two_states"):
            rows.append({"export": f"{name} ({kind})", **result[kind]})
    rows.append({"export": f"tidy / mongomock ({SMALL_TIDY} cells)", **tidy_on_mongomock()})
    print(pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main()
