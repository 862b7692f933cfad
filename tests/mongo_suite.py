"""Shared MongoDB integration suite and its helpers.

:class:`MongoSuite` holds the tests; ``tests/test_mongo.py`` runs them against mongomock (always)
and against a real server when the environment variable ``RLRECO_MONGO_URI`` is set (skipped
otherwise: no MongoDB server can be installed on the development machines).

mongomock needs two adjustments, both made here and nowhere in ``rlreco``:

* mongomock 4.3's bulk builder rejects the ``sort`` keyword that pymongo >= 4.11 passes for
  ``UpdateOne``/``ReplaceOne`` (:func:`patch_mongomock` drops it when it is None);
* mongomock does not make single-document operations atomic (a compare-and-swap
  ``update_one`` reads and writes in separate steps, and concurrent threads lose updates), while
  a real server does. :class:`SerialDatabase` restores that guarantee by running every
  collection operation under one lock, so the concurrency tests check rlreco's protocol, not
  mongomock's races. It can also inject faults.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

import mongomock
import mongomock.collection
import numpy as np
import pandas as pd
import pytest
from bson import ObjectId
from pymongo.errors import AutoReconnect

from rlreco.errors import SnapshotError, SyncError
from rlreco.io.mongo import (
    CodeIndex,
    RetryPolicy,
    apply_visit,
    export_snapshot,
    import_snapshot,
    read_state,
)
from rlreco.io.mongo_layout import (
    CELLS,
    CELLS_INDEX,
    RUNS,
    SEED_COLLECTIONS,
    SNAPSHOT_DTYPES,
    STATE_VERSIONS,
    SYNC_STATE,
    escape_field,
    format_state,
    sort_snapshot,
)

MONGO_URI_ENV = "RLRECO_MONGO_URI"
NO_SERVER = "RLRECO_MONGO_URI not set: no MongoDB server on this machine"
LAYOUTS = ("seed", "tidy")
FAST = RetryPolicy(attempts=3, base_delay_s=0.001, max_delay_s=0.002)

SEGMENTS = ("Q1", "Q2", "Q3", "Q4")
MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Sunday")
#: Codes that are not valid MongoDB field names as they are.
AWKWARD_CODES = ("A.B", "$X", "50%OFF", "C.$.%2E")


def patch_mongomock() -> None:
    """Let mongomock 4.3's bulk writes accept pymongo >= 4.11 operations (idempotent)."""
    builder = mongomock.collection.BulkOperationBuilder
    if getattr(builder, "_rlreco_patched", False):
        return

    def drop_sort(method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def call(self: Any, *args: Any, sort: Any = None, **kwargs: Any) -> Any:
            if sort is not None:
                raise NotImplementedError("mongomock cannot sort bulk updates")
            return method(self, *args, **kwargs)

        return call

    builder.add_update = drop_sort(builder.add_update)
    builder.add_replace = drop_sort(builder.add_replace)
    builder._rlreco_patched = True


Fault = Callable[[str, str], Exception | None]


class LostReply(AutoReconnect):
    """Injected fault raised after the operation ran (applied by the server, reply lost)."""


class SerialCollection:
    """A mongomock collection whose operations run one at a time (see module docstring)."""

    def __init__(self, coll: Any, lock: threading.Lock, fault: Fault | None) -> None:
        self._coll = coll
        self._lock = lock
        self._fault = fault

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._coll, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            exc = self._fault(self._coll.name, name) if self._fault is not None else None
            if exc is not None and not isinstance(exc, LostReply):
                raise exc
            with self._lock:
                result = attr(*args, **kwargs)
                # Cursors read lazily: read them under the lock too.
                if isinstance(result, mongomock.collection.Cursor):
                    result = list(result)
            if exc is not None:
                raise exc  # the operation ran; only its reply is lost
            return result

        return call


class SerialDatabase:
    """A mongomock database handing out :class:`SerialCollection` objects.

    Parameters
    ----------
    db : mongomock.Database
    fault : callable, optional
        ``fault(collection, method)`` returns an exception to raise instead of running the
        operation, or None.
    """

    def __init__(self, db: Any, fault: Fault | None = None) -> None:
        self._db = db
        self._lock = threading.Lock()
        self.fault = fault
        self.name = db.name
        self.client = db.client

    def __getitem__(self, name: str) -> SerialCollection:
        return SerialCollection(self._db[name], self._lock, self.fault)

    def list_collection_names(self) -> list[str]:
        with self._lock:
            return list(self._db.list_collection_names())


def new_mongomock_db(fault: Fault | None = None) -> SerialDatabase:
    """A fresh serialised mongomock database."""
    patch_mongomock()
    return SerialDatabase(mongomock.MongoClient()["rlreco_test"], fault)


def fail_on(collection: str, method: str, exc: Exception, times: int = 1, skip: int = 0) -> Fault:
    """Fault raising ``exc`` on calls ``skip + 1 .. skip + times`` of ``collection.method``."""
    seen = {"n": 0}

    def fault(coll: str, meth: str) -> Exception | None:
        if (coll, meth) != (collection, method):
            return None
        seen["n"] += 1
        return exc if skip < seen["n"] <= skip + times else None

    return fault


def all_states() -> list[tuple[str, str, int, str]]:
    """The 576 (segment, month, half, weekday) states of the real data's shape."""
    return [(s, m, h, w) for s in SEGMENTS for m in MONTHS for h in (0, 1) for w in WEEKDAYS]


def synthetic_snapshot(
    n_states: int,
    per_state: int,
    n_products: int,
    seed: int = 0,
    codes: tuple[str, ...] = (),
) -> pd.DataFrame:
    """A snapshot frame of the real data's shape, with random numbers.

    Parameters
    ----------
    n_states : int
        States, taken in order from :func:`all_states` (at most 576).
    per_state : int
        Known products per state (drawn without replacement from the catalogue).
    n_products : int
        Catalogue size; codes are ``codes`` followed by StockCode-like strings.
    seed : int
        Seed of the numbers.
    codes : tuple of str
        Leading product codes (e.g. :data:`AWKWARD_CODES`).

    Returns
    -------
    pandas.DataFrame
        Snapshot columns and dtypes, canonical order, ``n_states * per_state`` rows.
    """
    rng = np.random.default_rng(seed)
    catalogue = list(codes) + [
        f"{20000 + i}{'ABC'[i % 3] if i % 4 == 0 else ''}" for i in range(n_products - len(codes))
    ]
    states = all_states()[:n_states]
    product_ids = np.concatenate(
        [np.sort(rng.choice(n_products, per_state, replace=False)) for _ in states]
    ).astype(np.int32)
    state_ids = np.repeat(np.arange(n_states, dtype=np.int32), per_state)
    count = rng.integers(1, 200, product_ids.size)
    frame = pd.DataFrame(
        {
            "state_id": state_ids,
            "state": np.array([format_state(*s) for s in states], dtype=object)[state_ids],
            "segment": np.array([s[0] for s in states], dtype=object)[state_ids],
            "month": np.array([s[1] for s in states], dtype=object)[state_ids],
            "half": np.array([s[2] for s in states], dtype=np.int8)[state_ids],
            "weekday": np.array([s[3] for s in states], dtype=object)[state_ids],
            "product_id": product_ids,
            "product_code": np.array(catalogue, dtype=object)[product_ids],
            "value": rng.normal(count, 1.0) / 3.0,  # full-precision doubles
            "reward": rng.normal(count, 1.0).round(2),
            "count": count,
            "reco_count": rng.integers(0, 30, product_ids.size),
        }
    )
    return sort_snapshot(frame.astype(SNAPSHOT_DTYPES))


def code_index(frame: pd.DataFrame) -> CodeIndex:
    """The state and product indices of a snapshot frame."""
    states = dict(zip(frame["state"], frame["state_id"].astype(int), strict=True))
    products = dict(zip(frame["product_code"], frame["product_id"].astype(int), strict=True))
    return CodeIndex(states, products)


def manifest(run_id: str = "run-1", episodes: int = 1000) -> dict[str, Any]:
    """A small manifest like a run directory's."""
    return {
        "schema_version": 1,
        "run_id": run_id,
        "seed": 7,
        "episodes": episodes,
        "config": {"policy": {"epsilon": 0.1, "slate_size": 10}},
        "versions": {"numpy": "2"},
    }


def contents(db: Any) -> dict[str, list[str]]:
    """Every collection's documents as sorted reprs, without ObjectIds and write times."""
    out = {}
    for name in sorted(db.list_collection_names()):
        docs = []
        for doc in db[name].find({}):
            kept = {
                k: v for k, v in doc.items() if k != "updated_at" and not isinstance(v, ObjectId)
            }
            docs.append(repr(sorted(kept.items(), key=lambda kv: kv[0])))
        out[name] = sorted(docs)
    return out


#: The state the concurrency tests visit.
STEP_STATE = ("Q1", "January", 0, "Monday")
STEP_STATE_ID = format_state(*STEP_STATE)


def reference_step(
    slate: dict[str, float],
    reward0: float,
    new_ids: dict[str, int],
    state: tuple[str, str, int, str] = STEP_STATE,
) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """Slow reference of the engine's update for one visit (issue 3, steps 3 and 5).

    Every slate product gets ``count += 1``, ``reco_count += 1``; a product new to the state
    starts with value 0 and reward ``reward0``; then ``reward += r`` and
    ``value += (r - value) / reco_count``.

    Parameters
    ----------
    slate : dict
        Product code -> reward r of this visit.
    reward0 : float
        Initial reward of a product new to the state.
    new_ids : dict
        Product code -> product_id, for products that may be new.
    state : tuple
        (segment, month, half, weekday) of the visited state.
    """
    segment, month, half, weekday = state

    def step(cells: pd.DataFrame) -> pd.DataFrame:
        known = dict(zip(cells["product_code"], cells.to_dict("records"), strict=True))
        rows = []
        for code, r in slate.items():
            row = dict(
                known.get(code)
                or {
                    "state_id": -1,
                    "state": format_state(*state),
                    "segment": segment,
                    "month": month,
                    "half": half,
                    "weekday": weekday,
                    "product_id": new_ids[code],
                    "product_code": code,
                    "value": 0.0,
                    "reward": reward0,
                    "count": 0,
                    "reco_count": 0,
                }
            )
            row["count"] += 1
            row["reco_count"] += 1
            row["reward"] += r
            row["value"] += (r - row["value"]) / row["reco_count"]
            rows.append(row)
        return pd.DataFrame(rows)

    return step


def _export_read(db: Any, frame: pd.DataFrame, layout: str, **kwargs: Any) -> pd.DataFrame:
    export_snapshot(db, frame, manifest(), layout=layout, policy=FAST, **kwargs)
    got, _ = import_snapshot(db, layout=layout, index=code_index(frame), policy=FAST)
    return got


class MongoSuite:
    """Integration tests; subclasses provide the ``database`` fixture (an empty database)."""

    #: Visits per thread in the concurrency test (8 threads).
    visits_per_thread = 50

    @pytest.mark.parametrize("layout", LAYOUTS)
    def test_export_import_round_trip_is_exact(self, database: Any, layout: str) -> None:
        frame = synthetic_snapshot(6, 5, 12, codes=AWKWARD_CODES)
        got = _export_read(database, frame, layout)
        pd.testing.assert_frame_equal(got, frame, check_exact=True)

    def test_tidy_import_returns_ids_and_manifest_without_an_index(self, database: Any) -> None:
        frame = synthetic_snapshot(3, 4, 8)
        export_snapshot(database, frame, manifest("r9", 77), layout="tidy", policy=FAST)
        got, meta = import_snapshot(database, layout="tidy", policy=FAST)
        pd.testing.assert_frame_equal(got, frame, check_exact=True)
        assert meta == manifest("r9", 77)

    def test_seed_import_without_index_has_ids_minus_one(self, database: Any) -> None:
        frame = synthetic_snapshot(3, 4, 8)
        export_snapshot(database, frame, manifest(), layout="seed", policy=FAST)
        got, meta = import_snapshot(database, layout="seed", policy=FAST)
        assert meta is None
        assert (got["state_id"] == -1).all() and (got["product_id"] == -1).all()
        expected = frame.assign(state_id=np.int32(-1), product_id=np.int32(-1))
        expected = sort_snapshot(expected)
        pd.testing.assert_frame_equal(got, expected, check_exact=True)

    def test_seed_documents_have_the_original_shape(self, database: Any) -> None:
        frame = synthetic_snapshot(2, 3, 6, codes=("A.B",))
        export_snapshot(database, frame, manifest(), layout="seed", policy=FAST)
        state = frame["state"].iloc[0]
        cells = frame[frame["state"] == state]
        for column, name in SEED_COLLECTIONS.items():
            # The original reads a state with find_one({state: {"$exists": True}}).
            doc = database[name].find_one({state: {"$exists": True}})
            expected = {
                escape_field(c): v
                for c, v in zip(cells["product_code"], cells[column].tolist(), strict=True)
            }
            assert doc == {"_id": state, state: expected}
            kind = int if column in ("count", "reco_count") else float
            assert all(type(v) is kind for v in doc[state].values())
            assert len(list(database[name].find({}))) == 2

    @pytest.mark.parametrize("layout", LAYOUTS)
    def test_second_export_of_the_same_snapshot_changes_nothing(
        self, database: Any, layout: str
    ) -> None:
        frame = synthetic_snapshot(5, 4, 10)
        export_snapshot(database, frame, manifest(), layout=layout, policy=FAST)
        before = contents(database)
        with_times = {n: list(database[n].find({})) for n in database.list_collection_names()}
        report = export_snapshot(database, frame, manifest(), layout=layout, policy=FAST)
        assert report.states_written == 0 and report.states_unchanged == 5
        assert report.documents_written == 0
        assert contents(database) == before
        assert {
            n: list(database[n].find({})) for n in database.list_collection_names()
        } == with_times

    @pytest.mark.parametrize("layout", LAYOUTS)
    def test_incremental_export_rewrites_only_changed_states(
        self, database: Any, layout: str
    ) -> None:
        frame = synthetic_snapshot(6, 5, 12)
        export_snapshot(database, frame, manifest(), layout=layout, policy=FAST)
        states = frame["state"].unique()
        changed = frame.copy()
        first = changed.index[changed["state"] == states[1]][0]
        changed.loc[first, "value"] += 1e-9  # a one-ulp-scale change is a change
        dropped = changed.index[changed["state"] == states[4]][-1]
        changed = changed.drop(index=dropped).reset_index(drop=True)
        report = export_snapshot(
            database, changed, manifest(episodes=2000), layout=layout, policy=FAST
        )
        assert report.states_written == 2 and report.states_unchanged == 4
        if layout == "seed":
            for name in SEED_COLLECTIONS.values():
                assert report.collections[name].written == 2
        else:
            assert report.collections[CELLS].written == 5 + 4
            assert report.collections[CELLS].deleted == 1
            assert report.collections[RUNS].written == 1  # episodes changed the manifest
        assert report.collections[SYNC_STATE].written == 2
        got, _ = import_snapshot(database, layout=layout, index=code_index(frame), policy=FAST)
        pd.testing.assert_frame_equal(got, changed, check_exact=True)

    @pytest.mark.parametrize("layout", LAYOUTS)
    def test_states_missing_from_a_later_snapshot_are_deleted(
        self, database: Any, layout: str
    ) -> None:
        frame = synthetic_snapshot(4, 3, 8)
        export_snapshot(database, frame, manifest(), layout=layout, policy=FAST)
        smaller = frame[frame["state"] != frame["state"].iloc[0]].reset_index(drop=True)
        report = export_snapshot(database, smaller, manifest(), layout=layout, policy=FAST)
        assert (report.states_deleted, report.states_written) == (1, 0)
        got, _ = import_snapshot(database, layout=layout, index=code_index(frame), policy=FAST)
        pd.testing.assert_frame_equal(got, smaller, check_exact=True)

    def test_tidy_cells_have_a_unique_compound_index(self, database: Any) -> None:
        export_snapshot(
            database, synthetic_snapshot(2, 2, 4), manifest(), layout="tidy", policy=FAST
        )
        info = database[CELLS].index_information()[CELLS_INDEX]
        assert info["unique"] is True
        assert [k for k, _ in info["key"]] == ["run_id", "state", "product_code"]

    def test_tidy_cell_document_fields(self, database: Any) -> None:
        frame = synthetic_snapshot(1, 1, 3)
        export_snapshot(database, frame, manifest("r1", 42), layout="tidy", policy=FAST)
        doc = database[CELLS].find_one({})
        assert set(doc) == {"_id", "run_id", *SNAPSHOT_DTYPES, "episodes", "updated_at"}
        assert (doc["run_id"], doc["episodes"]) == ("r1", 42)
        assert doc["product_code"] == frame["product_code"][0]

    def test_tidy_runs_are_kept_apart(self, database: Any) -> None:
        one, two = synthetic_snapshot(2, 3, 6, seed=1), synthetic_snapshot(3, 2, 6, seed=2)
        export_snapshot(database, one, manifest("a"), layout="tidy", policy=FAST)
        export_snapshot(database, two, manifest("b"), layout="tidy", policy=FAST)
        with pytest.raises(SyncError, match="holds 2 runs"):
            import_snapshot(database, layout="tidy", policy=FAST)
        got, meta = import_snapshot(database, layout="tidy", run_id="a", policy=FAST)
        pd.testing.assert_frame_equal(got, one, check_exact=True)
        assert meta is not None and meta["run_id"] == "a"
        with pytest.raises(SyncError, match="run 'zz' not found"):
            import_snapshot(database, layout="tidy", run_id="zz", policy=FAST)

    def test_seed_export_replaces_documents_written_by_the_original(self, database: Any) -> None:
        frame = synthetic_snapshot(2, 3, 6)
        state = frame["state"].iloc[0]
        for name in SEED_COLLECTIONS.values():  # as the original's insert() leaves them
            database[name].insert_one({state: {"stale": 1}})
        export_snapshot(database, frame, manifest(), layout="seed", policy=FAST)
        for name in SEED_COLLECTIONS.values():
            docs = list(database[name].find({state: {"$exists": True}}))
            assert [d["_id"] for d in docs] == [state]
        got = import_snapshot(database, layout="seed", index=code_index(frame), policy=FAST)[0]
        pd.testing.assert_frame_equal(got, frame, check_exact=True)

    def test_malformed_snapshot_and_manifest_are_rejected(self, database: Any) -> None:
        frame = synthetic_snapshot(1, 2, 4)
        with pytest.raises(SnapshotError, match="lacks column"):
            export_snapshot(database, frame.drop(columns="reward"), manifest(), policy=FAST)
        with pytest.raises(SnapshotError, match="appears more than once"):
            export_snapshot(database, pd.concat([frame, frame]), manifest(), policy=FAST)
        with pytest.raises(SnapshotError, match="run_id"):
            export_snapshot(database, frame, {"episodes": 1}, layout="tidy", policy=FAST)
        with pytest.raises(SyncError, match="layout must be"):
            export_snapshot(database, frame, manifest(), layout="wide", policy=FAST)

    # ------------------------------------------------------------------ online visits

    @pytest.mark.parametrize("layout", LAYOUTS)
    def test_visit_updates_only_its_state(self, database: Any, layout: str) -> None:
        frame = synthetic_snapshot(3, 4, 8)
        index = code_index(frame)
        export_snapshot(database, frame, manifest(), layout=layout, policy=FAST)
        state = frame["state"].iloc[0]
        codes = frame.loc[frame["state"] == state, "product_code"].tolist()[:2]
        before = read_state(database, state, layout=layout, index=index, policy=FAST)
        pd.testing.assert_frame_equal(
            before, frame[frame["state"] == state].reset_index(drop=True), check_exact=True
        )
        step = _bump(codes)
        result = apply_visit(database, state, step, layout=layout, index=index, policy=FAST)
        assert (result.version, result.attempts, result.applied) == (1, 1, True)
        after = read_state(database, state, layout=layout, index=index, policy=FAST)
        expected = before.copy()
        hit = expected["product_code"].isin(codes)
        expected.loc[hit, "reco_count"] += 1
        expected.loc[hit, "reward"] += 1.0
        pd.testing.assert_frame_equal(after, expected, check_exact=True)
        got, _ = import_snapshot(database, layout=layout, index=index, policy=FAST)
        others = frame["state"] != state
        pd.testing.assert_frame_equal(
            got[got["state"] != state].reset_index(drop=True),
            frame[others].reset_index(drop=True),
            check_exact=True,
        )

    @pytest.mark.parametrize("layout", LAYOUTS)
    def test_export_after_a_visit_restores_the_visited_state(
        self, database: Any, layout: str
    ) -> None:
        frame = synthetic_snapshot(3, 4, 8)
        export_snapshot(database, frame, manifest(), layout=layout, policy=FAST)
        state = frame["state"].iloc[2]
        apply_visit(
            database,
            state,
            _bump(frame["product_code"][8:9].tolist()),
            layout=layout,
            index=code_index(frame),
            policy=FAST,
        )
        report = export_snapshot(database, frame, manifest(), layout=layout, policy=FAST)
        assert report.states_written == 1
        got, _ = import_snapshot(database, layout=layout, index=code_index(frame), policy=FAST)
        pd.testing.assert_frame_equal(got, frame, check_exact=True)
        assert database[STATE_VERSIONS].find_one({"state": state}) is None
        # and the state accepts visits again from version 0
        again = apply_visit(
            database, state, _bump([]), layout=layout, index=code_index(frame), policy=FAST
        )
        assert again.version == 1

    @pytest.mark.parametrize("layout", LAYOUTS)
    def test_visit_to_a_state_without_documents_creates_them(
        self, database: Any, layout: str
    ) -> None:
        frame = synthetic_snapshot(2, 2, 6)
        export_snapshot(database, frame, manifest(), layout=layout, policy=FAST)
        state = STEP_STATE_ID if STEP_STATE_ID not in set(frame["state"]) else "Q4_May_1_Sunday"
        assert read_state(database, state, layout=layout, policy=FAST).empty
        step = _new_cells(state, {"NEW.1": 3.0, "$NEW": -2.0})
        apply_visit(database, state, step, layout=layout, policy=FAST)
        got = read_state(database, state, layout=layout, policy=FAST)
        got = got.sort_values("product_code", ignore_index=True)
        assert got["product_code"].tolist() == ["$NEW", "NEW.1"]
        assert got["reco_count"].tolist() == [1, 1]
        assert got["value"].tolist() == [-2.0, 3.0]
        if layout == "seed":
            doc = database["rlValuedic"].find_one({state: {"$exists": True}})
            assert doc == {"_id": state, state: {"%24NEW": -2.0, "NEW%2E1": 3.0}, "_v": 1}

    @pytest.mark.parametrize("layout", LAYOUTS)
    def test_concurrent_visits_to_one_state_lose_no_update(
        self, database: Any, layout: str
    ) -> None:
        frame = synthetic_snapshot(2, 3, 6)
        frame = frame[frame["state"] == STEP_STATE_ID].reset_index(drop=True)
        known = frame["product_code"].tolist()[:2]
        export_snapshot(database, frame, manifest(), layout=layout, policy=FAST)
        index = code_index(frame)
        index = CodeIndex(index.states, {**index.products, "NEW": 99})
        threads, visits = 8, self.visits_per_thread
        errors: list[BaseException] = []

        def worker(tid: int) -> None:
            try:
                for k in range(visits):
                    r = float((tid + k) % 5 - 2)  # small integers: sums are exact in any order
                    step = reference_step({known[0]: r, known[1]: -r, "NEW": 1.0}, 0.5, {"NEW": 99})
                    apply_visit(
                        database,
                        STEP_STATE_ID,
                        step,
                        layout=layout,
                        index=index,
                        policy=FAST,
                        max_conflicts=100_000,
                    )
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)

        pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        assert not errors, errors
        n = threads * visits
        got = read_state(database, STEP_STATE_ID, layout=layout, index=index, policy=FAST)
        got = got.set_index("product_code")
        start = frame.set_index("product_code")
        for code in known:
            assert got.loc[code, "reco_count"] == start.loc[code, "reco_count"] + n
            assert got.loc[code, "count"] == start.loc[code, "count"] + n
        total_r = sum(float((t + k) % 5 - 2) for t in range(threads) for k in range(visits))
        assert got.loc[known[0], "reward"] == start.loc[known[0], "reward"] + total_r
        assert got.loc[known[1], "reward"] == start.loc[known[1], "reward"] - total_r
        assert (got.loc["NEW", "reco_count"], got.loc["NEW", "reward"]) == (n, 0.5 + n)
        assert got.loc["NEW", "value"] == 1.0
        record = database[STATE_VERSIONS].find_one({"state": STEP_STATE_ID})
        assert record["v"] == n


