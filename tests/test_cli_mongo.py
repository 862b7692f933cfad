"""`rlreco export-mongo`, `import-mongo` and `recommend` end to end against mongomock.

The CLI runs unchanged; only the connect function of :mod:`rlreco.app.mongo_sync` and
:mod:`rlreco.app.recommend` is replaced by
one returning a shared (patched) mongomock client. Real-server runs of the same MongoDB code go
through the ``RLRECO_MONGO_URI``-gated suite in ``tests/test_mongo.py``.
"""

from __future__ import annotations

import json
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mongomock
import numpy as np
import pandas as pd
import pytest
from helpers import AWKWARD_CODES, write_transactions
from mongo_suite import patch_mongomock
from typer.testing import CliRunner

import rlreco.app.mongo_sync
import rlreco.app.recommend
import rlreco.io.mongo
from rlreco.app.prepare import prepare
from rlreco.cli import app
from rlreco.config import RunConfig
from rlreco.engine.state_space import StateSpace
from rlreco.engine.tables import Tables
from rlreco.io.mongo_layout import CELLS, RUNS, SEED_COLLECTIONS, escape_field
from rlreco.io.run_dir import MANIFEST, RunDir

runner = CliRunner()
LAYOUTS = ("seed", "tidy")
URI = "mongodb://alice:s3cr3t-pw@db.example:27017/?authSource=admin"
PASSWORD = "s3cr3t-pw"


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prepared run of the small CSV (168 states, ~460 known cells); copy before changing."""
    root = tmp_path_factory.mktemp("prepared")
    write_transactions(root / "tx.csv")
    prepare(RunConfig(), out=root / "run", data=root / "tx.csv")
    return root / "run"


@pytest.fixture
def run(prepared: Path, tmp_path: Path) -> Path:
    """A private copy of the prepared run."""
    return Path(shutil.copytree(prepared, tmp_path / "run"))


@pytest.fixture
def mongo(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A mongomock client that every ``connect`` of :mod:`rlreco.app` returns."""
    patch_mongomock()
    client = mongomock.MongoClient()
    seen: list[str] = []

    def connect(uri: str, timeout_ms: int = 5000, **kwargs: Any) -> Any:
        seen.append(uri)
        return client

    monkeypatch.setattr(rlreco.app.mongo_sync, "connect", connect)
    monkeypatch.setattr(rlreco.app.recommend, "connect", connect)
    yield client
    assert set(seen) <= {URI}


def invoke(*args: str) -> Any:
    return runner.invoke(app, [str(a) for a in args])


def invoke_json(*args: str) -> dict[str, Any]:
    result = invoke(*args, "--json")
    assert result.exit_code == 0, result.output
    assert PASSWORD not in result.output
    out: dict[str, Any] = json.loads(result.stdout)
    return out


def one_line_error(result: Any) -> str:
    """The single stderr line of a failed command (exit code 2, no traceback)."""
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr and PASSWORD not in result.output
    line: str = lines[0]
    return line


def tables_of(path: Path, space: StateSpace) -> Tables:
    return Tables.from_columns(RunDir.open(path).read_snapshot(), space)


def space_of(path: Path) -> StateSpace:
    return StateSpace.from_columns(RunDir.open(path).read_space())


# ------------------------------------------------------------------ export and import


@pytest.mark.parametrize("layout", LAYOUTS)
def test_export_then_import_is_exact(mongo: Any, run: Path, tmp_path: Path, layout: str) -> None:
    space = space_of(run)
    assert set(AWKWARD_CODES) <= set(RunDir.open(run).read_snapshot()["product_code"])
    report = invoke_json("export-mongo", run, "--uri", URI, "--layout", layout)
    n_states = int(tables_of(run, space).known.any(axis=1).sum())
    assert report["states_written"] == n_states and report["states_deleted"] == 0
    assert report["uri"] == "mongodb://***@db.example:27017/?authSource=admin"
    if layout == "seed":
        for name in SEED_COLLECTIONS.values():
            assert report["collections"][name]["written"] == n_states
    out = tmp_path / "imported"
    summary = invoke_json(
        "import-mongo", "--uri", URI, "--run", run, "--out", out, "--layout", layout
    )
    assert (summary["states"], summary["episodes"]) == (n_states, 0)
    assert tables_of(out, space).equals(tables_of(run, space))
    assert (out / "state_space" / "products.parquet").read_bytes() == (
        run / "state_space" / "products.parquet"
    ).read_bytes()
    original, imported = RunDir.open(run).manifest, RunDir.open(out).manifest
    assert imported["imported_from"]["layout"] == layout
    assert imported["data"] == original["data"]
    # tidy restores the same run (so its re-export writes nothing); seed has no run metadata
    assert (imported["run_id"] == original["run_id"]) == (layout == "tidy")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_second_export_writes_nothing(mongo: Any, run: Path, layout: str) -> None:
    invoke_json("export-mongo", run, "--uri", URI, "--layout", layout)
    db = mongo["rlRecomendation"]
    before = {n: list(db[n].find({})) for n in db.list_collection_names()}
    again = invoke_json("export-mongo", run, "--uri", URI, "--layout", layout)
    assert again["documents_written"] == 0 and again["states_written"] == 0
    assert {n: list(db[n].find({})) for n in db.list_collection_names()} == before


