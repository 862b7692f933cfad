"""The greedy top-n search alone, replayed from recorded visits: what a constant step costs it.

A constant step size (``value += 0.1 * (r - value)``) runs at ~0.6x the visits/s of the sample
average on ``bench_simulate.py cases``. This benchmark isolates the part of a visit that the
step size changes: the state's cached top-n query (a copy, or a rebuild from the tree), the value
update, the tree repair and the cache refresh. It records the states, slates and rewards of a
run once (the log of ``Simulator.run``), then replays them through those kernels alone, with no
draw and no response: the replay is deterministic and every query is the run's own. Windows:
``early`` (visits 0 .. 300k: the history-initialised values are still decaying) and ``late``
(300k visits from 2M on).

Printed per case and window: nanoseconds per visit (thread CPU time, best of the rounds), the
rebuilds per visit and the members a rebuild found. Measured (synthetic space, one shared core,
``python bench/bench_topn_replay.py 3``): ``1/n`` early 713 ns, 0.062 rebuilds/visit, late 527
ns, 0.002; step 0.1 early 1,183 ns, 0.304, late 802 ns, 0.058 (34-35 members per rebuild). By
cycle counters around each part (a separate probe, not kept): a rebuild costs ~5k-6k cycles,
nearly half of it misses on the tree's lower levels and the value row, and a deeper rebuild
(~50 members) costs little more; under step 0.1 the refresh costs ~2x its ``1/n`` cost late in
the run (shown members move a few ranks instead of staying put). Under a constant step a shown
member drops by a tenth of its distance to the reward: during the decay of the history values,
far below any floor a 64-slot cache can hold, so the cache is emptied every ~3.5 visits there.

What a rebuild costs without misses (``python bench/bench_topn_replay.py warm 6``: each rebuild
done a second time at once, its lines now in the CPU cache; 2026-11-30, one core): 0.95-1.34 us
early in the run (three runs), against about 1.3 us per extra rebuild of step 0.1 over ``1/n``
in the same window (886 - 567 ns per visit for 0.304 - 0.062 rebuilds): the misses are a minor
part, the rebuild's own work most of it. Its parts (``parts``: each state's rebuild repeated in
place on the benchmark's initial tables): deep floor 0.11 us, tree descent and collection
0.37 us, ranking the ~34 members into the cache 0.37 us, 0.94 us in all.

Why a deeper or two-tier cache does not close the gap (``python bench/bench_topn_replay.py band``,
:func:`band_sizes`): for a shown member to stay listed after one step of 0.1 with reward 0, a
structure listing every known product above a floor must reach down to 0.9 x the 10th best. Per
state (median) that is 55 products at the start, 232 after 50k visits, 319 after 150k, 349 after
300k (the decay of the history values: every product shown so far sits in one band ~10% wide),
and 147-168 late (1M, 2M). A rebuild lists ~35. Tried and reverted: an unranked reserve behind
the ranked cache (every known product between a deeper floor and the cache's, with its value;
rebuilds collect ~100 products, rank the best 40 and keep the rest there; a dry cache is refilled
from it before the tree is read; members that drop move to it). Step 0.1 rebuilds fell from
0.300 to 0.101 per visit early (0.057 -> 0.026 late), but 0.209 refills per visit came with them
(0.038 late), and each rebuild and refill cost more. Same sitting, alternating processes, two
pairs: ``1/n`` early 610/555 -> 752/824 ns, late 402/380 -> 439/467; step 0.1 early 1,116/937
-> 1,176/1,255, late 688/651 -> 752/778. A reserve of 384 with ~130 listed per rebuild: no
better (step early 1,262, late 822). Listing the ~350 products recycling needs would make each
rebuild several times dearer. A plain tree query per visit (no cache) costs as much as the cached
step-0.1 query early (1,227 vs 1,201 ns) and more late (1,147 vs 797 ns).

Run: ``python bench/bench_topn_replay.py [ROUNDS]`` (or ``band``, ``warm [ROUNDS]``,
``parts [ROUNDS]``).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from rlreco.engine.kernels.candidate_cache import (
    CACHE_CAPACITY,
    FLOOR_NODES,
    find_deep_floor_nb,
    find_top_cached_nb,
    rank_into_cache_nb,
    refresh_cache_nb,
)
from rlreco.engine.kernels.jit import jit
from rlreco.engine.kernels.topn import (
    collect_above_nb,
    depth_of_width_nb,
    new_index,
    repair_index_nb,
)
from rlreco.engine.simulation import Simulator

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_simulate import WARMUP, synthetic_space, truth_case

#: (name, visits before the window, visits in it)
WINDOWS = (("early", 0, 300_000), ("late", 2_000_000, 300_000))
SLATE = 10


@jit()
def replay_visits_nb(
    value: np.ndarray,
    reco_count: np.ndarray,
    index: np.ndarray,
    states: np.ndarray,
    products: np.ndarray,
    rewards: np.ndarray,
    step: float,
    cache_floor: np.ndarray,
    cache_size: np.ndarray,
    cache_items: np.ndarray,
    counts: np.ndarray,
    again: bool,
) -> None:
    """Query, update, repair and refresh for each recorded visit (benchmark helper).

    Parameters
    ----------
    value : ndarray of float64, shape (S, W)
        The learner's values at the window's start; updated in place.
    reco_count : ndarray of int64, shape (S, P)
        Recommendations per cell (the ``1/n`` step); updated in place.
    index : ndarray of float64, shape (S, index_width(W))
    states : ndarray of int32, shape (V,)
    products, rewards : ndarray of int32 / float64, shape (V * SLATE,)
        Slates and drawn rewards, visit by visit.
    step : float
        0.0: the sample average; else the constant step.
    cache_floor, cache_size, cache_items
        The candidate caches (all invalid at the start).
    counts : ndarray of int64, shape (2,)
        Output: rebuilds, and the members they found.
    again : bool
        Rebuild each rebuilt cache a second time at once, with the lines it reads now in the
        CPU cache: the extra time is what a rebuild costs without misses.
    """
    depth = depth_of_width_nb(index.shape[1])
    top_value = np.empty(SLATE + 1)
    top_product = np.empty(SLATE + 1, dtype=np.int64)
    frontier = np.empty((3, max(1 << (3 * depth), CACHE_CAPACITY)), dtype=np.int64)
    slate = np.empty(SLATE, dtype=np.int64)
    previous = np.empty(SLATE)
    for v in range(states.shape[0]):
        state = states[v]
        size = cache_size[state]
        rebuilt = size < SLATE and not (size >= 0 and cache_floor[state] == -np.inf)
        find_top_cached_nb(
            value, index, state, depth, SLATE, top_value, top_product, frontier,
            cache_floor, cache_size, cache_items,
        )  # fmt: skip
        if rebuilt and again:
            cache_size[state] = -1
            find_top_cached_nb(
                value, index, state, depth, SLATE, top_value, top_product, frontier,
                cache_floor, cache_size, cache_items,
            )  # fmt: skip
        counts[0] += rebuilt
        counts[1] += max(cache_size[state], 0) if rebuilt else 0
        for i in range(SLATE):
            product = products[v * SLATE + i]
            slate[i] = product
            mean = value[state, product]
            previous[i] = mean
            mean = 0.0 if mean == -np.inf else mean
            reco_count[state, product] += 1
            reward = rewards[v * SLATE + i]
            if step > 0.0:
                mean += step * (reward - mean)
            else:
                mean += (reward - mean) / reco_count[state, product]
            value[state, product] = mean
        repair_index_nb(value, index, state, depth, slate)
        refresh_cache_nb(value, state, slate, previous, cache_floor, cache_size, cache_items)


def record(case: str) -> list[dict[str, np.ndarray]]:
    """Run ``case`` (a ``bench_simulate`` truth case) and keep each window's visits and the
    learner's tables at its start."""
    space, initial = synthetic_space()
    params, response = truth_case(space, initial, case, 3_000_000)
    Simulator(space, initial.copy(), params, response=response).run(WARMUP)
    simulator = Simulator(space, initial.copy(), params, seed=1, response=response)
    windows = []
    done = 0
    for _, skip, visits in WINDOWS:
        simulator.run(skip - done, chunk=1_000_000)
        done = skip + visits
        start = {
            "value": simulator.tables.padded.copy(),
            "reco_count": simulator.tables.reco_count.copy(),
        }
        parts: list[np.ndarray] = []
        simulator.run(visits, chunk=visits, log=copy_into(parts))
        log = np.concatenate(parts)
        start["states"] = log["state"][::SLATE].astype(np.int32)
        start["products"] = log["product"].astype(np.int32)
        start["rewards"] = log["reward"].astype(np.float64)
        windows.append(start)
    return windows