def _bump(codes: list[str]) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """Step adding 1 to reco_count and reward of known products ``codes``."""

    def step(cells: pd.DataFrame) -> pd.DataFrame:
        out = cells[cells["product_code"].isin(codes)].copy()
        out["reco_count"] += 1
        out["reward"] += 1.0
        return out

    return step


def _new_cells(state: str, values: dict[str, float]) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """Step creating products ``values`` (code -> value) in a state without cells."""
    segment, month, half, weekday = state.split("_")

    def step(cells: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "state_id": -1,
                "state": state,
                "segment": segment,
                "month": month,
                "half": int(half),
                "weekday": weekday,
                "product_id": range(len(values)),
                "product_code": list(values),
                "value": list(values.values()),
                "reward": 0.0,
                "count": 1,
                "reco_count": 1,
            }
        )

    return step


@pytest.fixture
def real_database() -> Iterator[Any]:
    """A fresh database on the server of ``RLRECO_MONGO_URI`` (dropped afterwards)."""
    uri = os.environ.get(MONGO_URI_ENV)
    if not uri:
        pytest.skip(NO_SERVER)
    from uuid import uuid4

    from rlreco.io.mongo import connect

    client = connect(uri, 5000)
    name = f"rlreco_test_{uuid4().hex[:12]}"
    try:
        yield client[name]
    finally:
        client.drop_database(name)
        client.close()


__all__ = [
    "AWKWARD_CODES",
    "FAST",
    "NO_SERVER",
    "LostReply",
    "MongoSuite",
    "SerialDatabase",
    "code_index",
    "contents",
    "fail_on",
    "manifest",
    "new_mongomock_db",
    "real_database",
    "synthetic_snapshot",
]
