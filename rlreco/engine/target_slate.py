"""The fixed target's own slates: their exact slot distribution and expected scores.

A fixed epsilon-greedy target (the run's tables acted on with epsilon) fills a slate of ``n``
slots, slot by slot, from a state's segment catalogue. This module holds that slate's exact
distribution per state (:func:`slot_expectations`, over the target's ``n`` best products and the
rest of the catalogue) and what follows from it: the expected score of each slot under any
additive per-cell score (:func:`expected_slate_scores`) and the target's exact on-policy value
under a known truth (:func:`on_policy_value`). The catalogues come as kernel arrays
(:class:`Catalogues`).

It is separate from :mod:`rlreco.engine.evaluation` because it needs no log: the weighted
estimators there read it (the weights of ``ips`` and ``snips``, the direct-method term of
``dr``), and so do the tests and benches that compare an estimate with the exact value.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rlreco.engine.kernels.estimators import expect_slots_nb, rank_top_nb
from rlreco.engine.state_space import StateSpace
from rlreco.errors import SimulationError

#: largest slate whose exact slot distribution ``ips``, ``snips`` and ``dr`` expand (2**n subsets
#: per state)
DR_MAX_SLATE = 12


@dataclass(frozen=True)
class Catalogues:
    """A state space's segment catalogues as kernel arrays."""

    state_segment: np.ndarray
    catalogue_ptr: np.ndarray
    catalogue_items: np.ndarray
    catalogue_size: np.ndarray
    in_catalogue: np.ndarray

    @classmethod
    def of(cls, space: StateSpace) -> Catalogues:
        """Arrays of ``space``."""
        in_catalogue = np.zeros((space.n_segments, space.n_products), dtype=np.bool_)
        for segment in range(space.n_segments):
            in_catalogue[segment, space.catalogue(segment)] = True
        return cls(
            state_segment=np.ascontiguousarray(space.state_segment, dtype=np.int16),
            catalogue_ptr=np.ascontiguousarray(space.catalogue_ptr, dtype=np.int64),
            catalogue_items=np.ascontiguousarray(space.catalogue_items, dtype=np.int32),
            catalogue_size=np.diff(space.catalogue_ptr).astype(np.int64),
            in_catalogue=in_catalogue,
        )

    def state_catalogue_size(self) -> np.ndarray:
        """Catalogue size of every state, int64 (n_states,)."""
        return self.catalogue_size[self.state_segment]


def target_ranking(value: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Every state's ``n`` best known products (:func:`rank_top_nb`)."""
    ranked = np.empty((value.shape[0], n), dtype=np.int64)
    count = np.empty(value.shape[0], dtype=np.int64)
    rank_top_nb(np.ascontiguousarray(value, dtype=np.float64), n, ranked, count)
    return ranked, count


def slot_expectations(
    catalogues: Catalogues, value: np.ndarray, epsilon: float, n: int, states: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The target's own slot distribution over its best products (exact, per state).

    Returns
    -------
    prob : ndarray of float64, shape (len(states), n, n + 1)
        :func:`expect_slots_nb`.
    ranked, count : ndarray of int64
        :func:`target_ranking` of ``value``.
    """
    if n > DR_MAX_SLATE:
        raise SimulationError(
            f"slate size {n}: the exact slate expectation handles at most {DR_MAX_SLATE} slots"
        )
    ranked, count = target_ranking(value, n)
    prob = np.empty((states.shape[0], n, n + 1))
    expect_slots_nb(
        ranked, count, catalogues.state_catalogue_size(), float(epsilon),
        states.astype(np.int64), prob,
    )  # fmt: skip
    return prob, ranked, count


def expected_slate_scores(
    catalogues: Catalogues,
    prob: np.ndarray,
    ranked: np.ndarray,
    count: np.ndarray,
    states: np.ndarray,
    score: np.ndarray,
) -> np.ndarray:
    """Expected score of each slot of the target's own slate, per state.

    Parameters
    ----------
    prob, ranked, count, states
        :func:`slot_expectations` of ``states``.
    score : ndarray of float64, shape (n_states, n_products)
        An additive score per cell (a reward model, or the true expected reward).

    Returns
    -------
    ndarray of float64, shape (len(states), n)
    """
    n = prob.shape[1]
    rows = ranked[states]
    valid = np.arange(n)[None, :] < count[states][:, None]
    top = np.where(valid, score[states[:, None], np.maximum(rows, 0)], 0.0)
    size = catalogues.state_catalogue_size()[states]
    catalogue_sum = np.empty(states.shape[0])
    segment = catalogues.state_segment[states]
    for g in np.unique(segment):
        mine = np.flatnonzero(segment == g)
        ptr = catalogues.catalogue_ptr
        items = catalogues.catalogue_items[ptr[g] : ptr[g + 1]]
        catalogue_sum[mine] = score[np.ix_(states[mine], items)].sum(axis=1)
    others = size - count[states]
    with np.errstate(invalid="ignore", divide="ignore"):
        other_mean = np.where(others > 0, (catalogue_sum - top.sum(axis=1)) / others, 0.0)
    return np.einsum("kij,kj->ki", prob[:, :, :n], top) + prob[:, :, n] * other_mean[:, None]


def on_policy_value(
    catalogues: Catalogues,
    value: np.ndarray,
    epsilon: float,
    n: int,
    state_weight: np.ndarray,
    scores: dict[str, np.ndarray],
) -> dict[str, float]:
    """Exact expected metrics of a fixed target's own slates under a known truth.

    Parameters
    ----------
    state_weight : ndarray of float64, shape (n_states,)
        Probability (or weight) of each state per visit.
    scores : dict of str to ndarray (n_states, n_products)
        Per-cell expected value of each metric (e.g. reward ``mu``, ``P(click or buy)``,
        ``p_buy``).

    Returns
    -------
    dict of str to float
        Per visit for ``reward_per_visit``, per slot for the others.
    """
    states = np.flatnonzero(state_weight > 0)
    share = state_weight[states] / state_weight[states].sum()
    prob, ranked, count = slot_expectations(catalogues, value, epsilon, n, states)
    out = {}
    for name, score in scores.items():
        per_state = expected_slate_scores(catalogues, prob, ranked, count, states, score)
        total = float(np.dot(share, per_state.sum(axis=1)))
        out[name] = total if name == "reward_per_visit" else total / n
    return out