def copy_into(parts: list[np.ndarray]) -> Callable[[np.ndarray], None]:
    """A ``log`` callback keeping a copy of each batch of records in ``parts``."""
    return lambda records: parts.append(records.copy())


def replay(
    window: dict[str, np.ndarray], step: float, again: bool = False
) -> tuple[float, np.ndarray]:
    """Thread CPU seconds of one replay of a window, and its counts (``again``: see
    :func:`replay_visits_nb`)."""
    value = window["value"].copy()
    n_states = value.shape[0]
    counts = np.zeros(2, dtype=np.int64)
    args = (
        value,
        window["reco_count"].copy(),
        new_index(value),
        window["states"],
        window["products"],
        window["rewards"],
        step,
        np.zeros(n_states),
        np.full(n_states, -1, dtype=np.int64),
        np.zeros((n_states, CACHE_CAPACITY), dtype=np.int64),
        counts,
        again,
    )
    start = time.thread_time()
    replay_visits_nb(*args)
    return time.thread_time() - start, counts


#: Visits after which :func:`band_sizes` looks at the learner's values.
BAND_CHECKPOINTS = (0, 50_000, 150_000, 300_000, 1_000_000, 2_000_000)


def band_sizes(step: float = 0.1) -> None:
    """What a cache must list for a shown member to stay listed after one constant step.

    A shown top member with reward 0 drops to ``(1 - step)`` times its value; for it to stay in
    a structure that lists every known product above a floor (and so to be served again without
    reading the tree), the floor must be below that: the structure must hold every product at or
    above ``(1 - step)`` times the 10th best. Printed: that count per state (median and
    quartiles) at each checkpoint of the ``constant-step`` case.
    """
    space, initial = synthetic_space()
    params, response = truth_case(space, initial, "constant-step", 3_000_000)
    simulator = Simulator(space, initial.copy(), params, seed=1, response=response)
    done = 0
    for at in BAND_CHECKPOINTS:
        simulator.run(at - done, chunk=1_000_000)
        done = at
        sizes = []
        for row in simulator.tables.padded:
            known = np.sort(row[row != -np.inf])[::-1]
            if known.size >= SLATE:
                tenth = known[SLATE - 1]
                floor = (1 - step) * tenth if tenth > 0 else (1 + step) * tenth
                sizes.append(np.count_nonzero(known >= floor))
        q1, median, q3 = np.percentile(sizes, [25, 50, 75])
        print(
            f"visit {at:>9,}: products >= {1 - step:.1f} x the 10th best per state: "
            f"median {median:.0f} (quartiles {q1:.0f}-{q3:.0f})"
        )


