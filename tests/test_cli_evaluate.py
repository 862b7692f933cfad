"""Visit logs on disk and `rlreco evaluate` / `rlreco prepare --log` from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import fresh_python
from naive_ope import log_visits, validation_world
from typer.testing import CliRunner

from rlreco.cli import app
from rlreco.config import RunConfig
from rlreco.io.foreign_log import ColumnMap, read_foreign_log
from rlreco.io.run_dir import RunDir
from rlreco.io.visit_log import LOG_SCHEMA, read_visit_log, write_log_part
from rlreco.schema import LOG_DTYPE

runner = CliRunner()
EXAMPLE = Path(__file__).resolve().parent.parent / "data" / "example_log.csv"
EXAMPLE_COLUMNS = [
    "--context-cols", "country,device", "--item-col", "item_id", "--position-col", "slot",
    "--click-col", "clicked", "--propensity-col", "propensity", "--timestamp-col", "timestamp",
    "--visit-col", "visit_id",
]  # fmt: skip


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """A run directory of the validation world with a uniform log of 900 visits in 3 parts."""
    space, tables, world = validation_world(seed=5, epsilon=1.0)
    path = tmp_path_factory.mktemp("ope") / "run"
    config = RunConfig().replace(**{"policy.slate_size": 3})
    run = RunDir.create(
        path,
        manifest={"run_id": "r" * 32, "config": config.to_dict(), "seed": 1},
        space=space.to_columns(),
        snapshot=tables.to_columns(space),
    )
    records = log_visits(world, np.random.default_rng(0), 0, 900)
    for first in (0, 300, 600):
        part = records[first * 3 : (first + 300) * 3]
        write_log_part(
            run.path,
            part,
            run_id=run.manifest["run_id"],
            state_names=space.state_ids,
            product_codes=space.product_codes,
            policy="eps-greedy",
            param=1.0,
        )
    return path, records


def test_log_parts_round_trip(logged_run: tuple[Path, np.ndarray]) -> None:
    path, records = logged_run
    parts = sorted((path / "logs").glob("part-*.parquet"))
    assert [p.name for p in parts] == [f"part-{v:015d}.parquet" for v in (0, 300, 600)]
    table = pd.read_parquet(parts[1])
    assert list(table.columns) == LOG_SCHEMA.names
    assert table["timestamp"].isna().all() and (table["policy"] == "eps-greedy").all()
    log = read_visit_log(path)
    assert log.n_slots == records.size and log.n_visits == 900
    assert log.policy == "eps-greedy 1" and log.run_id == "r" * 32
    assert np.array_equal(log.position, records["position"])
    assert np.array_equal(log.reward, records["reward"])
    assert np.array_equal(log.propensity, records["propensity"])
    assert np.array_equal(log.outcome, records["outcome"])
    space = RunDir.open(path).read_space()
    codes = space["products"]["product_code"]
    assert np.array_equal(log.product_codes[log.product_index], codes[records["product"]])


def test_unknown_propensity_is_null_on_disk(tmp_path: Path) -> None:
    records = np.zeros(2, dtype=LOG_DTYPE)
    records["position"] = [0, 1]
    records["propensity"] = [np.nan, 0.5]
    written = write_log_part(
        tmp_path, records, run_id="x", state_names=np.array(["s"]),
        product_codes=np.array(["p"]), policy="thompson", param=2.5,
    )  # fmt: skip
    assert pd.read_parquet(written)["propensity"].isna().tolist() == [True, False]
    log = read_visit_log(written)
    assert np.isnan(log.propensity[0]) and log.propensity[1] == 0.5


def test_foreign_visits_group_by_key_or_by_positions() -> None:
    by_key = read_foreign_log(
        EXAMPLE,
        ColumnMap(("country", "device"), "item_id", position="slot", click="clicked",
                  visit="visit_id", propensity="propensity"),
    )  # fmt: skip
    by_rows = read_foreign_log(
        EXAMPLE, ColumnMap(("country", "device"), "item_id", position="slot", click="clicked")
    )
    assert by_key.n_visits == by_rows.n_visits == 300 and by_key.n_slots == 900
    assert np.array_equal(by_key.visit, by_rows.visit)
    assert set(by_key.state_names) == {f"{c}|{d}" for c in ("DE", "FR", "UK")
                                       for d in ("mobile", "desktop")}  # fmt: skip
    assert not by_key.buys_known and set(np.unique(by_key.outcome)) == {0, 1}


def test_evaluate_rlreco_log_json(logged_run: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    path, records = logged_run
    out = tmp_path / "eval"
    argv = ["evaluate", str(path), "--run", str(path), "--epsilons", "0,0.3", "--clip", "50",
            "--out", str(out), "--json"]  # fmt: skip
    result = runner.invoke(app, argv)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["log"]["visits"] == 900 and doc["log"]["logging_policy"] == "eps-greedy 1"
    rows = {(r["estimator"], r["epsilon"]): r for r in doc["settings"]}
    assert set(rows) == {(e, eps) for e in ("replay", "ips", "snips", "dr") for eps in (0.0, 0.3)}
    for row in rows.values():
        assert row["reward_per_visit_low"] <= row["reward_per_visit_mean"]
        assert row["reward_per_visit_mean"] <= row["reward_per_visit_high"]
    replay = rows[("replay", 0.0)]
    assert replay["accepted"] == round(replay["acceptance_rate"] * records.size)
    assert abs(replay["acceptance_rate"] - doc["log"]["uniform_acceptance"]) < 0.03
    assert 0 < rows[("ips", 0.3)]["ess"] < records.size
    assert (out / "summary.parquet").is_file() and (out / "summary.json").is_file()
    assert all(Path(p).is_file() for p in doc["plots"])
    assert len(pd.read_parquet(out / "summary.parquet")) == 8


def test_prepare_from_example_log_then_evaluate(tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = runner.invoke(
        app,
        [
            "prepare",
            "--log",
            str(EXAMPLE),
            *EXAMPLE_COLUMNS,
            "--tables",
            "history",
            "--out",
            str(run),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["visits"] == 300 and summary["states"] == 6 and summary["products"] == 12
    assert summary["slate_size"] == 3 and summary["known_pairs"] == 72
    states = pd.read_parquet(run / "state_space" / "states.parquet")
    assert "DE|mobile" in set(states["state"]) and set(states["segment"]) == {"all"}
    # the column map is in the manifest: the same system's log needs no options
    result = runner.invoke(app, ["evaluate", str(EXAMPLE), "--run", str(run), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    rows = doc["settings"]
    assert {r["estimator"] for r in rows} == {"replay", "ips", "snips", "dr"}
    # a click log: rewards are the clicks, and purchases are unknown
    for row in rows:
        assert row["buy_rate_mean"] is None
        assert row["reward_per_visit_mean"] == pytest.approx(3 * row["click_rate_mean"])


def _bad_log(tmp_path: Path, change: str) -> Path:
    frame = pd.read_csv(EXAMPLE, dtype=str)
    if change == "missing column":
        frame = frame.drop(columns=["propensity"])
    elif change == "mistyped column":
        frame.loc[7, "propensity"] = "high"
    elif change == "propensity outside (0, 1]":
        frame.loc[7, "propensity"] = "1.5"
    elif change == "zero propensity":
        frame.loc[7, "propensity"] = "0"
    elif change == "unknown item":
        frame.loc[7, "item_id"] = "SKU999"
    elif change == "unknown state":
        frame.loc[[6, 7, 8], "country"] = "ES"
    elif change == "mixed visit":
        frame.loc[7, "device"] = "mobile" if frame.loc[6, "device"] == "desktop" else "desktop"
    elif change == "empty log":
        frame = frame.iloc[:0]
    elif change == "position beyond slate":
        extra = frame.iloc[[8]].assign(slot="3", item_id="SKU111" if frame.loc[8, "item_id"]
                                       != "SKU111" else "SKU110")  # fmt: skip
        frame = pd.concat([frame.iloc[:9], extra, frame.iloc[9:]], ignore_index=True)
    path = tmp_path / "bad.csv"
    frame.to_csv(path, index=False)
    return path


@pytest.mark.parametrize(
    ("change", "needles"),
    [
        ("missing column", ["'propensity' not found"]),
        ("mistyped column", ["'propensity' row 7", "'high'"]),
        ("propensity outside (0, 1]", ["row 7", "outside (0, 1]"]),
        ("zero propensity", ["row 7", "outside (0, 1]"]),
        ("unknown item", ["row 7", "'SKU999' is not in the run"]),
        ("unknown state", ["row 6", "'ES|", "not in the run"]),
        ("mixed visit", ["row 7", "different states"]),
        ("empty log", ["empty"]),
        ("position beyond slate", ["row 9", "position 3 exceeds the run's slate size 3"]),
    ],
)
def test_bad_log_is_one_line_exit_2(tmp_path: Path, change: str, needles: list[str]) -> None:
    run = tmp_path / "run"
    result = runner.invoke(
        app, ["prepare", "--log", str(EXAMPLE), *EXAMPLE_COLUMNS, "--out", str(run)]
    )
    assert result.exit_code == 0, result.output
    bad = _bad_log(tmp_path, change)
    out = tmp_path / "eval"
    argv = ["evaluate", str(bad), "--run", str(run), *EXAMPLE_COLUMNS, "--out", str(out)]
    result = runner.invoke(app, argv)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "bad.csv" in lines[0], lines
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert not out.exists()


def test_bad_grid_and_missing_propensities_exit_2(tmp_path: Path) -> None:
    run = tmp_path / "run"
    runner.invoke(app, ["prepare", "--log", str(EXAMPLE), *EXAMPLE_COLUMNS, "--out", str(run)])
    result = runner.invoke(app, ["evaluate", str(EXAMPLE), "--run", str(run), "--epsilons", "2"])
    assert result.exit_code == 2 and "outside [0, 1]" in result.stderr
    no_propensity = [c for c in EXAMPLE_COLUMNS if c not in ("--propensity-col", "propensity")]
    argv = ["evaluate", str(EXAMPLE), "--run", str(run), *no_propensity, "--estimators", "ips"]
    result = runner.invoke(app, argv)
    assert result.exit_code == 2 and "no propensities" in result.stderr
    argv = ["evaluate", str(EXAMPLE), "--run", str(run), *no_propensity, "--json"]
    result = runner.invoke(app, argv)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert {r["estimator"] for r in doc["settings"]} == {"replay"}
    assert len(doc["skipped"]) == 3


def test_evaluation_compiles_nothing_after_its_warm_up(
    logged_run: tuple[Path, np.ndarray],
) -> None:
    """``evaluate`` runs its estimators on a tiny log first (compile time reported apart): the
    real estimates, on a real log and run, then add no compiled variant of their kernels."""
    path, _ = logged_run
    script = (
        "from rlreco.app.evaluate import ESTIMATOR_KERNELS, EvaluationSpec, evaluate_log\n"
        "from rlreco.app.evaluate import warm_up_estimators\n"
        "def variants():\n"
        "    return sum(len(k.signatures) for k in ESTIMATOR_KERNELS)\n"
        "spec = EvaluationSpec(epsilons=(0.0, 0.2))\n"
        "warm_up_estimators(spec, ['replay', 'ips', 'snips', 'dr'], 1)\n"
        "print(variants())\n"
        f"result = evaluate_log({str(path / 'logs')!r}, {str(path)!r}, spec)\n"
        "print(variants(), ','.join(sorted(set(result.summary['estimator']))))\n"
    )
    before, after, estimators = fresh_python(script)
    assert int(before) == 7  # every estimator kernel, loaded or compiled by the warm-up
    assert after == before and estimators == "dr,ips,replay,snips"


def test_cli_evaluate_reports_kernel_compilation(
    logged_run: tuple[Path, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    import rlreco.app.evaluate as evaluate_module
    from rlreco.engine.warmup import Warmup

    path, _ = logged_run
    argv = ["evaluate", str(path / "logs"), "--run", str(path), "--epsilons", "0.1", "--json"]
    result = runner.invoke(app, argv)
    assert result.exit_code == 0 and "compiling kernels" not in result.stderr
    monkeypatch.setattr(evaluate_module, "warm_up_estimators", lambda *a: Warmup(12.34, True))
    result = runner.invoke(app, argv)
    assert result.exit_code == 0, result.output
    assert result.stderr.strip().splitlines() == ["compiling kernels, first run only: 12.3 s"]
    assert json.loads(result.stdout)["log"]["visits"] == 900  # stdout stays one JSON object
