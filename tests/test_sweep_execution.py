"""How a sweep uses processes and memory: figures drawn in forked processes and by the plot
process, the progress bar's thread, the reused heap of response-model builds, and the response
models stored in the run directory."""

from __future__ import annotations

import gc
import os
import resource
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import small_spec, synthetic_run

from rlreco.app import report, sweep, sweep_cells, sweep_execution, sweep_plots
from rlreco.app.sweep import run_sweep
from rlreco.engine.response import build_response
from rlreco.engine.simulation_params import SimulationParams
from rlreco.engine.sweep_statistics import learning_curves
from rlreco.io import array_cache
from rlreco.io.parquet_tables import reused_heap, use_system_allocator


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="forks on Linux only")
def test_call_forked_makes_every_call_and_raises_what_fails_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # threads other tests left behind (Dask's) hold no lock these calls need
    monkeypatch.setattr(sweep_execution, "can_fork", lambda: True)
    here = os.getpid()

    def write(name: str) -> Callable[[], None]:
        return lambda: (tmp_path / name).write_text(str(os.getpid()))

    def fails_away_from_here() -> None:
        if os.getpid() != here:
            raise RuntimeError("not here")
        (tmp_path / "retried").write_text(str(os.getpid()))

    def pid(name: str) -> int:
        return int((tmp_path / name).read_text())

    sweep_execution.call_forked([write("a"), write("b"), write("c")], 2)
    assert pid("a") == pid("c") == here and pid("b") != here  # round-robin over 2 processes
    # the forked process's calls (1 and 3) fail at 1: both are made again here
    sweep_execution.call_forked([write("a"), fails_away_from_here, write("c"), write("d")], 2)
    assert pid("retried") == pid("d") == here

    def broken() -> None:
        raise RuntimeError("plot broke")

    with pytest.raises(RuntimeError, match="plot broke"):
        sweep_execution.call_forked([write("e"), broken], 2)
    assert (tmp_path / "e").is_file()


def test_sweep_progress_bar_runs_no_thread_before_the_first_or_after_the_last_cell() -> None:
    def progress(done: int) -> sweep_execution.SweepProgress:
        return sweep_execution.SweepProgress(2, done, 0, 0, done * 10, 20, 1.0, None)

    def redraws() -> int:
        return sum(type(t).__name__ == "_RefreshThread" for t in threading.enumerate())

    with report.sweep_progress(enabled=True) as update:
        assert redraws() == 0  # workers may be forked here
        update(progress(0))
        update(progress(1))
        assert redraws() == 1  # rich's redraw thread
        update(progress(2))
        assert redraws() == 0  # plots may be drawn in forks here


