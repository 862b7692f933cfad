"""Policy kernels (epsilon-greedy, decaying epsilon, softmax, UCB1, Thompson sampling):
draw-for-draw agreement with the slow references of ``tests/naive_policy.py``, and a sanity
check that each beats uniformly random slates on the ``popularity`` model."""

from __future__ import annotations

from pathlib import Path

import naive_policy
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
    small_spec,
    synthetic_run,
)
from naive import synthetic_world

from rlreco.app.sweep import run_sweep
from rlreco.engine.kernels.records import Policy
from rlreco.engine.kernels.visit_loop import simulate_visits_nb
from rlreco.engine.response import truth_arrays
from rlreco.schema import METRICS_DTYPE

PARAMS = {
    Policy.eps_greedy: 0.2,
    Policy.decaying: 3.0,
    Policy.softmax: 0.7,
    Policy.ucb1: 1.5,
    Policy.thompson: 2.0,
}


@pytest.mark.parametrize("truth", [False, True], ids=["seed", "truth"])
@pytest.mark.parametrize("policy", list(PARAMS), ids=list(Policy._fields))
def test_policy_kernel_matches_reference(policy: int, truth: bool) -> None:
    space, tables = synthetic_world(seed=policy)
    rng = np.random.default_rng(11)
    slate_size = 6
    cells, best_mu = None, None
    if truth:
        p_click = rng.uniform(0.0, 0.4, tables.shape)
        p_buy = rng.uniform(0.0, 0.3, tables.shape)
        cells, best_mu = truth_arrays(space, p_click, p_buy, REWARDS, slate_size)
    world = naive_world(
        space, tables, epsilon=0.0, slate_size=slate_size, truth=cells, best_mu=best_mu,
        empirical=False,
    )  # fmt: skip
    n_visits, block = 400, 64
    metrics = np.zeros(-(-n_visits // block), dtype=METRICS_DTYPE)
    kernel_rng = np.random.default_rng(5)
    world_bundle = kernel_world(space, empirical=False)
    params = policy_params(policy, PARAMS[policy], slate_size)
    learner = kernel_learner(tables, policy=params, world=world_bundle)
    simulate_visits_nb(
        kernel_rng,
        0,
        n_visits,
        world_bundle,
        learner,
        params,
        kernel_response(space.n_states, cells, best_mu),
        block,
        metrics,
        NO_LOG,
    )
    naive_rng = np.random.default_rng(5)
    naive_policy.simulate_policy(world, naive_rng, policy, PARAMS[policy], n_visits, block)
    np.testing.assert_array_equal(tables.value, world.value)
    np.testing.assert_array_equal(tables.cells["reward"], world.reward)
    np.testing.assert_array_equal(tables.cells["count"], world.count)
    np.testing.assert_array_equal(tables.cells["reco_count"], world.reco_count)
    for name in METRICS_DTYPE.names or ():
        expected = [world.blocks[b][name] for b in range(metrics.size)]
        np.testing.assert_array_equal(metrics[name], expected, err_msg=name)
    assert kernel_rng.bit_generator.state == naive_rng.bit_generator.state
    # every policy explored something on this small problem, and learned
    assert metrics["explored"].sum() > 0
    # decaying alone counts the visits per state; every policy keeps N_s exact
    counted = n_visits if policy == Policy.decaying else 0
    assert learner.state_visits.sum() == counted
    np.testing.assert_array_equal(learner.state_shown, tables.reco_count.sum(axis=1))


def test_every_policy_beats_uniform_random_on_popularity(tmp_path: Path) -> None:
    run = synthetic_run(tmp_path / "run", seed=2)
    spec = small_spec(
        epsilons=(1.0,),
        replicates=2,
        episodes=8_000,
        blocks=10,
        responses=("popularity",),
        policies=("eps-greedy", "decaying", "softmax", "ucb1", "thompson"),
    )
    result = run_sweep(run.path, spec, tmp_path / "out", workers=1, plots=False)
    assert not result.failures
    final = dict(
        zip(result.summary["policy"], result.summary["final_reward_per_visit_mean"], strict=True)
    )
    regret = dict(zip(result.summary["policy"], result.summary["regret_mean"], strict=True))
    for policy in ("decaying", "softmax", "ucb1", "thompson"):
        assert final[policy] > final["eps-greedy"], policy
        assert regret[policy] < regret["eps-greedy"], policy
