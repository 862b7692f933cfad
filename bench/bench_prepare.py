"""prepare on the full real data: load + segment + build tables + write the run directory.

Target: under 5 s on one core for online_retail.csv.gz (the original needs about 70 s).
Run pinned to one core: ``taskset -c 0 make bench`` or
``taskset -c 0 .venv/bin/python -m pytest bench/bench_prepare.py -o python_files='bench_*.py'``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rlreco.app.prepare import prepare
from rlreco.config import RunConfig


@pytest.mark.parametrize("name", ["online_retail.csv.gz", "online_retail.parquet"])
def bench_prepare_full_data(benchmark, shared_data: Path, tmp_path: Path, name: str) -> None:
    config = RunConfig()
    prepare(config, data=shared_data / name, out=tmp_path / "warm", force=True)  # warm-up
    summary = benchmark.pedantic(
        prepare,
        args=(config,),
        kwargs={"data": shared_data / name, "out": tmp_path / "run", "force": True},
        rounds=5,
        iterations=1,
    )
    assert summary.states_with_history == 572
