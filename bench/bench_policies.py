"""Visits per second of the fast exact policies against the full-scan ones, same run.

Each case runs a visit loop of one policy on the synthetic state space of
``bench_simulate.py`` (576 states x 4,070 products, catalogues of ~3,300, slate 10), the
``seed`` response, and the cell update of the visit loop (``update_cells_nb``, scan search):
``fast`` chooses with ``ucb1_cache`` (UCB1), ``sum_tree`` (softmax) or ``thompson`` and keeps
their structures exact after every visit; ``scan`` chooses with today's full-scan kernels of
``kernels/policy.py`` (the baseline). Two phases: ``fresh`` starts from the initial tables
(UCB1 spends it mostly on untried products); ``steady`` first runs ``PRIOR`` untimed visits of
the fast policy (about 1,700 per state, the end of a 1M-visit run), then times both methods
from those tables. Rates are visits per second of *process CPU time* (``time.process_time``):
on a shared machine, wall time mostly measures the neighbours. Structures are built inside
the timed call (UCB1 and Thompson build rows on first use; softmax's build is timed apart and
reported). Targets (``fast``): UCB1 and softmax >= 500,000 visits/s, Thompson >= 100,000.

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
    sum_tree_workspace,
    update_softmax_nb,
)
from rlreco.engine.kernels.thompson import (
    ThompsonCache,
    ThompsonWork,
    choose_thompson_slate_nb,
    new_thompson_cache,
    new_thompson_work,
    update_thompson_nb,
)
from rlreco.engine.kernels.ucb1_cache import (
    Ucb1Cache,
    Ucb1Work,
    choose_ucb1_slate_nb,
    new_ucb1_cache,
    new_ucb1_work,
    update_ucb1_nb,
)
from rlreco.engine.kernels.untried_set import Untried, build_untried_nb, new_untried
from rlreco.engine.kernels.visit import draw_below_nb, respond_seed_nb, update_cells_nb
from rlreco.engine.response import count_cdf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_simulate import synthetic_space

SLATE = 10
PARAMS = {"softmax": 0.5, "ucb1": 2.0, "thompson": 2.5}
CODES = {"softmax": 1, "ucb1": 2, "thompson": 3}
VISITS = {"scan": 100_000, "fast": 400_000}
PRIOR = 1_000_000
_rates: dict[tuple[str, str, str], float] = {}


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
    untried: Untried,
    ucb1_cache: Ucb1Cache,
    ucb1_work: Ucb1Work,
    tree: SumTree,
    tree_work: tuple[np.ndarray, np.ndarray, np.ndarray],
    thompson_cache: ThompsonCache,
    thompson_work: ThompsonWork,
) -> int:
    """Visits of one policy (module docstring); returns the explored slots."""
    n = SLATE
    n_states = value.shape[0]
    slate = np.empty(n, dtype=np.int64)
    outcome = np.empty(n, dtype=np.int8)
    order = np.empty(n, dtype=np.int64)
    previous = np.empty(n, dtype=np.float64)
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
        catalogue = catalogue_items[first : first + size]
        if fast:
            if policy == 1:
                explored += choose_softmax_slate_nb(
                    rng, tree, value, cells, state, catalogue, param, slate, *tree_work
                )
            elif policy == 2:
                explored += choose_ucb1_slate_nb(
                    rng,
                    untried,
                    ucb1_cache,
                    value,
                    cells,
                    state,
                    catalogue,
                    param,
                    state_shown[state],
                    slate,
                    ucb1_work,
                )
            else:
                explored += choose_thompson_slate_nb(
                    rng, thompson_cache, value, cells, state, catalogue, param, slate,
                    thompson_work,
                )  # fmt: skip
        else:
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
                update_softmax_nb(tree, value, state, catalogue, param, slate, previous)
            elif policy == 2:
                update_ucb1_nb(untried, ucb1_cache, value, cells, state, param, slate, ucb1_work)
            else:
                update_thompson_nb(thompson_cache, value, cells, state, param, slate, size)
    return explored


class Case:
    """Tables, catalogues and fresh structures of one policy."""

    def __init__(self, policy: str) -> None:
        space, tables = synthetic_space()
        self.policy = policy
        self.param = PARAMS[policy]
        self.ptr, self.items = space.catalog_ptr, space.catalog_items
        self.segments = space.state_segment
        self.value, self.cells = tables.value, tables.cells
        self.shown = self.cells["reco_count"].sum(axis=1)
        self.rng = np.random.default_rng(3)
        self.build_seconds = 0.0

    def structures(self) -> tuple[Any, ...]:
        """Every structure rebuilt from the current tables (as a new run does)."""
        n_states, width = self.value.shape
        max_k = int(np.diff(self.ptr).max())
        untried = new_untried(n_states, width)
        tree = new_sum_tree(n_states, width)
        start = time.process_time()
        if self.policy == "softmax":
            build_softmax_nb(self.value, self.ptr, self.items, self.segments, self.param, tree)
        elif self.policy == "ucb1":
            build_untried_nb(self.cells, self.ptr, self.items, self.segments, untried)
        self.build_seconds = time.process_time() - start
        return (
            untried,
            new_ucb1_cache(n_states),
            new_ucb1_work(SLATE, max_k),
            tree,
            sum_tree_workspace(SLATE, width),
            new_thompson_cache(n_states),
            new_thompson_work(SLATE, max_k, width),
        )

    def run(self, method: str, visits: int) -> float:
        """Visits/s of ``visits`` visits from the current tables (which they advance)."""
        args = (
            self.value,
            self.cells,
            self.segments,
            self.ptr,
            self.items,
            self.shown,
            count_cdf((0.5, 0.3, 0.15, 0.05), "click_probs"),
            count_cdf((0.6, 0.0, 0.2, 0.1, 0.1), "buy_probs"),
            np.array([-2.0, 1.0, 5.0]),
            *self.structures(),
        )
        start = time.perf_counter()
        policy_loop_nb(self.rng, visits, CODES[self.policy], method == "fast", self.param, *args)
        return visits / (time.perf_counter() - start)


_cases: dict[tuple[str, str], Case] = {}


def case_for(policy: str, phase: str) -> Case:
    """One set of tables per (policy, phase), shared by its scan and fast cases."""
    if (policy, phase) not in _cases:
        Case(policy).run("fast", 2_000)  # warm-up: compile or load the cache
        case = Case(policy)
        if phase == "steady":
            case.run("fast", PRIOR)
        _cases[(policy, phase)] = case
    return _cases[(policy, phase)]


@pytest.mark.parametrize("phase", ["fresh", "steady"])
@pytest.mark.parametrize("policy", ["ucb1", "softmax", "thompson"])
@pytest.mark.parametrize("method", ["scan", "fast"])
def bench_policy(benchmark: Any, method: str, policy: str, phase: str) -> None:
    case = case_for(policy, phase)
    saved = (case.value.copy(), case.cells.copy(), case.shown.copy(), case.rng)
    Case(policy).run(method, 1_000)  # warm-up of this method
    case.rng = np.random.default_rng(4)
    rate = benchmark.pedantic(lambda: case.run(method, VISITS[method]), rounds=1, iterations=1)
    # the other method of the pair starts from the same tables
    case.value[:], case.cells[:], case.shown[:] = saved[0], saved[1], saved[2]
    _rates[(method, policy, phase)] = rate
    benchmark.extra_info["visits_per_second"] = rate
    benchmark.extra_info["build_seconds"] = case.build_seconds
    line = f"\n{policy} {method} {phase}: {rate:,.0f} visits/s (build {case.build_seconds:.3f} s)"
    if method == "fast" and ("scan", policy, phase) in _rates:
        ratio = rate / _rates[("scan", policy, phase)]
        benchmark.extra_info["ratio_to_scan"] = ratio
        line += f", {ratio:.1f}x the full scan"
    print(line)
