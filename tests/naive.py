"""Slow pure-Python reference of simulated visits.

Written from the semantics in the docstring of :mod:`rlreco.engine.kernels.visit`, not from
the kernels: the best product is found by sorting all known products, slots are plain lists,
and every draw is a scalar call on the same ``numpy.random.Generator`` objects, so on small
state spaces the kernels must agree with it exactly (tables, metrics and generator states).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rlreco.engine.state_space import StateSpace
from rlreco.engine.tables import Tables
from rlreco.schema import DEFAULT_STATE_FIELDS, WEEKDAY_NAMES

IGNORED, CLICKED, BOUGHT = 0, 1, 2


def below(rng: np.random.Generator, m: int) -> int:
    """Uniform integer in [0, m) from one ``rng.random()``."""
    return min(int(rng.random() * m), m - 1)


def round2(x: float) -> float:
    """Round to 2 decimals: ``rint(x * 100) / 100``."""
    return float(np.rint(x * 100.0) / 100.0)


def draw_count(rng: np.random.Generator, cdf: np.ndarray, cap: int) -> int:
    """First ``c`` with ``u < cdf[c]`` (the last category if none), capped at ``cap``."""
    u = rng.random()
    for c, edge in enumerate(cdf):
        if u < edge:
            return min(c, cap)
    return min(len(cdf) - 1, cap)


@dataclass
class NaiveWorld:
    """Everything one visit reads and writes, as plain arrays (modified in place).

    ``truth`` is None for the seed model, else ``(p_click, p_buy)`` arrays of shape
    (n_states, n_products); ``rewards`` are the mean rewards of (ignored, clicked, bought);
    ``step_size`` None is the sample average ``1/n``, else a constant step. ``schedule``, when
    given, lists the response phases ``(first visit, truth, best_mu, state_cdf)``: before each
    visit the phase with the last first visit ``<=`` the global visit index sets ``truth``,
    ``best_mu`` and ``state_cdf``.
    """

    value: np.ndarray
    reward: np.ndarray
    count: np.ndarray
    reco_count: np.ndarray
    state_segment: np.ndarray
    catalogues: list[list[int]]
    epsilon: float
    slate_size: int
    rewards: tuple[float, float, float]
    click_cdf: np.ndarray
    buy_cdf: np.ndarray
    truth: tuple[np.ndarray, np.ndarray] | None = None
    best_mu: np.ndarray | None = None
    state_cdf: np.ndarray | None = None
    step_size: float | None = None
    schedule: list[tuple[int, Any, Any, Any]] = field(default_factory=list)
    blocks: dict[int, dict[str, float]] = field(default_factory=dict)


def draw_state(world: NaiveWorld, rng: np.random.Generator) -> int:
    """Uniform, or the first state whose cumulative weight exceeds ``u * total``."""
    n_states = world.value.shape[0]
    if world.state_cdf is None:
        return below(rng, n_states)
    target = rng.random() * world.state_cdf[-1]
    return min(int(np.searchsorted(world.state_cdf, target, side="right")), n_states - 1)


def choose_slate(world: NaiveWorld, state: int, rng: np.random.Generator) -> tuple[list[int], int]:
    """Epsilon-greedy slate: (products in slot order, explored slots)."""
    catalogue = world.catalogues[world.state_segment[state]]
    row = world.value[state]
    ranked = sorted((p for p in range(row.size) if row[p] != -math.inf), key=lambda p: (-row[p], p))
    slate: list[int] = []
    explored = 0
    for _ in range(world.slate_size):
        u = rng.random()
        product = None
        if u >= world.epsilon:
            product = next((p for p in ranked if p not in slate), None)
        if product is None:
            if u < world.epsilon:
                explored += 1
            product = catalogue[below(rng, len(catalogue))]
            while product in slate:
                product = catalogue[below(rng, len(catalogue))]
        slate.append(product)
    return slate, explored


def respond(
    world: NaiveWorld, state: int, slate: list[int], rng: np.random.Generator
) -> tuple[list[int], int, int, float]:
    """Outcome per slot, click events, purchases, and the slate's summed ``mu``."""
    n = len(slate)
    if world.truth is None:
        clicks = draw_count(rng, world.click_cdf, n)
        buys = draw_count(rng, world.buy_cdf, n)
        outcome = [IGNORED] * n
        for code, picks in ((CLICKED, clicks), (BOUGHT, buys)):
            order = list(range(n))
            for i in range(picks):
                j = i + below(rng, n - i)
                order[i], order[j] = order[j], order[i]
                outcome[order[i]] = code
        return outcome, clicks, buys, 0.0
    p_click, p_buy = world.truth
    ignore, click_reward, buy_reward = world.rewards
    outcome = []
    clicks = buys = 0
    shown_mu = 0.0
    for product in slate:
        click = rng.random() < p_click[state, product]
        buy = rng.random() < p_buy[state, product]
        clicks += click
        buys += buy
        pc, pb = float(p_click[state, product]), float(p_buy[state, product])
        shown_mu += pb * buy_reward + (1.0 - pb) * (pc * click_reward + (1.0 - pc) * ignore)
        outcome.append(BOUGHT if buy else CLICKED if click else IGNORED)
    return outcome, clicks, buys, shown_mu