def page_faults_of_reallocating(megabytes: int = 1, times: int = 40) -> int:
    """Minor page faults of allocating, touching and freeing the same array ``times`` times."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(times):
        np.ones(megabytes * 2**20 // 8).sum()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_response_models_are_built_on_a_reused_heap_and_the_setting_is_restored() -> None:
    use_system_allocator()  # what loading a run sets: every 1 MiB array is a fresh mapping
    fresh = page_faults_of_reallocating()
    with reused_heap():
        reused = page_faults_of_reallocating()
    assert reused < fresh / 5
    assert page_faults_of_reallocating() > 5 * reused  # loading's setting is back


# ---- the stored popularity model -------------------------------------------------------------


def popularity_sweep(run: Path, out: Path, **changes: object) -> pd.DataFrame:
    """A small popularity sweep, loading the run afresh (nothing kept from other sweeps)."""
    sweep_cells._LOADED.clear()
    spec = small_spec(epsilons=(0.0, 0.2), replicates=2, responses=("popularity",), **changes)
    return run_sweep(run, spec, out, workers=1, plots=False).results.drop(columns="cell_seconds")


def test_popularity_model_is_stored_in_the_run_and_read_back_bit_for_bit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = synthetic_run(tmp_path / "run", seed=4)
    built = popularity_sweep(run.path, tmp_path / "built")
    stored = sorted((run.path / array_cache.CACHE_DIR).glob("popularity-*.npz"))
    assert len(stored) == 1

    # the stored arrays are the model's, bit for bit
    loaded = sweep_cells.load_run(run.path, sweep_cells.run_token(run.manifest))
    params = SimulationParams.from_config(loaded.config, response="popularity")
    fresh = build_response(
        "popularity",
        loaded.space,
        rewards=params.rewards,
        slate_size=params.slate_size,
        click_probs=params.click_probs,
        buy_probs=params.buy_probs,
        history_count=loaded.history_count,
    )
    with np.load(stored[0]) as arrays:
        assert arrays["truth"].tobytes() == fresh.truth[0].tobytes()
        assert arrays["best_mu"].tobytes() == fresh.best_mu[0].tobytes()

    def broken(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model is read, not built")

    monkeypatch.setattr(sweep_cells, "build_response", broken)
    pd.testing.assert_frame_equal(popularity_sweep(run.path, tmp_path / "read"), built)
    monkeypatch.undo()

    # another slate size is another model; a damaged file is built again and replaced
    popularity_sweep(run.path, tmp_path / "slate", slate_sizes=(5,))
    assert len(list((run.path / array_cache.CACHE_DIR).glob("popularity-*.npz"))) == 2
    stored[0].write_bytes(stored[0].read_bytes()[:1000])
    pd.testing.assert_frame_equal(popularity_sweep(run.path, tmp_path / "damaged"), built)
    with np.load(stored[0]) as arrays:
        assert arrays["truth"].tobytes() == fresh.truth[0].tobytes()


def test_a_run_directory_that_cannot_store_the_model_still_sweeps(tmp_path: Path) -> None:
    run = synthetic_run(tmp_path / "run", seed=5)
    (run.path / array_cache.CACHE_DIR).write_text("not a folder")
    first = popularity_sweep(run.path, tmp_path / "a")
    pd.testing.assert_frame_equal(popularity_sweep(run.path, tmp_path / "b"), first)
    assert (run.path / array_cache.CACHE_DIR).read_text() == "not a folder"


# ---- the plot process ------------------------------------------------------------------------


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="forks on Linux only")
def test_plots_are_drawn_by_the_plot_process_and_again_here_if_it_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # threads other tests left behind (Dask's) hold no lock the plot process needs
    monkeypatch.setattr(sweep_execution, "can_fork", lambda: True)
    monkeypatch.setattr(sweep_plots, "can_fork", lambda: True)
    run = synthetic_run(tmp_path / "run", seed=6)
    here = os.getpid()
    drawn_here: list[int] = []
    real = sweep_plots.draw_figures

    def draw_here(figures: sweep_plots.Figures, processes: int) -> list[Path]:
        drawn_here.append(os.getpid())
        return real(figures, processes)

    monkeypatch.setattr(sweep, "draw_figures", draw_here)
    spec = small_spec(epsilons=(0.0, 1.0), replicates=2)
    result = run_sweep(run.path, spec, tmp_path / "out", workers=1)
    assert drawn_here == []  # the plot process drew them
    assert [p.name for p in result.plots] == ["learning_seed.png", "epsilon_seed.png"]
    for png in result.plots:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    def fails_away_from_here(figures: sweep_plots.Figures, processes: int) -> list[Path]:
        if os.getpid() != here:
            raise RuntimeError("plot process broke")
        return real(figures, processes)

    monkeypatch.setattr(sweep_plots, "draw_figures", fails_away_from_here)
    for png in result.plots:
        png.unlink()
    again = run_sweep(run.path, spec, tmp_path / "out", workers=1)
    assert drawn_here == [here] and again.plots == result.plots
    assert all(png.is_file() for png in again.plots)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="forks on Linux only")
def test_a_plot_process_ends_when_the_sweep_sends_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sweep_plots, "can_fork", lambda: True)  # as above
    plotter = sweep_plots.PlotProcess.start(1)
    assert plotter is not None
    plotter.close()  # reaped: waitpid would fail on a second wait
    with pytest.raises(ChildProcessError):
        os.waitpid(plotter.pid, 0)
    plotter.send((pd.DataFrame(), pd.DataFrame(), Path("."), {}))  # nothing to send to
    assert not plotter.drawn()


def test_a_warmed_up_plot_process_writes_the_figures_drawn_here_byte_for_byte(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sweep_execution, "can_fork", lambda: True)  # as above
    monkeypatch.setattr(sweep_plots, "can_fork", lambda: True)
    real_warm_up = sweep_plots.warm_up_drawing
    warmed = tmp_path / "warmed"
    warmed.mkdir()

    def warm_up() -> None:
        real_warm_up()  # raises if any artist of the throwaway figure is drawn wrong
        (warmed / str(os.getpid())).touch()

    monkeypatch.setattr(sweep_plots, "warm_up_drawing", warm_up)
    warm_up()  # here too: a failure in the plot process would only show as a redraw here
    run = synthetic_run(tmp_path / "run", seed=6)
    spec = small_spec(epsilons=(0.0, 0.2, 1.0), replicates=2)
    result = run_sweep(run.path, spec, tmp_path / "out", workers=1)
    pids = {int(p.name) for p in warmed.iterdir()}
    assert len(pids) == 2 and os.getpid() in pids  # the plot process warmed up too
    figures = (learning_curves(result.results), result.summary, tmp_path / "here", {})
    (tmp_path / "here").mkdir()
    drawn_here = sweep_plots.draw_figures(figures, 1)
    assert [p.name for p in drawn_here] == [p.name for p in result.plots]
    assert sorted(p.name for p in (tmp_path / "out" / "plots").iterdir()) == sorted(
        p.name for p in drawn_here
    )
    for theirs, ours in zip(result.plots, drawn_here, strict=True):
        assert theirs.read_bytes() == ours.read_bytes()


def test_the_collector_skips_the_start_of_a_sweep_and_is_restored_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sweep_execution, "can_fork", lambda: True)  # as above
    monkeypatch.setattr(sweep_plots, "can_fork", lambda: True)
    run = synthetic_run(tmp_path / "run", seed=6)
    seen: list[tuple[bool, int]] = []

    def progress(update: sweep_execution.SweepProgress) -> None:
        seen.append((gc.isenabled(), gc.get_freeze_count()))

    gc.unfreeze()  # whatever an earlier test left: a collector as in any fresh process
    assert gc.isenabled()
    for workers, out in ((1, "inline"), (2, "forked")):
        run_sweep(run.path, small_spec(replicates=1), tmp_path / out, workers=workers,
                  progress=progress, plots=False)  # fmt: skip
        # while the cells ran: collecting, over what the start built only
        assert all(enabled and frozen > 0 for enabled, frozen in seen)
        assert gc.isenabled() and gc.get_freeze_count() == 0
        seen.clear()
    gc.disable()  # a caller's choice stays
    try:
        run_sweep(run.path, small_spec(replicates=1), tmp_path / "off", workers=1, plots=False)
        assert not gc.isenabled() and gc.get_freeze_count() == 0
    finally:
        gc.enable()
    gc.freeze()  # and so do objects a caller froze
    try:
        frozen = gc.get_freeze_count()
        run_sweep(run.path, small_spec(replicates=1), tmp_path / "frozen", workers=1, plots=False)
        assert gc.get_freeze_count() >= frozen and gc.isenabled()
    finally:
        gc.unfreeze()
