"""Policy kernels (decaying epsilon, softmax, UCB1, Thompson sampling): draw-for-draw
agreement with the slow references of ``tests/naive_policy.py``, and a sanity check that each
beats uniformly random slates on the ``popularity`` model."""

from __future__ import annotations

from pathlib import Path

import naive_policy
import numpy as np
import pytest
from naive import NaiveWorld, synthetic_world
from test_sweep import small_spec, synthetic_run

from rlreco.app.sweep import run_sweep
from rlreco.engine.kernels.policy import Policy, simulate_policy_visits_nb
from rlreco.engine.kernels.records import METRICS_DTYPE, TRUTH_DTYPE, ResponseModel
from rlreco.engine.response import count_cdf, truth_arrays

REWARDS = (-2.0, 1.0, 5.0)  # ignored, clicked, bought
PARAMS = {
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
    if truth:
        p_click = rng.uniform(0.0, 0.4, tables.shape)
        p_buy = rng.uniform(0.0, 0.3, tables.shape)
        cells, best_mu = truth_arrays(space, p_click, p_buy, (5.0, 1.0, -2.0), slate_size)
    else:
        cells, best_mu = np.empty((space.n_states, 0), dtype=TRUTH_DTYPE), np.zeros(space.n_states)
    click_cdf = count_cdf((0.5, 0.3, 0.15, 0.05), "click_probs")
    buy_cdf = count_cdf((0.6, 0.0, 0.2, 0.1, 0.1), "buy_probs")
    world = NaiveWorld(
        value=tables.value.copy(),
        reward=tables.cells["reward"].copy(),
        count=tables.cells["count"].copy(),
        reco_count=tables.cells["reco_count"].copy(),
        state_segment=space.state_segment,
        catalogues=[space.catalogue(g).tolist() for g in range(space.n_segments)],
        epsilon=0.0,
        slate_size=slate_size,
        rewards=REWARDS,
        click_cdf=click_cdf,
        buy_cdf=buy_cdf,
        truth=(cells["p_click"], cells["p_buy"]) if truth else None,
        best_mu=best_mu if truth else None,
    )
    n_visits, block = 400, 64
    metrics = np.zeros(-(-n_visits // block), dtype=METRICS_DTYPE)
    kernel_rng = np.random.default_rng(5)
    simulate_policy_visits_nb(
        kernel_rng,
        n_visits,
        policy,
        PARAMS[policy],
        tables.value,
        tables.cells,
        space.state_segment,
        space.catalog_ptr,
        space.catalog_items,
        np.empty(0),
        np.zeros(space.n_states, dtype=np.int64),
        tables.reco_count.sum(axis=1),
        slate_size,
        ResponseModel.truth if truth else ResponseModel.seed,
        click_cdf,
        buy_cdf,
        cells,
        best_mu,
        np.array(REWARDS),
        block,
        metrics,
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