def update(
    world: NaiveWorld, state: int, slate: list[int], outcome: list[int], rng: np.random.Generator
) -> float:
    """Bookkeeping, rewards and incremental means; returns the visit's summed reward."""
    total = 0.0
    for product, code in zip(slate, outcome, strict=True):
        mean = float(world.value[state, product])
        if mean == -math.inf:
            mean = 0.0
            world.reward[state, product] = round2(rng.standard_normal())
        world.reco_count[state, product] += 1
        world.count[state, product] += 1
        r = round2(rng.normal(world.rewards[code], 1.0))
        world.reward[state, product] += r
        if world.step_size is None:
            mean += (r - mean) / world.reco_count[state, product]
        else:
            mean += world.step_size * (r - mean)
        world.value[state, product] = mean
        total += r
    return total


def simulate(
    world: NaiveWorld,
    rng: np.random.Generator,
    first_visit: int,
    n_visits: int,
    metrics_block: int,
) -> None:
    """Simulate visits ``first_visit ..`` and add their sums to ``world.blocks``."""
    for visit in range(first_visit, first_visit + n_visits):
        for start, truth, best_mu, state_cdf in world.schedule:
            if start <= visit:
                world.truth, world.best_mu, world.state_cdf = truth, best_mu, state_cdf
        state = draw_state(world, rng)
        slate, explored = choose_slate(world, state, rng)
        outcome, clicks, buys, shown_mu = respond(world, state, slate, rng)
        total = update(world, state, slate, outcome, rng)
        block = world.blocks.setdefault(
            visit // metrics_block,
            {
                "visits": 0,
                "slots": 0,
                "reward_sum": 0.0,
                "clicks": 0,
                "buys": 0,
                "explored": 0,
                "regret_visits": 0,
                "regret_sum": 0.0,
            },
        )
        block["visits"] += 1
        block["slots"] += len(slate)
        block["reward_sum"] += total
        block["clicks"] += clicks
        block["buys"] += buys
        block["explored"] += explored
        if world.truth is not None:
            assert world.best_mu is not None
            block["regret_visits"] += 1
            block["regret_sum"] += float(world.best_mu[state]) - shown_mu


def synthetic_world(
    *,
    n_segments: int = 2,
    weekdays: int = 3,
    n_products: int = 40,
    catalogue_size: int = 25,
    known: tuple[int, ...] = (0, 3, 12, 25),
    seed: int = 0,
) -> tuple[StateSpace, Tables]:
    """A small state space (segments x December x half 0 x weekdays) and initial tables.

    State ``s`` knows ``known[s % len(known)]`` products of its catalogue (0: a cold state),
    with values rounded to one decimal so that ties occur; counts are random, some negative.
    """
    rng = np.random.default_rng(seed)
    grid = np.indices((n_segments, 1, 1, weekdays)).reshape(4, -1)
    n_states = grid.shape[1]
    catalogues = [
        np.sort(rng.choice(n_products, catalogue_size, replace=False)).astype(np.int32)
        for _ in range(n_segments)
    ]
    space = StateSpace.from_grid(
        DEFAULT_STATE_FIELDS,
        (
            tuple(f"Q{g + 1}" for g in range(n_segments)),
            ("December",),
            ("0",),
            WEEKDAY_NAMES[:weekdays],
        ),
        state_weight=np.where(np.arange(n_states) % 4 == 0, 0.0, rng.integers(1, 9, n_states)),
        product_codes=np.array([f"{20000 + p}" for p in range(n_products)]),
        product_names=np.array([f"product {p}" for p in range(n_products)]),
        catalogue_ptr=np.arange(n_segments + 1, dtype=np.int64) * catalogue_size,
        catalogue_items=np.concatenate(catalogues),
    )
    tables = Tables.empty(n_states, n_products)
    for s in range(n_states):
        chosen = rng.choice(catalogues[grid[0, s]], known[s % len(known)], replace=False)
        tables.value[s, chosen] = np.round(rng.normal(1.0, 1.0, chosen.size), 1)
        tables.cells["reward"][s, chosen] = np.round(rng.normal(1.0, 1.0, chosen.size), 2)
        tables.cells["count"][s, chosen] = rng.integers(-2, 30, chosen.size)
    return space, tables
