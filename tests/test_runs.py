"""simulate on a run directory: resume, checkpoints and Ctrl-C give bit-identical results."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from rlreco.app.prepare import prepare
from rlreco.app.simulate import Run, simulate_run
from rlreco.cli import app
from rlreco.config import RunConfig
from rlreco.errors import SimulationError
from rlreco.io.run_dir import RunDir


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory, embedded_parquet: Path) -> Path:
    out = tmp_path_factory.mktemp("runs") / "base"
    prepare(RunConfig(), out=out)
    return out


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def state_of(path: Path) -> tuple[Run, dict]:
    run = Run.load(path)
    metrics = run.run_dir.read_metrics()
    assert metrics is not None
    return run, metrics


def assert_same_run(a: Path, b: Path) -> None:
    ra, ma = state_of(a)
    rb, mb = state_of(b)
    assert ra.tables.equals(rb.tables)
    assert ra.run_dir.manifest["rng_state"] == rb.run_dir.manifest["rng_state"]
    assert ra.run_dir.episodes == rb.run_dir.episodes
    for name in ma:
        assert np.array_equal(ma[name], mb[name]), name


def test_one_call_resume_checkpoints_and_interrupt_are_identical(
    prepared: Path, tmp_path: Path
) -> None:
    n = 30_000
    one = copy_run(prepared, tmp_path / "one")
    summary = simulate_run(one, n, chunk=4_000)
    assert summary.episodes == n and summary.episodes_total == n and not summary.stopped

    resumed = copy_run(prepared, tmp_path / "resumed")
    simulate_run(resumed, 11_000, chunk=3_000)
    simulate_run(resumed, n - 11_000, chunk=5_000)
    assert_same_run(one, resumed)

    ckpt = copy_run(prepared, tmp_path / "ckpt")
    simulate_run(ckpt, n, checkpoint_every=7_000, chunk=2_000)
    assert_same_run(one, ckpt)

    stopped = copy_run(prepared, tmp_path / "stopped")
    summary = simulate_run(stopped, n, chunk=6_000, should_stop=lambda: True)
    assert summary.stopped and summary.episodes == 6_000
    assert RunDir.open(stopped).episodes == 6_000  # saved at the chunk boundary
    simulate_run(stopped, n - 6_000)
    assert_same_run(one, stopped)


def test_overrides_are_recorded_and_seed_is_fixed_after_first_visit(
    prepared: Path, tmp_path: Path
) -> None:
    run = copy_run(prepared, tmp_path / "r")
    simulate_run(run, 2_000, epsilon=0.3, seed=7, response="popularity")
    manifest = RunDir.open(run).manifest
    assert manifest["config"]["policy"]["epsilon"] == 0.3
    assert manifest["config"]["response"]["model"] == "popularity"
    assert manifest["seed"] == 7
    assert manifest["simulations"][-1]["from"] == 0 and manifest["simulations"][-1]["to"] == 2_000
    with pytest.raises(SimulationError, match="a seed can only be set before the first visit"):
        simulate_run(run, 10, seed=8)
    # the same seed again is fine, and the override stays in force
    summary = simulate_run(run, 1_000, seed=7)
    assert summary.mean_regret is not None


def test_same_seed_gives_identical_runs_other_seed_differs(prepared: Path, tmp_path: Path) -> None:
    a = copy_run(prepared, tmp_path / "a")
    b = copy_run(prepared, tmp_path / "b")
    c = copy_run(prepared, tmp_path / "c")
    simulate_run(a, 5_000, seed=1)
    simulate_run(b, 5_000, seed=1)
    simulate_run(c, 5_000, seed=2)
    assert_same_run(a, b)
    assert not Run.load(a).tables.equals(Run.load(c).tables)


def test_cli_simulate_json_and_errors(prepared: Path, tmp_path: Path) -> None:
    run = copy_run(prepared, tmp_path / "cli")
    runner = CliRunner()
    result = runner.invoke(app, ["simulate", str(run), "--episodes", "5000", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    for key in ("episodes", "episodes_total", "episodes_per_second", "mean_reward",
                "click_rate", "buy_rate", "mean_regret"):  # fmt: skip
        assert key in out
    assert out["episodes"] == 5000 and out["mean_regret"] is None
    result = runner.invoke(
        app, ["simulate", str(run), "-n", "5000", "--response", "popularity", "--json"]
    )
    assert json.loads(result.stdout)["episodes_total"] == 10_000
    assert json.loads(result.stdout)["mean_regret"] > 0
    for args, needle in [
        (["--epsilon", "1.5"], "epsilon"),
        (["--state-sampling", "sideways"], "state_sampling"),
        (["--episodes", "0"], "--episodes = 0"),
        (["--response", str(tmp_path / "missing.parquet")], "missing.parquet"),
    ]:
        argv = ["simulate", str(run), *args]
        if "--episodes" not in args:
            argv += ["--episodes", "10"]
        result = runner.invoke(app, argv)
        assert result.exit_code == 2, (args, result.output)
        assert needle in result.stderr and len(result.stderr.strip().splitlines()) == 1
    result = runner.invoke(app, ["simulate", str(tmp_path / "nope"), "-n", "10"])
    assert result.exit_code == 2 and "run directory not found" in result.stderr
