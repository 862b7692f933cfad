"""Drifting truth: schedules of truths, learning under drift, determinism, CLI and sweeps."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from naive import synthetic_world
from typer.testing import CliRunner

from rlreco.app import sweep_plots
from rlreco.app.prepare import prepare
from rlreco.app.truth import load_truth_tables
from rlreco.cli import app
from rlreco.config import RunConfig, StepSize, config_from_dict, parse_schedule
from rlreco.engine.simulation import SimulationParams, Simulator
from rlreco.engine.state_space import StateSpace
from rlreco.errors import ConfigError, SimulationError
from rlreco.io.run_dir import RunDir

runner = CliRunner()
#: the drift of :func:`drift_schedule`: 20,000 visits of truth A, then truth B
SWITCH, VISITS, BLOCK = 20_000, 40_000, 4_000


def write_truth(space: StateSpace, path: Path, good: set[int]) -> str:
    """A truth table where the catalogue positions ``good`` of every state sell well."""
    rows = []
    for s, sid in enumerate(space.state_ids):
        for k, product in enumerate(space.catalogue(int(space.state_segment[s]))):
            hit = k in good
            rows.append((sid, space.product_codes[product], 0.3 if hit else 0.05,
                         0.5 if hit else 0.02))  # fmt: skip
    pd.DataFrame(rows, columns=["state_id", "product_id", "p_click", "p_buy"]).to_parquet(path)
    return str(path)


def drift_schedule(space: StateSpace, folder: Path) -> str:
    """Truth A (catalogue positions 0-4 sell) until visit 20,000, then truth B (10-14)."""
    a = write_truth(space, folder / "a.parquet", set(range(5)))
    b = write_truth(space, folder / "b.parquet", set(range(10, 15)))
    return f"0={a},{SWITCH}={b}"


def test_schedule_parsing_and_bad_schedules() -> None:
    assert parse_schedule("0=a, 10=b", "--schedule") == ((0, "a"), (10, "b"))
    assert parse_schedule(["0=holdout:2011-10"], "x") == ((0, "holdout:2011-10"),)
    for bad, needle in (
        ("0=a,10=b,10=c", "visit counts must increase (10 after 10)"),
        ("0=a,20=b,10=c", "(10 after 20)"),
        ("5=a,10=b", "must start at visit 0"),
        ("0=a,b", "entry 'b' is not VISITS=RESPONSE"),
    ):
        with pytest.raises(ConfigError) as info:
            parse_schedule(bad, "--schedule")
        assert str(info.value).startswith("--schedule = ") and needle in str(info.value)
    with pytest.raises(ConfigError, match=r"key 'response.schedule' = .*start at 0 and increase"):
        config_from_dict({"response": {"schedule": ["0=a", "0=b"]}}, source="run.toml")
    config = RunConfig().replace(**{"response.schedule": ["0=a.parquet", "9=b.parquet"]})
    assert config_from_dict(config.to_dict()) == config


def test_constant_step_tracks_a_switch_and_the_sample_average_lags(tmp_path: Path) -> None:
    space, tables = synthetic_world(known=(25,), seed=1)
    schedule = drift_schedule(space, tmp_path)
    regret = {}
    for step in (StepSize(), StepSize(0.1)):
        params = SimulationParams(
            epsilon=0.1, slate_size=5, response=schedule, metrics_block=BLOCK, step_size=step
        )
        simulator = Simulator(
            space, tables.copy(), params, seed=1, truth_tables=load_truth_tables(params.response)
        )
        simulator.run(VISITS)
        frame = simulator.metrics_frame()
        assert frame["regret_visits"].sum() == VISITS
        regret[str(step)] = frame["mean_regret"].to_numpy()
    after = SWITCH // BLOCK  # the first block after the switch
    sample, constant = regret["1/n"], regret["0.1"]
    # before the switch both learners pay about the same for exploring 10% of the slots
    assert abs(sample[after - 1] - constant[after - 1]) < 0.15
    assert sample[after - 1] < 1.7 and constant[after - 1] < 1.7
    # measured (seed 1): constant step 3.20 in the first block after the switch, 1.54 in the
    # last; the sample average 17.94 and 14.08: its old values outweigh the new rewards
    assert 2.5 < constant[after] < 4.0 and constant[-1] < 1.8
    assert constant[-1] < constant[after] - 1.0  # its regret falls after the switch
    assert sample[after] > 17.0 and sample[-1] > 12.0
    assert sample[-1] - constant[-1] > 10.0
    assert sample[after:].mean() > 15.0 and constant[after + 1 :].mean() < 2.0


def test_schedule_with_a_constant_step_is_bit_identical_chunked_and_resumed(
    tmp_path: Path,
) -> None:
    space, initial = synthetic_world(seed=2)
    schedule = drift_schedule(space, tmp_path).replace(f"{SWITCH}=", "1300=")
    weights = np.stack([space.state_weight, np.arange(space.n_states, dtype=float) % 3])
    params = SimulationParams(
        epsilon=0.2,
        slate_size=5,
        response=schedule,
        metrics_block=500,
        state_sampling="empirical",
        step_size=StepSize(0.1),
    )
    tables_of = load_truth_tables(schedule)
    whole = Simulator(
        space, initial.copy(), params, seed=3, phase_weights=weights, truth_tables=tables_of
    )
    whole.run(3_000)
    chunked = Simulator(
        space, initial.copy(), params, seed=3, phase_weights=weights, truth_tables=tables_of
    )
    for n in (1_299, 1, 2, 698):  # up to, at and across the switch, and across run() calls
        chunked.run(n, chunk=333)
    chunked.run(1_000, chunk=1_000)
    assert chunked.tables.equals(whole.tables)
    assert chunked.metrics_frame().equals(whole.metrics_frame())
    assert chunked.rng_state == whole.rng_state
    first = Simulator(
        space, initial.copy(), params, seed=3, phase_weights=weights, truth_tables=tables_of
    )
    first.run(1_250)
    resumed = Simulator(
        space,
        first.tables.copy(),
        params,
        rng_state=json.loads(json.dumps(first.rng_state)),
        episodes_done=1_250,
        metrics=first.metrics_frame(),
        phase_weights=weights,
        truth_tables=tables_of,
    )
    resumed.run(1_750, chunk=400)
    assert resumed.tables.equals(whole.tables)
    assert resumed.metrics_frame().equals(whole.metrics_frame())
    # phase 1 never visits the states it weighs 0
    unvisited = weights[1] == 0
    after = Simulator(
        space, initial.copy(), params, seed=3, phase_weights=weights, truth_tables=tables_of
    )
    after.run(1_300)
    shown = after.tables.reco_count.sum(axis=1)
    after.run(1_700)
    assert np.array_equal(after.tables.reco_count.sum(axis=1)[unvisited], shown[unvisited])
    with pytest.raises(SimulationError, match="phase 1 of the response"):
        Simulator(
            space,
            initial.copy(),
            params,
            phase_weights=weights * [[1], [0]],
            truth_tables=tables_of,
        )


def held_out_months(seed: int = 0) -> pd.DataFrame:
    """Training rows Jan-Jun 2011; held-out rows in July (products P001-P005 sell) and
    August (P011-P015 sell)."""
    rng = np.random.default_rng(seed)
    rows = []
    days = pd.bdate_range("2011-01-03", "2011-08-31")
    for i, drawn in enumerate(rng.choice(days, 900)):
        day = pd.Timestamp(drawn)
        if day.month == 7:
            product = f"P{rng.integers(1, 6):03d}"
        elif day.month == 8:
            product = f"P{rng.integers(11, 16):03d}"
        else:
            product = f"P{rng.integers(1, 21):03d}"
        rows.append(
            {
                "InvoiceNo": f"5{i:05d}",
                "StockCode": product,
                "Description": "thing",
                "Quantity": int(rng.integers(1, 12)),
                "InvoiceDate": day + pd.Timedelta(hours=10),
                "UnitPrice": float(rng.integers(1, 9)),
                "CustomerID": float(rng.integers(1, 30)),
                "Country": "United Kingdom",
            }
        )
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def drift_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("drift")
    held_out_months().to_parquet(folder / "data.parquet")
    config = RunConfig().replace(
        **{
            "holdout.split": "time:2011-07-01",
            "policy.slate_size": 3,
            "states.fields": ["segment", "month"],
        }
    )
    prepare(config, out=folder / "run", data=folder / "data.parquet")
    return folder / "run"


def month_states(run: RunDir, month: str) -> np.ndarray:
    return np.asarray(run.read_space()["states"]["month"] == month)


def test_simulate_drift_every_switches_truth_and_states(drift_run: Path, tmp_path: Path) -> None:
    shutil.copytree(drift_run, tmp_path / "run")
    run = RunDir.open(tmp_path / "run")
    assert [t["name"] for t in run.truths()] == ["all", "2011-07", "2011-08"]
    argv = ["simulate", str(run.path), "-n", "1000", "--drift-every", "1000", "--json"]
    result = runner.invoke(app, argv)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["mean_regret"] is not None
    run = RunDir.open(run.path)
    assert run.manifest["config"]["response"]["drift_every"] == 1000
    assert run.manifest["simulations"][-1]["response"] == "0=holdout:2011-07,1000=holdout:2011-08"
    july, august = month_states(run, "July"), month_states(run, "August")

    def shown() -> np.ndarray:
        snapshot = RunDir.open(run.path).read_snapshot()
        per_state = np.zeros(july.size)
        np.add.at(per_state, snapshot["state_id"], snapshot["reco_count"])
        return per_state

    # holdout sampling: the first 1,000 visits are July's, the next August's
    first = shown()
    assert first[july].sum() == 1000 * 3 and first[~july].sum() == 0
    result = runner.invoke(app, ["simulate", str(run.path), "-n", "500"])
    assert result.exit_code == 0, result.output
    second = shown()
    assert (second - first)[august].sum() == 500 * 3 and (second - first)[~august].sum() == 0


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--schedule", "0=holdout:2011-07,0=holdout:2011-08"], "--schedule = "),
        (["--schedule", "10=holdout:2011-07"], "must start at visit 0"),
        (["--schedule", "0=holdout:2011-07", "--response", "seed"], "give one of them"),
        (["--drift-every", "0"], "--drift-every = 0"),
        (["--schedule", "0=seed,10=popularity"], "every phase needs a known truth"),
    ],
)
def test_bad_schedule_is_one_line_exit_2(drift_run: Path, args: list[str], needle: str) -> None:
    before = RunDir.open(drift_run).manifest
    result = runner.invoke(app, ["simulate", str(drift_run), "-n", "10", *args])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], lines
    assert RunDir.open(drift_run).manifest == before


def test_drift_every_needs_monthly_truths(tmp_path: Path) -> None:
    held_out_months().to_parquet(tmp_path / "data.parquet")
    config = RunConfig().replace(**{"holdout.split": "customers:0.3", "policy.slate_size": 3})
    prepare(config, out=tmp_path / "run", data=tmp_path / "data.parquet")
    result = runner.invoke(
        app, ["simulate", str(tmp_path / "run"), "-n", "10", "--drift-every", "5"]
    )
    assert result.exit_code == 2 and "no monthly held-out truths" in result.stderr


def test_sweep_over_a_drift_marks_the_switch(
    drift_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from matplotlib.axes import Axes

    marks: list[float] = []
    original = Axes.axvline

    def record(self: Axes, x: float = 0, *args: object, **kwargs: object) -> object:
        marks.append(float(x))
        return original(self, x, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Axes, "axvline", record)
    # the figures drawn in this process, where the lines are recorded (not by a plot process)
    monkeypatch.setattr(sweep_plots, "can_fork", lambda: False)
    argv = ["sweep", str(drift_run), "--out", str(tmp_path / "sw"), "--epsilons", "0,0.5",
            "--step-sizes", "1/n,0.2", "--drift-every", "800", "--replicates", "2",
            "--episodes", "1600", "--blocks", "4", "--workers", "1", "--json"]  # fmt: skip
    result = runner.invoke(app, argv)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert not out["failures"] and out["cells_total"] == 8
    (verdict,) = out["verdicts"]
    assert verdict["metric"] == "regret_per_visit" and len(verdict["alternatives"]) == 3
    labels = {s["label"] for s in out["settings"]}
    assert "eps-greedy epsilon=0.5 step=0.2 n=3 drift truth-2011-07@0,truth-2011-08@800" in labels
    assert any(p.endswith("learning_schedule.png") for p in out["plots"])
    assert marks and set(marks) == {800.0}


def test_cli_drift_with_a_constant_step_resumes_bit_identically(
    drift_run: Path, tmp_path: Path
) -> None:
    runs = [Path(shutil.copytree(drift_run, tmp_path / name)) for name in ("one", "two")]
    common = ["--drift-every", "500", "--step-size", "0.1"]
    one = runner.invoke(app, ["simulate", str(runs[0]), "-n", "1500", *common])
    assert one.exit_code == 0, one.output
    for n, extra in (("700", [*common, "--checkpoint-every", "300"]), ("800", [])):
        result = runner.invoke(app, ["simulate", str(runs[1]), "-n", n, *extra])
        assert result.exit_code == 0, result.output
    a, b = RunDir.open(runs[0]), RunDir.open(runs[1])
    assert a.manifest["rng_state"] == b.manifest["rng_state"]
    for name, values in a.read_snapshot().items():
        np.testing.assert_array_equal(values, b.read_snapshot()[name], err_msg=name)
    for name, values in (a.read_metrics() or {}).items():
        np.testing.assert_array_equal(values, (b.read_metrics() or {})[name], err_msg=name)
    assert b.manifest["config"]["policy"]["step_size"] == 0.1
