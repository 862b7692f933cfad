"""Off-policy evaluation speed on a log of 10,000,000 slots over a state space of the real shape.

Targets: ``ips`` + ``snips`` + ``dr`` of one fixed target in at most 10 s on one core, and
``replay`` of a learning epsilon-greedy target at >= 1,000,000 logged slots/s. The world: 576
states (4 segments) x 4,070 products, catalogues of ~3,300, ~460 known products per state (as
``prepare`` builds them); the log: 1,000,000 uniformly logged visits of 10 slots (propensity
``1 / (K - i)``), outcome and reward drawn at random. Same-run baseline: one pass of the
per-slot weight kernel (``weights``), the least any per-slot estimator must do; each case
reports its time as a ratio to it. A warm-up call compiles every kernel before timing.

Run pinned to one core::

    taskset -c 0 .venv/bin/python -m pytest bench/bench_evaluate.py \\
        -o python_files='bench_*.py' -o python_functions='bench_*' --benchmark-only -s

On a shared, loaded machine add ``--benchmark-timer time.process_time``: CPU time of the
process, not wall clock, so time spent waiting for the core does not count.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from rlreco.engine.evaluation import (
    LoggedVisits,
    estimate_dr,
    estimate_ips,
    estimate_snips,
    importance_weights,
)
from rlreco.engine.replay import estimate_replay
from rlreco.engine.state_space import StateSpace
from rlreco.engine.tables import Tables, round_cents
from rlreco.engine.target_slate import Catalogues
from rlreco.schema import DEFAULT_STATE_FIELDS, LOG_DTYPE, MONTH_NAMES, WEEKDAY_NAMES

VISITS = 1_000_000
SLATE = 10
EPSILON = 0.1
_seconds: dict[str, float] = {}


def real_shape(seed: int = 0) -> tuple[StateSpace, Tables]:
    """576 states x 4,070 products, 4 catalogues of ~3,300, ~460 known products per state."""
    rng = np.random.default_rng(seed)
    n_products = 4_070
    grid = np.indices((4, 12, 2, 6)).reshape(4, -1)
    sizes = (3_350, 3_300, 3_250, 3_200)
    catalogues = [np.sort(rng.choice(n_products, k, replace=False)) for k in sizes]
    tables = Tables.empty(grid.shape[1], n_products)
    for state in range(grid.shape[1]):
        known = rng.choice(catalogues[grid[0, state]], 460, replace=False)
        count = rng.integers(1, 61, known.size)
        tables.cells["count"][state, known] = count
        tables.value[state, known] = round_cents(count + rng.standard_normal(known.size))
    space = StateSpace.from_grid(
        DEFAULT_STATE_FIELDS,
        (
            ("Q1", "Q2", "Q3", "Q4"),
            MONTH_NAMES,
            ("0", "1"),
            tuple(WEEKDAY_NAMES[d] for d in (0, 1, 2, 3, 4, 6)),
        ),
        state_weight=np.ones(grid.shape[1]),
        product_codes=np.array([f"{10000 + p}" for p in range(n_products)]),
        product_names=np.array([f"product {p}" for p in range(n_products)]),
        catalogue_ptr=np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
        catalogue_items=np.concatenate(catalogues).astype(np.int32),
    )
    return space, tables


def uniform_log(space: StateSpace, visits: int, slate: int, seed: int = 1) -> LoggedVisits:
    """Uniformly logged visits: distinct uniform catalogue products per visit."""
    rng = np.random.default_rng(seed)
    state = rng.integers(0, space.n_states, visits)
    segment = space.state_segment[state]
    size = np.diff(space.catalogue_ptr)[segment]
    pick = (rng.random((visits, slate)) * size[:, None]).astype(np.int64)
    while True:  # redraw repeated products within a visit (rare with ~3,300 products)
        ordered = np.sort(pick, axis=1)
        clash = np.flatnonzero((ordered[:, 1:] == ordered[:, :-1]).any(axis=1))
        if clash.size == 0:
            break
        pick[clash] = (rng.random((clash.size, slate)) * size[clash, None]).astype(np.int64)
    slots = np.zeros(visits * slate, dtype=LOG_DTYPE)
    slots["visit"] = np.repeat(np.arange(visits), slate)
    slots["state"] = np.repeat(state, slate)
    slots["position"] = np.tile(np.arange(slate), visits)
    slots["product"] = space.catalogue_items[space.catalogue_ptr[segment][:, None] + pick].ravel()
    outcome = rng.random(visits * slate)
    slots["outcome"] = np.where(outcome < 0.05, 2, np.where(outcome < 0.12, 1, 0))
    slots["reward"] = np.array([-2.0, 1.0, 5.0])[slots["outcome"]] + rng.standard_normal(
        visits * slate
    )
    slots["propensity"] = 1.0 / (np.repeat(size, slate) - slots["position"])
    return LoggedVisits.from_slots(slots)


@pytest.fixture(scope="module")
def world() -> tuple[StateSpace, Tables, Catalogues, LoggedVisits]:
    space, tables = real_shape()
    catalogues = Catalogues.of(space)
    visits = uniform_log(space, VISITS, SLATE)
    # warm-up: compile every kernel on a small prefix before any timing
    small = LoggedVisits.from_slots(visits.slots[: 1000 * SLATE])
    _, weight = importance_weights(small, catalogues, tables.value, EPSILON)
    estimate_dr(small, catalogues, tables.value, weight, epsilon=EPSILON)
    estimate_replay(small, catalogues, tables.value, tables.reco_count, epsilon=EPSILON, seed=0)
    return space, tables, catalogues, visits


def _record(benchmark: BenchmarkFixture, name: str, slots: int) -> None:
    seconds = benchmark.stats.stats.median
    _seconds[name] = seconds
    benchmark.extra_info["slots_per_second"] = slots / seconds
    if "weights" in _seconds and name != "weights":
        benchmark.extra_info["ratio_to_weights"] = seconds / _seconds["weights"]
    print(
        f"\n{name}: {seconds:.2f} s for {slots:,} slots = {slots / seconds:,.0f} slots/s"
        + (
            f", {seconds / _seconds['weights']:.1f}x the weight pass"
            if "weights" in _seconds and name != "weights"
            else ""
        )
    )


def bench_weights(benchmark: BenchmarkFixture, world: Any) -> None:
    _, tables, catalogues, visits = world
    benchmark.pedantic(
        importance_weights, (visits, catalogues, tables.value, EPSILON), rounds=3, iterations=1
    )
    _record(benchmark, "weights", visits.n_slots)


def bench_ips_snips_dr(benchmark: BenchmarkFixture, world: Any) -> None:
    _, tables, catalogues, visits = world

    def evaluate() -> float:
        _, weight = importance_weights(visits, catalogues, tables.value, EPSILON)
        ips = estimate_ips(visits, weight, epsilon=EPSILON)
        snips = estimate_snips(visits, weight, epsilon=EPSILON)
        dr = estimate_dr(visits, catalogues, tables.value, weight, epsilon=EPSILON)
        return (
            ips.metrics["reward_per_visit"].mean
            + snips.metrics["reward_per_visit"].mean
            + (dr.metrics["reward_per_visit"].mean)
        )

    benchmark.pedantic(evaluate, rounds=3, iterations=1)
    _record(benchmark, "ips+snips+dr", visits.n_slots)


def bench_replay(benchmark: BenchmarkFixture, world: Any) -> None:
    _, tables, catalogues, visits = world

    def replay() -> int:
        estimate, _, _ = estimate_replay(
            visits, catalogues, tables.value, tables.reco_count, epsilon=EPSILON, seed=3
        )
        return int(estimate.accepted or 0)

    accepted = benchmark.pedantic(replay, rounds=3, iterations=1)
    assert accepted > 0
    _record(benchmark, "replay", visits.n_slots)
