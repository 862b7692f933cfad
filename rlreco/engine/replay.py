"""Replay evaluation (Li, Chu, Langford and Wang, WSDM 2011) of a learning epsilon-greedy target.

The target steps through the log visit by visit, chooses its own slate from its own tables and
random stream, and is credited and updated only on the slots where its product equals the
logged one (slot by slot); unbiased for uniformly random logging. The kernel is
:func:`~rlreco.engine.kernels.estimators.replay_log_nb`.
"""

from __future__ import annotations

import math

import numpy as np

from rlreco.engine import streams
from rlreco.engine.evaluation import Estimate, LoggedVisits, normal_interval
from rlreco.engine.kernels.estimators import replay_log_nb
from rlreco.engine.target_slate import Catalogues

#: Spare room per state in the replay target's candidate list beyond the slate size.
REPLAY_SPARE = 8


def replay_stream(seed: int, epsilon: float) -> np.random.Generator:
    """The replay target's own stream: keyed by the seed and epsilon's exact binary value."""
    return streams.generator(seed, streams.EVALUATION, int(np.float64(epsilon).view(np.uint64)))


def estimate_replay(
    visits: LoggedVisits,
    catalogues: Catalogues,
    value: np.ndarray,
    reco_count: np.ndarray,
    *,
    epsilon: float,
    seed: int,
) -> tuple[Estimate, np.ndarray, np.ndarray]:
    """Replay a learning epsilon-greedy target from the given tables (module docstring).

    Returns
    -------
    (Estimate, ndarray, ndarray)
        The estimate, and the target's values and recommendation counts after the replay.
    """
    learned = np.ascontiguousarray(value, dtype=np.float64).copy()
    counts = np.ascontiguousarray(reco_count, dtype=np.int64).copy()
    n_states = value.shape[0]
    capacity = max(visits.slate_size, 1) + REPLAY_SPARE
    accepted = np.zeros(visits.n_slots, dtype=np.bool_)
    target = np.zeros(visits.n_slots)
    replay_log_nb(
        replay_stream(seed, epsilon),
        visits.slots,
        visits.visit_ptr,
        learned,
        counts,
        catalogues.state_segment,
        catalogues.catalogue_ptr,
        catalogues.catalogue_items,
        catalogues.in_catalogue,
        float(epsilon),
        np.zeros((n_states, capacity), dtype=np.int64),
        np.full(n_states, -1, dtype=np.int64),
        np.zeros(n_states, dtype=np.bool_),
        accepted,
        target,
    )
    taken = int(accepted.sum())
    m_bar = float(visits.slots_per_visit.mean())
    metrics = {}
    chosen = LoggedVisits(visits.slots[accepted], visits.visit_ptr[:1], visits.buys_known)
    for name, y in chosen.metric_values().items():
        values = y
        scale = m_bar if name == "reward_per_visit" else 1.0
        mean = float(values.mean()) * scale if taken else math.nan
        metrics[name] = (
            normal_interval(mean, values * scale) if taken else normal_interval(math.nan, values)
        )
    estimate = Estimate(
        "replay",
        epsilon,
        metrics,
        visits.n_visits,
        visits.n_slots,
        accepted=taken,
        acceptance_rate=taken / visits.n_slots,
        predicted_acceptance=float(target.mean()),
    )
    return estimate, learned, counts


def uniform_acceptance(visits: LoggedVisits, catalogues: Catalogues) -> float:
    """Replay's expected acceptance rate under uniform logging: the mean of ``1 / (K - i)``."""
    state = visits.slots["state"]
    size = catalogues.state_catalogue_size()[state]
    return float(np.mean(1.0 / (size - visits.slots["position"])))