def test_seed_documents_escape_awkward_codes(mongo: Any, run: Path) -> None:
    invoke_json("export-mongo", run, "--uri", URI, "--db", "other")
    snap = pd.DataFrame(RunDir.open(run).read_snapshot())
    row = snap[snap["product_code"] == "A.B"].iloc[0]
    doc = mongo["other"]["rlValuedic"].find_one({row["state"]: {"$exists": True}})
    assert doc[row["state"]][escape_field("A.B")] == row["value"]
    assert "A%2EB" in doc[row["state"]]


def test_tidy_import_restores_episodes_and_a_128_bit_rng_state(
    mongo: Any, run: Path, tmp_path: Path
) -> None:
    manifest = json.loads((run / MANIFEST).read_text())
    rng_state = np.random.PCG64(5).state  # 128-bit integers: beyond BSON's int64
    manifest.update(episodes=1234, rng_state=rng_state)
    (run / MANIFEST).write_text(json.dumps(manifest))
    invoke_json("export-mongo", run, "--uri", URI, "--layout", "tidy")
    assert mongo["rlRecomendation"][RUNS].count_documents({}) == 1
    out = tmp_path / "back"
    summary = invoke_json(
        "import-mongo", "--uri", URI, "--run", run, "--out", out, "--layout", "tidy"
    )
    assert summary["episodes"] == 1234
    back = RunDir.open(out)
    assert back.manifest["rng_state"] == rng_state
    assert back.visits == 1234 and back.manifest["metrics"] is None
    space = space_of(run)
    assert Tables.from_columns(back.read_snapshot("initial"), space).equals(
        Tables.from_columns(RunDir.open(run).read_snapshot("initial"), space)
    )
    assert tables_of(out, space).equals(tables_of(run, space))


def test_human_export_report(mongo: Any, run: Path) -> None:
    result = invoke("export-mongo", run, "--uri", URI, "--layout", "tidy")
    assert result.exit_code == 0, result.output
    for needle in ("mongodb://***@db.example", "cells: documents written", "round trips"):
        assert needle in result.stdout
    assert PASSWORD not in result.output


@pytest.mark.parametrize("command", ["export-mongo", "import-mongo"])
def test_unreachable_server_is_one_line_without_the_password(
    run: Path, tmp_path: Path, command: str
) -> None:
    with socket.socket() as sock:  # a loopback port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    uri = f"mongodb://alice:{PASSWORD}@127.0.0.1:{port}/"
    args = [run] if command == "export-mongo" else ["--run", run, "--out", tmp_path / "o"]
    result = invoke(command, *args, "--uri", uri, "--timeout-ms", "300")
    line = one_line_error(result)
    assert f"cannot reach MongoDB at 127.0.0.1:{port}" in line
    assert not (tmp_path / "o").exists()


def test_bad_layout_and_malformed_uri_are_one_line(run: Path) -> None:
    line = one_line_error(invoke("export-mongo", run, "--uri", URI, "--layout", "wide"))
    assert "layout must be 'seed' or 'tidy'" in line
    line = one_line_error(invoke("export-mongo", run, "--uri", f"mongodb://a:{PASSWORD}@"))
    assert "MongoDB URI" in line


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (
            lambda db, state: db["rlValuedic"].insert_one({"Q9_May_0_Monday": {"21001": 1.0}}),
            "state 'Q9_May_0_Monday' is not in the state space of",
        ),
        (
            lambda db, state: db["rlValuedic"].update_one(
                {"_id": state}, {"$set": {f"{state}.NOPE": 1.0}}
            ),
            "product 'NOPE' (state ",
        ),
    ],
)
def test_import_of_cells_outside_the_state_space_is_one_line(
    mongo: Any, run: Path, tmp_path: Path, edit: Any, needle: str
) -> None:
    invoke_json("export-mongo", run, "--uri", URI)
    state = RunDir.open(run).read_snapshot()["state"][0]
    edit(mongo["rlRecomendation"], state)
    out = tmp_path / "o"
    line = one_line_error(invoke("import-mongo", "--uri", URI, "--run", run, "--out", out))
    assert needle in line and str(run) in line
    assert not out.exists()


