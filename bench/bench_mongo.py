"""MongoDB export figures on a full-size synthetic snapshot (576 states x 460 products).

These are plumbing figures, not database speeds: no MongoDB server can run on the development
machines. mongomock is an in-process fake without indexes (every filter scans its collection,
so a tidy export, one upsert per cell, is quadratic there); mockupdb is a wire-protocol server
that decodes every message in Python. Round trips are exact: counted by the export and, over the
wire, by a pymongo command listener.

Run with ``make bench`` (pytest-benchmark) or ``.venv/bin/python bench/bench_mongo.py`` (table).

The export of a whole run directory (``rlreco export-mongo``'s code from the snapshot file to
BSON) is measured against :class:`EncodingClient`, a stand-in server that BSON-encodes every
document and filter it is sent (what the driver does before the socket) and keeps nothing; one
JSON line with documents, bytes, CPU seconds and peak RSS:

    .venv/bin/python bench/bench_mongo.py synthetic OUT_DIR [STATES PER_STATE PRODUCTS]
    .venv/bin/python bench/bench_mongo.py export RUN_DIR [--layout tidy] [--check]

``synthetic`` writes a run directory of ``segment x month x half x weekday x country`` states
(default 6,000 states x 300 known cells of 4,000 products: 1.8M cells, seconds to export);
``export`` also takes the real large state space after ``simulate``
(``bench/bench_large_state_space.py``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import sys
import time
from functools import cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import bson
import numpy as np
import pandas as pd
from mockupdb import Matcher, MockupDB
from pymongo import MongoClient, monitoring

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from mongo_suite import MONTHS, manifest, new_mongomock_db, synthetic_snapshot
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


class EncodingCollection:
    """A collection that BSON-encodes what it is sent and keeps nothing (never finds).

    With ``check`` in the tally, it also adds up a digest of every operation (filter and
    document without ``updated_at``, in BSON), the same whatever the order of the writes.
    """

    def __init__(self, tally: dict[str, int]) -> None:
        self.tally = tally

    def bulk_write(self, ops: list[Any], ordered: bool = True) -> SimpleNamespace:
        upserts = 0
        for op in ops:
            size = len(bson.encode(op._filter))
            doc = getattr(op, "_doc", None)
            if doc is not None:
                encoded = len(bson.encode(doc))
                self.tally["documents"] += 1
                self.tally["largest_document"] = max(self.tally["largest_document"], encoded)
                size += encoded
                upserts += 1
            self.tally["bytes"] += size
            if "check" in self.tally:
                kept = {k: v for k, v in (doc or {}).items() if k != "updated_at"}
                raw = bson.encode({"f": op._filter, "d": kept, "op": type(op).__name__})
                digest = int(hashlib.blake2b(raw, digest_size=16).hexdigest(), 16)
                self.tally["check"] = (self.tally["check"] + digest) % 2**128
        self.tally["bulk_writes"] += 1
        return SimpleNamespace(upserted_count=upserts, matched_count=0, deleted_count=0)

    def find(self, *args: Any, **kwargs: Any) -> list[Any]:
        return []

    def find_one(self, *args: Any, **kwargs: Any) -> None:
        return None

    def create_index(self, *args: Any, **kwargs: Any) -> str:
        return "index"


class EncodingDatabase:
    """A database of :class:`EncodingCollection` objects sharing one tally."""

    def __init__(self, tally: dict[str, int], name: str) -> None:
        self.tally = tally
        self.name = name
        self.client = None

    def __getitem__(self, name: str) -> EncodingCollection:
        return EncodingCollection(self.tally)


class EncodingClient:
    """A client whose databases are :class:`EncodingDatabase` objects."""

    def __init__(self) -> None:
        self.tally = {"documents": 0, "bytes": 0, "largest_document": 0, "bulk_writes": 0}

    def list_database_names(self) -> list[str]:
        return []

    def __getitem__(self, name: str) -> EncodingDatabase:
        return EncodingDatabase(self.tally, name)

    def close(self) -> None:
        pass


def export_counted(run_dir: Path, layout: str, check: bool = False) -> dict[str, Any]:
    """``export_run`` of a run directory against :class:`EncodingClient`: documents, bytes,
    CPU seconds and this process's peak RSS; with ``check``, a digest of what was sent."""
    import rlreco.app.mongo_sync as sync

    client = EncodingClient()
    if check:
        client.tally["check"] = 0
    sync.connect = lambda *args, **kwargs: client  # type: ignore[assignment]
    cpu = time.process_time()
    report = sync.export_run(run_dir, uri="mongodb://bench", layout=layout)
    return {
        "layout": layout,
        "states_written": report.states_written,
        **client.tally,
        "round_trips": report.round_trips,
        "cpu_seconds": round(time.process_time() - cpu, 2),
        "peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def synthetic_run(out: Path, n_states: int, per_state: int, n_products: int) -> Path:
    """A run directory of ``segment x month x half x weekday x country`` states with
    ``per_state`` known cells each (random numbers), written as ``simulate`` writes one."""
    from rlreco.io.parquet_tables import CellStream
    from rlreco.io.run_dir import RunDir

    fields = ["segment", "month", "half", "weekday", "country"]
    countries = [f"Country {k}" for k in range(-(-n_states // 576))]
    combos = [
        (seg, month, half, day, country)
        for seg in ("Q1", "Q2", "Q3", "Q4")
        for month in MONTHS
        for half in (0, 1)
        for day in ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Sunday")
        for country in countries
    ][:n_states]
    ids = np.array(["_".join(map(str, c)) for c in combos], dtype=object)
    states = {"state_id": np.arange(n_states, dtype=np.int32), "state": ids}
    for k, name in enumerate(fields):
        column = [c[k] for c in combos]
        states[name] = np.array(column, dtype=np.int8 if name == "half" else object)
    states["weight"] = np.ones(n_states)
    codes = np.array(
        [f"{20000 + i}{'ABC'[i % 3] if i % 4 == 0 else ''}" for i in range(n_products)]
    )
    space = {
        "states": states,
        "products": {
            "product_id": np.arange(n_products, dtype=np.int32),
            "product_code": codes.astype(object),
            "description": np.array(["item"] * n_products, dtype=object),
        },
        "catalogues": {
            "segment": np.repeat(np.array(["Q1", "Q2", "Q3", "Q4"], dtype=object), n_products),
            "product_id": np.tile(np.arange(n_products, dtype=np.int32), 4),
        },
    }
    rng = np.random.default_rng(0)

    def groups() -> Any:
        for first in range(0, n_states, 64):
            block = range(first, min(first + 64, n_states))
            product = np.concatenate(
                [np.sort(rng.choice(n_products, per_state, replace=False)) for _ in block]
            ).astype(np.int32)
            count = rng.integers(1, 200, product.size)
            yield {
                "state_id": np.repeat(np.array(block, dtype=np.int32), per_state),
                "product_id": product,
                "value": rng.normal(count, 1.0) / 3.0,
                "reward": rng.normal(count, 1.0).round(2),
                "count": count,
                "reco_count": rng.integers(0, 30, product.size),
            }

    snapshot = CellStream(
        groups=groups(),
        states={name: states[name] for name in ("state", *fields)},
        product_codes=codes,
    )
    manifest = {"run_id": "bench", "config": {}, "seed": 0, "state_fields": fields}
    RunDir.create(out, manifest=manifest, space=space, snapshot=snapshot, force=True)
    return out


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


def cli() -> None:
    """``synthetic`` / ``export`` subcommands (module docstring), else the table."""
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    make = sub.add_parser("synthetic")
    make.add_argument("out", type=Path)
    make.add_argument("shape", type=int, nargs="*", default=[6000, 300, 4000])
    run = sub.add_parser("export")
    run.add_argument("run_dir", type=Path)
    run.add_argument("--layout", default="seed")
    run.add_argument("--check", action="store_true", help="digest of what was sent (slower)")
    args = parser.parse_args()
    if args.command == "synthetic":
        synthetic_run(args.out, *args.shape)
    elif args.command == "export":
        result = export_counted(args.run_dir, args.layout, args.check)
        if "check" in result:
            result["check"] = f"{result['check']:032x}"
        print(json.dumps(result))
    else:
        main()


if __name__ == "__main__":
    cli()
