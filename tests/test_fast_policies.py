"""Fast exact policies (``ucb1_cache`` UCB1, ``sum_tree`` softmax, ``thompson``): draw-for-draw
agreement with the slow references of ``tests/naive_fast_policy.py``, the caches' invariants,
resuming from rebuilt structures, and the sampling distributions."""

from __future__ import annotations

import math
from statistics import NormalDist

import naive_fast_policy as naive
import numpy as np
import pytest
from policy_world import WIDTH, World

from rlreco.engine.kernels.normals import normal_quantile_nb
from rlreco.engine.kernels.sum_tree import (
    SumTree,
    build_softmax_nb,
    choose_softmax_slate_nb,
    new_sum_tree,
    new_sum_tree_work,
)
from rlreco.engine.kernels.sum_tree_update import update_softmax_nb
from rlreco.engine.kernels.thompson import (
    ThompsonCache,
    choose_thompson_scan_nb,
    choose_thompson_slate_nb,
    landing_rate_nb,
    new_thompson_cache,
    new_thompson_work,
    update_thompson_nb,
)
from rlreco.engine.kernels.ucb1_cache import (
    BLOCK_MAX,
    Ucb1Cache,
    choose_ucb1_slate_nb,
    new_ucb1_cache,
    new_ucb1_work,
)
from rlreco.engine.kernels.ucb1_update import update_ucb1_nb
from rlreco.engine.kernels.untried_set import Untried, build_untried_nb, new_untried
from rlreco.schema import CELL_DTYPE

N = 5


def check_ucb1_cache(cache: Ucb1Cache, world: World) -> None:
    """A built row holds exactly the tried catalogue products, with exact values, by count
    descending, one group per distinct count (its count, first entry and head value); each
    group's block is its best entries in row order (value descending, product ascending), at
    least one, and the rest of the group comes after the block's last."""
    for state in range(4):
        size = int(cache.size[state])
        if size < 0:
            continue
        tries = world.cells["reco_count"][state]
        tried = [p for p in world.catalogue(state) if tries[p] > 0]
        row = cache.entry["product"][state, :size].tolist()
        assert sorted(row) == tried
        np.testing.assert_array_equal(cache.entry["value"][state, :size], world.value[state, row])
        assert [int(tries[p]) for p in row] == sorted((int(tries[p]) for p in tried), reverse=True)
        counts = sorted({int(tries[p]) for p in tried}, reverse=True)
        groups = int(cache.groups[state])
        assert cache.tries[state, :groups].tolist() == counts
        firsts = [[int(tries[p]) for p in row].index(k) for k in counts]
        assert cache.start[state, :groups].tolist() == firsts
        np.testing.assert_array_equal(
            cache.head[state, :groups], cache.entry["value"][state, firsts]
        )
        for g, (first, end) in enumerate(zip(firsts, [*firsts[1:], size], strict=True)):
            group = row[first:end]
            ranked = sorted(group, key=lambda p: (-world.value[state, p], p))
            block = int(cache.block[state, g])
            assert 1 <= block <= len(group)
            assert group[:block] == ranked[:block]


def check_untried(untried: Untried, world: World) -> None:
    for state in range(4):
        products = [p for p in world.catalogue(state) if world.cells["reco_count"][state, p] == 0]
        assert untried.size[state] == len(products)
        bits = np.unpackbits(untried.mask[state].view(np.uint8), bitorder="little")
        assert np.flatnonzero(bits).tolist() == products


def run_ucb1(
    world: World, c: float, visits: int, seed: int, block_max: int = BLOCK_MAX
) -> tuple[Untried, Ucb1Cache, np.random.Generator]:
    """Visits of the fast kernel, each slate checked against the reference."""
    untried = new_untried(4, WIDTH)
    build_untried_nb(world.cells, world.ptr, world.items, world.segment, untried)
    cache = new_ucb1_cache(4, 40, block_max)
    work = new_ucb1_work(N, 40)
    shown = world.cells["reco_count"].sum(axis=1)
    slate = np.empty(N, dtype=np.int64)
    kernel_rng, naive_rng = np.random.default_rng(seed), np.random.default_rng(seed)
    for _ in range(visits):
        state = int(world.rng.integers(4))
        tries = world.cells["reco_count"][state].copy()
        explored = choose_ucb1_slate_nb(
            kernel_rng, untried, cache, world.value, world.cells, state,
            world.catalogue_of(state), c, int(shown[state]), slate, work,
        )  # fmt: skip
        expected = naive.ucb1_slate(
            world.value[state], tries, world.catalogue(state), N, c, int(shown[state]), naive_rng
        )
        assert slate.tolist() == expected
        assert explored == int(np.sum(tries[slate] == 0))
        world.visit(state, slate)
        shown[state] += N
        update_ucb1_nb(untried, cache, world.value, world.cells, state, slate, work)
        check_ucb1_cache(cache, world)
    assert kernel_rng.bit_generator.state == naive_rng.bit_generator.state
    return untried, cache, kernel_rng


