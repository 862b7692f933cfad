"""Fast exact policies (``count_groups`` UCB1, ``sum_tree`` softmax, ``thompson``): draw-for-draw
agreement with the slow references of ``tests/naive_fast_policy.py``, exactness of the
structures after many updates, and the sampling distributions."""

from __future__ import annotations

import math

import naive_fast_policy as naive
import numpy as np
import pytest

from rlreco.engine.kernels.count_groups import (
    CountGroups,
    build_count_groups_nb,
    build_untried_nb,
    choose_ucb1_slate_nb,
    count_groups_depth,
    move_product_nb,
    new_count_groups,
    new_untried,
    ucb1_workspace,
    update_ucb1_nb,
)
from rlreco.engine.kernels.records import CELL_DTYPE
from rlreco.engine.kernels.sum_tree import (
    build_softmax_nb,
    choose_softmax_slate_nb,
    fill_softmax_row_nb,
    new_sum_tree,
    update_softmax_nb,
)
from rlreco.engine.kernels.thompson import (
    choose_thompson_slate_nb,
    thompson_workspace,
    update_thompson_nb,
)

WIDTH = 70  # padded beyond the 67 products: the padding stays unknown


class World:
    """Small tables: 4 states over 2 segment catalogues, some products known, some tried."""

    def __init__(self, seed: int, known: int = 12, tried: int = 6) -> None:
        rng = np.random.default_rng(seed)
        n_products = 67
        self.catalogues = [
            np.sort(rng.choice(n_products, size, replace=False)).astype(np.int32)
            for size in (40, 15)
        ]
        self.ptr = np.array([0, 40, 55], dtype=np.int64)
        self.items = np.concatenate(self.catalogues)
        self.segment = np.array([0, 1, 0, 1], dtype=np.int16)
        self.value = np.full((4, WIDTH), -np.inf)
        self.cells = np.zeros((4, WIDTH), dtype=CELL_DTYPE)
        for state in range(4):
            # some known products lie outside the catalogue: they must never be drawn
            chosen = rng.choice(n_products, known, replace=False)
            self.value[state, chosen] = np.round(rng.normal(0.0, 1.0, known), 1)
            self.cells["reco_count"][state, chosen[:tried]] = rng.integers(1, 4, tried)
        self.rng = rng

    def bounds(self, state: int) -> tuple[int, int]:
        segment = self.segment[state]
        return int(self.ptr[segment]), int(self.ptr[segment + 1] - self.ptr[segment])

    def catalogue(self, state: int) -> list[int]:
        return self.catalogues[self.segment[state]].tolist()

    def visit(self, state: int, slate: np.ndarray) -> np.ndarray:
        """Update the slate's cells as a visit does (values on a coarse grid: ties)."""
        previous = self.value[state, slate].copy()
        for product in slate:
            self.cells["reco_count"][state, product] += 1
            self.value[state, product] = np.round(self.rng.normal(0.0, 1.0), 1)
        return previous


def check_count_groups(groups: CountGroups, world: World) -> None:
    """Every invariant of the count groups against the tables (exactness after updates)."""
    for state in range(world.value.shape[0]):
        catalogue = world.catalogue(state)
        size = len(catalogue)
        products = groups.slot_product[state, :size]
        assert sorted(products.tolist()) == catalogue
        np.testing.assert_array_equal(groups.product_slot[state, products], np.arange(size))
        counts = world.cells["reco_count"][state, products]
        np.testing.assert_array_equal(groups.slot_count[state, :size], counts)
        assert np.all(np.diff(counts) >= 0)
        means = np.where(world.value[state, products] == -np.inf, 0.0, world.value[state, products])
        np.testing.assert_array_equal(groups.slot_mean[state, :size], means)
        assert np.all(groups.slot_mean[state, size:] == -np.inf)
        distinct, starts = np.unique(counts, return_index=True)
        n_groups = groups.n_groups[state]
        np.testing.assert_array_equal(groups.group_count[state, :n_groups], distinct)
        np.testing.assert_array_equal(groups.group_start[state, : n_groups + 1], [*starts, size])
        for g in range(n_groups):
            first, stop = starts[g], groups.group_start[state, g + 1]
            assert groups.group_head[state, g] == means[first:stop].max()
        level = groups.slot_mean[state]
        depth = count_groups_depth(40)
        for lev in range(depth - 1, -1, -1):
            level = level.reshape(-1, 8).max(axis=1)
            start = (8**lev - 1) // 7
            np.testing.assert_array_equal(groups.node_max[state, start : start + 8**lev], level)


def built_groups(world: World) -> CountGroups:
    groups = new_count_groups(4, WIDTH, 40)
    build_count_groups_nb(world.value, world.cells, world.ptr, world.items, world.segment, groups)
    return groups