#: the parts :func:`rebuild_parts_nb` times
PARTS = ("whole rebuild", "deep floor", "tree descent and collection", "ranking into the cache")


@jit()
def rebuild_parts_nb(value: np.ndarray, index: np.ndarray, repeats: int, part: int) -> int:
    """Rebuild every state's cache ``repeats`` times in a row (its lines in the CPU cache after
    the first), whole or one part of it (index into :data:`PARTS`); returns a checksum.

    Parameters
    ----------
    value : ndarray of float64, shape (S, W)
    index : ndarray of float64, shape (S, index_width(W))
    repeats : int
    part : int
    """
    depth = depth_of_width_nb(index.shape[1])
    n_states = value.shape[0]
    top_value = np.empty(SLATE + 1)
    top_product = np.empty(SLATE + 1, dtype=np.int64)
    frontier = np.empty((3, max(1 << (3 * depth), CACHE_CAPACITY)), dtype=np.int64)
    cache_floor = np.zeros(n_states)
    cache_size = np.full(n_states, -1, dtype=np.int64)
    cache_items = np.zeros((n_states, CACHE_CAPACITY), dtype=np.int64)
    nodes = max(FLOOR_NODES, SLATE)
    total = 0
    for state in range(n_states):
        floor = find_deep_floor_nb(value, index, state, depth, nodes)
        kept = collect_above_nb(value, index, state, depth, floor, frontier)
        for _ in range(repeats):
            if part == 0:
                cache_size[state] = -1
                total += find_top_cached_nb(
                    value, index, state, depth, SLATE, top_value, top_product, frontier,
                    cache_floor, cache_size, cache_items,
                )  # fmt: skip
            elif part == 1:
                total += find_deep_floor_nb(value, index, state, depth, nodes) > 0.0
            elif part == 2:
                total += collect_above_nb(value, index, state, depth, floor, frontier)
            else:
                total += rank_into_cache_nb(value, state, frontier, depth & 1, kept, cache_items)
    return total