@pytest.mark.parametrize("block_max", [1, 3, BLOCK_MAX])
@pytest.mark.parametrize("c", [0.0, 0.3, 1.5, 40.0])
def test_ucb1_matches_definition_draw_for_draw(c: float, block_max: int) -> None:
    # values on a coarse grid: ties within and across groups; c 40: the bonus dominates;
    # short blocks: groups with a rest, blocks that empty, walks that extend a block
    world = World(seed=2, known=30, tried=20)
    untried, cache, _ = run_ucb1(world, c, 1500, seed=7, block_max=block_max)
    assert np.all(cache.size >= 0)  # every row built and kept up to date
    check_untried(untried, world)


@pytest.mark.parametrize("block_max", [1, BLOCK_MAX])
def test_ucb1_ranks_keys_that_round_equal_by_product_id(block_max: int) -> None:
    """Two values of one count whose keys round to the same float rank by product id, the
    larger value's product last, so the cut between them is decided by the id (the merge
    must not stop at the larger value's entry, nor at the end of a block holding it alone)."""
    world = World(seed=4, known=0, tried=0)
    catalogue = world.catalogue(0)
    low, high = catalogue[3], catalogue[7]  # the larger value goes to the larger id
    world.cells["reco_count"][0, catalogue] = 50
    world.value[0, catalogue] = -1.0
    world.cells["reco_count"][0, [low, high]] = 1
    world.value[0, low] = 0.1
    world.value[0, high] = np.nextafter(0.1, 1.0)
    c, shown = 1e3, 10**6
    bonus = c * math.sqrt(math.log(shown) / 1)
    assert world.value[0, low] + bonus == world.value[0, high] + bonus
    untried = new_untried(4, WIDTH)
    build_untried_nb(world.cells, world.ptr, world.items, world.segment, untried)
    cache, work = new_ucb1_cache(4, 40, block_max), new_ucb1_work(1, 40)
    assert cache.size[0] < 0
    slate = np.empty(1, dtype=np.int64)
    choose_ucb1_slate_nb(
        np.random.default_rng(0), untried, cache, world.value, world.cells, 0,
        world.catalogue_of(0), c, shown, slate, work,
    )  # fmt: skip
    size = int(cache.size[0])
    assert cache.entry["product"][0, size - 2 : size].tolist() == [high, low]  # the row: by value
    assert slate.tolist() == [low]  # the definition: equal keys, lower id


def run_softmax(
    world: World, tau: float, tree: SumTree, visits: int, rng: np.random.Generator
) -> None:
    """Visits of the fast kernel; every slate and every row checked against the reference."""
    references = []
    for state in range(4):
        reference = naive.SoftmaxTree(WIDTH, world.catalogue(state), tau)
        reference.rebuild(world.value[state])
        references.append(reference)
    slate = np.empty(N, dtype=np.int64)
    work = new_sum_tree_work(N, WIDTH)
    naive_rng = np.random.default_rng()
    naive_rng.bit_generator.state = rng.bit_generator.state
    for _ in range(visits):
        state = int(world.rng.integers(4))
        catalogue = world.catalogue_of(state)
        tries = world.cells["reco_count"][state].copy()
        explored = choose_softmax_slate_nb(
            rng, tree, world.value, world.cells, state, catalogue, tau, slate, *work
        )
        assert slate.tolist() == references[state].slate(world.value[state], N, naive_rng)
        assert explored == int(np.sum(tries[slate] == 0))
        previous = world.visit(state, slate)
        update_softmax_nb(tree, world.value, state, catalogue, tau, slate, previous)
        # the row is always the rebuild from the tables (the reference rebuilds every time)
        references[state].update(world.value[state])
        assert tree.node[state].tolist() == references[state].node
    assert rng.bit_generator.state == naive_rng.bit_generator.state


