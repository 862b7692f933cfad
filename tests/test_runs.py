"""simulate on a run directory: resume, checkpoints and Ctrl-C give bit-identical results."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import fresh_python
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
    assert ra.run_dir.visits == rb.run_dir.visits
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
    assert RunDir.open(stopped).visits == 6_000  # saved at the chunk boundary
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
    result = runner.invoke(app, ["simulate", str(run), "--visits", "5000", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    for key in ("visits", "visits_total", "visits_per_second", "mean_reward",
                "click_rate", "buy_rate", "mean_regret"):  # fmt: skip
        assert key in out
    assert out["visits"] == 5000 and out["mean_regret"] is None
    # the old names: --episodes and the episodes keys, with the same values
    for old, new in (("episodes", "visits"), ("episodes_total", "visits_total")):
        assert out[old] == out[new]
    result = runner.invoke(app, ["simulate", str(run), "--episodes", "10", "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["visits_total"] == 5010
    result = runner.invoke(app, ["simulate", str(run), "--visits", "10", "--episodes", "10"])
    assert result.exit_code == 0, result.output
    for argv in (["--visits", "10", "--episodes", "20"], []):
        result = runner.invoke(app, ["simulate", str(run), *argv])
        assert result.exit_code == 2 and "--visits" in result.stderr, argv
        assert len(result.stderr.strip().splitlines()) == 1
    result = runner.invoke(
        app, ["simulate", str(run), "-n", "5000", "--response", "popularity", "--json"]
    )
    assert json.loads(result.stdout)["episodes_total"] == 10_020
    assert json.loads(result.stdout)["mean_regret"] > 0
    for args, needle in [
        (["--epsilon", "1.5"], "epsilon"),
        (["--state-sampling", "sideways"], "state_sampling"),
        (["--visits", "0"], "--visits = 0"),
        (["--response", str(tmp_path / "missing.parquet")], "missing.parquet"),
    ]:
        argv = ["simulate", str(run), *args]
        if "--visits" not in args:
            argv += ["--visits", "10"]
        result = runner.invoke(app, argv)
        assert result.exit_code == 2, (args, result.output)
        assert needle in result.stderr and len(result.stderr.strip().splitlines()) == 1
    result = runner.invoke(app, ["simulate", str(tmp_path / "nope"), "-n", "10"])
    assert result.exit_code == 2 and "run directory not found" in result.stderr


def policy_state(path: Path) -> dict[str, np.ndarray]:
    run = RunDir.open(path)
    return run.read_policy_state(run.manifest["config"]["policy"]["name"])


@pytest.mark.parametrize(("policy", "param"), [("decaying", "3"), ("ucb1", "1.5")])
def test_cli_policy_one_call_checkpoints_and_interrupt_are_identical(
    prepared: Path, tmp_path: Path, policy: str, param: str
) -> None:
    n = 20_000
    runner = CliRunner()
    one = copy_run(prepared, tmp_path / "one")
    argv = ["simulate", str(one), "-n", str(n), "--policy", policy, "--param", param, "--json"]
    result = runner.invoke(app, argv)
    assert result.exit_code == 0, result.output
    manifest = RunDir.open(one).manifest
    assert manifest["config"]["policy"]["name"] == policy
    assert manifest["config"]["policy"]["param"] == float(param)
    assert manifest["simulations"][-1]["policy"] == policy
    state = policy_state(one)
    if policy == "decaying":
        assert int(state["state_visits"].sum()) == n
        assert (one / manifest["policy_state"]["file"]).is_file()
    else:
        assert state == {} and manifest["policy_state"] is None

    ckpt = copy_run(prepared, tmp_path / "ckpt")
    argv = ["simulate", str(ckpt), "-n", str(n), "--policy", policy, "--param", param,
            "--checkpoint-every", "6000"]  # fmt: skip
    assert runner.invoke(app, argv).exit_code == 0
    assert_same_run(one, ckpt)

    stopped = copy_run(prepared, tmp_path / "stopped")
    summary = simulate_run(
        stopped, n, policy=policy, param=float(param), chunk=7_000, should_stop=lambda: True
    )
    assert summary.stopped and RunDir.open(stopped).visits == 7_000
    if policy == "decaying":
        assert int(policy_state(stopped)["state_visits"].sum()) == 7_000
    # resumed through the CLI without policy options: the run's recorded policy goes on
    result = runner.invoke(app, ["simulate", str(stopped), "-n", str(n - 7_000)])
    assert result.exit_code == 0, result.output
    assert_same_run(one, stopped)
    for name, array in policy_state(one).items():
        assert np.array_equal(array, policy_state(stopped)[name])
    # only the latest policy state file is kept
    assert len(list((stopped / "policy_state").glob("*.parquet"))) == (policy == "decaying")


def test_policy_options_are_checked_and_switches_keep_state_consistent(
    prepared: Path, tmp_path: Path
) -> None:
    run = copy_run(prepared, tmp_path / "r")
    runner = CliRunner()
    for args, needle in [
        (["--policy", "greedy"], "--policy 'greedy'"),
        (["--policy", "softmax", "--param", "0"], "softmax tau"),
        (["--policy", "ucb1", "--param", "-1"], "ucb1 c"),
        (["--param", "2"], "eps-greedy takes --epsilon"),
        (["--policy", "decaying", "--epsilon", "0.2"], "takes --param"),
    ]:
        result = runner.invoke(app, ["simulate", str(run), "-n", "10", *args])
        assert result.exit_code == 2, (args, result.output)
        assert needle in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert RunDir.open(run).visits == 0  # nothing written
    simulate_run(run, 1_000)  # eps-greedy keeps no per-state state
    with pytest.raises(SimulationError, match="prepare a new run for decaying"):
        simulate_run(run, 10, policy="decaying")
    # a run that starts under decaying can switch to another policy (its state is dropped)
    dec = copy_run(prepared, tmp_path / "dec")
    simulate_run(dec, 2_000, policy="decaying")
    assert RunDir.open(dec).manifest["config"]["policy"]["param"] is None  # the default c
    simulate_run(dec, 1_000, policy="softmax", param=0.3)
    manifest = RunDir.open(dec).manifest
    assert manifest["policy_state"] is None and not list((dec / "policy_state").iterdir())
    assert [s["policy"] for s in manifest["simulations"]] == ["decaying", "softmax"]
    assert manifest["simulations"][0]["param"] == 10.0


def test_config_policy_keys(tmp_path: Path) -> None:
    from rlreco.config import config_from_dict, load_config
    from rlreco.errors import ConfigError

    path = tmp_path / "c.toml"
    path.write_text('[policy]\nname = "thompson"\nparam = 1.5\n', encoding="utf-8")
    config = load_config(path)
    assert (config.policy.name, config.policy.param) == ("thompson", 1.5)
    assert config_from_dict(config.to_dict()) == config
    for raw, needle in [
        ({"name": "greedy"}, "policy.name"),
        ({"name": "softmax", "param": -0.5}, "expected a finite number > 0"),
        ({"param": 0.5}, "eps-greedy takes 'policy.epsilon'"),
        ({"name": "ucb1", "param": "high"}, "expected a number"),
    ]:
        with pytest.raises(ConfigError, match=needle):
            config_from_dict({"policy": raw})


def test_recommend_uses_the_configured_policy_and_keeps_its_state(
    prepared: Path, tmp_path: Path
) -> None:
    from rlreco.app.recommend import recommend

    run = copy_run(prepared, tmp_path / "r")
    simulate_run(run, 3_000, policy="decaying", param=2.0)
    before = policy_state(run)["state_visits"]
    report = recommend(run, state=None, respond="simulate")
    assert (report.policy, report.param) == ("decaying", 2.0)
    after = policy_state(run)["state_visits"]
    assert int(after.sum()) == 3_001 and after[report.state_id] == before[report.state_id] + 1
    summary = simulate_run(run, 1_000)  # the run's policy state still matches its visits
    assert summary.episodes_total == 4_001
    plain = copy_run(prepared, tmp_path / "plain")
    assert recommend(plain, respond="none").policy == "eps-greedy"


def test_cli_reports_kernel_compilation_apart_from_the_visits(
    prepared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rlreco.app import simulate as simulate_module
    from rlreco.engine.warmup import Warmup, warm_up_simulation

    warm = warm_up_simulation()  # this process has used the kernels: nothing to compile
    assert not warm.compiled and warm.seconds >= 0
    run = copy_run(prepared, tmp_path / "r")
    runner = CliRunner()
    result = runner.invoke(app, ["simulate", str(run), "-n", "1000"])
    assert result.exit_code == 0 and "compiling kernels" not in result.stderr
    monkeypatch.setattr(simulate_module, "warm_up_simulation", lambda *a, **k: Warmup(12.34, True))
    result = runner.invoke(app, ["simulate", str(run), "-n", "1000", "--json"])
    assert result.exit_code == 0, result.output
    assert "compiling kernels, first run only: 12.3 s" in result.stderr
    assert json.loads(result.stdout)["episodes"] == 1000  # stdout stays one JSON object


def test_kernels_load_without_numba_probing_scipy_blas() -> None:
    """The warm-up sets up numba's typing without importing scipy.linalg (numba's BLAS probe);
    kernels run, and scipy.linalg and a jitted np.dot work afterwards."""
    pytest.importorskip("scipy")
    script = (
        "import sys, numpy as np, numba\n"
        "from rlreco.engine.warmup import warm_up_simulation\n"
        "warm_up_simulation()\n"
        "print('scipy.linalg' in sys.modules)\n"
        "import scipy.linalg\n"
        "print(numba.njit(lambda a: np.dot(a, a))(np.arange(3.0)))\n"
    )
    assert fresh_python(script) == ["False", "5.0"]


def test_the_command_line_keeps_blas_to_one_thread_unless_told() -> None:
    script = "import os, rlreco.cli\nprint(os.environ['OPENBLAS_NUM_THREADS'])\n"
    assert fresh_python(script) == ["1"]
    assert fresh_python(script, OPENBLAS_NUM_THREADS="3") == ["3"]


def test_a_sweep_warm_up_loads_the_cell_reset_kernel_too() -> None:
    """The kernel that resets a cell's tables loads (or compiles) in the sweep's warm-up, with
    the visit loops, not in the first cell's timing."""
    script = (
        "from rlreco.engine.kernels.table_rows import reset_rows_nb as k\n"
        "from rlreco.app.sweep_cells import warm_up\n"
        "print(len(k.signatures))\n"
        "warm_up(('eps-greedy',))\n"
        "print(len(k.signatures))\n"
    )
    assert fresh_python(script) == ["0", "1"]


