"""Visit logs written by `rlreco simulate --log` and `rlreco recommend --log`, and evaluated."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path
from typing import Any

import mongomock
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import synthetic_run
from mongo_suite import patch_mongomock
from typer.testing import CliRunner

import rlreco.app.recommend
import rlreco.app.simulate
from rlreco.app.simulate import simulate_run
from rlreco.cli import app
from rlreco.config import RunConfig
from rlreco.engine.kernels.propensity import greedy_propensities_nb
from rlreco.engine.response import expected_reward
from rlreco.engine.state_space import StateSpace
from rlreco.engine.tables import Tables
from rlreco.engine.target_slate import Catalogues, on_policy_value
from rlreco.errors import DataError
from rlreco.io.run_dir import RunDir
from rlreco.io.visit_log import LOG_FOLDER, LOG_SCHEMA, LogWriter, read_visit_log

runner = CliRunner()
REWARDS = (-2.0, 1.0, 5.0)


def log_frame(run: Path) -> pd.DataFrame:
    """Every part of a run's log, in visit and slot order, without the run id."""
    parts = sorted((run / LOG_FOLDER).glob("part-*.parquet"))
    frame = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
    return frame.drop(columns=["run_id"])


def truth_table(run: RunDir, path: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """A random truth table for a run; returns its per-cell scores (reward, click, buy)."""
    space = StateSpace.from_columns(run.read_space())
    rng = np.random.default_rng(seed)
    p_click = np.zeros((space.n_states, space.n_products))
    p_buy = np.zeros_like(p_click)
    rows = []
    for s, sid in enumerate(space.state_ids):
        for p in space.catalogue(int(space.state_segment[s])):
            p_click[s, p], p_buy[s, p] = rng.uniform(0.02, 0.5), rng.uniform(0.0, 0.25) ** 2 * 4
            rows.append((sid, space.product_codes[p], p_click[s, p], p_buy[s, p]))
    pd.DataFrame(rows, columns=["state_id", "product_id", "p_click", "p_buy"]).to_parquet(path)
    return {
        "reward_per_visit": expected_reward(p_click, p_buy, REWARDS),
        "click_rate": 1.0 - (1.0 - p_click) * (1.0 - p_buy),
        "buy_rate": p_buy,
    }


def test_log_is_the_same_in_one_call_in_chunks_and_resumed(tmp_path: Path) -> None:
    config = RunConfig().replace(**{"policy.slate_size": 4, "policy.epsilon": 0.3})
    base = synthetic_run(tmp_path / "base", config=config).path
    runs = {name: Path(shutil.copytree(base, tmp_path / name)) for name in ("one", "chunks", "off")}
    simulate_run(runs["one"], 3_000, log=True, response="popularity")
    simulate_run(runs["chunks"], 1_100, log=True, chunk=400, response="popularity")
    # an interrupted call: parts written after the last commit must be regenerated
    stale = runs["chunks"] / LOG_FOLDER / "part-000000000001100.parquet"
    shutil.copyfile(runs["chunks"] / LOG_FOLDER / "part-000000000000800.parquet", stale)
    simulate_run(runs["chunks"], 1_900, log=True, checkpoint_every=700)
    simulate_run(runs["off"], 3_000, response="popularity")
    one, chunks = log_frame(runs["one"]), log_frame(runs["chunks"])
    assert len(one) == 3_000 * 4 and one["visit"].is_monotonic_increasing
    assert one["position"].tolist() == [0, 1, 2, 3] * 3_000
    pd.testing.assert_frame_equal(one, chunks)
    assert len(list((runs["chunks"] / LOG_FOLDER).glob("*.parquet"))) > 1
    # propensities of epsilon-greedy with epsilon 0.3 over catalogues of 25
    propensity = one["propensity"].to_numpy()
    assert np.all((propensity > 0) & (propensity <= 1))
    explored = 0.3 / (25 - one["position"].to_numpy())
    assert np.all(np.isclose(propensity, explored) | np.isclose(propensity, 0.7 + explored))
    assert one["timestamp"].isna().all() and (one["policy"] == "eps-greedy").all()
    # logging changes no draw: the tables are those of the run that did not log
    for name in ("one", "chunks"):
        assert np.array_equal(
            RunDir.open(runs[name]).read_snapshot()["value"],
            RunDir.open(runs["off"]).read_snapshot()["value"],
        )
    assert not (runs["off"] / LOG_FOLDER).exists()
    read = read_visit_log(runs["one"])
    assert read.n_slots == 12_000 and read.policy == "eps-greedy 0.3"


def test_evaluate_recovers_the_on_policy_value_from_a_uniform_log(tmp_path: Path) -> None:
    """A simulated uniform log (epsilon 1) of a known truth: DR's intervals for a fixed target
    (the initial tables, epsilon-greedy 0.1) cover its exact on-policy value. (Per-slot
    IPS/SNIPS of a slate target are biased, README "Estimators": seed 3 gives SNIPS buy rate
    [0.0626, 0.0854] against 0.0883.)"""
    config = RunConfig().replace(**{"policy.slate_size": 2, "policy.epsilon": 1.0})
    run = synthetic_run(tmp_path / "run", seed=3, config=config)
    scores = truth_table(run, tmp_path / "truth.parquet")
    simulate_run(run.path, 20_000, log=True, response=str(tmp_path / "truth.parquet"))
    space = StateSpace.from_columns(run.read_space())
    initial = Tables.from_columns(RunDir.open(run.path).read_snapshot("initial"), space)
    exact = on_policy_value(
        Catalogues.of(space), initial.value, 0.1, 2, np.ones(space.n_states), scores
    )
    argv = ["evaluate", str(run.path), "--run", str(run.path), "--epsilons", "0.1",
            "--estimators", "ips,snips,dr", "--snapshot", "initial", "--json"]  # fmt: skip
    result = runner.invoke(app, argv)
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["log"]["visits"] == 20_000
    rows = {row["estimator"]: row for row in document["settings"]}
    assert set(rows) == {"ips", "snips", "dr"}
    dr = rows["dr"]
    for metric in ("reward_per_visit", "click_rate", "buy_rate"):
        low, high = dr[f"{metric}_low"], dr[f"{metric}_high"]
        assert low <= exact[metric] <= high, (metric, low, exact[metric], high)
    # measured (seed 3): reward per visit -1.082 exact, DR [-1.214, -0.817]: informative
    assert dr["reward_per_visit_high"] - dr["reward_per_visit_low"] < 0.5
    assert rows["snips"]["reward_per_visit_low"] <= exact["reward_per_visit"]


@pytest.mark.parametrize(
    ("policy", "logged"), [("eps-greedy", "eps-greedy 0.1"), ("softmax", "softmax 0.5")]
)
def test_recommend_log_on_a_run_directory(tmp_path: Path, policy: str, logged: str) -> None:
    changes = {"policy.slate_size": 3, "policy.name": policy}
    if policy == "softmax":
        changes["policy.param"] = 0.5
    run = synthetic_run(tmp_path / "run", config=RunConfig().replace(**changes))
    for _ in range(2):
        result = runner.invoke(app, ["recommend", str(run.path), "--log", "--json"])
        assert result.exit_code == 0, result.output
    frame = log_frame(run.path)
    # the log names the run's policy and parameter, as simulate --log does
    assert read_visit_log(run.path / LOG_FOLDER).policy == logged
    assert frame["visit"].tolist() == [0, 0, 0, 1, 1, 1]
    assert frame["timestamp"].notna().all()
    assert (frame["timestamp"].dt.tz is not None) and frame["position"].tolist() == [0, 1, 2] * 2
    assert np.all((frame["propensity"] > 0) & (frame["propensity"] <= 1))
    report = json.loads(result.stdout)
    last = frame[frame["visit"] == 1]
    assert last["product_code"].tolist() == [slot["product_code"] for slot in report["slate"]]
    assert np.allclose(last["reward"], [slot["reward"] for slot in report["slate"]])
    # a dry run logs nothing
    result = runner.invoke(app, ["recommend", str(run.path), "--log", "--respond", "none"])
    assert result.exit_code == 0 and len(log_frame(run.path)) == 6


def test_recommend_log_into_mongodb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    patch_mongomock()
    client: Any = mongomock.MongoClient()
    monkeypatch.setattr(rlreco.app.mongo_sync, "connect", lambda *a, **k: client)
    monkeypatch.setattr(rlreco.app.recommend, "connect", lambda *a, **k: client)
    uri = "mongodb://db.example:27017"
    run = synthetic_run(tmp_path / "run", config=RunConfig().replace(**{"policy.slate_size": 3}))
    assert runner.invoke(app, ["export-mongo", str(run.path), "--uri", uri]).exit_code == 0
    argv = ["recommend", str(run.path), "--uri", uri, "--visit", "11", "--log", "--json"]
    result = runner.invoke(app, argv)
    assert result.exit_code == 0, result.output
    docs = list(client["rlRecomendation"]["visit_log"].find().sort("position"))
    run_id = RunDir.open(run.path).manifest["run_id"]
    assert [d["_id"] for d in docs] == [
        {"run_id": run_id, "visit": 11, "position": i} for i in range(3)
    ]
    report = json.loads(result.stdout)
    assert [d["product_code"] for d in docs] == [s["product_code"] for s in report["slate"]]
    assert all(0 < d["propensity"] <= 1 and d["timestamp"] is not None for d in docs)
    assert {(d["policy"], d["param"]) for d in docs} == {("eps-greedy", 0.1)}
    # the same visit key again upserts the same documents
    assert runner.invoke(app, argv).exit_code == 0
    assert client["rlRecomendation"]["visit_log"].count_documents({}) == 3
    assert not (run.path / LOG_FOLDER).exists()  # the run directory is only read


@pytest.mark.parametrize("policy", ["softmax", "ucb1", "thompson"])
def test_propensities_of_the_other_policies(policy: str) -> None:
    """The closed forms of :mod:`rlreco.engine.kernels.propensity`, recomputed in Python for
    dry-run online visits (the tables are read, not changed)."""
    from naive import synthetic_world

    from rlreco.engine.kernels.records import Policy, PolicyParams, TopNSearch
    from rlreco.engine.online import play_online_visit

    space, tables = synthetic_world(known=(0, 3, 12, 25), seed=5)
    tables.cells["reco_count"][tables.value > 0.5] = 2  # some tried, some untried
    code, param = {"softmax": (Policy.softmax, 0.7), "ucb1": (Policy.ucb1, 2.0),
                   "thompson": (Policy.thompson, 2.5)}[policy]  # fmt: skip
    rng = np.random.default_rng(1)
    for state in range(space.n_states):
        row = slice(state, state + 1)
        value, cells = tables.value[row].copy(), tables.cells[row].copy()
        visit = play_online_visit(
            rng, space, state, value, cells, policy=PolicyParams(code, param, 5, TopNSearch.tree),
            click_cdf=np.ones(1), buy_cdf=np.ones(1), rewards=REWARDS, respond="none",
        )  # fmt: skip
        catalogue = space.catalogue(int(space.state_segment[state])).tolist()
        slate = visit.slate.tolist()
        expected = []
        for i, product in enumerate(slate):
            if policy == "softmax":
                known = [p for p in catalogue if np.isfinite(value[0, p]) and p not in slate[:i]]
                if product in known:
                    weights = {p: np.exp(value[0, p] / param) for p in known}
                    expected.append(weights[product] / sum(weights.values()))
                else:
                    expected.append(1.0 / (len(catalogue) - i))
            elif policy == "ucb1":
                untried = sum(cells["reco_count"][0, p] == 0 for p in catalogue)
                expected.append(1.0 / (untried - i) if i < untried else 1.0)
            else:
                expected.append(np.nan)
        np.testing.assert_allclose(visit.propensity, expected, rtol=1e-12)
        assert np.array_equal(value, tables.value[row])  # a dry run changes nothing


def test_log_parts_of_schema_version_1_are_still_read(tmp_path: Path) -> None:
    """A part as the first writer wrote it (every column nullable, schema version 1) reads as
    the same log as its version 2 rewrite, alone and in one folder with version 2 parts."""
    config = RunConfig().replace(**{"policy.slate_size": 3, "policy.epsilon": 0.5})
    run = synthetic_run(tmp_path / "run", config=config).path
    simulate_run(run, 600, log=True, chunk=200, response="popularity")
    parts = sorted((run / LOG_FOLDER).glob("part-*.parquet"))
    assert len(parts) == 3
    written = pq.read_table(parts[0])
    assert [(f.name, f.type) for f in written.schema] == [(f.name, f.type) for f in LOG_SCHEMA]
    assert json.loads(written.schema.metadata[b"rlreco"])["schema_version"] == 2
    assert [f.name for f in written.schema if f.nullable] == ["propensity", "timestamp"]
    codes = pd.read_parquet(parts[0])["product_code"]  # strings, not categories
    assert pd.api.types.is_string_dtype(codes) and not isinstance(codes.dtype, pd.CategoricalDtype)
    before = read_visit_log(run)
    old = pa.schema([f.with_nullable(True) for f in LOG_SCHEMA]).with_metadata(
        {b"rlreco": json.dumps({"kind": "visit_log", "schema_version": 1}).encode()}
    )
    pq.write_table(pa.Table.from_arrays(written.columns, schema=old), parts[0])
    assert pq.read_schema(parts[0]).field("visit").nullable
    after = read_visit_log(run)
    for name in ("visit", "position", "outcome", "reward", "propensity", "row"):
        assert np.array_equal(getattr(before, name), getattr(after, name), equal_nan=True)
    assert np.array_equal(
        before.product_codes[before.product_index], after.product_codes[after.product_index]
    )
    assert read_visit_log(parts[0]).n_slots == 200 * 3 and after.policy == "eps-greedy 0.5"
    future = old.with_metadata({b"rlreco": b'{"kind": "visit_log", "schema_version": 3}'})
    pq.write_table(pa.Table.from_arrays(written.columns, schema=future), parts[0])
    with pytest.raises(DataError, match="schema version 3, expected 2"):
        read_visit_log(run)


def test_a_part_that_cannot_be_written_stops_the_call_before_its_commit(tmp_path: Path) -> None:
    """Parts are written on a background thread; its error reaches the caller, and the
    visits of the part are not committed."""
    run = synthetic_run(tmp_path / "run").path
    (run / LOG_FOLDER).write_text("not a folder")
    with pytest.raises(OSError):
        simulate_run(run, 500, log=True, chunk=100)
    assert RunDir.open(run).visits == 0
    (run / LOG_FOLDER).unlink()
    simulate_run(run, 500, log=True, chunk=100)
    assert RunDir.open(run).visits == 500 and len(log_frame(run)) == 500 * 10


def test_on_one_core_parts_are_written_in_the_call_and_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process that may use one CPU writes each part on the simulating thread (no log thread
    to preempt the kernel), byte for byte the parts of the threaded writer."""
    base = synthetic_run(tmp_path / "base").path
    runs = {name: Path(shutil.copytree(base, tmp_path / name)) for name in ("threads", "one")}
    writers: dict[str, set[str]] = {"threads": set(), "one": set()}
    write = LogWriter.write
    for name, cores in (("threads", 2), ("one", 1)):

        def spy(self: LogWriter, table: pa.Table, seen: set[str] = writers[name]) -> Path:
            seen.add(threading.current_thread().name)
            return write(self, table)

        monkeypatch.setattr(LogWriter, "write", spy)
        monkeypatch.setattr(rlreco.app.simulate, "usable_cores", lambda cores=cores: cores)
        simulate_run(runs[name], 1_500, log=True, chunk=600)
    assert writers["one"] == {threading.current_thread().name}
    assert writers["threads"] and all(n.startswith("rlreco-log") for n in writers["threads"])
    parts = sorted(p.name for p in (runs["threads"] / LOG_FOLDER).glob("*.parquet"))
    assert len(parts) == 3 and parts == sorted(
        p.name for p in (runs["one"] / LOG_FOLDER).glob("*.parquet")
    )
    for part in parts:
        threaded = (runs["threads"] / LOG_FOLDER / part).read_bytes()
        assert threaded == (runs["one"] / LOG_FOLDER / part).read_bytes()


def test_greedy_propensities_match_their_definition() -> None:
    """Slot i's propensity is (1 - eps) [slate[i] == g_i] + eps / (K - i), g_i the best of the
    top list not in slots 0..i-1 (1 / (K - i) once none is left), on slates mixing greedy
    picks with explored ones that take later entries of the top list."""
    rng = np.random.default_rng(5)
    for _ in range(300):
        n = int(rng.integers(1, 9))
        found = int(rng.integers(0, n + 1))
        top = rng.permutation(30)[:n].astype(np.int64)
        top[found:] = -1
        slate = np.empty(n, dtype=np.int64)
        for i in range(n):
            free = [p for p in top[:found] if p not in slate[:i]]
            if free and rng.random() < 0.6:
                slate[i] = free[0]
            else:  # explored: any product not shown yet, often one of the top list
                pool = [p for p in (*top[:found], *range(30, 40)) if p not in slate[:i]]
                slate[i] = pool[int(rng.integers(len(pool)))]
        epsilon, size = float(rng.uniform(0.0, 1.0)), 50
        out = np.empty(n)
        greedy_propensities_nb(epsilon, size, slate, top, found, out)
        expected = []
        for i in range(n):
            free = [p for p in top[:found] if p not in slate[:i]]
            left = size - i
            if free:
                expected.append((1.0 - epsilon) * (slate[i] == free[0]) + epsilon / left)
            else:
                expected.append(1.0 / left)
        assert out.tolist() == expected