@pytest.mark.parametrize("tau", [0.7, 0.004], ids=["tau0.7", "tiny-tau"])
def test_softmax_matches_reference_draw_for_draw(tau: float) -> None:
    # few known products at first: padded slates, products becoming known; tiny tau: grid
    # crossings (rebuilds), removal rounds and the catalogue-scan fallback
    world = World(seed=3, known=3, tried=0)
    tree = new_sum_tree(4, WIDTH)
    assert tree.node.ctypes.data % 64 == 0 and tree.node.strides[0] % 64 == 0
    build_softmax_nb(world.value, world.ptr, world.items, world.segment, tau, tree)
    run_softmax(world, tau, tree, 400, np.random.default_rng(8))


def test_softmax_four_levels_match_reference_draw_for_draw() -> None:
    # four levels below the root, as on the real catalogue (the other tests have three): the
    # unsigned child and parent positions at every level, rounds with leaves taken out
    width, tau = 600, 0.3
    rng = np.random.default_rng(21)
    catalogue = np.sort(rng.choice(width, 450, replace=False)).astype(np.int32)
    value = np.full((1, width), -np.inf)
    value[0, catalogue[::3]] = np.round(rng.normal(0.0, 1.0, catalogue[::3].size), 1)
    cells = np.zeros((1, width), dtype=CELL_DTYPE)
    tree = new_sum_tree(1, width)
    ptr, segment = np.array([0, catalogue.size]), np.zeros(1, dtype=np.int16)
    build_softmax_nb(value, ptr, catalogue, segment, tau, tree)
    reference = naive.SoftmaxTree(width, catalogue.tolist(), tau)
    assert reference.depth == 4
    slate = np.empty(N, dtype=np.int64)
    work = new_sum_tree_work(N, width)
    naive_rng = np.random.default_rng(22)
    kernel_rng = np.random.default_rng(22)
    for _ in range(300):
        reference.rebuild(value[0])
        choose_softmax_slate_nb(kernel_rng, tree, value, cells, 0, catalogue, tau, slate, *work)
        assert slate.tolist() == reference.slate(value[0], N, naive_rng)
        assert tree.node[0].tolist() == reference.node  # taken leaves restored
        previous = value[0, slate].copy()
        value[0, slate] = np.round(rng.normal(0.0, 1.0, N), 1)
        update_softmax_nb(tree, value, 0, catalogue, tau, slate, previous)
    reference.rebuild(value[0])
    assert tree.node[0].tolist() == reference.node
    assert kernel_rng.bit_generator.state == naive_rng.bit_generator.state


def test_softmax_slot_frequencies_follow_boltzmann() -> None:
    world = World(seed=4, known=30, tried=0)
    tau = 0.5
    tree = new_sum_tree(4, WIDTH)
    build_softmax_nb(world.value, world.ptr, world.items, world.segment, tau, tree)
    state = 0
    catalogue = world.catalogue_of(state)
    known = [p for p in world.catalogue(state) if world.value[state, p] != -np.inf]
    weights = np.exp(world.value[state, known] / tau)
    probability = weights / weights.sum()
    slate = np.empty(3, dtype=np.int64)
    work = new_sum_tree_work(3, WIDTH)
    rng = np.random.default_rng(9)
    draws = 20_000
    first = dict.fromkeys(known, 0)
    second = dict.fromkeys(known, 0)
    for _ in range(draws):
        choose_softmax_slate_nb(
            rng, tree, world.value, world.cells, state, catalogue, tau, slate, *work
        )
        first[int(slate[0])] += 1
        second[int(slate[1])] += 1
    # slot 1 ~ softmax; slot 2 ~ sum over slot-1 outcomes of the softmax without it
    second_probability = np.array(
        [
            sum(
                probability[i] * probability[j] / (1 - probability[i])
                for i in range(len(known))
                if i != j
            )
            for j in range(len(known))
        ]
    )
    for counts, expected in ((first, probability), (second, second_probability)):
        observed = np.array([counts[p] for p in known])
        chi2 = float(np.sum((observed - expected * draws) ** 2 / (expected * draws)))
        # len(known) - 1 degrees of freedom (< 30): the 0.999 quantile of chi2(29) is 58.3
        assert chi2 < 58.3, chi2


