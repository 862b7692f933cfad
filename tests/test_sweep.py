"""Sweeps: grid validation, per-cell streams, resumable sweep directories, local, process-pool
and Dask execution, summary statistics and plots."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import BLOCKS, EPISODES, small_spec, synthetic_run

from rlreco.app import sweep, sweep_cells, sweep_execution
from rlreco.app.sweep import run_cell, run_sweep
from rlreco.app.sweep_grid import Setting, SweepSpec
from rlreco.config import RunConfig
from rlreco.engine import statistics, sweep_statistics
from rlreco.engine.state_space import StateSpace
from rlreco.engine.tables import Tables
from rlreco.errors import ConfigError, DataError, SimulationError, SnapshotError
from rlreco.io.run_dir import RunDir


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic_run(tmp_path_factory.mktemp("sweep") / "run").path


def metrics_only(results: pd.DataFrame) -> pd.DataFrame:
    """Results without wall-clock columns (which legitimately differ between runs)."""
    return results.drop(columns="cell_seconds").reset_index(drop=True)


@pytest.fixture(scope="module")
def reference(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> sweep.SweepResult:
    """The small sweep run in this process (workers=1)."""
    return run_sweep(run_dir, small_spec(), tmp_path_factory.mktemp("ref") / "out", workers=1)


# ---- statistics ------------------------------------------------------------------------------


def test_t_distribution_matches_scipy() -> None:
    stats = pytest.importorskip("scipy.stats", reason="scipy gives the reference values")
    for df in (1.0, 2.0, 3.0, 4.5, 7.0, 30.0, 250.0):
        for t in (-40.0, -3.0, -1.0, -0.2, 0.0, 0.7, 2.0, 12.0):
            assert statistics.t_cdf(t, df) == pytest.approx(
                stats.t.cdf(t, df), rel=1e-11, abs=1e-14
            )
        for p in (1e-9, 0.001, 0.025, 0.4, 0.5, 0.8, 0.975, 0.999):
            assert statistics.t_quantile(p, df) == pytest.approx(stats.t.ppf(p, df), rel=1e-11)
    rng = np.random.default_rng(3)
    for _ in range(5):
        a, b = rng.normal(0.0, 1.0, 8), rng.normal(0.6, 2.0, 5)
        expected = stats.ttest_ind(a, b, equal_var=False).pvalue
        assert statistics.welch_test(a, b) == pytest.approx(expected, rel=1e-10)


def test_t_interval_and_welch_edge_cases() -> None:
    # textbook value: t_{0.975, 4} = 2.776445...
    ci = statistics.t_interval(np.array([1.0, 2.0, 3.0, 4.0, 5.0]))
    half = 2.7764451051977987 * math.sqrt(2.5) / math.sqrt(5)
    assert (ci.mean, ci.n) == (3.0, 5)
    assert ci.low == pytest.approx(3.0 - half, rel=1e-12)
    assert ci.high == pytest.approx(3.0 + half, rel=1e-12)
    one = statistics.t_interval(np.array([2.0, np.nan]))
    assert one.mean == 2.0 and math.isnan(one.low) and one.n == 1
    assert math.isnan(statistics.welch_test(np.array([1.0]), np.array([1.0, 2.0])))
    assert statistics.welch_test(np.array([1.0, 1.0]), np.array([2.0, 2.0])) == 0.0
    assert statistics.welch_test(np.array([1.0, 1.0]), np.array([1.0, 1.0])) == 1.0
    with pytest.raises(ValueError):
        statistics.t_quantile(1.0, 3.0)


# ---- grid ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"epsilons": (0.1, 1.5)}, "epsilons: 1.5 is not a number in [0, 1]"),
        ({"epsilons": (-0.1,)}, "epsilons: -0.1 is not a number in [0, 1]"),
        ({"epsilons": (float("nan"),)}, "epsilons: nan is not a number in [0, 1]"),
        ({"epsilons": ()}, "epsilons: empty list"),
        ({"epsilons": (0.1, 0.1)}, "epsilons: 0.1 appears twice"),
        ({"replicates": 0}, "replicates: 0 is not an integer >= 1"),
        ({"episodes": 0}, "episodes: 0 is not an integer >= 1"),
        ({"policies": ("eps-greedy", "greedy")}, "policies: unknown policy 'greedy'"),
        ({"policies": ()}, "policies: empty list"),
        ({"slate_sizes": (0,)}, "slate sizes: 0 is not an integer >= 1"),
        ({"responses": ("nope",)}, "responses: 'nope' is neither seed, popularity"),
        ({"params": {"softmax": (0.0,)}}, "softmax.tau: 0.0 is not a number finite and > 0"),
        ({"params": {"bandit": (1.0,)}}, "params: unknown policy 'bandit'"),
        ({"blocks": 0}, "blocks: 0 is not an integer >= 1"),
    ],
)
def test_bad_grids_raise_one_line(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        small_spec(**changes).validate()
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def test_slate_larger_than_catalogue_is_a_bad_grid(run_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="slate sizes: 26 exceeds the smallest segment catalogue"):
        run_sweep(run_dir, small_spec(slate_sizes=(26,)), tmp_path / "out", workers=1)
    assert not (tmp_path / "out").exists()


def test_settings_grid_order_and_stable_stream_keys() -> None:
    spec = small_spec(
        epsilons=(0.1, 0.0),
        policies=("eps-greedy", "softmax"),
        params={"softmax": (0.5, 2.0)},
        slate_sizes=(5, 10),
    )
    settings = spec.settings(RunConfig())
    assert [(s.slate_size, s.policy, s.param) for s in settings] == [
        (5, "eps-greedy", 0.1),
        (5, "eps-greedy", 0.0),
        (5, "softmax", 0.5),
        (5, "softmax", 2.0),
        (10, "eps-greedy", 0.1),
        (10, "eps-greedy", 0.0),
        (10, "softmax", 0.5),
        (10, "softmax", 2.0),
    ]
    # the stream key depends on the setting's values only, not on its place in the grid
    alone = small_spec(epsilons=(0.0,), slate_sizes=(10,)).settings(RunConfig())[0]
    assert alone == settings[5]
    assert alone.stream_id == settings[5].stream_id
    assert len({s.stream_id for s in settings}) == len(settings)
    keys = {s.cell_key(r) for s in settings for r in range(3)}
    assert len(keys) == 3 * len(settings)
    assert settings[0].cell_key(2).startswith("eps-greedy-epsilon0.1-n5-seed-")
    assert settings[0].cell_key(2).endswith("-r002")


def test_default_grid_takes_the_run_config() -> None:
    spec = SweepSpec(epsilons=(0.1,), replicates=2, episodes=10)
    config = RunConfig().replace(**{"policy.slate_size": 4, "response.model": "popularity"})
    (setting,) = spec.settings(config)
    assert (setting.slate_size, setting.response, setting.policy) == (4, "popularity", "eps-greedy")


# ---- a sweep ---------------------------------------------------------------------------------


def test_sweep_writes_results_summary_and_plots(reference: sweep.SweepResult) -> None:
    out = reference.out
    results = reference.results
    assert len(results) == 3 * 3 * BLOCKS
    assert list(results.columns[:8]) == [*sweep_statistics.SETTING_COLUMNS, "replicate", "cell"]
    assert set(sweep_statistics.METRIC_COLUMNS) <= set(results.columns)
    per_cell = results.groupby("cell")
    assert (per_cell["visits"].sum() == EPISODES).all()
    assert (results["slots"] == 10 * results["visits"]).all()
    on_disk = pd.read_parquet(out / "results.parquet")  # no wall times: reproducible bytes
    pd.testing.assert_frame_equal(on_disk, metrics_only(results), check_dtype=False)

    summary = reference.summary
    assert summary["param"].tolist() == [0.0, 0.2, 1.0]
    assert (summary["replicates"] == 3).all()
    for metric in ("reward_per_visit", "click_rate", "buy_rate", "visits_per_second"):
        mean, low, high = (summary[f"{metric}_{k}"] for k in ("mean", "low", "high"))
        assert (low <= mean).all() and (mean <= high).all()
    # the seed model knows no truth: regret is undefined
    assert summary["regret_mean"].isna().all()
    # explored share is 0 at epsilon 0 and 1 at epsilon 1
    assert summary["explored_share_mean"].iloc[0] == 0.0
    assert summary["explored_share_mean"].iloc[2] == 1.0

    document = json.loads((out / "summary.json").read_text())
    assert document["cells_total"] == 9 and document["failures"] == []
    assert len(document["settings"]) == 3
    assert document["settings"][0]["regret_mean"] is None
    assert {b["metric"] for b in document["best"]} == {
        "reward_per_visit",
        "final_reward_per_visit",
        "click_rate",
        "buy_rate",
    }
    assert reference.to_json() == document["settings"]
    for png in reference.plots:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in reference.plots) == ["epsilon_seed.png", "learning_seed.png"]


def test_one_cell_rerun_alone_reproduces_bit_for_bit(
    run_dir: Path, reference: sweep.SweepResult
) -> None:
    spec = small_spec()
    setting = spec.settings(RunConfig())[1]
    outcome = run_cell(run_dir, spec, setting, 2)
    stored = reference.results[reference.results["cell"] == setting.cell_key(2)]
    for name in sweep_statistics.METRIC_COLUMNS:
        np.testing.assert_array_equal(outcome.metrics[name], stored[name].to_numpy())
    # and the cell is the same inside a larger grid with another order
    bigger = small_spec(epsilons=(0.5, 0.2, 0.0, 1.0), replicates=4)
    assert run_cell(run_dir, bigger, setting, 2).metrics["reward_sum"].tolist() == (
        stored["reward_sum"].tolist()
    )
    # replicates are independent streams
    other = run_cell(run_dir, spec, setting, 1)
    assert not np.array_equal(other.metrics["reward_sum"], outcome.metrics["reward_sum"])


def test_rerun_skips_finished_cells_and_resumes_missing_ones(
    run_dir: Path, reference: sweep.SweepResult, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    first = run_sweep(run_dir, small_spec(), out, workers=1, plots=False)
    again = run_sweep(run_dir, small_spec(), out, workers=1, plots=False)
    assert (again.cells_run, again.cells_skipped) == (0, 9)
    pd.testing.assert_frame_equal(again.results, first.results)
    lost = sorted((out / "cells").glob("*.parquet"))[4]
    lost.unlink()
    resumed = run_sweep(run_dir, small_spec(), out, workers=1, plots=False)
    assert (resumed.cells_run, resumed.cells_skipped) == (1, 8)
    pd.testing.assert_frame_equal(metrics_only(resumed.results), metrics_only(reference.results))


def test_grown_grid_reuses_cells_of_the_same_base(
    run_dir: Path, reference: sweep.SweepResult, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    run_sweep(run_dir, small_spec(epsilons=(0.2,)), out, workers=1, plots=False)
    grown = run_sweep(run_dir, small_spec(), out, workers=1, plots=False)
    assert (grown.cells_run, grown.cells_skipped) == (6, 3)
    pd.testing.assert_frame_equal(metrics_only(grown.results), metrics_only(reference.results))


def test_sweep_dir_of_another_base_is_refused_unless_forced(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    spec = small_spec(epsilons=(0.2,), replicates=2)
    run_sweep(run_dir, spec, out, workers=1, plots=False)
    with pytest.raises(ConfigError) as info:
        run_sweep(run_dir, small_spec(epsilons=(0.2,), replicates=2, seed=8), out, workers=1)
    assert "holds a sweep with a different seed 7 (now 8)" in str(info.value)
    assert "\n" not in str(info.value)
    forced = run_sweep(run_dir, small_spec(epsilons=(0.2,), seed=8), out, workers=1, force=True)
    assert forced.cells_run == 3
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty and not a sweep directory"):
        run_sweep(run_dir, spec, tmp_path / "other", workers=1)


def test_failed_cell_is_reported_and_does_not_lose_the_others(
    run_dir: Path, reference: sweep.SweepResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = small_spec()
    bad = spec.settings(RunConfig())[2].cell_key(1)
    real = sweep_execution.simulate_cell

    def flaky(loaded: sweep_cells.LoadedRun, task: sweep_cells.CellTask) -> sweep_cells.CellOutcome:
        if task.key == bad:
            raise RuntimeError("disk on fire\nsecond line")
        return real(loaded, task)

    monkeypatch.setattr(sweep_execution, "simulate_cell", flaky)
    out = tmp_path / "out"
    events: list[sweep_execution.SweepProgress] = []
    broken = run_sweep(run_dir, spec, out, workers=1, progress=events.append, plots=False)
    assert broken.failures == [
        {
            "cell": bad,
            "label": "eps-greedy epsilon=1 n=10 seed",
            "replicate": 1,
            "error": "RuntimeError: disk on fire",
        }
    ]
    assert events[-1].cells_failed == 1 and events[-1].cells_done == 9
    assert "disk on fire" in (out / "cells" / f"{bad}.error.txt").read_text()
    assert broken.summary["replicates"].tolist() == [3, 3, 2]
    assert json.loads((out / "summary.json").read_text())["failures"][0]["cell"] == bad

    monkeypatch.setattr(sweep_execution, "simulate_cell", real)
    fixed = run_sweep(run_dir, spec, out, workers=1, plots=False)
    assert (fixed.cells_run, fixed.failures) == (1, [])
    assert not (out / "cells" / f"{bad}.error.txt").exists()
    pd.testing.assert_frame_equal(metrics_only(fixed.results), metrics_only(reference.results))


def test_progress_reports_every_cell(run_dir: Path, tmp_path: Path) -> None:
    events: list[sweep_execution.SweepProgress] = []
    run_sweep(
        run_dir,
        small_spec(replicates=2),
        tmp_path / "o",
        workers=1,
        progress=events.append,
        plots=False,
    )
    assert [e.cells_done for e in events] == list(range(7))
    assert events[0].last_cell is None and events[-1].visits_done == 6 * EPISODES
    assert all(e.visits_total == 6 * EPISODES and e.cells_total == 6 for e in events)
    assert events[-1].visits_per_second > 0


@pytest.mark.parametrize("workers", [1, 2])
def test_a_response_model_that_cannot_be_built_fails_each_cell_not_the_sweep(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise SimulationError("model broke")

    # a fresh load (no model cached from other tests), whose models all fail to build
    monkeypatch.setattr(sweep_cells, "_LOADED", {})
    monkeypatch.setattr(sweep_cells, "build_response", broken)
    result = run_sweep(run_dir, small_spec(), tmp_path / "out", workers=workers, plots=False)
    assert result.cells_run == 9 and len(result.failures) == 9
    assert {f["error"] for f in result.failures} == {"model broke"}


@pytest.mark.parametrize("start", ["fork", "spawn"])
def test_process_pool_gives_identical_results(
    run_dir: Path,
    reference: sweep.SweepResult,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    start: str,
) -> None:
    def refuse(*args: object) -> None:
        raise AssertionError(f"the sweep started a {start} pool")

    if start == "fork":
        if not sweep_execution.can_fork():
            pytest.skip("this process cannot fork its workers (no fork, or other threads)")
        # forked workers get the run this process loaded: none loads it again
        monkeypatch.setattr(sweep, "start_pool", refuse)
    else:
        monkeypatch.setattr(sweep, "can_fork", lambda: False)
        monkeypatch.setattr(sweep, "fork_pool", refuse)
    pooled = run_sweep(run_dir, small_spec(), tmp_path / "out", workers=2, plots=False)
    pd.testing.assert_frame_equal(metrics_only(pooled.results), metrics_only(reference.results))
    assert not pooled.failures


@pytest.mark.parametrize("processes", [False, True], ids=["threads", "processes"])
def test_dask_cluster_gives_identical_results(
    run_dir: Path, reference: sweep.SweepResult, tmp_path: Path, processes: bool
) -> None:
    distributed = pytest.importorskip(
        "distributed", reason="Dask distributed (extra rlreco[dask]) is not installed"
    )
    with distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=processes,
        protocol="tcp",
        host="127.0.0.1",
        dashboard_address=None,
    ) as cluster:
        result = run_sweep(
            run_dir,
            small_spec(),
            tmp_path / "out",
            scheduler=cluster.scheduler_address,
            plots=False,
        )
    pd.testing.assert_frame_equal(metrics_only(result.results), metrics_only(reference.results))


def test_unreachable_scheduler_is_a_one_line_error(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("distributed", reason="Dask distributed is not installed")
    monkeypatch.setattr(sweep_execution, "CONNECT_TIMEOUT", "0.5s")
    with pytest.raises(ConfigError, match=r"cannot connect to Dask scheduler tcp://127\.0\.0\.1:9"):
        run_sweep(run_dir, small_spec(), tmp_path / "out", scheduler="tcp://127.0.0.1:9")


def truth_table(run_dir: Path, path: Path, *, drop_last: bool = False) -> Path:
    """A truth table of the synthetic run: every (state, catalogue product) of its segment."""
    run = RunDir.open(run_dir)
    space = StateSpace.from_columns(run.read_space())
    rng = np.random.default_rng(5)
    rows = []
    for s, sid in enumerate(space.state_ids):
        for p in space.catalogue(int(space.state_segment[s])):
            rows.append((sid, space.product_codes[p], rng.uniform(0, 0.3), rng.uniform(0, 0.2)))
    frame = pd.DataFrame(rows, columns=["state_id", "product_id", "p_click", "p_buy"])
    frame.iloc[: -1 if drop_last else None].to_parquet(path)
    return path


def test_sweep_with_known_truth_reports_regret(run_dir: Path, tmp_path: Path) -> None:
    table = truth_table(run_dir, tmp_path / "truth.parquet")
    spec = small_spec(epsilons=(0.0, 1.0), replicates=2, responses=("popularity", str(table)))
    result = run_sweep(run_dir, spec, tmp_path / "out", workers=1)
    assert result.summary["response"].tolist() == ["popularity"] * 2 + [str(table)] * 2
    regret = result.summary["regret_mean"].to_numpy()
    assert np.all(np.isfinite(regret)) and np.all(regret > 0)
    per_visit = result.summary["regret_per_visit_mean"].to_numpy()
    np.testing.assert_allclose(per_visit * EPISODES, regret, rtol=1e-12)
    assert "regret" in {b["metric"] for b in result.best}
    assert sorted(p.name for p in result.plots) == [
        "epsilon_popularity.png",
        "epsilon_truth.png",
        "learning_popularity.png",
        "learning_truth.png",
    ]


def test_bad_truth_table_fails_before_any_cell(run_dir: Path, tmp_path: Path) -> None:
    table = truth_table(run_dir, tmp_path / "truth.parquet", drop_last=True)
    with pytest.raises(DataError, match="has no row for catalogue product"):
        run_sweep(run_dir, small_spec(responses=(str(table),)), tmp_path / "out", workers=1)
    assert not (tmp_path / "out").exists()


def test_popularity_derives_from_the_initial_snapshot(tmp_path: Path) -> None:
    run = synthetic_run(tmp_path / "run", seed=3)
    space = StateSpace.from_columns(run.read_space())
    tables = Tables.from_columns(run.read_snapshot(), space)
    initial_count = tables.count.copy()
    tables.cells["count"][tables.known] += 7  # as if visits had been simulated since
    run.commit(visits=1_000, snapshot=tables.to_columns(space), metrics=None, updates={})
    loaded = sweep_cells.LoadedRun(sweep_cells.RunPayload.read(RunDir.open(run.path)))
    np.testing.assert_array_equal(loaded.tables.count, initial_count + 7 * tables.known)
    np.testing.assert_array_equal(loaded.history_count, initial_count)


# ---- statistics of a sweep -------------------------------------------------------------------


def replicate_frame(values: dict[float, list[float]]) -> pd.DataFrame:
    rows = []
    for eps, xs in values.items():
        for r, x in enumerate(xs):
            rows.append(
                {
                    "policy": "eps-greedy",
                    "param_name": "epsilon",
                    "param": eps,
                    "step_size": "1/n",
                    "slate_size": 10,
                    "response": "popularity",
                    "replicate": r,
                    **{m: x for m in sweep_statistics.SUMMARY_METRICS},
                }
            )
    return pd.DataFrame(rows)


def test_best_setting_and_significance() -> None:
    settings = [Setting("eps-greedy", e, 10, "popularity", "popularity") for e in (0.0, 0.1, 0.5)]
    clear = replicate_frame({0.0: [1.0, 1.1, 0.9], 0.1: [3.0, 3.1, 2.9], 0.5: [2.0, 2.2, 1.8]})
    best = {
        b["metric"]: b
        for b in sweep_statistics.best_settings(
            sweep_statistics.summarise(clear, [(x.label, x.columns()) for x in settings]), clear
        )
    }
    assert best["reward_per_visit"]["best"] == settings[1].label
    assert best["reward_per_visit"]["runner_up"] == settings[2].label
    assert best["reward_per_visit"]["significant"] is True
    # regret: lower is better
    assert best["regret"]["best"] == settings[0].label
    close = replicate_frame({0.0: [1.0, 2.0, 3.0], 0.1: [1.2, 2.1, 3.1], 0.5: [0.0, 0.1, 0.2]})
    best = {
        b["metric"]: b
        for b in sweep_statistics.best_settings(
            sweep_statistics.summarise(close, [(x.label, x.columns()) for x in settings]), close
        )
    }
    assert best["reward_per_visit"]["best"] == settings[1].label
    assert best["reward_per_visit"]["significant"] is False
    assert 0.05 < best["reward_per_visit"]["p_value"] < 1.0


def test_learning_curves_have_one_point_per_block(reference: sweep.SweepResult) -> None:
    curves = sweep_statistics.learning_curves(reference.results)
    reward = curves[curves["metric"] == "reward_per_visit"]
    assert len(reward) == 3 * BLOCKS
    assert reward.groupby("param")["visits"].max().tolist() == [EPISODES] * 3
    assert (reward["n"] == 3).all() and (reward["low"] < reward["high"]).all()
    regret = curves[curves["metric"] == "regret"]
    assert regret["mean"].isna().all()


def test_verdict_names_the_best_setting_and_the_cost_of_each_alternative() -> None:
    settings = [Setting("eps-greedy", e, 10, "popularity", "popularity") for e in (0.0, 0.1, 0.5)]
    frame = replicate_frame({0.0: [1.0, 1.1, 0.9], 0.1: [3.0, 3.1, 2.9], 0.5: [2.0, 2.2, 1.8]})
    # regret per visit is known: lower is better, whatever the reward says
    frame["regret_per_visit"] = frame["param"].map({0.0: 0.50, 0.1: 0.20, 0.5: 0.30})
    frame["regret_per_visit"] += frame["replicate"] * 0.01
    summary = sweep_statistics.summarise(frame, [(x.label, x.columns()) for x in settings])
    (verdict,) = sweep_statistics.verdicts(summary, frame)
    assert verdict["metric"] == "regret_per_visit"
    assert verdict["best"] == settings[1].label
    assert verdict["best_mean"] == pytest.approx(0.21)
    assert verdict["best_low"] < verdict["best_mean"] < verdict["best_high"]
    costs = {a["label"]: a for a in verdict["alternatives"]}
    assert list(costs) == [settings[2].label, settings[0].label]  # cheapest alternative first
    # equal spreads: the difference of means is exact, its interval is t(4 df) * sqrt(2 s^2 / 3)
    half = statistics.t_quantile(0.975, 4.0) * math.sqrt(2 * 0.0001 / 3) * 1000
    assert costs[settings[2].label]["cost_per_1000"] == pytest.approx(100.0)
    assert costs[settings[2].label]["cost_low"] == pytest.approx(100.0 - half)
    assert costs[settings[0].label]["cost_per_1000"] == pytest.approx(300.0)
    assert costs[settings[0].label]["significant"] is True
    # unknown regret (seed response): judged on reward, the cost is the reward lost
    frame["regret_per_visit"] = np.nan
    summary = sweep_statistics.summarise(frame, [(x.label, x.columns()) for x in settings])
    (verdict,) = sweep_statistics.verdicts(summary, frame)
    assert verdict["metric"] == "reward_per_visit" and verdict["best"] == settings[1].label
    lost = {a["label"]: a["cost_per_1000"] for a in verdict["alternatives"]}
    assert lost[settings[2].label] == pytest.approx(1000.0)
    assert lost[settings[0].label] == pytest.approx(2000.0)


def test_welch_difference_matches_scipy() -> None:
    stats = pytest.importorskip("scipy.stats", reason="scipy gives the reference values")
    rng = np.random.default_rng(4)
    a, b = rng.normal(1.0, 1.0, 7), rng.normal(0.2, 3.0, 5)
    ci = statistics.welch_difference(a, b)
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    df = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
    half = stats.t.ppf(0.975, df) * math.sqrt(va + vb)
    assert ci.mean == pytest.approx(a.mean() - b.mean())
    assert ci.low == pytest.approx(a.mean() - b.mean() - half, rel=1e-9)
    assert ci.high == pytest.approx(a.mean() - b.mean() + half, rel=1e-9)
    assert math.isnan(statistics.welch_difference(a[:1], b).low)


# ---- kill -9 of a worker or of the sweep itself, then resume ---------------------------------

KILL_ARGS = ["--epsilons", "0,0.2,1", "--replicates", "3", "--episodes", "400000", "--seed", "7",
             "--response", "seed", "--no-plots"]  # fmt: skip


def sweep_command(run_dir: Path, out: Path, workers: int) -> list[str]:
    return [sys.executable, "-m", "rlreco.cli", "sweep", str(run_dir), "--out", str(out),
            "--workers", str(workers), *KILL_ARGS]  # fmt: skip


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        found += [int(c) for c in task.read_text().split()]
    return found


def is_worker(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return False
    # forked workers share the sweep's command line; spawned ones run spawn_main
    return b"resource_tracker" not in cmdline


def wait_for_cells(process: subprocess.Popen[str], out: Path, n: int) -> None:
    deadline = time.monotonic() + 300
    while len(list((out / "cells").glob("*.parquet"))) < n:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no cell finished in time"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def uninterrupted(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    out = tmp_path_factory.mktemp("whole") / "out"
    subprocess.run(sweep_command(run_dir, out, 1), check=True, capture_output=True, env=ENV)
    return (out / "results.parquet").read_bytes()


ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads /proc for child pids")
def test_sweep_resumes_after_kill_9_of_a_worker(
    run_dir: Path, uninterrupted: bytes, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    process = subprocess.Popen(
        sweep_command(run_dir, out, 2), env=ENV, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    wait_for_cells(process, out, 1)
    workers = [pid for pid in children(process.pid) if is_worker(pid)]
    assert workers, "no worker process found"
    os.kill(workers[0], signal.SIGKILL)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 2, stderr
    assert "ended unexpectedly" in stderr and len(stderr.strip().splitlines()) == 1
    finished = len(list((out / "cells").glob("*.parquet")))
    assert 1 <= finished < 9 and not (out / "results.parquet").exists()
    for pid in workers:  # no worker outlives the sweep
        assert not Path(f"/proc/{pid}").exists() or b"Z" in stat_state(pid)
    subprocess.run(sweep_command(run_dir, out, 2), check=True, capture_output=True, env=ENV)
    assert (out / "results.parquet").read_bytes() == uninterrupted


def stat_state(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/stat").read_bytes().split(b") ")[1][:1]
    except OSError:
        return b"Z"


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads /proc for child pids")
@pytest.mark.parametrize("plots", [False, True], ids=["no-plots", "plots"])
def test_sweep_resumes_after_kill_9_of_the_sweep(
    run_dir: Path, uninterrupted: bytes, tmp_path: Path, plots: bool
) -> None:
    out = tmp_path / "out"
    command = sweep_command(run_dir, out, 2)
    if plots:  # a plot process waits for the figures too
        command.remove("--no-plots")
    process = subprocess.Popen(
        command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    wait_for_cells(process, out, 1)
    workers = [pid for pid in children(process.pid) if is_worker(pid)]
    assert len(workers) == 2 + plots
    os.kill(process.pid, signal.SIGKILL)
    process.communicate(timeout=60)
    # orphaned workers (and the plot process) notice and end themselves
    deadline = time.monotonic() + 30
    while any(stat_state(pid) not in (b"Z", b"X") for pid in workers):
        assert time.monotonic() < deadline, "a worker outlived the sweep"
        time.sleep(0.1)
    assert len(list((out / "cells").glob("*.parquet"))) < 9
    subprocess.run(sweep_command(run_dir, out, 1), check=True, capture_output=True, env=ENV)
    assert (out / "results.parquet").read_bytes() == uninterrupted


def test_intervals_stay_within_the_range_of_their_metric() -> None:
    """Two replicates far apart: the t-interval of a speed, a rate or a regret would reach
    below zero (or a rate above one); it is cut there, the mean and unbounded metrics are not."""
    settings = [Setting("eps-greedy", e, 10, "popularity", "popularity") for e in (0.0, 0.1)]
    frame = replicate_frame({0.0: [0.05, 0.95], 0.1: [0.45, 0.5, 0.55]})
    frame["reward_per_visit"] -= 0.5
    summary = sweep_statistics.summarise(frame, [(x.label, x.columns()) for x in settings])
    wide = summary.iloc[0]
    for metric in ("visits_per_second", "click_rate", "explored_share", "regret"):
        assert wide[f"{metric}_low"] == 0.0 and wide[f"{metric}_mean"] == pytest.approx(0.5)
    for metric in ("click_rate", "buy_rate", "explored_share"):
        assert wide[f"{metric}_high"] == 1.0
    assert wide["visits_per_second_high"] > 1.0
    half = statistics.t_quantile(0.975, 1.0) * 0.45  # sd 0.45 * sqrt(2), over sqrt(2)
    assert wide["reward_per_visit_low"] == pytest.approx(-half)  # unbounded: not cut
    narrow = summary.iloc[1]
    assert 0.0 < narrow["click_rate_low"] < 0.5 < narrow["click_rate_high"] < 1.0
    one = sweep_statistics.summarise(
        frame[frame["replicate"] == 0], [(settings[0].label, settings[0].columns())]
    )
    assert math.isnan(one.iloc[0]["visits_per_second_low"])  # one replicate: no interval


@pytest.mark.parametrize("workers", [1, 2])
def test_a_sweep_that_cannot_load_its_run_leaves_no_directory_it_made(
    tmp_path: Path, workers: int
) -> None:
    """A corrupt snapshot is found when the run loads, after the sweep directory is prepared:
    one error, and the directory this call made is gone; an existing sweep's is kept."""
    run = synthetic_run(tmp_path / "run", seed=5)
    spec = small_spec(epsilons=(0.1,), replicates=1)
    kept = tmp_path / "kept"
    run_sweep(run.path, spec, kept, workers=1, plots=False)
    (kept / "results.parquet").unlink()
    cell = next((kept / "cells").glob("*.parquet"))
    cell.rename(cell.with_suffix(".keep"))  # one cell left to run: the run is loaded again
    snapshot = run.path / run.manifest["snapshot"]
    snapshot.write_bytes(snapshot.read_bytes()[:300])
    sweep_cells._LOADED.clear()  # as in a new process: this one kept the run it loaded
    for out in (tmp_path / "new", kept):
        with pytest.raises(SnapshotError, match="corrupt or not a Parquet file"):
            run_sweep(run.path, spec, out, workers=workers, plots=False)
    assert not (tmp_path / "new").exists()
    assert (kept / "sweep.json").is_file() and cell.with_suffix(".keep").is_file()
