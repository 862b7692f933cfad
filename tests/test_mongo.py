"""MongoDB sync semantics: the shared suite on mongomock and on a real server, plus faults.

The real-server run needs ``RLRECO_MONGO_URI`` (e.g. ``mongodb://localhost:27017``); without
it those tests are skipped with the reason shown by ``pytest -ra``.
"""

from __future__ import annotations

import random
from typing import Any

import pandas as pd
import pytest
from bson import BSON
from mongo_suite import (
    AWKWARD_CODES,
    FAST,
    LostReply,
    MongoSuite,
    SerialDatabase,
    code_index,
    contents,
    fail_on,
    manifest,
    new_mongomock_db,
    real_database,
    synthetic_snapshot,
)
from pymongo.errors import AutoReconnect, NotPrimaryError, OperationFailure

import rlreco.io.mongo_visit
from rlreco.errors import SyncError
from rlreco.io.mongo import (
    RetryPolicy,
    apply_visit,
    export_snapshot,
    import_snapshot,
    read_state,
    redact_uri,
)
from rlreco.io.mongo_layout import (
    BIG_INT,
    CELLS,
    STATE_VERSIONS,
    SYNC_STATE,
    decode_manifest,
    encode_manifest,
    escape_field,
    format_state,
    parse_state,
    unescape_field,
)

__all__ = ["real_database"]  # fixture used by TestRealServer


class TestMongomock(MongoSuite):
    """The suite on mongomock (operations serialised, as a server's are atomic)."""

    # mongomock runs the threads of the concurrency test under the GIL: fewer visits
    visits_per_thread = 25

    @pytest.fixture
    def database(self) -> SerialDatabase:
        return new_mongomock_db()


@pytest.mark.mongo
class TestRealServer(MongoSuite):
    """The suite on the server of RLRECO_MONGO_URI (skipped without it)."""

    @pytest.fixture
    def database(self, real_database: Any) -> Any:
        return real_database


# ---------------------------------------------------------------- layout and helpers


@pytest.mark.parametrize("name", ["85123A", "A.B", "$X", "50%", "%2E", "a\x00b", "$.%$.", ""])
def test_escaped_field_names_are_valid_and_reversible(name: str) -> None:
    escaped = escape_field(name)
    assert "." not in escaped and "\x00" not in escaped and "$" not in escaped
    assert unescape_field(escaped) == name


def test_escaping_is_reversible_on_random_strings() -> None:
    rng = random.Random(5)
    for _ in range(2000):
        name = "".join(rng.choice("%.$\x00a2E5") for _ in range(rng.randint(0, 8)))
        assert unescape_field(escape_field(name)) == name


def test_plain_codes_are_stored_unchanged() -> None:
    assert escape_field("85123A") == "85123A"
    assert escape_field("Q1_December_0_Thursday") == "Q1_December_0_Thursday"


def test_manifest_encoding_is_bson_safe_and_exact() -> None:
    manifest = {
        "rng_state": {"state": {"state": 2**127 + 3, "inc": -(2**64)}},
        "n": 2**63 - 1,
        "a.b": [1, {"$x": True}],
        "%int": "kept",
        "nested": {"%int": 5},
    }
    encoded = encode_manifest(manifest)
    assert encoded["rng_state"]["state"]["state"] == {BIG_INT: str(2**127 + 3)}
    assert encoded["n"] == 2**63 - 1  # fits int64: stored as a number
    assert "a%2Eb" in encoded and "%24x" in encoded["a%2Eb"][1]
    BSON.encode(encoded)  # raises if a key or an integer is not storable
    assert decode_manifest(encoded) == manifest


def test_state_ids_are_escaped_values_joined_and_parse_back() -> None:
    assert parse_state("Q1_December_0_Thursday") == ("Q1", "December", 0, "Thursday")
    # a value holding "_" or "%" is escaped, so ids split back exactly
    assert format_state("big_spender", "May", 1, "Sunday") == "big%5Fspender_May_1_Sunday"
    assert parse_state("big%5Fspender_May_1_Sunday") == ("big_spender", "May", 1, "Sunday")
    fields = ("segment", "country", "hour")
    for values in [("Q1", "United Kingdom", 6), ("a%5F_b", "%", 20), ("_", "__", 0)]:
        assert parse_state(format_state(*values), fields) == values
    with pytest.raises(SyncError, match="segment_month_half_weekday"):
        parse_state("Q1_December_x_Thursday")  # half is an integer
    with pytest.raises(SyncError, match="segment_month_half_weekday"):
        parse_state("Q1December")
    with pytest.raises(SyncError, match="segment_country_hour"):
        parse_state("Q1_December_0_Thursday", fields)


