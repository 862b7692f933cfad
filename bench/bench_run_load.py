"""Loading a run for a sweep or ``simulate``, with and without the run's cache of its tables,
and resetting a sweep cell's tables, on the embedded data.

Run with ``pytest bench/bench_run_load.py -o python_files='bench_*.py'
-o python_functions='bench_*' --benchmark-only -s`` (about 20 s). :func:`bench_load_run`
times ``LoadedRun.read`` (what a sweep process and every spawned worker do) reading the
tables' known cells from the run's derived-array cache, and, as the same-run baseline, with no
cache entry (the snapshot's Parquet row groups decoded and checked, then the entry stored); the
ratio is printed and stored in ``extra_info``. :func:`bench_cell_reset` times what a cell of
1,000 visits leaves to undo (its changed rows reset from the known cells) against a full copy
of the tables (what every cell cost before).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from pytest_benchmark.fixture import BenchmarkFixture
from ratios import paired_ratio

from rlreco.app.sweep_cells import LoadedRun
from rlreco.io.array_cache import CACHE_DIR

_seconds: dict[str, float] = {}


@pytest.mark.parametrize("cache", ["none", "cached"])
def bench_load_run(benchmark: BenchmarkFixture, embedded_run: Path, cache: str) -> None:
    def drop() -> None:
        if cache == "none":
            shutil.rmtree(embedded_run / CACHE_DIR, ignore_errors=True)

    LoadedRun.read(embedded_run)  # the entry stored; imports and page cache warm
    benchmark.pedantic(lambda: LoadedRun.read(embedded_run), setup=drop, rounds=5, iterations=1)
    ratio = paired_ratio(benchmark, _seconds, cache, "cached", "none", "vs_no_cache")
    if ratio is not None:
        print(
            f"\nLoadedRun.read (min of 5): no cache {_seconds['none']:.3f} s, "
            f"cached {_seconds['cached']:.3f} s ({ratio:.2f}x)"
        )


@pytest.mark.parametrize("undo", ["copy", "reset"])
def bench_cell_reset(benchmark: BenchmarkFixture, embedded_run: Path, undo: str) -> None:
    _, loaded = LoadedRun.read(embedded_run)
    space = loaded.space
    rng = np.random.default_rng(0)
    # the states of a 1,000-visit cell under the run's (empirical) state weights
    weight = space.state_weight / space.state_weight.sum()
    rows = np.unique(rng.choice(space.n_states, 1_000, p=weight))
    pristine = loaded.tables.copy()
    known = pristine.known_cells()
    with loaded.buffers.cell_tables() as cell:
        tables = cell.tables

        def copy() -> None:
            np.copyto(tables.padded, pristine.padded)
            np.copyto(tables.cells, pristine.cells)

        def reset() -> None:
            tables.reset_rows(known, rows)

        benchmark.pedantic(copy if undo == "copy" else reset, rounds=20, iterations=1)
        cell.changed = rows
    assert loaded.tables.equals(pristine)
    ratio = paired_ratio(benchmark, _seconds, undo, "reset", "copy", "vs_copy")
    if ratio is not None:
        print(
            f"\na 1,000-visit cell's tables made the starting tables again ({rows.size} of "
            f"{space.n_states} states, min of 20): full copy {_seconds['copy'] * 1e3:.1f} ms, "
            f"reset of its rows {_seconds['reset'] * 1e3:.1f} ms ({ratio:.2f}x)"
        )
