"""What `--log` costs on the path users run: `rlreco simulate RUN --visits N` with and without it.

Target (issue 9): logging costs at most 20% of the visits/s, i.e. the visits per second with
``--log`` are at least 0.8x those without it, and nothing when off. Measured on the run
``rlreco prepare`` builds from ``../shared/data/online_retail.parquet`` (576 states x 4,053
products, slate 10, epsilon-greedy 0.1; skipped when absent), each call in a fresh process from
a fresh copy of the prepared run, the two commands alternating. Both rates are reported: per CPU
second of the process (user + system, all threads: what the machine pays, and the figure that
stays meaningful on a shared machine) and per wall-clock second (what a user waits for; the log
parts are encoded on a second thread while the kernel simulates, so it needs a second core; a
process limited to one CPU, e.g. under ``taskset -c 0``, writes them between kernel calls).
The same-run baseline is the call without ``--log``.

``bench_log_part_writer`` isolates the part writer (:class:`rlreco.io.visit_log.LogWriter`) on
records of that run's shape: CPU ns per logged slot of copying the kernel's records out
(``table``) and of encoding and writing the Parquet part (``write``).

Run (``VISITS`` default 2,000,000, ``PAIRS`` default 2)::

    .venv/bin/python -m pytest bench/bench_visit_log.py \\
        -o python_files='bench_*.py' -o python_functions='bench_*' --benchmark-only -s
    .venv/bin/python bench/bench_visit_log.py [VISITS] [PAIRS]
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rlreco.io.visit_log import LOG_FOLDER, LogWriter
from rlreco.schema import LOG_DTYPE

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data" / "online_retail.parquet"
VISITS = 2_000_000


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "rlreco.cli", *args]


def prepare(out: Path) -> Path:
    """The run ``rlreco prepare`` builds from the real data (default config)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    argv = cli("prepare", "--data", str(DATA), "--out", str(out), "--force")
    subprocess.run(argv, check=True, env=env, stdout=subprocess.DEVNULL)
    return out


def timed_simulate(run: Path, work: Path, visits: int, log: bool) -> dict[str, float]:
    """One ``rlreco simulate`` of a fresh copy of ``run``: CPU and wall seconds, log size."""
    copy = work / "run"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(run, copy)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    argv = cli("simulate", str(copy), "--visits", str(visits), *(["--log"] if log else []))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(argv, check=True, env=env, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    folder = copy / LOG_FOLDER
    size = sum(p.stat().st_size for p in folder.glob("*.parquet")) if folder.is_dir() else 0
    shutil.rmtree(copy)
    return {"cpu": cpu, "wall": wall, "log_bytes": float(size)}


def compare(run: Path, work: Path, visits: int, pairs: int) -> dict[str, Any]:
    """Alternate ``pairs`` calls without and with ``--log``; best of each, and the ratios of
    visits per second (log on / log off) by CPU and by wall clock."""
    runs: dict[bool, list[dict[str, float]]] = {False: [], True: []}
    for _ in range(pairs):
        for log in (False, True):
            runs[log].append(timed_simulate(run, work, visits, log))
    best = {log: {k: min(r[k] for r in rs) for k in ("cpu", "wall")} for log, rs in runs.items()}
    return {
        "visits": visits,
        "cpu_off": [r["cpu"] for r in runs[False]],
        "cpu_on": [r["cpu"] for r in runs[True]],
        "wall_off": [r["wall"] for r in runs[False]],
        "wall_on": [r["wall"] for r in runs[True]],
        "cpu_ratio": best[False]["cpu"] / best[True]["cpu"],
        "wall_ratio": best[False]["wall"] / best[True]["wall"],
        "log_bytes_per_slot": runs[True][0]["log_bytes"] / (visits * 10),
    }


@pytest.fixture(scope="module")
def real_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not DATA.is_file():
        pytest.skip(f"real data not found at {DATA}")
    return prepare(tmp_path_factory.mktemp("log-bench") / "run")


def bench_cli_logging_ratio(benchmark: Any, real_run: Path, tmp_path: Path) -> None:
    """`rlreco simulate --log` against the same call without it (target: ratios >= 0.8)."""
    result = benchmark.pedantic(
        compare, args=(real_run, tmp_path, VISITS, 2), rounds=1, iterations=1
    )
    benchmark.extra_info.update(result)
    print(f"\n{result}")


def log_records(visits: int, seed: int = 0) -> np.ndarray:
    """Records of the real run's shape: slate 10, 576 states, 4,053 products, epsilon 0.1."""
    rng = np.random.default_rng(seed)
    records = np.zeros(visits * 10, dtype=LOG_DTYPE)
    records["visit"] = np.repeat(np.arange(visits), 10)
    records["state"] = np.repeat(rng.integers(0, 576, visits), 10)
    records["position"] = np.tile(np.arange(10), visits)
    records["product"] = rng.integers(0, 4_053, records.size)
    records["outcome"] = rng.choice(3, records.size, p=[0.9, 0.07, 0.03])
    records["reward"] = np.round(rng.normal(-2.0, 1.0, records.size), 2)
    explored = 0.1 / (1_000 - records["position"])
    records["propensity"] = np.where(rng.random(records.size) < 0.9, 0.9 + explored, explored)
    return records


def bench_log_part_writer(benchmark: Any, tmp_path: Path) -> None:
    """CPU ns per slot of LogWriter.table and LogWriter.write, parts of 32,768 visits."""
    records = log_records(32_768 * 8)
    writer = LogWriter(
        tmp_path,
        run_id="r" * 32,
        state_names=np.array([f"state-{i}" for i in range(576)]),
        product_codes=np.array([f"{20_000 + i}" for i in range(4_053)]),
        policy="eps-greedy",
        param=0.1,
    )
    step = 32_768 * 10

    def write_all() -> dict[str, float]:
        seconds = {"table": 0.0, "write": 0.0}
        for start in range(0, records.size, step):
            t0 = time.process_time()
            table = writer.table(records[start : start + step])
            t1 = time.process_time()
            writer.write(table)
            seconds["table"] += t1 - t0
            seconds["write"] += time.process_time() - t1
        return {k: v * 1e9 / records.size for k, v in seconds.items()}

    write_all()  # the first parts allocate the buffers
    per_slot = benchmark.pedantic(write_all, rounds=3, iterations=1)
    benchmark.extra_info.update({f"{k}_ns_per_slot": v for k, v in per_slot.items()})
    print(f"\nns per slot: {per_slot}")


if __name__ == "__main__":
    visits = int(sys.argv[1]) if len(sys.argv) > 1 else VISITS
    pairs = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    with tempfile.TemporaryDirectory() as tmp:
        prepared = prepare(Path(tmp) / "prepared")
        print(compare(prepared, Path(tmp), visits, pairs))