def test_uri_credentials_are_redacted() -> None:
    assert redact_uri("mongodb://bob:s3cret@h:1/db") == "mongodb://***@h:1/db"
    assert redact_uri("mongodb://bob:p@ss@h:1") == "mongodb://***@h:1"
    assert redact_uri("mongodb://h:1") == "mongodb://h:1"


def test_backoff_grows_and_is_capped() -> None:
    policy = RetryPolicy(attempts=6, base_delay_s=0.1, max_delay_s=0.5)
    assert [policy.delay(k) for k in range(1, 6)] == [0.1, 0.2, 0.4, 0.5, 0.5]
    with pytest.raises(SyncError, match="attempts >= 1"):
        RetryPolicy(attempts=0)


# ---------------------------------------------------------------- faults (mongomock)


@pytest.mark.parametrize("layout", ["seed", "tidy"])
def test_escaped_codes_round_trip(layout: str) -> None:
    db = new_mongomock_db()
    frame = synthetic_snapshot(2, 5, 5, codes=AWKWARD_CODES)
    export_snapshot(db, frame, manifest(), layout=layout, policy=FAST)
    got, _ = import_snapshot(db, layout=layout, index=code_index(frame), policy=FAST)
    pd.testing.assert_frame_equal(got, frame, check_exact=True)
    if layout == "seed":
        doc = db["rlValuedic"].find_one({"_id": frame["state"][0]})
        assert {"A%2EB", "%24X", "50%25OFF", "C%2E%24%2E%252E"} <= set(doc[frame["state"][0]])


@pytest.mark.parametrize("layout", ["seed", "tidy"])
def test_transient_faults_are_retried(layout: str) -> None:
    target = CELLS if layout == "tidy" else "rlValuedic"
    frame = synthetic_snapshot(4, 3, 8)
    clean = new_mongomock_db()
    base = export_snapshot(clean, frame, manifest(), layout=layout, policy=FAST)
    db = new_mongomock_db(fail_on(target, "bulk_write", NotPrimaryError("not primary"), times=2))
    report = export_snapshot(db, frame, manifest(), layout=layout, policy=FAST)
    assert report.round_trips > base.round_trips
    assert contents(db) == contents(clean)


def test_lost_reply_of_an_applied_bulk_is_retried_without_duplicates() -> None:
    frame = synthetic_snapshot(4, 3, 8)
    clean = new_mongomock_db()
    export_snapshot(clean, frame, manifest(), layout="tidy", batch_size=4, policy=FAST)
    db = new_mongomock_db(fail_on(CELLS, "bulk_write", LostReply("connection reset"), skip=1))
    export_snapshot(db, frame, manifest(), layout="tidy", batch_size=4, policy=FAST)
    assert contents(db) == contents(clean)
    assert len(list(db[CELLS].find({}))) == len(frame)


def test_transient_fault_outlasting_the_retries_is_one_line() -> None:
    db = new_mongomock_db(fail_on(CELLS, "bulk_write", AutoReconnect("reset"), times=10))
    with pytest.raises(SyncError) as info:
        export_snapshot(db, synthetic_snapshot(2, 2, 4), manifest(), layout="tidy", policy=FAST)
    message = str(info.value)
    assert "\n" not in message
    assert "MongoDB at mongomock" in message and "after 3 attempts" in message