def test_cells_and_simulate_compile_nothing_after_the_warm_up(tmp_path: Path) -> None:
    """A run prepared with a holdout (its visits drawn by held-out state weights), a
    single-phase response and an empirical sampling: once a command's warm-up has loaded the
    kernels, neither sweep cells nor ``simulate`` add a compiled variant of any of them (a new
    argument type, such as a read-only array, would compile the loop again inside the timed
    visits, in every worker)."""
    from helpers import write_transactions

    write_transactions(tmp_path / "tx.csv", n_rows=4000)  # catalogues for slates of 10
    run = tmp_path / "run"
    args = ["prepare", "--data", str(tmp_path / "tx.csv"), "--out", str(run)]
    result = CliRunner().invoke(app, [*args, "--holdout", "customers:0.3"])
    assert result.exit_code == 0, result.output
    script = (
        "from typer.testing import CliRunner\n"
        "from rlreco.app.sweep import run_sweep\n"
        "from rlreco.app.sweep_cells import warm_up\n"
        "from rlreco.app.sweep_grid import SweepSpec\n"
        "from rlreco.cli import app\n"
        "from rlreco.engine.kernels.table_rows import reset_rows_nb\n"
        "from rlreco.engine.kernels.visit_loop import loop_kernels\n"
        "from rlreco.engine.warmup import SIMULATION_KERNELS\n"
        "def variants():\n"
        "    kernels = (*SIMULATION_KERNELS, reset_rows_nb, *loop_kernels())\n"
        "    return sum(len(k.signatures) for k in kernels)\n"
        "warm_up(('eps-greedy',))\n"
        "print(variants())\n"
        "spec = SweepSpec(epsilons=(0.0, 0.1), replicates=1, episodes=300, seed=1, blocks=2,\n"
        "    responses=('holdout', 'popularity', 'seed'))\n"
        f"run_sweep({str(run)!r}, spec, {str(tmp_path / 'sweep')!r}, workers=1, plots=False)\n"
        "print(variants())\n"
        "for sampling in ('empirical', 'uniform'):\n"
        f"    args = ['simulate', {str(run)!r}, '-n', '300', '--state-sampling', sampling]\n"
        "    result = CliRunner().invoke(app, [*args, '--json'])\n"
        "    assert result.exit_code == 0, result.output\n"
        "    print(variants())\n"
    )
    before, *after = (int(n) for n in fresh_python(script))
    assert before > 0
    assert after == [before] * 3  # after the cells, simulate, simulate with uniform sampling


