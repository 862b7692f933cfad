"""Visit kernels against the pure-Python reference (tests/naive.py), and the top-n index."""

from __future__ import annotations

import math

import numba as nb
import numpy as np
import pytest
from naive import NaiveWorld, simulate, synthetic_world

from rlreco.engine.kernels.intrinsics import (
    count_ahead_nb,
    count_reached_nb,
    max_of_group_nb,
    select_reached_nb,
)
from rlreco.engine.kernels.records import METRICS_DTYPE, TRUTH_DTYPE, ResponseModel, TopNSearch
from rlreco.engine.kernels.topn import (
    CACHE_CAPACITY,
    build_index_nb,
    depth_of_width_nb,
    find_top_cached_nb,
    find_top_nb,
    index_depth,
    index_width,
    new_index,
    refresh_cache_nb,
    repair_index_nb,
    scan_top_nb,
)
from rlreco.engine.kernels.visit import simulate_visits_nb
from rlreco.engine.response import count_cdf, truth_arrays
from rlreco.engine.state_space import StateSpace
from rlreco.engine.tables import Tables


def random_values(rng: np.random.Generator, shape: tuple[int, int], known: float) -> np.ndarray:
    """Values with many ties (one decimal) and a share ``known`` of finite cells."""
    value = np.round(rng.normal(0.0, 1.0, shape), 1)
    value[rng.random(shape) >= known] = -np.inf
    return value


def ranked(row: np.ndarray, n: int) -> list[int]:
    """Reference top-n: known products by value descending, ties by lower id."""
    known = [p for p in range(row.size) if row[p] != -math.inf]
    return sorted(known, key=lambda p: (-row[p], p))[:n]


def top_of(value: np.ndarray, index: np.ndarray, state: int, n: int) -> list[int]:
    depth = depth_of_width_nb(index.shape[1])
    top_value = np.empty(n + 1)
    top_product = np.empty(n + 1, dtype=np.int64)
    frontier = np.empty((3, 8**depth), dtype=np.int64)
    found = find_top_nb(value, index, state, depth, n, top_value, top_product, frontier)
    assert np.array_equal(top_value[:found], value[state, top_product[:found]])
    return top_product[:found].tolist()


@pytest.mark.parametrize("n_products", [1, 7, 8, 9, 40, 64, 65, 300, 600])
@pytest.mark.parametrize("known", [0.02, 0.3, 1.0])
def test_find_top_matches_sorting(n_products: int, known: float) -> None:
    rng = np.random.default_rng(n_products)
    value = random_values(rng, (12, n_products), known)
    value[0] = -np.inf  # a cold state
    index = new_index(value)
    assert index.shape == (12, index_width(n_products))
    assert index.ctypes.data % 64 == 0
    for state in range(value.shape[0]):
        for n in (1, 3, 10):
            assert top_of(value, index, state, n) == ranked(value[state], n)
            top_value = np.empty(n)
            top_product = np.empty(n, dtype=np.int64)
            found = scan_top_nb(value, state, n, top_value, top_product)
            assert top_product[:found].tolist() == ranked(value[state], n)


def test_find_top_with_all_values_tied() -> None:
    # every product reaches the floor: the many-candidates path ranks by insertion
    value = np.full((2, 700), 1.5)
    value[1, ::3] = -np.inf
    index = new_index(value)
    for state in range(2):
        assert top_of(value, index, state, 10) == ranked(value[state], 10)


def test_index_layout_and_depth() -> None:
    assert [index_depth(p) for p in (1, 8, 9, 64, 65, 512, 513, 4070)] == [1, 1, 2, 2, 3, 3, 4, 4]
    # levels of 1 (padded to 8), 8, 64 and 512 maxima for the real product count
    assert index_width(4070) == 592
    value = np.array([[1.0, -np.inf, 3.0, 2.0, -np.inf, 0.5, 3.0, -1.0, 7.0, 3.0]])
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
    depth = index_depth(n_products)
    for _ in range(200):
        state = int(rng.integers(4))
        products = rng.choice(n_products, min(10, n_products), replace=False).astype(np.int64)
        # raise, lower, tie with the current maximum, or make known
        for p in products:
            value[state, p] = rng.choice(
                [value[state].max(), np.round(rng.normal(0.0, 2.0), 1), -5.0, 9.0]
            )
        repair_index_nb(value, index, state, depth, products)
        expected = np.empty_like(index)
        build_index_nb(value, expected)
        assert np.array_equal(index, expected)
        assert top_of(value, index, state, 10) == ranked(value[state], 10)