def test_count_groups_stay_exact_under_random_moves() -> None:
    world = World(seed=1)
    groups = built_groups(world)
    check_count_groups(groups, world)
    depth = count_groups_depth(40)
    for step in range(1500):
        state = int(world.rng.integers(4))
        product = int(world.rng.choice(world.catalogue(state)))
        # counts grow by 0..3 (moves across several groups, new and emptied groups)
        world.cells["reco_count"][state, product] += int(world.rng.integers(0, 4))
        world.value[state, product] = np.round(world.rng.normal(), 1)
        move_product_nb(
            groups,
            state,
            product,
            int(world.cells["reco_count"][state, product]),
            float(world.value[state, product]),
            depth,
        )
        if step % 50 == 0:
            check_count_groups(groups, world)
    check_count_groups(groups, world)


@pytest.mark.parametrize("c", [0.0, 1.5])
def test_ucb1_matches_definition_draw_for_draw(c: float) -> None:
    world = World(seed=2)
    groups = built_groups(world)
    untried = new_untried(4, WIDTH)
    build_untried_nb(world.cells, world.ptr, world.items, world.segment, untried)
    workspace = ucb1_workspace(5, 40)
    shown = world.cells["reco_count"].sum(axis=1)
    slate = np.empty(5, dtype=np.int64)
    kernel_rng, naive_rng = np.random.default_rng(7), np.random.default_rng(7)
    for _ in range(500):
        state = int(world.rng.integers(4))
        tries = world.cells["reco_count"][state].copy()
        explored = choose_ucb1_slate_nb(
            kernel_rng, groups, untried, state, c, int(shown[state]), slate, *workspace
        )
        expected = naive.ucb1_slate(
            world.value[state], tries, world.catalogue(state), 5, c, int(shown[state]), naive_rng
        )
        assert slate.tolist() == expected
        assert explored == int(np.sum(tries[slate] == 0))
        previous = world.visit(state, slate)
        shown[state] += 5
        update_ucb1_nb(groups, untried, world.value, world.cells, state, slate, previous)
    assert kernel_rng.bit_generator.state == naive_rng.bit_generator.state
    check_count_groups(groups, world)
    assert untried.size.tolist() == [
        sum(world.cells["reco_count"][s, p] == 0 for p in world.catalogue(s)) for s in range(4)
    ]


@pytest.mark.parametrize("tau", [0.7, 0.004], ids=["tau0.7", "tiny-tau"])
def test_softmax_matches_reference_draw_for_draw(tau: float) -> None:
    # few known products at first: padded slates, products becoming known; tiny tau: rebuilds
    # and the catalogue-scan fallback
    world = World(seed=3, known=3, tried=0)
    tree = new_sum_tree(4, WIDTH)
    build_softmax_nb(world.value, world.ptr, world.items, world.segment, tau, tree)
    references = []
    for state in range(4):
        reference = naive.SoftmaxTree(WIDTH, world.catalogue(state), tau)
        reference.rebuild(world.value[state])
        references.append(reference)
    slate = np.empty(5, dtype=np.int64)
    drawn = np.empty(5, dtype=np.float64)
    kernel_rng, naive_rng = np.random.default_rng(8), np.random.default_rng(8)
    for _ in range(400):
        state = int(world.rng.integers(4))
        first, size = world.bounds(state)
        tries = world.cells["reco_count"][state].copy()
        explored = choose_softmax_slate_nb(
            kernel_rng, tree, world.value, world.cells, state, world.items, first, size, tau,
            slate, drawn,
        )  # fmt: skip
        assert slate.tolist() == references[state].slate(world.value[state], 5, naive_rng)
        assert explored == int(np.sum(tries[slate] == 0))
        previous = world.visit(state, slate)
        update_softmax_nb(tree, world.value, state, world.items, first, size, tau, slate, previous)
        references[state].update(world.value[state], slate.tolist(), previous.tolist())
        assert tree.node[state].tolist() == references[state].node
    assert kernel_rng.bit_generator.state == naive_rng.bit_generator.state
    # the rows equal a rebuild with the same offsets, bit for bit
    for state in range(4):
        first, size = world.bounds(state)
        rebuilt = new_sum_tree(4, WIDTH)
        fill_softmax_row_nb(
            world.value, world.items, first, size, state, tau, tree.offset[state], rebuilt
        )
        np.testing.assert_array_equal(rebuilt.node[state], tree.node[state])
        assert rebuilt.known[state] == tree.known[state]


