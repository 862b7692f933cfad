"""Ratios between benchmark cases run in the same session (the same-run baselines)."""

from __future__ import annotations

from pytest_benchmark.fixture import BenchmarkFixture


def paired_ratio(
    benchmark: BenchmarkFixture, seen: dict[str, float], case: str, over: str, under: str, key: str
) -> float | None:
    """Record this case's best time under ``case`` in ``seen`` (one dict per pair of cases run
    in the same session); once both ``over`` and ``under`` are in, return ``over / under``
    and put it in the benchmark's ``extra_info[key]`` (None before)."""
    seen[case] = benchmark.stats.stats.min
    if over not in seen or under not in seen:
        return None
    ratio = seen[over] / seen[under]
    benchmark.extra_info[key] = ratio
    return ratio