@pytest.mark.parametrize("n_products", [40, 700])
def test_cached_query_stays_exact(n_products: int) -> None:
    rng = np.random.default_rng(n_products)
    n_states, n = 3, 10
    value = random_values(rng, (n_states, n_products), 0.3)
    index = new_index(value)
    depth = index_depth(n_products)
    cache_floor = np.zeros(n_states)
    cache_size = np.full(n_states, -1, dtype=np.int64)
    cache_items = np.zeros((n_states, CACHE_CAPACITY), dtype=np.int64)
    top_value = np.empty(n + 1)
    top_product = np.empty(n + 1, dtype=np.int64)
    frontier = np.empty((3, 8**depth), dtype=np.int64)
    served = 0
    for _ in range(600):
        state = int(rng.integers(n_states))
        before = int(cache_size[state])
        found = find_top_cached_nb(
            value, index, state, depth, n, top_value, top_product, frontier,
            cache_floor, cache_size, cache_items,
        )  # fmt: skip
        served += n <= before <= 24
        assert top_product[:found].tolist() == ranked(value[state], n)
        # a visit: the best few drop, others rise, tie or become known
        slate = np.unique(np.concatenate([top_product[: found // 2], rng.choice(n_products, 4)]))
        previous = value[state, slate].copy()
        value[state, slate] = rng.choice([-3.0, 0.0, 0.5, 1.0, 9.0], slate.size)
        repair_index_nb(value, index, state, depth, slate)
        refresh_cache_nb(value, state, slate, previous, cache_floor, cache_size, cache_items)
    assert served > 50  # the cache did answer queries


@nb.njit
def select_all(keys: np.ndarray, count: int, floor: float) -> np.ndarray:
    out = np.full(8, -1, dtype=np.int64)
    appended = select_reached_nb(keys, (0,), count, floor, out, (0,), 100)
    return out[:appended]


@nb.njit
def reached(keys: np.ndarray, count: int, floor: float) -> int:
    return count_reached_nb(keys, (0,), count, floor)


@nb.njit
def group_max(keys: np.ndarray, count: int) -> float:
    return max_of_group_nb(keys, (0,), count)


@nb.njit
def ahead_of(keys: np.ndarray, labels: np.ndarray, count: int, key: float, label: int) -> int:
    return count_ahead_nb(keys, labels, (0,), count, key, label)


def test_vector_group_operations() -> None:
    keys = np.array([0.5, -np.inf, 2.0, 0.5, 1.0, -3.0, np.inf, 0.5, 99.0])
    labels = np.array([7, 1, 2, 3, 4, 5, 6, 0, 8], dtype=np.int64)
    for count in range(9):
        head = keys[:count]
        for floor in (-np.inf, 0.5, 1.5):
            expected = [100 + i for i in range(count) if head[i] >= floor and head[i] != -np.inf]
            assert select_all(keys, count, floor).tolist() == expected
            assert reached(keys, count, floor) == len(expected)
        assert group_max(keys, count) == (head.max() if count else -np.inf)
        for key, label in ((0.5, 3), (2.0, 2), (-np.inf, 9)):
            expected_ahead = sum(
                1 for i in range(count) if head[i] > key or (head[i] == key and labels[i] < label)
            )
            assert ahead_of(keys, labels, count, key, label) == expected_ahead


def naive_world(
    space: StateSpace,
    tables: Tables,
    *,
    epsilon: float,
    slate_size: int,
    truth: np.ndarray | None,
    best_mu: np.ndarray | None,
    empirical: bool,
) -> NaiveWorld:
    return NaiveWorld(
        value=tables.value.copy(),
        reward=tables.cells["reward"].copy(),
        count=tables.cells["count"].copy(),
        reco_count=tables.cells["reco_count"].copy(),
        state_segment=space.state_segment,
        catalogues=[space.catalogue(g).tolist() for g in range(space.n_segments)],
        epsilon=epsilon,
        slate_size=slate_size,
        rewards=(-2.0, 1.0, 5.0),
        click_cdf=count_cdf((0.5, 0.3, 0.15, 0.05), "click_probs"),
        buy_cdf=count_cdf((0.6, 0.0, 0.2, 0.1, 0.1), "buy_probs"),
        truth=None if truth is None else (truth["p_click"], truth["p_buy"]),
        best_mu=best_mu,
        state_cdf=np.cumsum(space.state_weight) if empirical else None,
    )


CASES = {
    "seed": dict(epsilon=0.1, slate_size=5),
    "greedy-empirical": dict(epsilon=0.0, slate_size=10, empirical=True),
    "truth": dict(epsilon=0.3, slate_size=7, truth=True),
    "explore-only": dict(epsilon=1.0, slate_size=4, truth=True),
    "scan": dict(epsilon=0.2, slate_size=6, search=TopNSearch.scan),
    "depth-1": dict(epsilon=0.2, slate_size=3, n_products=8, catalogue_size=8),
    "depth-3": dict(epsilon=0.05, slate_size=10, n_products=300, catalogue_size=120),
}


@pytest.mark.parametrize("case", list(CASES))
def test_visits_match_naive(case: str) -> None:
    options = dict(CASES[case])
    epsilon, slate_size = options["epsilon"], options["slate_size"]
    empirical = bool(options.get("empirical", False))
    search = options.get("search", TopNSearch.tree)
    space, tables = synthetic_world(
        n_products=options.get("n_products", 40),
        catalogue_size=options.get("catalogue_size", 25),
        known=(0, 3, 12, 25) if options.get("n_products", 40) >= 25 else (0, 2, 8),
        seed=len(case),
    )
    n_states, n_products = tables.shape
    truth = np.empty((n_states, 0), dtype=TRUTH_DTYPE)
    best_mu = np.zeros(n_states)
    if options.get("truth"):
        rng = np.random.default_rng(3)
        truth, best_mu = truth_arrays(
            space,
            rng.uniform(0.0, 0.4, (n_states, n_products)),
            rng.uniform(0.0, 0.2, (n_states, n_products)),
            (5.0, 1.0, -2.0),
            slate_size,
        )
    world = naive_world(
        space,
        tables,
        epsilon=epsilon,
        slate_size=slate_size,
        truth=truth if options.get("truth") else None,
        best_mu=best_mu,
        empirical=empirical,
    )
    index = new_index(tables.value) if search == TopNSearch.tree else np.empty((n_states, 0))
    generators = [np.random.Generator(np.random.PCG64(11)) for _ in range(2)]
    block = 170
    out = np.zeros(2000 // block + 2, dtype=METRICS_DTYPE)
    cache_floor = np.zeros(n_states)
    cache_size = np.full(n_states, -1, dtype=np.int64)
    cache_items = np.zeros((n_states, CACHE_CAPACITY), dtype=np.int64)
    for first, n in ((0, 999), (999, 1001)):  # a chunk boundary inside a metric block
        part = np.zeros((first + n - 1) // block - first // block + 1, dtype=METRICS_DTYPE)
        part[0] = out[first // block]
        simulate_visits_nb(
            generators[0],
            first,
            n,
            tables.value,
            index,
            tables.cells,
            space.state_segment,
            space.catalog_ptr,
            space.catalog_items,
            np.cumsum(space.state_weight) if empirical else np.empty(0),
            epsilon,
            slate_size,
            search,
            ResponseModel.truth if options.get("truth") else ResponseModel.seed,
            world.click_cdf,
            world.buy_cdf,
            truth,
            best_mu,
            np.array([-2.0, 1.0, 5.0]),
            block,
            part,
            cache_floor,
            cache_size,
            cache_items,
        )
        out[first // block : first // block + part.size] = part
        simulate(world, generators[1], first, n, block)
    assert np.array_equal(tables.value, world.value)  # -inf compares equal
    assert np.array_equal(tables.cells["reward"], world.reward)
    assert np.array_equal(tables.cells["count"], world.count)
    assert np.array_equal(tables.cells["reco_count"], world.reco_count)
    for b, sums in world.blocks.items():
        for name, total in sums.items():
            assert out[b][name] == total, (b, name)
    assert out["visits"].sum() == 2000
    assert generators[0].bit_generator.state == generators[1].bit_generator.state
    if search == TopNSearch.tree:
        rebuilt = np.empty_like(index)
        build_index_nb(tables.value, rebuilt)
        assert np.array_equal(index, rebuilt)