def test_softmax_slot_frequencies_follow_boltzmann() -> None:
    world = World(seed=4, known=30, tried=0)
    tau = 0.5
    tree = new_sum_tree(4, WIDTH)
    build_softmax_nb(world.value, world.ptr, world.items, world.segment, tau, tree)
    state = 0
    first, size = world.bounds(state)
    known = [p for p in world.catalogue(state) if world.value[state, p] != -np.inf]
    weights = np.exp(world.value[state, known] / tau)
    probability = weights / weights.sum()
    slate = np.empty(3, dtype=np.int64)
    drawn = np.empty(3, dtype=np.float64)
    rng = np.random.default_rng(9)
    draws = 20_000
    counts = dict.fromkeys(known, 0)
    for _ in range(draws):
        choose_softmax_slate_nb(
            rng, tree, world.value, world.cells, state, world.items, first, size, tau, slate, drawn
        )
        counts[int(slate[0])] += 1
    observed = np.array([counts[p] for p in known])
    expected = probability * draws
    chi2 = float(np.sum((observed - expected) ** 2 / expected))
    # len(known) - 1 degrees of freedom (< 30): the 0.999 quantile of chi2(29) is 58.3
    assert chi2 < 58.3, chi2


def thompson_world(seed: int) -> tuple[World, CountGroups, list[naive.CountLayout]]:
    world = World(seed=seed, known=25, tried=12)
    groups = built_groups(world)
    layouts = [
        naive.CountLayout(world.catalogue(s), world.cells["reco_count"][s], world.value[s])
        for s in range(4)
    ]
    return world, groups, layouts


@pytest.mark.parametrize("sigma", [0.3, 2.5])
def test_thompson_matches_reference_draw_for_draw(sigma: float) -> None:
    world, groups, layouts = thompson_world(seed=5)
    top_key, top_product, heap_score, heap_node = thompson_workspace(5, groups)
    slate = np.empty(5, dtype=np.int64)
    kernel_rng, naive_rng = np.random.default_rng(10), np.random.default_rng(10)
    for _ in range(300):
        state = int(world.rng.integers(4))
        _, size = world.bounds(state)
        tries = world.cells["reco_count"][state].copy()
        explored = choose_thompson_slate_nb(
            kernel_rng, groups, world.cells, state, size, sigma, slate, top_key, top_product,
            heap_score, heap_node,
        )  # fmt: skip
        assert slate.tolist() == layouts[state].thompson_slate(5, sigma, naive_rng)
        assert explored == int(np.sum(tries[slate] == 0))
        previous = world.visit(state, slate)
        update_thompson_nb(groups, world.value, world.cells, state, slate, previous)
        for product in slate.tolist():
            layouts[state].move(
                product,
                int(world.cells["reco_count"][state, product]),
                float(world.value[state, product]),
            )
        size_ = len(layouts[state].product)
        assert groups.slot_product[state, :size_].tolist() == layouts[state].product
    assert kernel_rng.bit_generator.state == naive_rng.bit_generator.state
    check_count_groups(groups, world)


def test_thompson_top_frequencies_match_the_full_scan_definition() -> None:
    world, groups, _ = thompson_world(seed=6)
    state, sigma, n = 0, 1.0, 3
    _, size = world.bounds(state)
    catalogue = world.catalogue(state)
    row = world.value[state, catalogue]
    mean = np.where(row == -np.inf, 0.0, row)
    scale = sigma / np.sqrt(world.cells["reco_count"][state, catalogue] + 1.0)
    draws = 20_000
    # the definition, vectorised: one normal per catalogue product, top-1 and top-n sets
    keys = mean + scale * np.random.default_rng(11).standard_normal((draws, len(catalogue)))
    scan_top1 = np.bincount(np.argmax(keys, axis=1), minlength=len(catalogue)) / draws
    scan_in = np.zeros(len(catalogue))
    np.add.at(scan_in, np.argsort(-keys, axis=1)[:, :n].ravel(), 1.0 / draws)
    workspace = thompson_workspace(n, groups)
    slate = np.empty(n, dtype=np.int64)
    rng = np.random.default_rng(12)
    fast_top1 = np.zeros(len(catalogue))
    fast_in = np.zeros(len(catalogue))
    position = {p: i for i, p in enumerate(catalogue)}
    for _ in range(draws):
        choose_thompson_slate_nb(rng, groups, world.cells, state, size, sigma, slate, *workspace)
        fast_top1[position[int(slate[0])]] += 1.0 / draws
        for product in slate:
            fast_in[position[int(product)]] += 1.0 / draws
    # two binomial proportions of 20,000 draws: 5 standard errors of their difference
    for fast, scan in ((fast_top1, scan_top1), (fast_in, scan_in)):
        p = (fast + scan) / 2
        tolerance = 5 * np.sqrt(2 * p * (1 - p) / draws) + 1e-9
        assert np.all(np.abs(fast - scan) <= tolerance), np.max(np.abs(fast - scan) - tolerance)
    assert math.isclose(fast_in.sum(), n)