def test_tidy_cell_with_a_foreign_product_id_is_refused(
    mongo: Any, run: Path, tmp_path: Path
) -> None:
    invoke_json("export-mongo", run, "--uri", URI, "--layout", "tidy")
    cells = mongo["rlRecomendation"][CELLS]
    doc = cells.find_one({"product_code": "A.B"})
    cells.update_one({"_id": doc["_id"]}, {"$set": {"product_id": doc["product_id"] + 1}})
    line = one_line_error(
        invoke(
            "import-mongo", "--uri", URI, "--run", run, "--out", tmp_path / "o", "--layout", "tidy"
        )
    )
    assert "has product_id" in line and "'A.B'" in line


def test_import_of_a_product_outside_its_segment_catalogue_is_refused(
    mongo: Any, run: Path, tmp_path: Path
) -> None:
    space = space_of(run)
    sizes = np.diff(space.catalogue_ptr)
    segment = int(np.argmin(sizes))
    assert sizes[segment] < space.n_products  # the fixture has a segment missing some product
    outside = sorted(set(range(space.n_products)) - set(space.catalogue(segment).tolist()))[0]
    code = str(space.product_codes[outside])
    state = str(space.state_ids[np.flatnonzero(space.state_segment == segment)[0]])
    invoke_json("export-mongo", run, "--uri", URI)
    mongo["rlRecomendation"]["rlValuedic"].update_one(
        {"_id": state}, {"$set": {f"{state}.{escape_field(code)}": 1.0}}, upsert=True
    )
    line = one_line_error(
        invoke("import-mongo", "--uri", URI, "--run", run, "--out", tmp_path / "o")
    )
    assert f"product {code!r} of state {state} is not in the catalogue of segment" in line


# ------------------------------------------------------------------ online visits

STATE = "Q4_January_1_Friday"  # a state of the fixture with known products


def visit_json(*args: Any) -> dict[str, Any]:
    return invoke_json("recommend", *args)


def check_update(report: dict[str, Any], before: Tables, after: Tables, state_id: int) -> None:
    """Every slate cell got the kernel update; nothing else changed."""
    slate = [item["product_id"] for item in report["slate"]]
    for item in report["slate"]:
        p, r = item["product_id"], item["reward"]
        assert after.reco_count[state_id, p] == before.reco_count[state_id, p] + 1
        assert after.count[state_id, p] == before.count[state_id, p] + 1
        if np.isfinite(before.value[state_id, p]):
            assert after.reward[state_id, p] == before.reward[state_id, p] + r
            old = before.value[state_id, p]
            assert after.value[state_id, p] == old + (r - old) / after.reco_count[state_id, p]
        else:
            assert item["before"] is None and after.value[state_id, p] == r
        assert item["after"]["value"] == after.value[state_id, p]
    untouched = np.ones(before.shape, dtype=bool)
    untouched[state_id, slate] = False
    assert np.array_equal(before.value[untouched], after.value[untouched])
    assert np.array_equal(before.cells[untouched], after.cells[untouched])


def test_recommend_on_a_run_dir_updates_the_slate_cells(run: Path) -> None:
    space = space_of(run)
    before = tables_of(run, space)
    report = visit_json(run, "--state", STATE)
    state_id = space.state_index()[STATE]
    assert (report["state"], report["state_id"], report["episodes"]) == (STATE, state_id, 1)
    slate = [item["product_id"] for item in report["slate"]]
    catalogue = space.catalogue(int(space.state_segment[state_id])).tolist()
    assert len(set(slate)) == len(slate) == report["slate_size"] == 10
    assert set(slate) <= set(catalogue)
    assert {i["outcome"] for i in report["slate"]} <= {"ignored", "clicked", "bought"}
    assert all(i["description"] == f"ITEM {i['product_code']}" for i in report["slate"])
    check_update(report, before, tables_of(run, space), state_id)
    assert report["total_reward"] == pytest.approx(sum(i["reward"] for i in report["slate"]))
    after = RunDir.open(run)
    assert after.visits == 1 and after.read_metrics()["visits"].tolist() == [1]


def test_given_response_updates_exactly_the_named_cells(run: Path) -> None:
    space = space_of(run)
    before = tables_of(run, space)
    preview = visit_json(run, "--state", STATE, "--respond", "none")
    assert RunDir.open(run).visits == 0 and tables_of(run, space).equals(before)
    codes = [i["product_code"] for i in preview["slate"]]
    report = visit_json(
        run, "--state", STATE, "--clicked", f"{codes[0]},{codes[1]}", "--bought", codes[1]
    )
    assert [i["product_code"] for i in report["slate"]] == codes  # same key, same slate
    outcomes = [i["outcome"] for i in report["slate"]]
    assert outcomes == ["clicked", "bought"] + ["ignored"] * 8
    assert (report["clicks"], report["buys"], report["respond"]) == (2, 1, "given")
    check_update(report, before, tables_of(run, space), space.state_index()[STATE])


