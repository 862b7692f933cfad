"""Step size of the value updates: config key, command-line option, sweep axis, stream ids."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from helpers import synthetic_run
from typer.testing import CliRunner

from rlreco.app.sweep_grid import Setting
from rlreco.cli import app
from rlreco.config import RunConfig, StepSize, config_from_dict
from rlreco.errors import ConfigError
from rlreco.io.run_dir import RunDir

runner = CliRunner()


def test_step_size_config_round_trip_and_bad_values() -> None:
    config = RunConfig().replace(**{"policy.step_size": 0.1})
    assert config.policy.step_size == StepSize(0.1)
    assert config.to_dict()["policy"]["step_size"] == 0.1
    assert config_from_dict(config.to_dict()) == config
    assert RunConfig().to_dict()["policy"]["step_size"] == "1/n"
    assert RunConfig().policy.step_size.kernel_step == 0.0
    assert StepSize.parse("0.25", "--step-size").kernel_step == 0.25
    for bad in (0, 1.5, -0.1, "1/m", "nan", True):
        with pytest.raises(ConfigError) as info:
            config_from_dict({"policy": {"step_size": bad}}, source="run.toml")
        message = str(info.value)
        assert message.startswith("run.toml: key 'policy.step_size'")
        assert "expected '1/n' or a number in (0, 1]" in message and "\n" not in message


def test_sample_average_settings_keep_their_stream_ids() -> None:
    old = Setting("eps-greedy", 0.1, 10, "popularity", "popularity")
    # the identity of a setting before step sizes existed
    identity = {"policy": "eps-greedy", "param": (0.1).hex(), "slate_size": 10,
                "response": "popularity"}  # fmt: skip
    legacy = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    assert old.digest == legacy
    assert old.label == "eps-greedy epsilon=0.1 n=10 popularity"
    constant = Setting("eps-greedy", 0.1, 10, "popularity", "popularity", StepSize(0.1))
    assert constant.digest != legacy and constant.stream_id != old.stream_id
    assert constant.label == "eps-greedy epsilon=0.1 step=0.1 n=10 popularity"
    assert constant.columns()["step_size"] == "0.1" and old.columns()["step_size"] == "1/n"
    assert "step0.1" in constant.cell_key(0) and constant.cell_key(0) != old.cell_key(0)


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["simulate", "{run}", "-n", "10", "--step-size", "1.5"], "--step-size = '1.5'"),
        (["simulate", "{run}", "-n", "10", "--step-size", "0"], "--step-size = '0'"),
        (["sweep", "{run}", "--out", "{out}", "--step-sizes", "1/n,2"], "--step-sizes = '2'"),
        (["sweep", "{run}", "--out", "{out}", "--step-sizes", "0.1,0.1"], "appears twice"),
    ],
)
def test_bad_step_size_is_one_line_exit_2(tmp_path: Path, argv: list[str], needle: str) -> None:
    run = synthetic_run(tmp_path / "run")
    before = sorted(p.name for p in run.path.rglob("*"))
    args = [a.format(run=run.path, out=tmp_path / "sw") for a in argv]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], lines
    assert sorted(p.name for p in run.path.rglob("*")) == before
    assert not (tmp_path / "sw").exists()


def test_simulate_and_sweep_with_a_constant_step(tmp_path: Path) -> None:
    tables = {}
    for step in ("1/n", "0.1"):
        run = synthetic_run(tmp_path / step.replace("/", "_"))
        argv = ["simulate", str(run.path), "-n", "2000", "--step-size", step, "--json"]
        result = runner.invoke(app, argv)
        assert result.exit_code == 0, result.output
        manifest = RunDir.open(run.path).manifest
        assert manifest["config"]["policy"]["step_size"] == StepSize.parse(step, "").to_config()
        assert manifest["simulations"][-1]["step_size"] == manifest["config"]["policy"]["step_size"]
        tables[step] = RunDir.open(run.path).read_snapshot()["value"]
    # same stream, same slates until values differ: the update rule changes the tables
    assert tables["1/n"].shape == tables["0.1"].shape
    assert not (tables["1/n"] == tables["0.1"]).all()
    run = synthetic_run(tmp_path / "sweep-run")
    argv = ["sweep", str(run.path), "--out", str(tmp_path / "sw"), "--epsilons", "0.1",
            "--step-sizes", "1/n,0.1", "--replicates", "2", "--episodes", "600", "--blocks",
            "2", "--workers", "1", "--response", "seed", "--no-plots", "--json"]  # fmt: skip
    result = runner.invoke(app, argv)
    assert result.exit_code == 0, result.output
    settings = json.loads(result.stdout)["settings"]
    assert [s["step_size"] for s in settings] == ["1/n", "0.1"]
    assert [s["label"] for s in settings] == [
        "eps-greedy epsilon=0.1 n=10 seed",
        "eps-greedy epsilon=0.1 step=0.1 n=10 seed",
    ]
