"""The two tiers of the candidate cache (ranked members, unranked reserve) against a naive top n.

Every query must return exactly the naive top ``n`` of the state's row (values descending, ties
by lower product id, unknown products never), and after every visit the row must hold exactly
the known products at or above the cache's floor, ranked, and the reserve exactly the known
products between its floor and the cache's, with their current values. Visits update the shown
products by a constant step or the sample average, and explored products (unknown ones
included) change value too; narrow rows make the reserve tiny, so that it overflows, refills
the members and runs dry (a rebuild from the tree) often.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from rlreco.engine.kernels.candidate_cache import (
    CACHE_CAPACITY,
    CACHE_SLOTS,
    find_top_cached_nb,
    refresh_cache_nb,
)
from rlreco.engine.kernels.candidate_reserve import (
    RESERVE_HEAD,
    RESERVE_START,
    reserve_floor_nb,
)
from rlreco.engine.kernels.topn import index_depth, new_index, repair_index_nb

#: Fewer rounds when the kernels run as Python (no JIT).
QUICK = os.environ.get("NUMBA_DISABLE_JIT", "0") == "1"


def naive_top(row: np.ndarray, n: int) -> list[int]:
    """The ``n`` best known products of ``row``: value descending, ties by lower id."""
    known = [p for p in range(row.size) if row[p] != -np.inf]
    return sorted(known, key=lambda p: (-row[p], p))[:n]


def check_tiers(row: np.ndarray, state: int, floor: float, size: int, items: np.ndarray) -> None:
    """Members and reserve of one state's cache row are exactly what the values say."""
    known = row != -np.inf
    members = np.flatnonzero(known & (row >= floor))
    assert 0 <= size <= CACHE_SLOTS
    assert items[:size].tolist() == naive_top(np.where(row >= floor, row, -np.inf), members.size)
    assert items[CACHE_SLOTS : CACHE_SLOTS + size].view(np.float64).tolist() == (
        row[items[:size]].tolist()
    )
    low = float(reserve_floor_nb(items.reshape(1, -1), 0))
    assert low <= floor
    slots = (items.size - RESERVE_START) // 2
    count = int(items[RESERVE_HEAD])
    assert 0 <= count <= slots
    listed = items[RESERVE_START : RESERVE_START + count]
    values = items[RESERVE_START + slots : RESERVE_START + slots + count].view(np.float64)
    expected = np.flatnonzero(known & (row >= low) & (row < floor))
    assert sorted(listed.tolist()) == expected.tolist()
    assert values.tolist() == row[listed].tolist()


@pytest.mark.parametrize("reserve_slots", [3, 16, None])
@pytest.mark.parametrize("step", [0.1, 0.0])
@pytest.mark.parametrize("n_products", [30, 300, 2000])
def test_tiers_match_a_naive_top_n(n_products: int, step: float, reserve_slots: int | None) -> None:
    rng = np.random.default_rng(n_products + int(step * 10) + (reserve_slots or 0))
    n_states, n, epsilon = 3, 10, 0.2
    width = CACHE_CAPACITY if reserve_slots is None else RESERVE_START + 2 * reserve_slots
    value = np.full((n_states, -(-n_products // 8) * 8), -np.inf)
    known = rng.random((n_states, n_products)) < 0.4
    # values rounded to 0.1: many ties, at thresholds too
    value[:, :n_products] = np.where(known, np.round(rng.normal(20, 8, known.shape), 1), -np.inf)
    counts = np.where(known, rng.integers(1, 30, known.shape), 0)
    index = new_index(value)
    depth = index_depth(value.shape[1])
    cache_floor = np.zeros(n_states)
    cache_size = np.full(n_states, -1, dtype=np.int64)
    cache_items = np.zeros((n_states, width), dtype=np.int64)
    top_value = np.empty(n + 1)
    top_product = np.empty(n + 1, dtype=np.int64)
    frontier = np.empty((3, max(8**depth, CACHE_CAPACITY)), dtype=np.int64)
    refills = rebuilds = 0
    rounds = 300 if QUICK else 1500
    for _ in range(rounds):
        state = int(rng.integers(n_states))
        size_before = int(cache_size[state])
        reserve_before = int(cache_items[state, RESERVE_HEAD])
        dry = 0 <= size_before < n and cache_floor[state] != -np.inf
        found = find_top_cached_nb(
            value, index, state, depth, n, top_value, top_product, frontier,
            cache_floor, cache_size, cache_items,
        )  # fmt: skip
        assert top_product[:found].tolist() == naive_top(value[state], n)
        assert top_value[:found].tolist() == value[state, top_product[:found]].tolist()
        if cache_size[state] >= 0:
            check_tiers(
                value[state], state, cache_floor[state], int(cache_size[state]), cache_items[state]
            )
        if dry:
            refills += size_before + reserve_before >= n
            rebuilds += size_before + reserve_before < n
        # a visit: greedy slots show the top, explored slots any product (unknown ones too)
        slate = [
            int(rng.integers(n_products)) if rng.random() < epsilon or i >= found
            else int(top_product[i])
            for i in range(n)
        ]  # fmt: skip
        shown = np.array(sorted(set(slate)), dtype=np.int64)
        previous = value[state, shown].copy()
        reward = rng.choice([0.0, 0.0, 0.0, 1.0, 40.0], shown.size)
        mean = np.where(previous == -np.inf, 0.0, previous)
        counts[state, shown] += 1
        if step > 0.0:
            mean += step * (reward - mean)
        else:
            mean += (reward - mean) / counts[state, shown]
        value[state, shown] = np.round(mean, 1)
        repair_index_nb(value, index, state, depth, shown)
        refresh_cache_nb(value, state, shown, previous, cache_floor, cache_size, cache_items)
        if cache_size[state] >= 0:
            check_tiers(
                value[state], state, cache_floor[state], int(cache_size[state]), cache_items[state]
            )
    if n_products >= 300:
        # both ways of serving a dry cache were taken (a state of 30 products is cached whole;
        # a reserve of 3 seldom refills 10)
        assert refills > 0 or reserve_slots == 3
        assert rebuilds > 0
