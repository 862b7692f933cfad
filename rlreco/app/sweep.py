"""Sweeps: a grid of exploration settings x replicates, run in parallel, summarised with CIs.

:func:`run_sweep` is what ``rlreco sweep`` calls: it checks the grid
(:mod:`rlreco.app.sweep_grid`), runs the cells not yet finished in the sweep directory
(:mod:`rlreco.app.sweep_cells`, :mod:`rlreco.app.sweep_execution`), then writes the per-block
results, the summary with confidence intervals (:mod:`rlreco.engine.sweep_statistics`) and
the plots (drawn by a process forked at the start, :mod:`rlreco.app.sweep_plots`).

A *cell* is one replicate of a setting: ``episodes`` visits from the run directory's latest
snapshot, with per-block metrics (``blocks`` blocks per cell).

Random streams
--------------
Cell ``(setting, replicate)`` runs a :class:`~rlreco.engine.simulation.Simulator` on the
stream key ``(streams.SWEEP, setting_id, replicate)`` under the sweep seed, where
``setting_id`` is a 64-bit hash (SHA-256) of the setting's *values*: the policy, the
parameter's exact binary value, the slate size and the response model (a truth table by the
SHA-256 of its content). Grid coordinates are deliberately not used: a cell keeps its numbers
when the grid around it grows or is reordered, so :func:`run_cell` re-runs any one cell alone
and reproduces it bit for bit, and a sweep directory reuses finished cells of any grid over
the same base (run, snapshot, seed, visits per cell, blocks).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from rlreco.app.cores import usable_cores
from rlreco.app.sweep_cells import (
    CellOutcome,
    CellTask,
    LoadedRun,
    RunPayload,
    execute_cell,
    load_run,
    run_token,
    start_warm_up,
)
from rlreco.app.sweep_execution import (
    CollectorPause,
    ProgressCallback,
    SweepProgress,
    can_fork,
    fork_pool,
    run_dask,
    run_inline,
    run_pool,
    start_pool,
    stop_pool,
)
from rlreco.app.sweep_grid import RESPONSE_NAMES, Setting, SweepSpec, check_int
from rlreco.app.sweep_plots import Figures, PlotProcess, draw_figures
from rlreco.app.truth import monthly_schedule, resolve_response, response_spec, schedule_starts
from rlreco.config import RunConfig, config_from_dict, format_schedule, is_schedule, parse_schedule
from rlreco.engine.state_space import StateSpace
from rlreco.engine.sweep_statistics import (
    METRIC_COLUMNS,
    SETTING_COLUMNS,
    SUMMARY_METRICS,
    best_settings,
    learning_curves,
    replicate_metrics,
    summarise,
    verdicts,
)
from rlreco.engine.truth_table import truth_from_frame
from rlreco.errors import ConfigError, RlrecoError
from rlreco.io.plots import load_matplotlib, sweep_figure_paths
from rlreco.io.run_dir import RunDir
from rlreco.io.sweep_dir import SweepDir
from rlreco.io.truth import read_truth_table

if TYPE_CHECKING:
    from rlreco.engine.warmup import Warmup  # numba: imported where the cells run

__all__ = ["SweepProgress", "SweepResult", "SweepSpec", "run_cell", "run_sweep"]


@dataclass
class SweepResult:
    """Outcome of :func:`run_sweep`.

    Attributes
    ----------
    out : Path
        The sweep directory.
    summary : DataFrame
        One row per setting (grid order): ``label``, setting columns, ``replicates`` (finished),
        and ``<metric>_mean``, ``<metric>_low``, ``<metric>_high`` per :data:`SUMMARY_METRICS`.
    results : DataFrame
        Per-block metrics of every finished cell (the content of ``results.parquet``).
    best : list of dict
        :func:`~rlreco.engine.sweep_statistics.best_settings`.
    verdicts : list of dict
        :func:`~rlreco.engine.sweep_statistics.verdicts`: per truth, the setting to ship and
        what each alternative costs per 1,000 visits.
    failures : list of dict
        ``{"cell", "label", "replicate", "error"}`` per failed cell.
    cells_total, cells_run, cells_skipped : int
        Cells of the grid, simulated now, and found finished on disk.
    seconds : float
        Wall time of this call.
    plots : list of Path
        PNG files written.
    warmup : Warmup or None
        Loading the visit loops before the cells, in this process (None where workers loaded
        them: spawned processes, a Dask cluster); ``compiled`` on a machine's first run.
    """

    out: Path
    summary: pd.DataFrame
    results: pd.DataFrame
    best: list[dict[str, Any]]
    verdicts: list[dict[str, Any]]
    failures: list[dict[str, Any]]
    cells_total: int
    cells_run: int
    cells_skipped: int
    seconds: float
    plots: list[Path]
    warmup: Warmup | None = None

    def to_json(self) -> list[dict[str, Any]]:
        """One JSON-compatible object per setting: setting values, ``replicates``, and
        ``<metric>_mean`` / ``_low`` / ``_high`` (null where undefined)."""
        return [
            {key: _json_value(value) for key, value in row.items()}
            for row in self.summary.to_dict(orient="records")
        ]

    def document(self) -> dict[str, Any]:
        """Everything ``summary.json`` holds: settings, best per metric, failures, counts."""
        return {
            "settings": self.to_json(),
            "best": self.best,
            "verdicts": self.verdicts,
            "failures": self.failures,
            "cells_total": self.cells_total,
            "cells_run": self.cells_run,
            "cells_skipped": self.cells_skipped,
            "seconds": round(self.seconds, 3),
            "plots": [str(p) for p in self.plots],
        }


def _json_value(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if not math.isfinite(float(value)) else float(value)
    return value


def sweep_base(run: RunDir, spec: SweepSpec, config: RunConfig) -> dict[str, Any]:
    """Values every cell's numbers depend on besides the cell itself."""
    return {
        "run_id": run.manifest["run_id"],
        "snapshot": run.manifest["snapshot"],
        "seed": spec.seed if spec.seed is not None else config.simulation.seed,
        "episodes": int(spec.episodes),
        "blocks": int(spec.blocks),
    }


