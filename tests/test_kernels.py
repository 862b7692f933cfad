"""Visit kernels against the pure-Python reference (tests/naive.py), and the top-n index.

Also run with ``NUMBA_DISABLE_JIT=1`` (the kernels as plain Python, on fewer cases: see
``QUICK``) and with ``NUMBA_CPU_NAME=generic`` (``make test``).
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
from helpers import (
    NO_LOG,
    REWARDS,
    kernel_learner,
    kernel_response,
    kernel_world,
    naive_world,
    policy_params,
)
from naive import simulate, synthetic_world
from naive_ope import log_visits

from rlreco.engine.kernels.candidate_cache import (
    CACHE_CAPACITY,
    CACHE_SLOTS,
    find_top_cached_nb,
    refresh_cache_nb,
)
from rlreco.engine.kernels.jit import jit
from rlreco.engine.kernels.prefetch import prefetch_nb
from rlreco.engine.kernels.ranking import count_ahead_nb, scan_top_nb
from rlreco.engine.kernels.records import (
    LANES,
    Policy,
    TopNSearch,
    padded_width,
)
from rlreco.engine.kernels.topn import (
    build_index_nb,
    count_reached_nb,
    depth_of_width_nb,
    find_top_nb,
    index_depth,
    index_width,
    max_of_group_nb,
    new_index,
    repair_index_nb,
    select_reached_nb,
)
from rlreco.engine.kernels.visit_loop import simulate_visits_nb
from rlreco.engine.response import truth_arrays
from rlreco.engine.tables import Tables, padded_values
from rlreco.schema import CELL_DTYPE, METRICS_DTYPE

#: the kernels run as plain Python: fewer and smaller cases
QUICK = os.environ.get("NUMBA_DISABLE_JIT", "0") == "1"


def random_values(rng: np.random.Generator, shape: tuple[int, int], known: float) -> np.ndarray:
    """Padded values (kernel layout) with many ties (one decimal) and a share ``known`` of
    finite cells among the first ``shape[1]`` columns."""
    value = np.round(rng.normal(0.0, 1.0, shape), 1)
    value[rng.random(shape) >= known] = -np.inf
    return padded_values(value)


def ranked(row: np.ndarray, n: int) -> list[int]:
    """Reference top-n: known products by value descending, ties by lower id."""
    known = [p for p in range(row.size) if row[p] != -math.inf]
    return sorted(known, key=lambda p: (-row[p], p))[:n]


def top_of(value: np.ndarray, index: np.ndarray, state: int, n: int) -> list[int]:
    depth = depth_of_width_nb(index.shape[1])
    top_value = np.empty(n + 1)
    top_product = np.empty(n + 1, dtype=np.int64)
    frontier = np.empty((3, max(8**depth, CACHE_CAPACITY)), dtype=np.int64)
    found = find_top_nb(value, index, state, depth, n, top_value, top_product, frontier)
    assert np.array_equal(top_value[:found], value[state, top_product[:found]])
    return top_product[:found].tolist()


@pytest.mark.parametrize("n_products", [1, 7, 8, 9, 40, 64, 65, 300, 600])
@pytest.mark.parametrize("known", [0.02, 0.3, 1.0])
def test_find_top_matches_sorting(n_products: int, known: float) -> None:
    if QUICK and n_products not in (9, 65):
        pytest.skip("plain-Python run: two widths suffice")
    rng = np.random.default_rng(n_products)
    value = random_values(rng, (12, n_products), known)
    value[0] = -np.inf  # a cold state
    assert value.shape[1] == padded_width(n_products) and value.shape[1] % LANES == 0
    index = new_index(value)
    assert index.shape == (12, index_width(value.shape[1]))
    assert index.ctypes.data % 64 == 0 and value.ctypes.data % 64 == 0
    for state in range(value.shape[0]):
        for n in (1, 3, 10):
            assert top_of(value, index, state, n) == ranked(value[state], n)
            top_value = np.empty(n)
            top_product = np.empty(n, dtype=np.int64)
            found = scan_top_nb(value, state, n, top_value, top_product)
            assert top_product[:found].tolist() == ranked(value[state], n)


def test_find_top_with_all_values_tied() -> None:
    # every product reaches the floor: the many-candidates path ranks by insertion
    raw = np.full((2, 700), 1.5)
    raw[1, ::3] = -np.inf
    value = padded_values(raw)
    index = new_index(value)
    for state in range(2):
        assert top_of(value, index, state, 10) == ranked(value[state], 10)


def test_index_layout_and_depth() -> None:
    assert [index_depth(p) for p in (1, 8, 9, 64, 65, 512, 513, 4070)] == [1, 1, 2, 2, 3, 3, 4, 4]
    # levels of 1 (padded to 8), 8, 64 and 512 maxima for the real product count
    assert index_width(4070) == 592
    value = padded_values(np.array([[1.0, -np.inf, 3.0, 2.0, -np.inf, 0.5, 3.0, -1.0, 7.0, 3.0]]))
    assert value.shape == (1, 16) and np.all(value[0, 10:] == -np.inf)
    index = new_index(value)
    assert index[0, 0] == 7.0  # root
    assert index[0, 1:8].tolist() == [-np.inf] * 7  # root padding
    assert index[0, 8:10].tolist() == [3.0, 7.0]  # maxima of leaves 0-7 and 8-9
    assert np.all(index[0, 10:16] == -np.inf)


@pytest.mark.parametrize("n_products", [9, 40, 300, 4070])
def test_repair_matches_rebuild(n_products: int) -> None:
    rng = np.random.default_rng(1)
    value = random_values(rng, (4, n_products), 0.5)
    index = new_index(value)
    depth = index_depth(value.shape[1])
    for _ in range(20 if QUICK else 200):
        state = int(rng.integers(4))
        products = rng.choice(n_products, min(10, n_products), replace=False).astype(np.int64)
        # raise, lower, tie with the current maximum, or make known
        for p in products:
            value[state, p] = rng.choice(
                [value[state].max(), np.round(rng.normal(0.0, 2.0), 1), -5.0, 9.0]
            )
        assert np.all(value[:, n_products:] == -np.inf)  # the padding stays unknown
        repair_index_nb(value, index, state, depth, products)
        expected = np.empty_like(index)
        build_index_nb(value, expected)
        assert np.array_equal(index, expected)
        assert top_of(value, index, state, 10) == ranked(value[state], 10)


@pytest.mark.parametrize("n_products", [40, 700, 4070])
@pytest.mark.parametrize("moves", ["drop", "step"])
def test_cached_query_stays_exact(n_products: int, moves: str) -> None:
    rng = np.random.default_rng(n_products)
    n_states, n = 3, 10
    value = random_values(rng, (n_states, n_products), 0.3)
    if moves == "step":
        # a dense top with ties: constant-step updates move members a few ranks
        value[value != -np.inf] = np.round(value[value != -np.inf], 1)
    index = new_index(value)
    depth = index_depth(value.shape[1])
    cache_floor = np.zeros(n_states)
    cache_size = np.full(n_states, -1, dtype=np.int64)
    cache_items = np.zeros((n_states, CACHE_CAPACITY), dtype=np.int64)
    top_value = np.empty(n + 1)
    top_product = np.empty(n + 1, dtype=np.int64)
    frontier = np.empty((3, max(8**depth, CACHE_CAPACITY)), dtype=np.int64)
    served = 0
    rounds = 100 if QUICK else 600
    for _ in range(rounds):
        state = int(rng.integers(n_states))
        before = int(cache_size[state])
        found = find_top_cached_nb(
            value, index, state, depth, n, top_value, top_product, frontier,
            cache_floor, cache_size, cache_items,
        )  # fmt: skip
        served += before >= n
        assert top_product[:found].tolist() == ranked(value[state], n)
        assert top_value[:found].tolist() == value[state, top_product[:found]].tolist()
        # a visit: the best few drop (far, or a step), others rise, tie or become known
        shown = top_product[: found // 2 if moves == "drop" else found]
        slate = np.unique(np.concatenate([shown, rng.choice(n_products, 4)]))
        previous = value[state, slate].copy()
        if moves == "drop":
            value[state, slate] = rng.choice([-3.0, 0.0, 0.5, 1.0, 9.0], slate.size)
        else:
            known = np.where(previous == -np.inf, 0.0, previous)
            value[state, slate] = np.round(
                known + rng.choice([-0.2, -0.1, 0.0, 0.1], slate.size), 1
            )
        repair_index_nb(value, index, state, depth, slate)
        refresh_cache_nb(value, state, slate, previous, cache_floor, cache_size, cache_items)
        # a valid cache is exactly the state's known products >= its floor, ranked, with values
        size = int(cache_size[state])
        if size >= 0:
            row = value[state]
            members = np.flatnonzero((row >= cache_floor[state]) & (row != -np.inf))
            assert size <= CACHE_SLOTS
            assert cache_items[state, :size].tolist() == ranked(row, members.size)
            keys = cache_items[state, CACHE_SLOTS : CACHE_SLOTS + size].view(np.float64)
            assert keys.tolist() == row[cache_items[state, :size]].tolist()
    assert served > rounds // 3  # the cache did answer queries


def test_group_operations() -> None:
    keys = np.array([[0.5, -np.inf, 2.0, 0.5, 1.0, -3.0, np.inf, 0.5, 99.0, -np.inf, 1.0]])
    labels = np.array([7, 1, 2, 3, 4, 5, 6, 0, 8, 9, 10], dtype=np.int64)
    lowest = np.finfo(np.float64).min
    for start in (0, 1, 3):
        group = keys[0, start : start + 8]
        for floor in (-np.inf, lowest, 0.5, 1.5):
            expected = [100 + i for i in range(8) if group[i] >= floor and group[i] != -np.inf]
            out = np.full((2, 16), -1, dtype=np.int64)
            appended = select_reached_nb(keys, 0, start, floor, out, 1, 3, 100)
            assert out[1, 3 : 3 + appended].tolist() == expected
            assert np.all(out[0] == -1) and np.all(out[1, :3] == -1)
            assert count_reached_nb(keys, 0, start, start + 8, floor) == len(expected)
        assert max_of_group_nb(keys, 0, start) == group.max()
        for key, label in ((0.5, 3), (2.0, 2), (-np.inf, 9)):
            expected_ahead = sum(
                1
                for i in range(8)
                if group[i] > key or (group[i] == key and labels[start + i] < label)
            )
            assert count_ahead_nb(keys[0, start:], labels[start:], 8, key, label) == expected_ahead
    assert max_of_group_nb(np.full((1, 8), -np.inf), 0, 0) == -np.inf
    # the flat counts over any span (vector body and scalar remainder)
    for start, stop in ((0, 11), (2, 11), (5, 5), (1, 10)):
        for floor in (-np.inf, 0.5, 1.0):
            span = keys[0, start:stop]
            assert count_reached_nb(keys, 0, start, stop, floor) == int(
                np.sum((span >= floor) & (span != -np.inf))
            )
    for key, label in ((0.5, 3), (1.0, 4), (-np.inf, 0)):
        assert count_ahead_nb(keys[0], labels, 11, key, label) == int(
            np.sum((keys[0] > key) | ((keys[0] == key) & (labels < label)))
        )


@jit()
def hinted_sum_nb(table: np.ndarray) -> float:
    """Sum of a 2-d table, each item prefetched before it is read."""
    total = 0.0
    for i in range(table.shape[0]):
        for j in range(table.shape[1]):
            prefetch_nb(table, i, j)
            total += table[i, j]
    return total


@jit()
def hinted_counts_nb(cells: np.ndarray) -> int:
    """Sum of the counts of a cell table, each 24-byte record (which may straddle two cache
    lines) prefetched before it is read."""
    total = 0
    for i in range(cells.shape[0]):
        for j in range(cells.shape[1]):
            prefetch_nb(cells, i, j)
            total += cells[i, j]["count"]
    return total


def test_prefetch_is_only_a_hint() -> None:
    table = np.arange(24.0).reshape(3, 8)
    cells = np.zeros((2, 5), dtype=CELL_DTYPE)
    cells["count"] = np.arange(10).reshape(2, 5)
    assert hinted_sum_nb(table) == table.sum()
    assert hinted_counts_nb(cells) == 45
    # the plain-Python twin checks the position it is given
    prefetch_nb(cells, 1, 4)
    for row, column in ((3, 0), (0, 8), (-1, 0)):
        with pytest.raises(IndexError, match="outside an array of shape"):
            prefetch_nb(table, row, column)


CASES = {
    "seed": dict(epsilon=0.1, slate_size=5, log=True),
    "greedy-empirical": dict(epsilon=0.0, slate_size=10, empirical=True),
    "truth": dict(epsilon=0.3, slate_size=7, truth=True, log=True),
    "explore-only": dict(epsilon=1.0, slate_size=4, truth=True, log=True),
    "scan": dict(epsilon=0.2, slate_size=6, search=TopNSearch.scan, log=True),
    "depth-1": dict(epsilon=0.2, slate_size=3, n_products=8, catalogue_size=8),
    "depth-3": dict(epsilon=0.05, slate_size=10, n_products=300, catalogue_size=120, log=True),
    "constant-step": dict(epsilon=0.2, slate_size=5, truth=True, step_size=0.1),
    "step-one": dict(epsilon=0.1, slate_size=4, step_size=1.0),
}


@pytest.mark.parametrize("case", list(CASES))
def test_visits_match_naive(case: str) -> None:
    if QUICK and case not in ("seed", "truth", "depth-3", "constant-step"):
        pytest.skip("plain-Python run: four cases suffice")
    options = dict(CASES[case])
    epsilon, slate_size = options["epsilon"], options["slate_size"]
    empirical = bool(options.get("empirical", False))
    search = options.get("search", TopNSearch.tree)
    step_size = options.get("step_size")
    space, tables = synthetic_world(
        n_products=options.get("n_products", 40),
        catalogue_size=options.get("catalogue_size", 25),
        known=(0, 3, 12, 25) if options.get("n_products", 40) >= 25 else (0, 2, 8),
        seed=len(case),
    )
    n_states, n_products = tables.shape
    truth, best_mu = None, None
    if options.get("truth"):
        rng = np.random.default_rng(3)
        truth, best_mu = truth_arrays(
            space,
            rng.uniform(0.0, 0.4, (n_states, n_products)),
            rng.uniform(0.0, 0.2, (n_states, n_products)),
            REWARDS,
            slate_size,
        )
    world = naive_world(
        space,
        tables,
        epsilon=epsilon,
        slate_size=slate_size,
        truth=truth,
        best_mu=best_mu,
        empirical=empirical,
        step_size=step_size,
    )
    logged = naive_world(
        space, tables, epsilon=epsilon, slate_size=slate_size, truth=truth, best_mu=best_mu,
        empirical=empirical, step_size=step_size,
    )  # fmt: skip
    log = options.get("log", False)
    learner = kernel_learner(tables, search)
    policy = policy_params(Policy.eps_greedy, epsilon, slate_size, search, step_size)
    response = kernel_response(n_states, truth, best_mu)
    generators = [np.random.Generator(np.random.PCG64(11)) for _ in range(3)]
    block = 170
    visits = 400 if QUICK else 2000
    out = np.zeros(visits // block + 2, dtype=METRICS_DTYPE)
    chunks = ((0, visits // 2 - 1), (visits // 2 - 1, visits // 2 + 1))
    for first, n in chunks:  # a chunk boundary inside a metric block
        part = np.zeros((first + n - 1) // block - first // block + 1, dtype=METRICS_DTYPE)
        part[0] = out[first // block]
        buffer = np.zeros(n * slate_size, dtype=NO_LOG.dtype) if log else NO_LOG
        simulate_visits_nb(
            generators[0],
            first,
            n,
            kernel_world(space, empirical=empirical),
            learner,
            policy,
            response,
            block,
            part,
            buffer,
        )
        out[first // block : first // block + part.size] = part
        simulate(world, generators[1], first, n, block)
        if log:
            expected = log_visits(logged, generators[2], first, n)
            for name in expected.dtype.names or ():
                assert np.array_equal(buffer[name], expected[name]), name
    assert np.array_equal(tables.value, world.value)  # -inf compares equal
    assert np.all(tables.padded[:, n_products:] == -np.inf)
    assert np.array_equal(tables.cells["reward"], world.reward)
    assert np.array_equal(tables.cells["count"], world.count)
    assert np.array_equal(tables.cells["reco_count"], world.reco_count)
    assert np.array_equal(learner.state_shown, tables.reco_count.sum(axis=1))
    for b, sums in world.blocks.items():
        for name, total in sums.items():
            assert out[b][name] == total, (b, name)
    assert out["visits"].sum() == visits
    assert generators[0].bit_generator.state == generators[1].bit_generator.state
    if search == TopNSearch.tree:
        rebuilt = np.empty_like(learner.tree)
        build_index_nb(tables.padded, rebuilt)
        assert np.array_equal(learner.tree, rebuilt)


def test_tables_keep_values_in_the_padded_layout() -> None:
    value = np.array([[1.0, -np.inf, 2.5], [-np.inf, -np.inf, 0.0]])
    cells = np.zeros((2, 3), dtype=Tables.empty(1, 1).cells.dtype)
    tables = Tables(value, cells)
    assert tables.padded.shape == (2, 8) and tables.padded.ctypes.data % 64 == 0
    assert np.all(tables.padded[:, 3:] == -np.inf)
    assert np.array_equal(tables.value, value) and tables.value.base is not None
    tables.padded[1, 2] = 4.0  # the kernels' writes are the tables' values
    assert tables.value[1, 2] == 4.0
    copy = tables.copy()
    assert copy.equals(tables) and copy.padded is not tables.padded
    import pickle

    again = pickle.loads(pickle.dumps(tables))
    assert again.equals(tables)
    again.padded[0, 0] = 9.0
    assert again.value[0, 0] == 9.0


def test_drifting_truth_matches_naive() -> None:
    """Three truths switching at visits 700 and 1,500, each with its own state weights, and
    a constant step: chunks end before, at and after switches."""
    slate_size, epsilon, step = 5, 0.2, 0.1
    space, tables = synthetic_world(seed=4)
    n_states, n_products = tables.shape
    rng = np.random.default_rng(8)
    starts = (0, 700, 1_500)
    truths, best, weights = [], [], []
    for _ in starts:
        truth, best_mu = truth_arrays(
            space,
            rng.uniform(0.0, 0.4, (n_states, n_products)),
            rng.uniform(0.0, 0.2, (n_states, n_products)),
            REWARDS,
            slate_size,
        )
        truths.append(truth)
        best.append(best_mu)
        weights.append(rng.integers(0, 5, n_states).astype(np.float64) + (np.arange(n_states) == 1))
    cdf = np.cumsum(np.stack(weights), axis=1)
    world = naive_world(
        space, tables, epsilon=epsilon, slate_size=slate_size, truth=truths[0],
        best_mu=best[0], empirical=True, step_size=step,
    )  # fmt: skip
    world.schedule = [
        (start, (t["p_click"], t["p_buy"]), b, c)
        for start, t, b, c in zip(starts, truths, best, cdf, strict=True)
    ]
    learner = kernel_learner(tables)
    policy = policy_params(Policy.eps_greedy, epsilon, slate_size, TopNSearch.tree, step)
    response = kernel_response(n_states, np.stack(truths), np.stack(best), starts)
    kernel_space = kernel_world(space, empirical=True, phase_weights=np.stack(weights))
    generators = [np.random.Generator(np.random.PCG64(21)) for _ in range(2)]
    block = 250
    visits = 2_000
    out = np.zeros(visits // block + 1, dtype=METRICS_DTYPE)
    for first, n in ((0, 699), (699, 1), (700, 900), (1_600, 400)):
        part = np.zeros((first + n - 1) // block - first // block + 1, dtype=METRICS_DTYPE)
        part[0] = out[first // block]
        simulate_visits_nb(
            generators[0], first, n, kernel_space, learner, policy, response, block, part, NO_LOG
        )
        out[first // block : first // block + part.size] = part
        simulate(world, generators[1], first, n, block)
    assert np.array_equal(tables.value, world.value)
    assert np.array_equal(tables.cells["reward"], world.reward)
    for b, sums in world.blocks.items():
        for name, total in sums.items():
            assert out[b][name] == total, (b, name)
    assert generators[0].bit_generator.state == generators[1].bit_generator.state
    assert out["regret_visits"].sum() == visits