def test_non_transient_error_surfaces_at_once() -> None:
    calls = {"n": 0}

    def fault(coll: str, meth: str) -> Exception | None:
        if (coll, meth) == (CELLS, "bulk_write"):
            calls["n"] += 1
            return OperationFailure("not authorized on rlreco_test", code=13)
        return None

    db = new_mongomock_db(fault)
    with pytest.raises(SyncError, match=r"not authorized on rlreco_test \(code 13\)") as info:
        export_snapshot(db, synthetic_snapshot(2, 2, 4), manifest(), layout="tidy", policy=FAST)
    assert calls["n"] == 1
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("layout", ["seed", "tidy"])
@pytest.mark.parametrize("skip", [0, 1])
def test_interrupted_export_completes_when_run_again(layout: str, skip: int) -> None:
    frame = synthetic_snapshot(6, 3, 10)
    older = synthetic_snapshot(7, 3, 10, seed=9)  # a previous export of the same run
    target = CELLS if layout == "tidy" else "rlRewarddic"
    clean = new_mongomock_db()
    export_snapshot(clean, older, manifest(), layout=layout, batch_size=4, policy=FAST)
    export_snapshot(clean, frame, manifest(), layout=layout, batch_size=4, policy=FAST)
    db = new_mongomock_db()
    export_snapshot(db, older, manifest(), layout=layout, batch_size=4, policy=FAST)
    db.fault = fail_on(target, "bulk_write", OperationFailure("disk full", code=14031), skip=skip)
    with pytest.raises(SyncError, match="disk full"):
        export_snapshot(db, frame, manifest(), layout=layout, batch_size=4, policy=FAST)
    db.fault = None
    report = export_snapshot(db, frame, manifest(), layout=layout, batch_size=4, policy=FAST)
    assert report.states_written > 0
    assert contents(db) == contents(clean)
    got, _ = import_snapshot(db, layout=layout, index=code_index(frame), policy=FAST)
    pd.testing.assert_frame_equal(got, frame, check_exact=True)


def test_round_trips_are_one_or_two_commands_per_batch() -> None:
    frame = synthetic_snapshot(10, 30, 100)  # 300 cells: 3 batches of 100
    db = new_mongomock_db()
    report = export_snapshot(db, frame, manifest(), layout="tidy", batch_size=100, policy=FAST)
    assert report.collections[CELLS].written == 300
    # per batch: one cells command; then one for the digests; fixed: 4 queries, the index,
    # the manifest
    assert report.round_trips == 3 + 1 + 6
    again = export_snapshot(
        db,
        frame.assign(value=frame["value"] + 1),
        manifest(),
        layout="tidy",
        batch_size=100,
        policy=FAST,
    )
    # a rewrite also deletes vanished cells (one more command per batch); manifest unchanged
    assert again.round_trips == 2 * 3 + 1 + 4
    assert again.collections[CELLS].written == 300


# ---------------------------------------------------------------- visits (mongomock)


def _visit(codes: list[str], r: float = 1.0) -> Any:
    def step(cells: pd.DataFrame) -> pd.DataFrame:
        out = cells[cells["product_code"].isin(codes)].copy()
        out["reco_count"] += 1
        out["count"] += 1
        out["reward"] += r
        out["value"] += (r - out["value"]) / out["reco_count"]
        return out

    return step


@pytest.mark.parametrize("layout", ["seed", "tidy"])
def test_visit_that_loses_the_commit_reruns_its_step_on_fresh_cells(layout: str) -> None:
    db = new_mongomock_db()
    frame = synthetic_snapshot(1, 3, 5)
    export_snapshot(db, frame, manifest(), layout=layout, policy=FAST)
    state, code = frame["state"][0], frame["product_code"][0]
    seen: list[int] = []

    def step(cells: pd.DataFrame) -> pd.DataFrame:
        seen.append(int(cells.loc[cells["product_code"] == code, "reco_count"].iloc[0]))
        if len(seen) == 1:  # another visit commits while this one computes
            apply_visit(db, state, _visit([code]), layout=layout, policy=FAST)
        return _visit([code])(cells)

    result = apply_visit(db, state, step, layout=layout, policy=FAST)
    start = int(frame["reco_count"][0])
    assert seen == [start, start + 1]
    assert (result.attempts, result.version) == (2, 2)
    got = read_state(db, state, layout=layout, policy=FAST)
    assert got.loc[got["product_code"] == code, "reco_count"].iloc[0] == start + 2


@pytest.mark.parametrize("layout", ["seed", "tidy"])
def test_visit_interrupted_after_its_commit_is_completed_by_the_next_read(layout: str) -> None:
    db = new_mongomock_db()
    frame = synthetic_snapshot(1, 3, 5)
    export_snapshot(db, frame, manifest(), layout=layout, policy=FAST)
    state, codes = frame["state"][0], frame["product_code"][:2].tolist()
    expected = _visit(codes, 5.0)(frame.copy())
    target, method = ("rlValuedic", "update_one") if layout == "seed" else (CELLS, "bulk_write")
    db.fault = fail_on(target, method, OperationFailure("node died", code=1))
    result = apply_visit(db, state, _visit(codes, 5.0), layout=layout, policy=FAST)
    assert not result.applied
    db.fault = None
    if layout == "seed":  # written up to the failure, in the documented order
        assert db["rlQuantdic"].find_one({"_id": state})["_v"] == 1
        assert "_v" not in db["rlValuedic"].find_one({"_id": state})
    got = read_state(db, state, layout=layout, policy=FAST).set_index("product_code")
    for _, row in expected.iterrows():
        for column in ("value", "reward", "count", "reco_count"):
            assert got.loc[row["product_code"], column] == row[column]
    if layout == "seed":
        assert {
            db[n].find_one({"_id": state})["_v"]
            for n in ("rlQuantdic", "rlRecotrack", "rlValuedic", "rlRewarddic")
        } == {1}


