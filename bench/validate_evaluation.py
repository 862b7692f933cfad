"""Validation of the off-policy estimators on a known truth (the README's table).

Replicated logs of the validation world of ``tests/naive_ope.py`` (8 states, catalogues of 12,
slates of 3, per-cell click and purchase probabilities, target tables = true expected reward
plus N(0, 0.5) noise), logged by the slow reference logger with epsilon 1 (uniform) and 0.2 (a
learning logger on the same tables). For every target epsilon and estimator: the mean estimate,
its bias against the target's exact on-policy value (with the standard error of that mean), the
standard deviation of the estimates over replicates against the mean standard error the
intervals use, the mean 95% CI width, and how often the CI covers the on-policy value, with the
95% Wilson interval of that coverage over the replicates. The on-policy value is exact (no
simulation noise): the target's slot distribution expanded over subsets of its best products,
times the true expected reward of every cell. Replay (a learning target) is compared with the
fixed target's value and its acceptance rate with the prediction.

    PYTHONPATH=. python bench/validate_evaluation.py [REPLICATES] [VISITS]
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from naive_ope import log_visits, truth_scores, validation_world

from rlreco.engine.evaluation import (
    LoggedVisits,
    estimate_dr,
    estimate_ips,
    estimate_snips,
    importance_weights,
)
from rlreco.engine.replay import estimate_replay, uniform_acceptance
from rlreco.engine.target_slate import Catalogues, on_policy_value

TARGETS = (0.0, 0.05, 0.1, 0.3)
Z95 = 1.959963984540054


def wilson(hits: float, n: int) -> tuple[float, float]:
    """95% Wilson score interval of a binomial proportion."""
    p = hits / n
    centre = (p + Z95**2 / (2 * n)) / (1 + Z95**2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / (1 + Z95**2 / n)
    return centre - half, centre + half


def main(replicates: int, n_visits: int) -> None:
    print(f"{replicates} replicated logs of {n_visits:,} visits x 3 slots each\n")
    print(
        "| logging eps | target eps | on-policy reward/visit | estimator | mean estimate "
        "| bias (+- s.e.) | SD of estimates / mean s.e. | mean CI width "
        "| CI coverage (95% interval) | replay acceptance (predicted) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for log_eps in (1.0, 0.2):
        space, tables, world = validation_world(seed=0, epsilon=log_eps)
        catalogues = Catalogues.of(space)
        scores = truth_scores(world)
        truth = {
            eps: on_policy_value(catalogues, tables.value, eps, 3, np.ones(space.n_states), scores)
            for eps in TARGETS
        }
        results: dict[tuple[float, str], list[tuple[float, float, float, float, float]]] = {}
        for r in range(replicates):
            _, _, world = validation_world(seed=0, epsilon=log_eps)
            visits = LoggedVisits.from_slots(
                log_visits(world, np.random.default_rng(1000 + r), 0, n_visits)
            )
            predicted = uniform_acceptance(visits, catalogues)
            for eps in TARGETS:
                _, weight = importance_weights(visits, catalogues, tables.value, eps)
                estimates = [
                    estimate_ips(visits, weight, epsilon=eps),
                    estimate_snips(visits, weight, epsilon=eps),
                    estimate_dr(visits, catalogues, tables.value, weight, epsilon=eps),
                    estimate_replay(
                        visits, catalogues, tables.value, tables.reco_count, epsilon=eps, seed=r
                    )[0],
                ]
                for e in estimates:
                    interval = e.metrics["reward_per_visit"]
                    value = truth[eps]["reward_per_visit"]
                    results.setdefault((eps, e.estimator), []).append(
                        (
                            interval.mean,
                            interval.high - interval.low,
                            interval.std / math.sqrt(interval.n),
                            float(interval.low <= value <= interval.high),
                            e.acceptance_rate if e.acceptance_rate is not None else np.nan,
                            e.predicted_acceptance if e.estimator == "replay" else predicted,
                        )
                    )
        for (eps, name), rows in results.items():
            a = np.array(rows)
            value = truth[eps]["reward_per_visit"]
            accept = (
                f"{np.nanmean(a[:, 4]):.4f} ({np.nanmean(a[:, 5]):.4f})" if name == "replay" else ""
            )
            sd = a[:, 0].std(ddof=1)
            low, high = wilson(a[:, 3].sum(), replicates)
            print(
                f"| {log_eps:g} | {eps:g} | {value:.3f} | {name} | {a[:, 0].mean():.3f} | "
                f"{a[:, 0].mean() - value:+.3f} +- {sd / math.sqrt(replicates):.3f} | "
                f"{sd:.3f} / {a[:, 2].mean():.3f} | {a[:, 1].mean():.3f} | "
                f"{a[:, 3].mean():.1%} ({low:.0%}-{high:.0%}) | {accept} |"
            )
    print(f"\nuniform-logging prediction of replay's acceptance: {predicted:.4f} (mean 1/(K - i))")


if __name__ == "__main__":
    main(
        int(sys.argv[1]) if len(sys.argv) > 1 else 200,
        int(sys.argv[2]) if len(sys.argv) > 2 else 2000,
    )