def test_recommend_compiles_nothing_after_its_warm_up(tmp_path: Path) -> None:
    """``recommend`` loads its kernels with a visit to a tiny run first (compile time reported
    apart, and never inside a MongoDB transaction): the real visit, on a run directory of the
    same policy, then adds no compiled variant (eps-greedy, and decaying with its visit counts)."""
    from helpers import synthetic_run

    runs = []
    for policy in ("eps-greedy", "decaying"):
        config = RunConfig().replace(**{"policy.slate_size": 3, "policy.name": policy})
        runs.append(str(synthetic_run(tmp_path / policy, config=config).path))
    script = (
        "from rlreco.app.recommend import recommend\n"
        "from rlreco.engine.warmup import ONLINE_KERNELS, SIMULATION_KERNELS, warm_up_online\n"
        "def variants():\n"
        "    return sum(len(k.signatures) for k in (*SIMULATION_KERNELS, *ONLINE_KERNELS))\n"
        f"for policy, run in zip(('eps-greedy', 'decaying'), {runs!r}):\n"
        "    warm_up_online(policy)\n"
        "    before = variants()\n"
        "    for respond in ('simulate', 'none'):\n"
        "        recommend(run, respond=respond)\n"
        "    print(before, variants())\n"
    )
    counts = [int(n) for n in fresh_python(script)]
    assert counts[0] > 0 and counts[0::2] == counts[1::2]


def test_cli_recommend_reports_kernel_compilation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from helpers import synthetic_run

    import rlreco.app.recommend as recommend_module
    from rlreco.engine.warmup import Warmup

    config = RunConfig().replace(**{"policy.slate_size": 3})
    run = synthetic_run(tmp_path / "run", config=config)
    runner = CliRunner()
    result = runner.invoke(app, ["recommend", str(run.path), "--respond", "none", "--json"])
    assert result.exit_code == 0 and "compiling kernels" not in result.stderr
    monkeypatch.setattr(recommend_module, "warm_up_online", lambda *a: Warmup(12.34, True))
    result = runner.invoke(app, ["recommend", str(run.path), "--json"])
    assert result.exit_code == 0, result.output
    assert result.stderr.strip().splitlines() == ["compiling kernels, first run only: 12.3 s"]
    assert json.loads(result.stdout)["episodes"] == 1  # stdout stays one JSON object