@pytest.mark.parametrize("layout", ["seed", "tidy"])
def test_commit_whose_reply_was_lost_is_not_applied_twice(layout: str) -> None:
    db = new_mongomock_db()
    frame = synthetic_snapshot(1, 2, 4)
    export_snapshot(db, frame, manifest(), layout=layout, policy=FAST)
    state, code = frame["state"][0], frame["product_code"][0]
    db.fault = fail_on(STATE_VERSIONS, "update_one", LostReply("reply lost"))
    result = apply_visit(db, state, _visit([code]), layout=layout, policy=FAST)
    assert (result.version, result.attempts, result.applied) == (1, 1, True)
    got = read_state(db, state, layout=layout, policy=FAST)
    assert got["reco_count"][0] == frame["reco_count"][0] + 1


def test_documents_newer_than_their_version_record_give_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(rlreco.io.mongo_visit, "READ_ATTEMPTS", 3)
    db = new_mongomock_db()
    frame = synthetic_snapshot(1, 2, 4)
    export_snapshot(db, frame, manifest(), layout="seed", policy=FAST)
    state = frame["state"][0]
    db["rlValuedic"].update_one({"_id": state}, {"$set": {"_v": 4}})  # an export died here
    with pytest.raises(SyncError, match="re-run export-mongo"):
        read_state(db, state, layout="seed", policy=FAST)


def test_visit_step_output_is_checked() -> None:
    db = new_mongomock_db()
    frame = synthetic_snapshot(2, 2, 4)
    export_snapshot(db, frame, manifest(), layout="tidy", policy=FAST)
    state, other = frame["state"][0], frame["state"].iloc[-1]
    with pytest.raises(SyncError, match="lacks column"):
        apply_visit(db, state, lambda c: c.drop(columns="value"), layout="tidy", policy=FAST)
    with pytest.raises(SyncError, match=f"returned a cell of state {other}"):
        apply_visit(db, state, lambda c: frame[frame["state"] == other], layout="tidy", policy=FAST)
    with pytest.raises(SyncError, match="not of the form"):
        read_state(db, "Q1-May", layout="tidy", policy=FAST)
    assert db[STATE_VERSIONS].find_one({}) is None


def test_visit_invalidates_the_export_digest_of_its_state() -> None:
    db = new_mongomock_db()
    frame = synthetic_snapshot(2, 2, 4)
    export_snapshot(db, frame, manifest(), layout="seed", policy=FAST)
    state = frame["state"][0]
    assert db[SYNC_STATE].find_one({"state": state}) is not None
    apply_visit(db, state, _visit([]), layout="seed", policy=FAST)
    assert db[SYNC_STATE].find_one({"state": state}) is None
    assert db[SYNC_STATE].find_one({"state": frame["state"].iloc[-1]}) is not None


def test_seed_import_of_a_database_written_by_the_original() -> None:
    db = new_mongomock_db()
    # prodConsolidator writes counts, values and rewards; rlRecotrack starts empty
    db["rlQuantdic"].insert_one({"Q1_May_0_Friday": {"85123A": 6, "22423": 2}})
    db["rlValuedic"].insert_one({"Q1_May_0_Friday": {"85123A": 5.87, "22423": 2.1}})
    db["rlRewarddic"].insert_one({"Q1_May_0_Friday": {"85123A": 6.2, "22423": 1.55}})
    got, meta = import_snapshot(db, layout="seed", policy=FAST)
    assert meta is None
    assert got["product_code"].tolist() == ["22423", "85123A"]
    assert got["count"].tolist() == [2, 6] and got["reco_count"].tolist() == [0, 0]
    assert got["value"].tolist() == [2.1, 5.87]
    assert (got["segment"][0], got["month"][0], got["half"][0], got["weekday"][0]) == (
        "Q1",
        "May",
        0,
        "Friday",
    )
