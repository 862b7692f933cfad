"""Compile time of the kernels ``make run`` needs, at first use on a machine.

Target: under 30 s in all (the first ``make run`` on a fresh clone pays it once; every later
process loads the machine code from numba's cache). Each round runs a fresh Python process with
an empty ``NUMBA_CACHE_DIR`` (a temporary folder) that first-uses, in ``make run``'s order:

* ``segmentation``: the exact 1-D k-means kernel of ``prepare`` (on a few values);
* ``simulation``: every kernel of ``simulate`` and of sweep cells under ``eps-greedy`` without a
  visit log, what ``make run`` runs (its fused visit loop, the top-n index; every response model
  and state sampling share them), through :func:`rlreco.engine.warmup.warm_up_simulation`.
  Each other policy family (softmax, ucb1, thompson; decaying shares eps-greedy's loop) and
  the logging variant are compiled on their own first use, ``python bench/bench_compile.py
  --policies`` times them too;

and then does the same in a second process on the now filled cache (the cost of every later
run). Wall and CPU seconds of each step are printed and stored in ``extra_info``; on a shared
machine the CPU seconds are the steadier figure. ``python bench/bench_compile.py`` prints one
fresh measurement as JSON.

Run pinned to one core::

    taskset -c 0 .venv/bin/python -m pytest bench/bench_compile.py \\
        -o python_files='bench_*.py' -o python_functions='bench_*' --benchmark-only -s
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pytest_benchmark.fixture import BenchmarkFixture

REPO = Path(__file__).resolve().parent.parent
TARGET_SECONDS = 30.0


def _timed(step: str, out: dict[str, Any], func: Any) -> None:
    wall, cpu = time.perf_counter(), time.process_time()
    result = func()
    out[step] = {
        "wall": round(time.perf_counter() - wall, 2),
        "cpu": round(time.process_time() - cpu, 2),
    }
    if hasattr(result, "compiled"):
        out[step]["compiled"] = result.compiled


def first_use(policies: bool = False) -> dict[str, Any]:
    """First use of every kernel ``make run`` needs, in this process (imports timed apart);
    with ``policies``, then of each other policy's loop."""
    out: dict[str, Any] = {}

    def imports() -> None:
        import rlreco.engine.segmentation
        import rlreco.engine.warmup  # noqa: F401

    _timed("imports", out, imports)
    import numpy as np

    from rlreco.engine.segmentation import kmeans_1d
    from rlreco.engine.warmup import warm_up_simulation

    _timed("segmentation", out, lambda: kmeans_1d(np.array([1.0, 2.0, 5.0, 9.0, 9.5]), 2))
    _timed("simulation", out, warm_up_simulation)
    out["kernels"] = {
        "wall": round(out["segmentation"]["wall"] + out["simulation"]["wall"], 2),
        "cpu": round(out["segmentation"]["cpu"] + out["simulation"]["cpu"], 2),
    }
    if policies:
        for policy in ("softmax", "ucb1", "thompson"):
            _timed(policy, out, lambda p=policy: warm_up_simulation((p,)))
        _timed("logging", out, lambda: warm_up_simulation(logging=True))
    return out


def measure_in_fresh_process(cache_dir: str, policies: bool = False) -> dict[str, Any]:
    """:func:`first_use` in a new interpreter whose numba cache is ``cache_dir``."""
    env = {**os.environ, "NUMBA_CACHE_DIR": cache_dir, "PYTHONPATH": str(REPO)}
    env.pop("NUMBA_DISABLE_JIT", None)
    done = subprocess.run(
        [sys.executable, __file__, "--in-process", *(["--policies"] if policies else [])],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def bench_compile_first_run(benchmark: BenchmarkFixture) -> None:
    results: dict[str, Any] = {}

    def fresh() -> None:
        with tempfile.TemporaryDirectory(prefix="numba-cache-") as cache:
            results["first"] = measure_in_fresh_process(cache)
            results["cached"] = measure_in_fresh_process(cache)

    benchmark.pedantic(fresh, rounds=1, iterations=1)
    first, cached = results["first"], results["cached"]
    assert first["simulation"]["compiled"] and not cached["simulation"]["compiled"]
    benchmark.extra_info.update(results)
    benchmark.extra_info["target_seconds"] = TARGET_SECONDS
    print(
        f"\nkernels of make run, first use: {first['kernels']['wall']:.1f} s wall, "
        f"{first['kernels']['cpu']:.1f} s CPU (target < {TARGET_SECONDS:.0f} s); "
        f"from the cache: {cached['kernels']['wall']:.2f} s wall; details {json.dumps(results)}"
    )


if __name__ == "__main__":
    every = "--policies" in sys.argv
    if "--in-process" in sys.argv:
        print(json.dumps(first_use(every)))
    else:
        with tempfile.TemporaryDirectory(prefix="numba-cache-") as cache_dir:
            print(json.dumps(measure_in_fresh_process(cache_dir, every)))
