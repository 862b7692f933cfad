"""Visits per second of the fast exact policies against the full-scan ones, same run.

Each case runs a visit loop of one policy on the synthetic state space of
``bench_simulate.py`` (576 states x 4,070 products, catalogues of ~3,300, slate 10), the
``seed`` response, and the cell update of the visit loop (``update_cells_nb``, scan search):
``fast`` chooses with ``count_groups`` (UCB1), ``sum_tree`` (softmax) or ``thompson`` and
keeps their structures exact after every visit; ``scan`` chooses with the full-scan kernels
of ``kernels/policy.py`` (the baseline). Catalogues can be cut to a fraction to show how each
method scales with ``K``. Each round starts from the same tables after a warm-up call, and
the structures are built before the timer starts (their build time is reported apart).
Targets (``fast``, full catalogue): UCB1 and softmax >= 500,000 visits/s, Thompson >=
100,000.

Run pinned to one core::

    taskset -c 0 .venv/bin/python -m pytest bench/bench_policies.py \\
        -o python_files='bench_*.py' -o python_functions='bench_*' --benchmark-only -s
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rlreco.engine.kernels.count_groups import (
    CountGroups,
    Untried,
    build_count_groups_nb,
    build_untried_nb,
    choose_ucb1_slate_nb,
    new_count_groups,
    new_untried,
    ucb1_workspace,
    update_ucb1_nb,
)
from rlreco.engine.kernels.jit import jit
from rlreco.engine.kernels.policy import (
    choose_softmax_slate_nb as scan_softmax_nb,
)
from rlreco.engine.kernels.policy import (
    choose_thompson_slate_nb as scan_thompson_nb,
)
from rlreco.engine.kernels.policy import (
    choose_ucb_slate_nb as scan_ucb_nb,
)
from rlreco.engine.kernels.policy import count_untried_nb
from rlreco.engine.kernels.records import TopNSearch
from rlreco.engine.kernels.sum_tree import (
    SumTree,
    build_softmax_nb,
    choose_softmax_slate_nb,
    new_sum_tree,
    update_softmax_nb,
)
from rlreco.engine.kernels.thompson import (
    choose_thompson_slate_nb,
    thompson_workspace,
    update_thompson_nb,
)
from rlreco.engine.kernels.visit import draw_below_nb, respond_seed_nb, update_cells_nb
from rlreco.engine.response import count_cdf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_simulate import synthetic_space

SLATE = 10
PARAMS = {"softmax": 0.5, "ucb1": 2.0, "thompson": 2.5}
CODES = {"softmax": 1, "ucb1": 2, "thompson": 3}
VISITS = 200_000
_rates: dict[tuple[str, str, float], float] = {}


@jit()
def policy_loop_nb(
    rng: np.random.Generator,
    n_visits: int,
    policy: int,
    fast: bool,
    param: float,
    value: np.ndarray,
    cells: np.ndarray,
    state_segment: np.ndarray,
    catalogue_ptr: np.ndarray,
    catalogue_items: np.ndarray,
    state_shown: np.ndarray,
    click_cdf: np.ndarray,
    buy_cdf: np.ndarray,
    outcome_reward: np.ndarray,
    groups: CountGroups,
    untried: Untried,
    tree: SumTree,
    ucb_workspace: tuple[np.ndarray, ...],
    heap_workspace: tuple[np.ndarray, ...],
) -> int:
    """Visits of one policy (module docstring); returns the explored slots."""
    n = SLATE
    n_states = value.shape[0]
    slate = np.empty(n, dtype=np.int64)
    outcome = np.empty(n, dtype=np.int8)
    order = np.empty(n, dtype=np.int64)
    previous = np.empty(n, dtype=np.float64)
    drawn = np.empty(n, dtype=np.float64)
    top_key = np.empty(n + 1, dtype=np.float64)
    top_product = np.empty(n + 1, dtype=np.int64)
    scratch = np.empty(catalogue_items.shape[0], dtype=np.int64)
    no_index = np.empty((n_states, 0), dtype=np.float64)
    no_floor = np.empty(1, dtype=np.float64)
    no_size = np.empty(1, dtype=np.int64)
    no_items = np.empty((1, 1), dtype=np.int64)
    explored = 0
    for _ in range(n_visits):
        state = draw_below_nb(rng, n_states)
        segment = state_segment[state]
        first = catalogue_ptr[segment]
        size = catalogue_ptr[segment + 1] - first
        if fast:
            if policy == 1:
                explored += choose_softmax_slate_nb(
                    rng,
                    tree,
                    value,
                    cells,
                    state,
                    catalogue_items,
                    first,
                    size,
                    param,
                    slate,
                    drawn,
                )
            elif policy == 2:
                explored += choose_ucb1_slate_nb(
                    rng,
                    groups,
                    untried,
                    state,
                    param,
                    state_shown[state],
                    slate,
                    ucb_workspace[0],
                    ucb_workspace[1],
                    ucb_workspace[2],
                    ucb_workspace[3],
                    ucb_workspace[4],
                    ucb_workspace[5],
                    ucb_workspace[6],
                )
            else:
                explored += choose_thompson_slate_nb(
                    rng,
                    groups,
                    cells,
                    state,
                    size,
                    param,
                    slate,
                    heap_workspace[0],
                    heap_workspace[1],
                    heap_workspace[2],
                    heap_workspace[3],
                )
        else:
            catalogue = catalogue_items[first : first + size]
            if policy == 1:
                scan_softmax_nb(rng, value, state, catalogue, param, slate, top_key, top_product)
            elif policy == 2:
                scan_ucb_nb(
                    rng,
                    value,
                    cells,
                    state,
                    catalogue,
                    param,
                    state_shown[state],
                    slate,
                    top_key,
                    top_product,
                    scratch,
                )
            else:
                scan_thompson_nb(
                    rng, value, cells, state, catalogue, param, slate, top_key, top_product
                )
            explored += count_untried_nb(cells, state, slate)
        respond_seed_nb(rng, click_cdf, buy_cdf, outcome, order)
        update_cells_nb(
            rng,
            value,
            no_index,
            cells,
            state,
            1,
            TopNSearch.scan,
            slate,
            outcome,
            outcome_reward,
            previous,
            no_floor,
            no_size,
            no_items,
        )
        state_shown[state] += n
        if fast:
            if policy == 1:
                update_softmax_nb(
                    tree, value, state, catalogue_items, first, size, param, slate, previous
                )
            elif policy == 2:
                update_ucb1_nb(groups, untried, value, cells, state, slate, previous)
            else:
                update_thompson_nb(groups, value, cells, state, slate, previous)
    return explored


def world(fraction: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, Any]:
    """Catalogue CSR, state segments and tables, catalogues cut to ``fraction``."""
    space, tables = synthetic_space()
    ptr = space.catalog_ptr
    parts = [
        space.catalog_items[ptr[g] : ptr[g] + int((ptr[g + 1] - ptr[g]) * fraction)]
        for g in range(space.n_segments)
    ]
    new_ptr = np.concatenate([[0], np.cumsum([p.size for p in parts])]).astype(np.int64)
    return new_ptr, np.concatenate(parts).astype(np.int32), space.state_segment, tables


def run_case(method: str, policy: str, fraction: float, visits: int) -> tuple[float, float]:
    """(visits/s, build seconds) of one case, from fresh tables."""
    ptr, items, segments, tables = world(fraction)
    value, cells = tables.value, tables.cells
    n_states, width = value.shape
    max_k = int(np.diff(ptr).max())
    groups = new_count_groups(n_states, width, max_k)
    untried = new_untried(n_states, width)
    tree = new_sum_tree(n_states, width)
    param = PARAMS[policy]
    start = time.perf_counter()
    if method == "fast":
        if policy == "softmax":
            build_softmax_nb(value, ptr, items, segments, param, tree)
        else:
            build_count_groups_nb(value, cells, ptr, items, segments, groups)
            build_untried_nb(cells, ptr, items, segments, untried)
    build = time.perf_counter() - start
    rng = np.random.default_rng(3)
    shown = cells["reco_count"].sum(axis=1)
    args = (
        value,
        cells,
        segments,
        ptr,
        items,
        shown,
        count_cdf((0.5, 0.3, 0.15, 0.05), "click_probs"),
        count_cdf((0.6, 0.0, 0.2, 0.1, 0.1), "buy_probs"),
        np.array([-2.0, 1.0, 5.0]),
        groups,
        untried,
        tree,
        ucb1_workspace(SLATE, max_k),
        thompson_workspace(SLATE, groups),
    )
    start = time.perf_counter()
    policy_loop_nb(rng, visits, CODES[policy], method == "fast", param, *args)
    return visits / (time.perf_counter() - start), build


@pytest.mark.parametrize("fraction", [1.0, 0.25], ids=["K3300", "K825"])
@pytest.mark.parametrize("policy", ["ucb1", "softmax", "thompson"])
@pytest.mark.parametrize("method", ["scan", "fast"])
def bench_policy(benchmark: Any, method: str, policy: str, fraction: float) -> None:
    visits = VISITS
    run_case(method, policy, fraction, 2_000)  # warm-up: compile or load the cache
    rate, build = benchmark.pedantic(
        lambda: run_case(method, policy, fraction, visits), rounds=1, iterations=1
    )
    _rates[(method, policy, fraction)] = rate
    benchmark.extra_info["visits_per_second"] = rate
    benchmark.extra_info["build_seconds"] = build
    line = f"\n{policy} {method} K x{fraction}: {rate:,.0f} visits/s (build {build:.2f} s)"
    if method == "fast" and ("scan", policy, fraction) in _rates:
        ratio = rate / _rates[("scan", policy, fraction)]
        benchmark.extra_info["ratio_to_scan"] = ratio
        line += f", {ratio:.1f}x the full scan"
    print(line)
