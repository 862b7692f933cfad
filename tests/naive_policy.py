"""Slow pure-Python references of the policies of :mod:`rlreco.engine.kernels.policy`.

Written from that module's docstring: every key is computed with ``math`` on Python floats,
the best products are found by sorting, and every draw is a scalar call on the same
``numpy.random.Generator``, in the kernel's order. The response and update steps are those of
:mod:`tests.naive`. Policy codes are :data:`~rlreco.engine.kernels.records.Policy`'s.
"""

from __future__ import annotations

import math

import numpy as np
from naive import NaiveWorld, below, choose_slate, draw_state, respond, update

EPS_GREEDY, DECAYING, SOFTMAX, UCB1, THOMPSON = 0, 1, 2, 3, 4


def top(keys: dict[int, float], n: int) -> list[int]:
    """The ``n`` products of largest key, ties by lower product id."""
    return sorted(keys, key=lambda p: (-keys[p], p))[:n]


def pad(slate: list[int], catalogue: list[int], n: int, rng: np.random.Generator) -> None:
    """Fill the slate with catalogue products drawn ``below(K)`` until new."""
    while len(slate) < n:
        product = catalogue[below(rng, len(catalogue))]
        while product in slate:
            product = catalogue[below(rng, len(catalogue))]
        slate.append(product)


def choose(
    world: NaiveWorld,
    state: int,
    policy: int,
    param: float,
    visits: int,
    shown: int,
    rng: np.random.Generator,
) -> tuple[list[int], int]:
    """Slate of one visit and its explored count (``visits`` includes this visit)."""
    catalogue = world.catalogues[world.state_segment[state]]
    n = world.slate_size
    if policy == EPS_GREEDY:
        world.epsilon = param
        return choose_slate(world, state, rng)
    if policy == DECAYING:
        world.epsilon = min(1.0, param / visits)
        return choose_slate(world, state, rng)
    row = world.value[state]
    tries = world.reco_count[state]
    slate: list[int]
    if policy == SOFTMAX:
        keys = {}
        for p in catalogue:
            if row[p] != -math.inf:
                keys[p] = float(row[p]) / param - math.log(-math.log(rng.random()))
        slate = top(keys, n)
        pad(slate, catalogue, n, rng)
    elif policy == UCB1:
        untried = [p for p in catalogue if tries[p] == 0]
        log_shown = math.log(max(shown, 1))
        keys = {
            p: float(row[p]) + param * math.sqrt(log_shown / tries[p])
            for p in catalogue
            if tries[p] > 0
        }
        slate = []
        for i in range(min(len(untried), n)):
            j = i + below(rng, len(untried) - i)
            untried[i], untried[j] = untried[j], untried[i]
            slate.append(untried[i])
        slate += top(keys, n - len(slate))
    else:
        keys = {}
        for p in catalogue:
            mean = 0.0 if row[p] == -math.inf else float(row[p])
            keys[p] = mean + param / math.sqrt(tries[p] + 1.0) * rng.standard_normal()
        slate = top(keys, n)
    return slate, sum(int(tries[p] == 0) for p in slate)


def simulate_policy(
    world: NaiveWorld,
    rng: np.random.Generator,
    policy: int,
    param: float,
    n_visits: int,
    metrics_block: int,
) -> None:
    """Simulate ``n_visits`` visits under a policy and add their sums to ``world.blocks``.

    ``decaying`` counts the visits per state from this call's start; ``ucb1``'s ``N_s`` are
    the row sums of ``reco_count``.
    """
    n_states = world.value.shape[0]
    visits = np.zeros(n_states, dtype=np.int64)
    shown = world.reco_count.sum(axis=1)
    for visit in range(n_visits):
        state = draw_state(world, rng)
        visits[state] += 1
        slate, explored = choose(
            world, state, policy, param, int(visits[state]), int(shown[state]), rng
        )
        outcome, clicks, buys, shown_mu = respond(world, state, slate, rng)
        total = update(world, state, slate, outcome, rng)
        shown[state] += len(slate)
        block = world.blocks.setdefault(
            visit // metrics_block,
            dict.fromkeys(
                (
                    "visits",
                    "slots",
                    "reward_sum",
                    "clicks",
                    "buys",
                    "explored",
                    "regret_visits",
                    "regret_sum",
                ),
                0,
            ),
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