def test_recommend_is_deterministic(run: Path, tmp_path: Path) -> None:
    twin = Path(shutil.copytree(run, tmp_path / "twin"))
    first, second = visit_json(run), visit_json(twin)
    assert first["slate"] == second["slate"] and first["state"] == second["state"]
    space = space_of(run)
    assert tables_of(run, space).equals(tables_of(twin, space))
    assert visit_json(run)["visit"] == 1  # the next visit has the next key


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--state", "Q9_May_0_Monday"], "state 'Q9_May_0_Monday' is not in the state space"),
        (["--clicked", "NOPE"], "product 'NOPE' given in --clicked is not a product of"),
        (["--state", STATE, "--bought", "21000,X.Y"], "product 'X.Y' given in --bought is not"),
        (["--respond", "maybe"], "respond 'maybe'"),
    ],
)
def test_bad_visit_requests_are_one_line_and_change_nothing(
    run: Path, args: list[str], needle: str
) -> None:
    before = (run / MANIFEST).read_text()
    line = one_line_error(invoke("recommend", run, *args))
    assert needle in line
    assert (run / MANIFEST).read_text() == before


def test_given_product_outside_the_slate_is_refused(run: Path) -> None:
    space = space_of(run)
    preview = visit_json(run, "--state", STATE, "--respond", "none")
    shown = {i["product_code"] for i in preview["slate"]}
    other = next(str(c) for c in space.product_codes if str(c) not in shown)
    line = one_line_error(invoke("recommend", run, "--state", STATE, "--clicked", other))
    assert f"product {other!r} given in --clicked is not in the slate" in line
    assert RunDir.open(run).visits == 0


@pytest.mark.parametrize("layout", LAYOUTS)
def test_recommend_via_mongodb_updates_only_that_state(mongo: Any, run: Path, layout: str) -> None:
    space = space_of(run)
    invoke_json("export-mongo", run, "--uri", URI, "--layout", layout)
    manifest_before = (run / MANIFEST).read_text()
    report = visit_json(run, "--uri", URI, "--layout", layout, "--state", STATE, "--visit", "7")
    assert (report["version"], report["attempts"], report["visit"]) == (1, 1, 7)
    assert report["source"].startswith("mongodb://***@db.example")
    assert (run / MANIFEST).read_text() == manifest_before  # the run directory is only read
    frame, _ = rlreco.io.mongo.import_snapshot(mongo, layout=layout)
    after = rlreco.app.mongo_sync.tables_in_space(frame, space, source="test", base=run)
    check_update(report, tables_of(run, space), after, space.state_index()[STATE])
    # a second visit sees the first one's update
    assert visit_json(run, "--uri", URI, "--layout", layout, "--state", STATE)["version"] == 2


def test_imported_run_keeps_the_metrics_of_its_visits(
    mongo: Any, run: Path, tmp_path: Path
) -> None:
    visit_json(run, "--state", STATE)
    invoke_json("export-mongo", run, "--uri", URI, "--layout", "tidy")
    out = tmp_path / "back"
    summary = invoke_json(
        "import-mongo", "--uri", URI, "--run", run, "--out", out, "--layout", "tidy"
    )
    assert summary["episodes"] == 1
    original, back = RunDir.open(run), RunDir.open(out)
    assert back.read_metrics() is not None
    assert back.read_metrics()["visits"].tolist() == original.read_metrics()["visits"].tolist()
    space = space_of(run)
    assert tables_of(out, space).equals(tables_of(run, space))


def test_recommend_prints_the_slate_as_a_table(run: Path) -> None:
    result = invoke("recommend", run, "--state", STATE, "--clicked", "", "--respond", "none")
    assert result.exit_code == 0, result.output
    assert f"rlreco recommend: {STATE}" in result.stdout and "dry run" in result.stdout
    report = visit_json(run, "--state", STATE, "--respond", "none")
    for item in report["slate"]:
        assert item["product_code"] in result.stdout
    result = invoke("recommend", run, "--state", STATE)
    assert result.exit_code == 0, result.output
    assert "->" in result.stdout and "total reward" in result.stdout


def test_recommend_against_an_unreachable_server_is_one_line(run: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    uri = f"mongodb://alice:{PASSWORD}@127.0.0.1:{port}/"
    line = one_line_error(invoke("recommend", run, "--uri", uri, "--timeout-ms", "300"))
    assert f"cannot reach MongoDB at 127.0.0.1:{port}" in line