def rebuild_parts(rounds: int, repeats: int = 200) -> None:
    """Print what each part of a rebuild costs with its lines in the CPU cache, on the
    benchmark's initial tables (best of ``rounds``, thread CPU time)."""
    _, initial = synthetic_space()
    value = initial.padded.copy()
    index = new_index(value)
    for part, name in enumerate(PARTS):
        rebuild_parts_nb(value, index, 2, part)  # compiles
        best = np.inf
        for _ in range(rounds):
            start = time.thread_time()
            rebuild_parts_nb(value, index, repeats, part)
            best = min(best, time.thread_time() - start)
        print(f"{name}: {best / (repeats * value.shape[0]) * 1e9:,.0f} ns per state")


def main(rounds: int, warm: bool = False) -> None:
    """Print each case's and window's replay figures; with ``warm``, also what a rebuild costs
    when its lines are already in the CPU cache (each rebuild done twice, rounds alternating)."""
    for case, step in (("popularity", 0.0), ("constant-step", 0.1)):
        for (name, _, visits), window in zip(WINDOWS, record(case), strict=True):
            _, counts = replay(window, step)  # compiles on the first call
            if warm:
                replay(window, step, again=True)
            once, twice = [], []
            for _ in range(rounds):
                once.append(replay(window, step)[0])
                if warm:
                    twice.append(replay(window, step, again=True)[0])
            best = min(once)
            line = (
                f"{case} {name}: {best / visits * 1e9:,.0f} ns/visit, "
                f"{counts[0] / visits:.3f} rebuilds/visit, "
                f"{counts[1] / max(counts[0], 1):.1f} members/rebuild"
            )
            if warm and counts[0]:
                line += f", warm rebuild {(min(twice) - best) / counts[0] * 1e9:,.0f} ns"
            print(line)


if __name__ == "__main__":
    if sys.argv[1:2] == ["band"]:
        band_sizes()
    elif sys.argv[1:2] == ["parts"]:
        rebuild_parts(int(sys.argv[2]) if len(sys.argv) > 2 else 3)
    elif sys.argv[1:2] == ["warm"]:
        main(int(sys.argv[2]) if len(sys.argv) > 2 else 3, warm=True)
    else:
        main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
