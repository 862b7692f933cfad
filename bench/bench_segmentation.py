"""Benchmarks of exact 1-D k-means and of the whole RFM segmentation.

Run with ``pytest bench/bench_segmentation.py --benchmark-only``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from rlreco.config import DEFAULT_DATA, RunConfig
from rlreco.engine.history import History, history_from_frame
from rlreco.engine.segmentation import kmeans_1d, segment_customers


@pytest.mark.parametrize("n", [1_000, 4_372, 20_000])
def bench_kmeans_1d(benchmark: BenchmarkFixture, n: int) -> None:
    # skewed, mostly distinct values like monetary value: the DP works on distinct values
    values = np.random.default_rng(n).lognormal(mean=5.0, sigma=1.5, size=n)
    kmeans_1d(values, 4)  # warm-up: numba compile / cache load stays out of the timing
    fit = benchmark(kmeans_1d, values, 4)
    assert fit.centers.size == 4


@pytest.fixture(scope="module")
def retail_history() -> History:
    path = Path(DEFAULT_DATA)
    if not path.is_file():
        pytest.skip(f"embedded data not found at {path}")
    transactions = pytest.importorskip("rlreco.io.transactions")
    cfg = RunConfig()
    frame, _ = transactions.load_transactions(path, cfg.data, split_day=cfg.states.split_day)
    return history_from_frame(frame, source=str(path))


def bench_segment_customers(benchmark: BenchmarkFixture, retail_history: History) -> None:
    cfg = RunConfig()
    segment_customers(retail_history, cfg)  # warm-up
    seg = benchmark(segment_customers, retail_history, cfg)
    assert int(seg.segment_counts.sum()) == retail_history.n_customers
