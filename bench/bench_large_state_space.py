"""The real data with ``segment x month x half x weekday x country`` states.

21,312 states x 4,053 products (86.4M cells). Targets: prepare <= 15 s and peak memory
<= 6 GB; simulate 10M visits (``seed`` and ``popularity``) at >= 500,000 visits/s on one core,
measured next to the default state space in the same run (the ratio is what to compare across
machines); and the seed-layout MongoDB export of the simulated snapshot, streamed from the
snapshot file and BSON-encoded (no database), each document within the 16 MB limit. Each case
runs in a fresh process (``/usr/bin/time``-style peak RSS from ``getrusage`` of the child):

    taskset -c 0 .venv/bin/python -m pytest bench/bench_large_state_space.py \
        -o python_files='bench_*.py' -o python_functions='bench_*' -s
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

FIELDS = {
    "default": ["segment", "month", "half", "weekday"],
    "country": ["segment", "month", "half", "weekday", "country"],
}


#: Runs the CLI and prints the process's own peak RSS (kB) as the last line of stderr.
_WRAPPER = (
    "import resource, runpy, sys\n"
    "sys.argv = ['rlreco', *sys.argv[1:]]\n"
    "try:\n"
    "    runpy.run_module('rlreco.cli', run_name='__main__')\n"
    "finally:\n"
    "    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
)


#: The seed-layout export of a run directory's latest snapshot up to the wire: ``export-mongo``'s
#: code against a stand-in server that BSON-encodes every document it is sent and keeps nothing
#: (``bench/bench_mongo.py``); prints a JSON line. mongomock has no index, so its upserts by
#: ``_id`` would be quadratic in the states.
_EXPORT = (
    "import json, sys\n"
    "from pathlib import Path\n"
    f"sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})\n"
    "from bench_mongo import export_counted\n"
    "print(json.dumps(export_counted(Path(sys.argv[1]), 'seed')))\n"
)


def export_seed(run: Path) -> dict[str, object]:
    """The seed-layout documents of ``run``'s snapshot, built and encoded in a fresh process."""
    done = subprocess.run(
        [sys.executable, "-c", _EXPORT, str(run)], check=True, capture_output=True, text=True
    )
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def run_cli(*args: str) -> tuple[dict[str, object], float, float]:
    """One ``rlreco`` command in a fresh process: its JSON output, wall seconds, peak RSS MB."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", _WRAPPER, *args, "--json"],
        check=True,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - start
    peak_kb = int(done.stderr.strip().splitlines()[-1])
    return json.loads(done.stdout), seconds, peak_kb / 1024


@pytest.mark.parametrize("name", ["default", "country"])
def bench_prepare_and_simulate(benchmark, shared_data: Path, tmp_path: Path, name: str) -> None:
    config = tmp_path / "run.toml"
    config.write_text(
        f'[data]\npath = "{shared_data / "online_retail.parquet"}"\n'
        f"[states]\nfields = {json.dumps(FIELDS[name])}\n"
    )
    run = tmp_path / "run"

    def prepare() -> dict[str, object]:
        out, seconds, peak = run_cli(
            "prepare", "--config", str(config), "--out", str(run), "--force"
        )
        print(f"\n{name}: prepare {out['seconds']} s in process, {seconds:.1f} s wall, ", end="")
        print(f"peak {peak:,.0f} MB")
        return out

    summary = benchmark.pedantic(prepare, rounds=1, iterations=1)
    states = 576 if name == "default" else 21_312
    assert summary["states_total"] == states
    for response in ("seed", "popularity"):
        out, seconds, peak = run_cli(
            "simulate", str(run), "--visits", "10000000", "--response", response
        )
        print(
            f"{name}: simulate 10M visits ({response}) {out['episodes_per_second']:,.0f} "
            f"visits/s, {seconds:.1f} s wall, peak {peak:,.0f} MB"
        )
        benchmark.extra_info[f"{response}_visits_per_second"] = out["episodes_per_second"]
        benchmark.extra_info[f"{response}_peak_mb"] = peak
        assert out["episodes"] == 10_000_000
    export = export_seed(run)
    benchmark.extra_info["export"] = export
    print(
        f"{name}: seed-layout export of {export['states_written']:,} states: "
        f"{export['documents']:,} documents, {export['bytes']:,} bytes of BSON, "
        f"{export['cpu_seconds']:.1f} s CPU, largest {export['largest_document']:,} bytes, "
        f"peak {export['peak_mb']:,.0f} MB"
    )
    assert int(str(export["largest_document"])) <= 16 * 1024 * 1024
