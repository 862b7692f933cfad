"""Speed-up of a sweep with 2 worker processes over 1, and a sweep's fixed cost, on the
embedded data.

Run with ``pytest bench/bench_sweep.py --benchmark-only -s`` (about 90 s). The sweep is the
one the Sweeps issue asks for: 6 epsilons x 8 replicates x 1,000,000 visits under the
``popularity`` model, 48 cells. ``workers=1`` runs the cells in the calling process, as a user
with one core would; with 2 workers the calling process loads the run, the visit loops and the
response model once, as with 1, and forks the workers, which start with all of it: the start-up
is paid once either way, and the speed-up approaches 2 as the cells outweigh it. The speed-up
is printed and stored in the benchmark's ``extra_info``.

The fixed cost (:func:`bench_sweep_fixed_cost`) is the wall time of ``rlreco sweep`` run from a
shell on a grid whose cells take no time (8 cells x 1,000 visits, plots on): interpreter and
imports, loading the run, the visit loops and the response model, starting the workers, the
summary and the plots. Its CPU time (this process's children, all workers included) is stored
next to it: on a shared machine it varies less than the wall time.

The scaling through the command line (:func:`bench_sweep_cli_scaling`) is the Sweeps issue's
target as a user measures it: ``rlreco sweep`` of 4 epsilons x 2 replicates x 2,000,000 visits
(``popularity``, plots on) with 1 and 2 workers, wall time from the shell, fixed cost included;
the speed-up and both CPU times are stored in ``extra_info``.
"""

from __future__ import annotations

import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from pytest_benchmark.fixture import BenchmarkFixture
from ratios import paired_ratio

from rlreco.app.sweep import SweepResult, run_sweep
from rlreco.app.sweep_grid import SweepSpec

SPEC = SweepSpec(
    epsilons=(0.0, 0.01, 0.05, 0.1, 0.2, 0.5),
    replicates=8,
    episodes=1_000_000,
    responses=("popularity",),
)
CELLS = 6 * 8
_seconds: dict[int, float] = {}


@pytest.fixture(scope="module")
def retail_run(embedded_run: Path) -> Path:
    """The embedded data's run, with the numba cache warm so that no compile lands in a timing."""
    run_sweep(
        embedded_run,
        SweepSpec(epsilons=(0.1,), replicates=1, episodes=1_000),
        embedded_run.parent / "warm",
        force=True,
    )
    return embedded_run


@pytest.mark.parametrize("workers", [1, 2])
def bench_sweep_workers(
    benchmark: BenchmarkFixture, retail_run: Path, tmp_path: Path, workers: int
) -> None:
    def sweep() -> SweepResult:
        return run_sweep(
            retail_run, SPEC, tmp_path / "out", workers=workers, force=True, plots=False
        )

    result = benchmark.pedantic(sweep, rounds=1, iterations=1)
    assert result.cells_run == CELLS and not result.failures
    _seconds[workers] = benchmark.stats.stats.mean
    visits = CELLS * SPEC.episodes
    benchmark.extra_info["visits_per_second"] = visits / _seconds[workers]
    if workers == 2 and 1 in _seconds:
        speedup = _seconds[1] / _seconds[2]
        benchmark.extra_info["speedup_vs_1_worker"] = speedup
        print(
            f"\nsweep of {visits:,} visits: 1 worker {_seconds[1]:.1f} s, "
            f"2 workers {_seconds[2]:.1f} s, speed-up {speedup:.2f}x"
        )


def time_cli_sweep(
    benchmark: BenchmarkFixture, run: Path, out: Path, workers: int, grid: list[str], rounds: int
) -> list[float]:
    """Time ``rlreco sweep RUN --out OUT --workers W GRID`` from a subprocess, ``rounds`` times,
    each from an empty sweep directory; return the CPU seconds of each round."""
    command = [sys.executable, "-m", "rlreco.cli", "sweep", str(run), "--out", str(out),
               "--workers", str(workers), *grid]  # fmt: skip
    cpu: list[float] = []

    def sweep() -> None:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run(command, check=True, capture_output=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)

    def fresh() -> None:  # every round runs the whole grid
        shutil.rmtree(out, ignore_errors=True)

    benchmark.pedantic(sweep, setup=fresh, rounds=rounds, iterations=1)
    return cpu


#: a grid of cells that take no time: what is left is the sweep's fixed cost
TINY = ["--epsilons", "0,0.05,0.1,0.2", "--replicates", "2", "--visits", "1000",
        "--response", "popularity"]  # fmt: skip
_fixed: dict[str, float] = {}


@pytest.mark.parametrize("workers", [1, 2])
def bench_sweep_fixed_cost(
    benchmark: BenchmarkFixture, retail_run: Path, tmp_path: Path, workers: int
) -> None:
    cpu = time_cli_sweep(benchmark, retail_run, tmp_path / "out", workers, TINY, rounds=3)
    assert len(list((tmp_path / "out" / "plots").glob("*.png"))) == 2
    benchmark.extra_info["cpu_seconds_min"] = min(cpu)
    if paired_ratio(benchmark, _fixed, f"{workers}", "2", "1", "vs_1_worker") is not None:
        print(
            f"\nfixed cost of a sweep (8 cells x 1,000 visits, min of 3): 1 worker "
            f"{_fixed['1']:.2f} s, 2 workers {_fixed['2']:.2f} s (CPU {min(cpu):.2f} s)"
        )


#: the Sweeps issue's scaling grid: 8 cells of about a second each
SCALING = ["--epsilons", "0,0.05,0.1,0.2", "--replicates", "2", "--visits", "2000000",
           "--response", "popularity"]  # fmt: skip
_scaling: dict[str, float] = {}


@pytest.mark.parametrize("workers", [1, 2])
def bench_sweep_cli_scaling(
    benchmark: BenchmarkFixture, retail_run: Path, tmp_path: Path, workers: int
) -> None:
    cpu = time_cli_sweep(benchmark, retail_run, tmp_path / "out", workers, SCALING, rounds=1)
    assert len(list((tmp_path / "out" / "cells").glob("*.parquet"))) == 8
    benchmark.extra_info["cpu_seconds"] = cpu[0]
    speedup = paired_ratio(benchmark, _scaling, f"{workers}", "1", "2", "speedup_vs_1_worker")
    if speedup is not None:
        print(
            f"\nrlreco sweep 4 x 2 x 2,000,000 visits: 1 worker {_scaling['1']:.2f} s, "
            f"2 workers {_scaling['2']:.2f} s, speed-up {speedup:.2f}x"
        )
