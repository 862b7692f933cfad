"""Slow pure-Python references for visit logs and off-policy evaluation.

Written from the semantics of :mod:`rlreco.engine.kernels.visit` and
:mod:`rlreco.engine.kernels.estimators`, not from the kernels: every greedy product is found by
sorting all known products of the state, slates are lists, and every draw is a scalar call on
the same ``numpy.random.Generator``. :func:`log_visits` is the logger the simulated visits must
match once they log (slot for slot, propensities included); the estimator kernels must agree
with :func:`replay` draw for draw and with :func:`target_probability`,
:func:`slot_distribution` and :func:`slot_weights` exactly.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
from naive import (
    NaiveWorld,
    below,
    choose_slate,
    draw_state,
    respond,
    round2,
    synthetic_world,
    update,
)

from rlreco.engine.response import expected_reward
from rlreco.engine.state_space import StateSpace
from rlreco.engine.tables import Tables
from rlreco.schema import LOG_DTYPE


def ranked_known(row: np.ndarray) -> list[int]:
    """Known products of a value row, best first (ties: lower id first)."""
    return sorted((p for p in range(row.size) if row[p] != -math.inf), key=lambda p: (-row[p], p))


def target_probability(
    row: np.ndarray, catalogue: list[int], epsilon: float, before: list[int], product: int
) -> float:
    """Probability that epsilon-greedy on ``row`` puts ``product`` in the slot after ``before``."""
    if product not in catalogue or product in before:
        return 0.0
    left = len(catalogue) - len(before)
    greedy = next((p for p in ranked_known(row) if p not in before), None)
    if greedy is None:
        return 1.0 / left
    return (1.0 - epsilon) * (product == greedy) + epsilon / left


class _RecordingGenerator:
    """Forwards draws to a generator and keeps the ``normal`` draws (the slots' rewards)."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.normals: list[float] = []

    def random(self) -> float:
        return float(self.rng.random())

    def standard_normal(self) -> float:
        return float(self.rng.standard_normal())

    def normal(self, loc: float, scale: float) -> float:
        x = float(self.rng.normal(loc, scale))
        self.normals.append(x)
        return x


def log_visits(
    world: NaiveWorld, rng: np.random.Generator, first_visit: int, n_visits: int
) -> np.ndarray:
    """Simulate visits as :func:`tests.naive.simulate` does and log every slot.

    Each slot's propensity is the epsilon-greedy probability of its product given the state's
    values before the visit's update and the slots before it; its reward is the one drawn by
    the update (``round2`` of its ``normal`` draw).

    Returns
    -------
    ndarray of LOG_DTYPE, shape (n_visits * slate_size,)
    """
    out = np.zeros(n_visits * world.slate_size, dtype=LOG_DTYPE)
    recording = _RecordingGenerator(rng)
    draws: Any = recording
    k = 0
    for visit in range(first_visit, first_visit + n_visits):
        state = draw_state(world, draws)
        row = world.value[state].copy()
        catalogue = world.catalogues[world.state_segment[state]]
        slate, _ = choose_slate(world, state, draws)
        outcome, _, _, _ = respond(world, state, slate, draws)
        recording.normals.clear()
        update(world, state, slate, outcome, draws)
        for i, (product, code) in enumerate(zip(slate, outcome, strict=True)):
            out[k] = (
                visit, state, i, product, code, round2(recording.normals[i]),
                target_probability(row, catalogue, world.epsilon, slate[:i], product),
            )  # fmt: skip
            k += 1
    return out


def slot_distribution(
    row: np.ndarray, catalogue: list[int], epsilon: float, n: int
) -> list[dict[int, float]]:
    """Exact distribution of each slot's product of an epsilon-greedy slate (enumeration)."""
    dist: list[dict[int, float]] = [{} for _ in range(n)]

    def walk(before: list[int], p: float) -> None:
        i = len(before)
        if i == n or p == 0.0:
            return
        for product in catalogue:
            q = target_probability(row, catalogue, epsilon, before, product)
            if q > 0.0:
                dist[i][product] = dist[i].get(product, 0.0) + p * q
                walk([*before, product], p * q)

    walk([], 1.0)
    return dist


def slot_weights(
    slots: np.ndarray,
    value: np.ndarray,
    state_segment: np.ndarray,
    catalogues: list[list[int]],
    epsilon: float,
    clip: float = math.inf,
) -> tuple[np.ndarray, np.ndarray]:
    """Inclusion probability and weight of every logged slot for a fixed target.

    A visit of ``m`` slots is the mean of ``m`` slot estimates of the target's own slate value
    ``sum_a rho(a) r(a)`` (``rho``: the probability that its ``m``-slot slate shows ``a``, from
    :func:`slot_distribution`); the estimate of slot ``i`` counts the rewards shown above it
    with ``rho`` and its own with ``rho / propensity``. Written per slot estimate, then summed
    into each slot's weight.

    Returns
    -------
    (ndarray of float64, ndarray of float64)
        ``rho`` of each logged product, and its weight (capped at ``clip``).
    """
    target = np.zeros(slots.shape[0])
    weight = np.zeros(slots.shape[0])
    starts = [j for j in range(slots.shape[0]) if slots[j]["position"] == 0] + [slots.shape[0]]
    cache: dict[tuple[int, int], list[dict[int, float]]] = {}
    for first, end in itertools.pairwise(starts):
        state = int(slots[first]["state"])
        catalogue = catalogues[state_segment[state]]
        m = end - first
        if (state, m) not in cache:
            cache[state, m] = slot_distribution(value[state], catalogue, epsilon, m)
        dist = cache[state, m]
        products = [int(p) for p in slots["product"][first:end]]
        rho = [sum(d.get(p, 0.0) for d in dist) for p in products]
        coefficient = [0.0] * m
        for i in range(m):  # slot i's estimate, given the slots before it
            for k in range(i):
                coefficient[k] += rho[k] / m
            coefficient[i] += rho[i] / float(slots[first + i]["propensity"]) / m
        for i in range(m):
            target[first + i] = rho[i]
            weight[first + i] = min(coefficient[i], clip)
    return target, weight


def replay(
    slots: np.ndarray,
    value: np.ndarray,
    reco_count: np.ndarray,
    state_segment: np.ndarray,
    catalogues: list[list[int]],
    epsilon: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Replay a learning epsilon-greedy target slot by slot (modifies ``value``, ``reco_count``).

    Returns
    -------
    (ndarray of bool, ndarray of float64)
        Accepted events, and the target's probability of each logged product at that moment.
    """
    accepted = np.zeros(slots.shape[0], dtype=bool)
    target = np.zeros(slots.shape[0])
    before: list[int] = []
    for j, slot in enumerate(slots):
        if slot["position"] == 0:
            before = []
        state, logged = int(slot["state"]), int(slot["product"])
        catalogue = catalogues[state_segment[state]]
        target[j] = target_probability(value[state], catalogue, epsilon, before, logged)
        u = rng.random()
        product = None
        if u >= epsilon:
            product = next((p for p in ranked_known(value[state]) if p not in before), None)
        if product is None:
            product = catalogue[below(rng, len(catalogue))]
            while product in before:
                product = catalogue[below(rng, len(catalogue))]
        if product == logged:
            accepted[j] = True
            mean = 0.0 if value[state, product] == -math.inf else float(value[state, product])
            reco_count[state, product] += 1
            count = reco_count[state, product]
            value[state, product] = mean + (float(slot["reward"]) - mean) / count
        before.append(logged)
    return accepted, target


def validation_world(
    *,
    seed: int = 0,
    epsilon: float = 1.0,
    n_segments: int = 2,
    weekdays: int = 2,
    n_products: int = 20,
    catalogue_size: int = 12,
    slate_size: int = 3,
    noise: float = 0.5,
) -> tuple[StateSpace, Tables, NaiveWorld]:
    """A small known truth, a target's tables, and a logging world on those tables.

    Every catalogue product of every state is known, with value ``mu + N(0, noise)`` (so the
    greedy order is informative but imperfect); clicks and purchases follow per-cell
    probabilities (``truth`` response), rewards ``(ignored, clicked, bought) = (-2, 1, 5)``.
    The logging world acts on copies of the tables with ``epsilon``, uniform state sampling.
    """
    rng = np.random.default_rng(seed)
    space, _ = synthetic_world(
        n_segments=n_segments,
        weekdays=weekdays,
        n_products=n_products,
        catalogue_size=catalogue_size,
        known=(0,),
        seed=seed,
    )
    n_states = space.n_states
    p_click = np.zeros((n_states, n_products))
    p_buy = np.zeros((n_states, n_products))
    tables = Tables.empty(n_states, n_products)
    rewards = (-2.0, 1.0, 5.0)
    for s in range(n_states):
        items = space.catalogue(int(space.state_segment[s]))
        p_click[s, items] = rng.uniform(0.02, 0.5, items.size)
        p_buy[s, items] = rng.uniform(0.0, 0.25, items.size) ** 2 * 4
        mu = expected_reward(p_click[s, items], p_buy[s, items], rewards)
        tables.value[s, items] = np.round(mu + rng.normal(0.0, noise, items.size), 2)
        tables.cells["reward"][s, items] = tables.value[s, items]
        tables.cells["count"][s, items] = 1
        tables.cells["reco_count"][s, items] = 1
    world = NaiveWorld(
        value=tables.value.copy(),
        reward=tables.cells["reward"].copy(),
        count=tables.cells["count"].copy(),
        reco_count=tables.cells["reco_count"].copy(),
        state_segment=space.state_segment,
        catalogues=[space.catalogue(g).tolist() for g in range(space.n_segments)],
        epsilon=epsilon,
        slate_size=slate_size,
        rewards=rewards,
        click_cdf=np.array([1.0]),
        buy_cdf=np.array([1.0]),
        truth=(p_click, p_buy),
        best_mu=np.zeros(n_states),
    )
    return space, tables, world


def truth_scores(world: NaiveWorld) -> dict[str, np.ndarray]:
    """Per-cell expected reward, P(clicked or bought) and P(bought) of a world's truth."""
    assert world.truth is not None
    p_click, p_buy = world.truth
    return {
        "reward_per_visit": expected_reward(p_click, p_buy, world.rewards),
        "click_rate": 1.0 - (1.0 - p_click) * (1.0 - p_buy),
        "buy_rate": p_buy,
    }