def sweep_tasks(
    spec: SweepSpec, settings: list[Setting], base: Mapping[str, Any]
) -> list[CellTask]:
    """Every cell of the grid in grid order (settings, then replicates)."""
    block = -(-int(spec.episodes) // int(spec.blocks))
    return [
        CellTask(
            key=s.cell_key(r),
            setting=s,
            replicate=r,
            seed=int(base["seed"]),
            episodes=int(spec.episodes),
            metrics_block=block,
        )
        for s in settings
        for r in range(spec.replicates)
    ]


def check_settings(space: StateSpace, settings: list[Setting]) -> None:
    """Reject, before any cell runs, settings that every replicate would fail on.

    Raises
    ------
    ConfigError
        A slate size larger than the catalogue of a segment with states.
    DataError
        A truth table that does not fit the run (checked once here, not per cell).
    """
    sizes = np.diff(space.catalogue_ptr)[np.unique(space.state_segment)]
    smallest = int(sizes.min()) if sizes.size else 0
    for slate in sorted({s.slate_size for s in settings}):
        if slate > smallest:
            raise ConfigError(
                f"slate sizes: {slate} exceeds the smallest segment catalogue ({smallest} products)"
            )
    responses = {s.response for s in settings}
    files = {r for r in responses if not is_schedule(r)}
    for schedule in responses - files:
        files.update(phase for _, phase in parse_schedule(schedule, "--schedule"))
    for response in sorted(files - set(RESPONSE_NAMES)):
        truth_from_frame(space, read_truth_table(response), source=response)


def import_plotting() -> None:
    """Import the plotting module (matplotlib: about a second); a failure shows when the
    plots are written."""
    with contextlib.suppress(Exception):
        load_matplotlib()


def grid_settings(run: RunDir, spec: SweepSpec, config: RunConfig) -> list[Setting]:
    """The settings of a grid on a run: holdout truths resolved to the run's files, and
    ``drift_every`` made the run's monthly schedule."""
    if spec.drift_every is not None:
        monthly = format_schedule(monthly_schedule(run, spec.drift_every))
        spec = dataclasses.replace(spec, schedule=monthly, drift_every=None)
    return spec.settings(
        config, lambda r: resolve_response(run, r), default_response=response_spec(run, config)
    )


def run_cell(run_dir: str | Path, spec: SweepSpec, setting: Setting, replicate: int) -> CellOutcome:
    """Re-run one cell of a sweep alone, in this process; reproduces the sweep's numbers."""
    spec.validate()
    if not 0 <= replicate < spec.replicates:
        raise ConfigError(f"replicate {replicate} is outside 0..{spec.replicates - 1}")
    run = RunDir.open(run_dir)
    config = config_from_dict(run.manifest["config"], source=f"{run.path}/manifest.json")
    tasks = sweep_tasks(spec, [setting], sweep_base(run, spec, config))
    return execute_cell(RunPayload.read(run), tasks[replicate])


def run_sweep(
    run_dir: str | Path,
    spec: SweepSpec,
    out: str | Path,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    progress: ProgressCallback | None = None,
    force: bool = False,
    plots: bool = True,
) -> SweepResult:
    """Run (or resume) a sweep and write its results, summary and plots into ``out``.

    Parameters
    ----------
    run_dir : path
        A prepared run directory; every cell starts from its latest snapshot.
    spec : SweepSpec
    out : path
        Sweep directory; finished cells found there are skipped.
    workers : int, optional
        Local worker processes (default: all cores; 1 runs in this process). Ignored with
        ``scheduler``.
    scheduler : str, optional
        Address of a Dask distributed scheduler (``tcp://HOST:PORT``).
    progress : callable, optional
        Called with a :class:`SweepProgress` at the start and after every cell.
    force : bool
        Discard an existing sweep directory whose base differs.
    plots : bool
        Write the PNG plots.

    Raises
    ------
    ConfigError
        Bad grid, foreign sweep directory, or unreachable scheduler.
    """
    start = time.perf_counter()
    spec.validate()
    if workers is not None:
        check_int("workers", workers, 1)
    collector = CollectorPause()  # until the cells start (the plot process inherits it)
    try:
        return _prepare_and_run(
            run_dir, spec, out, start=start, workers=workers, scheduler=scheduler,
            progress=progress, force=force, plots=plots, collector=collector,
        )  # fmt: skip
    finally:
        collector.restore()


def _prepare_and_run(
    run_dir: str | Path,
    spec: SweepSpec,
    out: str | Path,
    *,
    start: float,
    workers: int | None,
    scheduler: str | None,
    progress: ProgressCallback | None,
    force: bool,
    plots: bool,
    collector: CollectorPause,
) -> SweepResult:
    """:func:`run_sweep` once its arguments are checked: open the run and the sweep directory,
    start the plot process, run."""
    run = RunDir.open(run_dir)
    config = config_from_dict(run.manifest["config"], source=f"{run.path}/manifest.json")
    settings = grid_settings(run, spec, config)
    check_settings(StateSpace.from_columns(run.read_space(), run.fields), settings)
    base = sweep_base(run, spec, config)
    sweep = SweepDir.prepare(out, base, {"run_dir": str(run.path), **spec.to_dict()}, force=force)
    tasks = sweep_tasks(spec, settings, base)
    todo = [t for t in tasks if not sweep.finished(t.key)]
    n_workers = min(workers or usable_cores(), len(todo))
    # figures drawn at once: as many as cores (this process only waits for them), or one for a
    # cluster's sweep
    plot_processes = usable_cores() if scheduler is None else 1
    # forked first, while this process has no thread: it imports matplotlib meanwhile
    plotter = PlotProcess.start(plot_processes) if plots else None
    try:
        return _run(
            run, spec, settings, sweep, tasks, todo, start=start, n_workers=n_workers,
            scheduler=scheduler, progress=progress, plots=plots, plotter=plotter,
            plot_processes=plot_processes, collector=collector,
        )  # fmt: skip
    except RlrecoError:
        # bad input met before any cell (a corrupt snapshot, a truth that does not fit): no
        # sweep directory left behind by this call
        sweep.discard_if_unused()
        raise
    finally:
        if plotter is not None:
            plotter.close()


def _run(
    run: RunDir,
    spec: SweepSpec,
    settings: list[Setting],
    sweep: SweepDir,
    tasks: list[CellTask],
    todo: list[CellTask],
    *,
    start: float,
    n_workers: int,
    scheduler: str | None,
    progress: ProgressCallback | None,
    plots: bool,
    plotter: PlotProcess | None,
    plot_processes: int,
    collector: CollectorPause,
) -> SweepResult:
    """:func:`run_sweep` once its directory is ready: run the cells, write the outputs."""
    skipped = len(tasks) - len(todo)
    pool: ProcessPoolExecutor | None = None
    loaded: LoadedRun | None = None
    warmup: Warmup | None = None
    if todo and scheduler is None:
        if n_workers == 1 or can_fork():
            # the run, its visit loops and response models once, here; forked workers share
            # them. The loops load in a thread while this one reads the run and builds the
            # models (I/O and numpy, mostly without the GIL). Forked workers build their own
            # tables (cell_buffers): this process then needs only the known cells
            loading = start_warm_up(todo)
            try:
                loaded = load_run(run.path, run_token(run.manifest), dense=n_workers == 1)
                loaded.build_responses(todo)
            finally:
                warmup = loading.join()
            collector.release()  # before forking: workers share the frozen objects' pages
            if n_workers > 1:
                pool = fork_pool(loaded, n_workers)
        else:
            # spawned workers import and load the run themselves while this process goes on
            policies = tuple(dict.fromkeys(t.setting.policy for t in todo))
            pool = start_pool(run.path, run_token(run.manifest), n_workers, policies)
    plotting = threading.Thread(target=import_plotting, daemon=True)
    if plots and todo and plotter is None:
        # no plot process: matplotlib's import, in the background while the cells run
        plotting.start()
    failures: list[dict[str, Any]] = []
    state = {"done": skipped, "visits": 0}
    cells_start = time.perf_counter()

    def report(last: str | None) -> None:
        if progress is not None:
            progress(
                SweepProgress(
                    cells_total=len(tasks),
                    cells_done=state["done"],
                    cells_skipped=skipped,
                    cells_failed=len(failures),
                    visits_done=state["visits"],
                    visits_total=len(todo) * int(spec.episodes),
                    seconds=time.perf_counter() - cells_start,
                    last_cell=last,
                )
            )

    collector.release()
    try:
        report(None)
        if todo:
            if pool is not None:
                completed = run_pool(pool, todo, sweep.path)
            elif loaded is not None:
                completed = run_inline(loaded, todo)
            else:
                completed = run_dask(RunPayload.read(run), todo, str(scheduler))
            for task, outcome, error in completed:
                if outcome is not None:
                    sums = outcome.metrics
                    columns = {"block": np.arange(len(sums["visits"]))}
                    columns.update((name, sums[name]) for name in METRIC_COLUMNS)
                    # one frame of all the columns at once (a column at a time costs ten times
                    # as much)
                    frame = pd.DataFrame(columns)
                    sweep.write_cell(
                        task.key,
                        frame,
                        {
                            "base": sweep.base,
                            "setting": task.setting.columns(),
                            "replicate": task.replicate,
                            "seconds": outcome.seconds,
                        },
                    )
                    state["visits"] += int(spec.episodes)
                elif error is not None:
                    sweep.write_failure(task.key, error.report)
                    failures.append(
                        {
                            "cell": task.key,
                            "label": task.setting.label,
                            "replicate": task.replicate,
                            "error": error.line,
                        }
                    )
                state["done"] += 1
                report(task.key)
    finally:
        if pool is not None:
            stop_pool(pool)
    results = _combine(sweep, tasks)
    replicates = (
        replicate_metrics(results)
        if len(results)
        else pd.DataFrame(columns=[*SETTING_COLUMNS, "replicate", *SUMMARY_METRICS])
    )
    summary = summarise(replicates, [(s.label, s.columns()) for s in settings])
    figures: Figures | None = None
    if plots and len(results):
        switches = {s.response: schedule_starts(s.response)[1:] for s in settings}
        figures = (learning_curves(results), summary, sweep.plots_dir, switches)
        if plotter is not None:
            plotter.send(figures)  # drawn while this process writes the rest
    # wall times vary from run to run: results.parquet holds only numbers that do not, so a
    # resumed sweep's file is byte for byte an uninterrupted one's (times: cells/*.parquet)
    sweep.write_results(results.drop(columns="cell_seconds"))
    best = best_settings(summary, replicates)
    verdict = verdicts(summary, replicates)
    written: list[Path] = []
    if figures is not None:
        if plotter is None or not plotter.drawn():
            if plotting.is_alive():
                plotting.join()  # no thread left: figures can be drawn in forked processes
            # drawn here (again, if the plot process failed: its error is raised here)
            draw_figures(figures, plot_processes)
        written = sweep_figure_paths(summary, sweep.plots_dir)
    result = SweepResult(
        out=sweep.path,
        summary=summary,
        results=results,
        best=best,
        verdicts=verdict,
        failures=failures,
        cells_total=len(tasks),
        cells_run=len(todo),
        cells_skipped=skipped,
        seconds=time.perf_counter() - start,
        plots=written,
        warmup=warmup,
    )
    sweep.write_summary(summary, result.document())
    return result


def _combine(sweep: SweepDir, tasks: list[CellTask]) -> pd.DataFrame:
    """Per-block results of every finished cell of the grid, in grid order."""
    frames = []
    for task in tasks:
        if not sweep.finished(task.key):
            continue
        frame, info = sweep.read_cell(task.key)
        head = pd.DataFrame(
            {name: [value] * len(frame) for name, value in task.setting.columns().items()}
        )
        head["replicate"] = task.replicate
        head["cell"] = task.key
        frame = pd.concat([head, frame.reset_index(drop=True)], axis=1)
        frame["cell_seconds"] = float(info["seconds"])
        frames.append(frame)
    if not frames:
        columns = [*SETTING_COLUMNS, "replicate", "cell", "block", *METRIC_COLUMNS, "cell_seconds"]
        return pd.DataFrame({c: [] for c in columns})
    return pd.concat(frames, ignore_index=True)