def test_normal_quantile_is_as241_bit_for_bit() -> None:
    rng = np.random.default_rng(13)
    ps = np.concatenate(
        [rng.random(2000), rng.random(500) * 0.02, 1 - rng.random(500) * 0.02,
         np.exp(-rng.random(500) * 700)]
    )  # fmt: skip
    inverse = NormalDist().inv_cdf
    for p in ps.tolist():
        assert normal_quantile_nb(p) == inverse(p)


def check_thompson_cache(cache: ThompsonCache, world: World, sigma: float) -> None:
    """A built row holds every product with m + s z_c >= T (exact m, s of the tables)."""
    for state in range(4):
        size = int(cache.size[state])
        if size < 0:
            continue
        catalogue = world.catalogue(state)
        zc = -normal_quantile_nb(landing_rate_nb(N, len(catalogue)))
        members = cache.product[state, :size].tolist()
        assert len(set(members)) == size
        for j, p in enumerate(members):
            m = 0.0 if world.value[state, p] == -np.inf else float(world.value[state, p])
            s = sigma / math.sqrt(int(world.cells["reco_count"][state, p]) + 1.0)
            assert (cache.mean[state, j], cache.scale[state, j]) == (m, s)
        for p in catalogue:
            m = 0.0 if world.value[state, p] == -np.inf else float(world.value[state, p])
            s = sigma / math.sqrt(int(world.cells["reco_count"][state, p]) + 1.0)
            if m + s * zc >= cache.threshold[state]:
                assert p in members


@pytest.mark.parametrize(("sigma", "capacity"), [(0.3, 8), (2.5, 8), (1.0, 64)])
def test_thompson_matches_definition_draw_for_draw(sigma: float, capacity: int) -> None:
    # capacity 8: overflows and fallbacks; 64: the cache serves most visits
    world = World(seed=5, known=25, tried=12)
    cache = new_thompson_cache(4, WIDTH, capacity)
    work = new_thompson_work(N, 40, WIDTH)
    slate = np.empty(N, dtype=np.int64)
    scanned = np.empty(N, dtype=np.int64)
    kernel_rng, scan_rng, naive_rng = (np.random.default_rng(10) for _ in range(3))
    for _ in range(400):
        state = int(world.rng.integers(4))
        catalogue = world.catalogue_of(state)
        tries = world.cells["reco_count"][state].copy()
        explored = choose_thompson_slate_nb(
            kernel_rng, cache, world.value, world.cells, state, catalogue, sigma, slate, work
        )
        choose_thompson_scan_nb(
            scan_rng, world.value, world.cells, state, catalogue, sigma, scanned, work
        )
        expected = naive.thompson_slate(
            world.value[state], tries, world.catalogue(state), N, sigma, naive_rng
        )
        assert slate.tolist() == expected == scanned.tolist()
        assert explored == int(np.sum(tries[slate] == 0))
        assert not work.landed_mask.any()
        world.visit(state, slate)
        update_thompson_nb(cache, world.value, world.cells, state, sigma, slate, catalogue.shape[0])
    assert kernel_rng.bit_generator.state == naive_rng.bit_generator.state
    check_thompson_cache(cache, world, sigma)
    if capacity == 64:
        assert cache.rebuilds.sum() < 100  # served by the cache most of the time


