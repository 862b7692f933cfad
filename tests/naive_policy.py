"""Slow pure-Python references of the policies of :mod:`rlreco.engine.kernels.policy`.

Written from that module's docstring: every key is computed with ``math`` on Python floats,
the best products are found by sorting, and every draw is a scalar call on the same
``numpy.random.Generator``, in the kernel's order. Softmax and Thompson follow the definitions
of ``kernels/sum_tree.py`` and ``kernels/thompson.py`` (:mod:`naive_fast_policy`). The
response and update steps are those of :mod:`tests.naive`. Policy codes are
:data:`~rlreco.engine.kernels.records.Policy`'s.
"""

from __future__ import annotations

import numpy as np
from naive import NaiveWorld, choose_slate, draw_state, respond, update
from naive_fast_policy import SoftmaxTree, thompson_slate, ucb1_slate

EPS_GREEDY, DECAYING, SOFTMAX, UCB1, THOMPSON = 0, 1, 2, 3, 4


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
        # the sum tree is a function of the row: build it for this visit
        width = -(-len(row) // 8) * 8
        tree = SoftmaxTree(width, catalogue, param)
        tree.rebuild(row)
        slate = tree.slate(row, n, rng)
    elif policy == UCB1:
        slate = ucb1_slate(row, tries, catalogue, n, param, shown, rng)
    else:
        slate = thompson_slate(row, tries, catalogue, n, param, rng)
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