def test_thompson_frequencies_match_the_normal_sampling_definition() -> None:
    """Top-1 and in-slate frequencies against ``rng.standard_normal`` keys (the Thompson
    definition of ``kernels/policy.py``), vectorised."""
    world = World(seed=6, known=25, tried=12)
    state, sigma, n = 0, 1.0, 3
    catalogue = world.catalogue(state)
    row = world.value[state, catalogue]
    mean = np.where(row == -np.inf, 0.0, row)
    scale = sigma / np.sqrt(world.cells["reco_count"][state, catalogue] + 1.0)
    draws = 20_000
    keys = mean + scale * np.random.default_rng(11).standard_normal((draws, len(catalogue)))
    scan_top1 = np.bincount(np.argmax(keys, axis=1), minlength=len(catalogue)) / draws
    scan_in = np.zeros(len(catalogue))
    np.add.at(scan_in, np.argsort(-keys, axis=1)[:, :n].ravel(), 1.0 / draws)
    cache = new_thompson_cache(4, WIDTH)
    work = new_thompson_work(n, 40, WIDTH)
    slate = np.empty(n, dtype=np.int64)
    rng = np.random.default_rng(12)
    fast_top1 = np.zeros(len(catalogue))
    fast_in = np.zeros(len(catalogue))
    position = {p: i for i, p in enumerate(catalogue)}
    array = world.catalogue_of(state)
    for _ in range(draws):
        choose_thompson_slate_nb(
            rng, cache, world.value, world.cells, state, array, sigma, slate, work
        )
        fast_top1[position[int(slate[0])]] += 1.0 / draws
        for product in slate:
            fast_in[position[int(product)]] += 1.0 / draws
    # two binomial proportions of 20,000 draws: 5 standard errors of their difference
    for fast, scan in ((fast_top1, scan_top1), (fast_in, scan_in)):
        p = (fast + scan) / 2
        tolerance = 5 * np.sqrt(2 * p * (1 - p) / draws) + 1e-9
        assert np.all(np.abs(fast - scan) <= tolerance), np.max(np.abs(fast - scan) - tolerance)
    assert math.isclose(fast_in.sum(), n)


def test_structures_rebuilt_from_tables_continue_bit_for_bit() -> None:
    """A run resumed from its tables (every structure rebuilt, caches empty) draws the same
    slates as the uninterrupted run: nothing but the tables and the generator is state."""
    for policy in ("ucb1", "softmax", "thompson"):
        slates = []
        for resume in (False, True):
            world = World(seed=14, known=30, tried=10)
            rng = np.random.default_rng(15)
            shown = world.cells["reco_count"].sum(axis=1)
            taken: list[list[int]] = []
            structures: tuple[object, ...] = ()
            for visit in range(600):
                if visit == 0 or (resume and visit % 150 == 0):
                    structures = fresh_structures(world, policy)
                state = int(world.rng.integers(4))
                slate = np.empty(N, dtype=np.int64)
                step(world, policy, structures, state, int(shown[state]), rng, slate)
                shown[state] += N
                taken.append(slate.tolist())
            slates.append(taken)
        assert slates[0] == slates[1], policy


def fresh_structures(world: World, policy: str) -> tuple[object, ...]:
    if policy == "ucb1":
        untried = new_untried(4, WIDTH)
        build_untried_nb(world.cells, world.ptr, world.items, world.segment, untried)
        return untried, new_ucb1_cache(4, 40), new_ucb1_work(N, 40)
    if policy == "softmax":
        tree = new_sum_tree(4, WIDTH)
        build_softmax_nb(world.value, world.ptr, world.items, world.segment, 0.05, tree)
        return tree, new_sum_tree_work(N, WIDTH)
    return new_thompson_cache(4, WIDTH, 16), new_thompson_work(N, 40, WIDTH)


def step(
    world: World,
    policy: str,
    structures: tuple[object, ...],
    state: int,
    shown: int,
    rng: np.random.Generator,
    slate: np.ndarray,
) -> None:
    """One visit of a policy: choose, update the cells, update the structures."""
    catalogue = world.catalogue_of(state)
    if policy == "ucb1":
        untried, cache, work = structures
        choose_ucb1_slate_nb(
            rng, untried, cache, world.value, world.cells, state, catalogue, 1.0, shown, slate,
            work,
        )  # fmt: skip
        world.visit(state, slate)
        update_ucb1_nb(untried, cache, world.value, world.cells, state, slate, work)
    elif policy == "softmax":
        tree, work = structures
        choose_softmax_slate_nb(
            rng, tree, world.value, world.cells, state, catalogue, 0.05, slate, *work
        )
        previous = world.visit(state, slate)
        update_softmax_nb(tree, world.value, state, catalogue, 0.05, slate, previous)
    else:
        cache, work = structures
        choose_thompson_slate_nb(
            rng, cache, world.value, world.cells, state, catalogue, 1.0, slate, work
        )
        world.visit(state, slate)
        update_thompson_nb(cache, world.value, world.cells, state, 1.0, slate, catalogue.shape[0])
