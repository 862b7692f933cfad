"""Off-policy evaluation of epsilon-greedy targets on a visit log (pure computation).

A log is a sequence of visits, each a state and the slots shown (product, outcome, reward, and
the logging policy's propensity of that product in that slot given the slots before it). For
each target this module estimates reward per visit, click rate and buy rate per shown product
(a slot counts as clicked when its outcome is clicked or bought: the log keeps one outcome per
slot), each with a 95% confidence interval from the normal approximation over visits.

Estimators (the kernels are in :mod:`rlreco.engine.kernels.estimators`):

``replay``
    A *learning* epsilon-greedy target starting from the run's tables steps through the log and,
    slot by slot, draws its product given the logged slots before; it keeps the events where it
    drew the logged product and learns from them only (Li, Chu, Langford and Wang, WSDM 2011).
    Estimate: the mean over accepted events, times the mean slots per visit. Unbiased for
    uniformly random logging when slots are exchangeable; the expected acceptance rate is the
    mean of the target's probability of the logged product, ``1 / (K - i)`` per slot under
    uniform logging.
``ips``, ``snips``
    A *fixed* target (the run's tables acted on with epsilon). Its value per visit of ``m``
    slots is ``sum_a rho(a) r(s, a)``, with ``rho(a)`` the probability that its *own* ``m``-slot
    slate shows product ``a`` (exact, :func:`~rlreco.engine.kernels.estimators.expect_slots_nb`).
    Slot ``i`` of a logged visit gives an unbiased estimate of it given the slots before: the
    products already shown count with ``rho`` times their observed reward, the new one with
    ``rho / propensity`` (the logged propensity is its probability given those slots). The mean
    of the ``m`` slot estimates weights slot ``i`` by
    ``w_i = min((rho(a_i) / propensity_i + rho(a_i) * (m - 1 - i)) / m, clip)``
    (:func:`~rlreco.engine.kernels.estimators.weigh_slots_nb`; unclipped, the weights of a visit
    sum to ``m`` in expectation). ``ips`` averages ``sum_i w_i y_i`` over visits; ``snips``
    divides by the mean of ``sum_i w_i`` and multiplies by the mean ``m`` (delta-method
    interval). For one-slot visits ``w = pi / propensity``, the usual weight.
``dr``
    Doubly robust: the direct-method value of the target's own slate under a reward model
    (exact over its slot distribution) plus the weighted residuals ``sum_i w_i (y_i - q(s, a_i))``
    with the weights of ``ips``. The model is ``fitted`` (per-cell means of the log, shrunk to
    the log's mean with the weight of one slot, and cross-fitted: visits of even index are
    corrected with the model of the odd ones and vice versa) or, for the reward, the run's
    ``values``.

Position independence: ``ips``, ``snips`` and ``dr`` assume that a slot's expected reward
depends only on the state and the product shown, not on its position or on the other products
of the slate, and that the logging policy could show, given the slots before, every product the
target can (true of any logging epsilon > 0). Under it they are unbiased (``snips``: consistent)
for the target's on-policy value, whatever the logged slots before a slot were. Weighting each
slot by the target's probability *given the logged slots before* instead (``pi / propensity``
per slot) is not: it estimates a target that picks its greedy product among the products the
log did not show above, which on a uniform log is almost always its best product in every slot.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rlreco.engine.kernels.estimators import (
    accumulate_cells_nb,
    correct_residuals_nb,
    sum_weighted_nb,
    weigh_slots_nb,
)
from rlreco.engine.statistics import Interval
from rlreco.engine.target_slate import Catalogues, expected_slate_scores, slot_expectations
from rlreco.errors import SimulationError
from rlreco.schema import LOG_DTYPE

#: two-sided 95% normal quantile
Z95 = 1.959963984540054
#: the estimators, in report order
ESTIMATORS = ("replay", "ips", "snips", "dr")
#: reward models of ``dr``
REWARD_MODELS = ("fitted", "values")
#: metrics of every estimate: reward per visit, and click and buy rate per shown product
METRICS = ("reward_per_visit", "click_rate", "buy_rate")


@dataclass(frozen=True)
class LoggedVisits:
    """A visit log in a run's integer ids, ready for the kernels.

    Attributes
    ----------
    slots : ndarray of LOG_DTYPE, shape (n_slots,)
        Sorted by visit, positions ``0..m-1`` within each visit.
    visit_ptr : ndarray of int64, shape (n_visits + 1,)
        Visit ``t`` is ``slots[visit_ptr[t]:visit_ptr[t + 1]]``.
    buys_known : bool
        Whether outcomes tell purchases apart (else the buy rate is undefined).
    """

    slots: np.ndarray
    visit_ptr: np.ndarray
    buys_known: bool = True

    @classmethod
    def from_slots(cls, slots: np.ndarray, *, buys_known: bool = True) -> LoggedVisits:
        """Index the visits of slots sorted by visit (a visit's slots are consecutive)."""
        if slots.dtype != LOG_DTYPE:
            raise SimulationError("logged slots must be a LOG_DTYPE array")
        starts = np.flatnonzero(slots["position"] == 0)
        ptr = np.append(starts, slots.shape[0]).astype(np.int64)
        return cls(np.ascontiguousarray(slots), ptr, buys_known)

    @property
    def n_visits(self) -> int:
        """Number of visits."""
        return int(self.visit_ptr.shape[0] - 1)

    @property
    def n_slots(self) -> int:
        """Number of logged slots."""
        return int(self.slots.shape[0])

    @property
    def slots_per_visit(self) -> np.ndarray:
        """Slots of each visit, int64 (n_visits,)."""
        return np.diff(self.visit_ptr)

    def logged_states(self, n_states: int) -> np.ndarray:
        """The states with a logged visit, ascending, int64 (a count, not a sort: O(slots))."""
        return np.flatnonzero(np.bincount(self.slots["state"], minlength=n_states)).astype(np.int64)

    @property
    def slate_size(self) -> int:
        """Most slots of a visit."""
        return int(self.slots_per_visit.max()) if self.n_visits else 0

    @property
    def outcomes_known(self) -> bool:
        """Whether every slot has an outcome (else click and buy rates are undefined)."""
        return bool(np.all(self.slots["outcome"] >= 0))

    @property
    def propensities_known(self) -> bool:
        """Whether every slot has a logging propensity."""
        return bool(np.all(np.isfinite(self.slots["propensity"])))

    def defined_metrics(self) -> tuple[str, ...]:
        """The metrics the log defines: reward always; click and buy rates when outcomes are
        known (the buy rate only when they tell purchases apart)."""
        if not self.outcomes_known:
            return METRICS[:1]
        return METRICS if self.buys_known else METRICS[:2]

    def metric_values(self) -> dict[str, np.ndarray]:
        """Per-slot values of the metrics: reward, clicked (or bought), bought (NaN unknown)."""
        outcome = self.slots["outcome"]
        unknown = outcome < 0
        no_buys = unknown | (not self.buys_known)
        return {
            "reward_per_visit": self.slots["reward"].astype(np.float64),
            "click_rate": np.where(unknown, np.nan, (outcome >= 1).astype(np.float64)),
            "buy_rate": np.where(no_buys, np.nan, (outcome == 2).astype(np.float64)),
        }


@dataclass(frozen=True)
class Estimate:
    """One estimator's verdict on one target.

    Attributes
    ----------
    estimator : str
    epsilon : float
    metrics : dict of str to Interval
        :data:`METRICS`; mean and 95% bounds (NaN where undefined).
    visits, slots : int
        Logged visits and slots used.
    accepted : int or None
        ``replay``: accepted events.
    acceptance_rate, predicted_acceptance : float or None
        ``replay``: accepted share of slots, and its expectation (mean target probability of
        the logged product).
    ess : float or None
        Weighted estimators: effective sample size ``(sum w)**2 / sum w**2`` over slots.
    max_weight : float or None
    clipped : int or None
        Slots whose weight was clipped.
    """

    estimator: str
    epsilon: float
    metrics: dict[str, Interval]
    visits: int
    slots: int
    accepted: int | None = None
    acceptance_rate: float | None = None
    predicted_acceptance: float | None = None
    ess: float | None = None
    max_weight: float | None = None
    clipped: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        """Flat columns: estimator, epsilon, ``<metric>_mean/_low/_high``, diagnostics."""
        out: dict[str, Any] = {"estimator": self.estimator, "epsilon": float(self.epsilon)}
        for name in METRICS:
            interval = self.metrics[name]
            out[f"{name}_mean"] = interval.mean
            out[f"{name}_low"] = interval.low
            out[f"{name}_high"] = interval.high
        out.update(
            visits=self.visits,
            slots=self.slots,
            accepted=self.accepted,
            acceptance_rate=self.acceptance_rate,
            predicted_acceptance=self.predicted_acceptance,
            ess=self.ess,
            max_weight=self.max_weight,
            clipped=self.clipped,
        )
        return out


def normal_interval(mean: float, influence: np.ndarray) -> Interval:
    """Mean with the 95% normal interval of an average whose per-visit influence is given."""
    n = int(influence.shape[0])
    if n < 2 or not math.isfinite(mean):
        return Interval(mean, math.nan, math.nan, math.nan, n)
    sd = float(np.std(influence, ddof=1))
    half = Z95 * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, sd, n)


def _metric_intervals(
    visits: LoggedVisits, totals: dict[str, tuple[float, np.ndarray]]
) -> dict[str, Interval]:
    """Reward per visit as is; click and buy per shown product as a ratio to slots per visit.

    ``totals`` maps each metric to (estimate of its sum per visit, per-visit influence).
    """
    m = visits.slots_per_visit.astype(np.float64)
    m_bar = float(m.mean())
    out = {}
    for name, (total, influence) in totals.items():
        if name == "reward_per_visit":
            out[name] = normal_interval(total, influence)
        else:
            rate = total / m_bar
            out[name] = normal_interval(rate, (influence - rate * (m - m_bar)) / m_bar)
    return out


def importance_weights(
    visits: LoggedVisits,
    catalogues: Catalogues,
    value: np.ndarray,
    epsilon: float,
    clip: float = math.inf,
) -> tuple[np.ndarray, np.ndarray]:
    """Target inclusion probability and weight of every logged slot (fixed target).

    :func:`~rlreco.engine.kernels.estimators.weigh_slots_nb` (module docstring).

    Parameters
    ----------
    visits : LoggedVisits
        With every propensity known.
    catalogues : Catalogues
    value : ndarray of float64, shape (n_states, n_products)
        The target's tables (``-inf`` unknown).
    epsilon : float
    clip : float
        Weight cap.

    Returns
    -------
    (ndarray, ndarray) of float64, shape (n_slots,)
        The probability that the target's own slate of the visit's length shows the logged
        product, and the slot's weight.

    Raises
    ------
    SimulationError
        Visits of more than :data:`~rlreco.engine.target_slate.DR_MAX_SLATE` slots.
    """
    n = max(visits.slate_size, 1)
    states = visits.logged_states(value.shape[0])
    state_row = np.full(value.shape[0], -1, dtype=np.int64)
    state_row[states] = np.arange(states.size)
    prob, ranked, count = slot_expectations(catalogues, value, epsilon, n, states)
    inclusion = np.zeros((states.size, n, n + 2))
    np.cumsum(prob, axis=1, out=inclusion[:, :, : n + 1])
    # column n: one of the K - count other catalogue products, each equally likely
    others = catalogues.state_catalogue_size()[states] - count[states]
    inclusion[:, :, n] /= np.maximum(others, 1)[:, None]
    product_column = np.where(
        catalogues.in_catalogue[catalogues.state_segment], np.int8(n), np.int8(n + 1)
    )
    top = np.arange(n)[None, :] < count[:, None]
    rows, ranks = np.nonzero(top)
    product_column[rows, ranked[rows, ranks]] = ranks
    target = np.empty(visits.n_slots)
    weight = np.empty(visits.n_slots)
    weigh_slots_nb(
        visits.slots,
        visits.visit_ptr,
        state_row,
        product_column,
        inclusion,
        float(clip),
        target,
        weight,
    )
    return target, weight


def _weight_diagnostics(weight: np.ndarray, clip: float) -> dict[str, Any]:
    total = float(weight.sum())
    squares = float(np.dot(weight, weight))
    return {
        "ess": total * total / squares if squares > 0 else 0.0,
        "max_weight": float(weight.max()) if weight.size else math.nan,
        "clipped": int(np.count_nonzero(weight >= clip)) if math.isfinite(clip) else 0,
    }


def _sum_weighted(visits: LoggedVisits, weight: np.ndarray) -> np.ndarray:
    """:func:`sum_weighted_nb`: per visit ``sum_i w_i y_i`` of each metric and ``sum_i w_i``."""
    per_visit = np.empty((visits.n_visits, 4))
    sum_weighted_nb(visits.slots, visits.visit_ptr, weight, per_visit)
    return per_visit


def _totals(
    visits: LoggedVisits, estimate: np.ndarray, influence: np.ndarray
) -> dict[str, tuple[float, np.ndarray]]:
    """(estimate, influence) per metric, NaN for the metrics the log does not define."""
    defined = visits.defined_metrics()
    nan = np.full(visits.n_visits, np.nan)
    return {
        name: (float(estimate[m]), influence[:, m]) if name in defined else (math.nan, nan)
        for m, name in enumerate(METRICS)
    }


def estimate_ips(
    visits: LoggedVisits, weight: np.ndarray, *, epsilon: float, clip: float = math.inf
) -> Estimate:
    """Inverse propensity scoring: the mean over visits of ``sum_i w_i y_i``."""
    per_visit = _sum_weighted(visits, weight)[:, :3]
    total = per_visit.mean(axis=0)
    return Estimate(
        "ips",
        epsilon,
        _metric_intervals(visits, _totals(visits, total, per_visit - total)),
        visits.n_visits,
        visits.n_slots,
        **_weight_diagnostics(weight, clip),
    )


def estimate_snips(
    visits: LoggedVisits, weight: np.ndarray, *, epsilon: float, clip: float = math.inf
) -> Estimate:
    """Self-normalised IPS: ``R = sum_t sum_i w y / sum_t sum_i w`` (the weighted mean per
    slot; each visit's weights sum to its ``m`` slots in expectation) times the mean ``m``.

    Delta-method influence of visit ``t``: ``R m_t + (mean m / mean W) (Y_t - R W_t)``, with
    ``Y_t = sum_i w_i y_i`` and ``W_t = sum_i w_i``.
    """
    per_visit = _sum_weighted(visits, weight)
    m = visits.slots_per_visit.astype(np.float64)
    # numpy scalars: no weight on any slot (a target that never shows what was logged) gives
    # an undefined estimate (nan), not a ZeroDivisionError
    m_bar = np.float64(m.mean() if visits.n_visits else math.nan)
    w_bar = np.float64(per_visit[:, 3].mean() if visits.n_visits else math.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = per_visit[:, :3].mean(axis=0) / w_bar
        influence = ratio * m[:, None] + m_bar / w_bar * (
            per_visit[:, :3] - ratio * per_visit[:, 3:]
        )
    total = ratio * m_bar
    return Estimate(
        "snips",
        epsilon,
        _metric_intervals(visits, _totals(visits, total, influence - total)),
        visits.n_visits,
        visits.n_slots,
        **_weight_diagnostics(weight, clip),
    )


def estimate_dr(
    visits: LoggedVisits,
    catalogues: Catalogues,
    value: np.ndarray,
    weight: np.ndarray,
    *,
    epsilon: float,
    clip: float = math.inf,
    reward_model: str = "fitted",
) -> Estimate:
    """Doubly robust estimate (module docstring), cross-fitted on even and odd visits.

    ``weight`` is :func:`importance_weights` of the same target.
    """
    if reward_model not in REWARD_MODELS:
        raise SimulationError(f"reward model {reward_model!r}: expected fitted or values")
    slots = visits.slots
    shape = value.shape
    states = visits.logged_states(shape[0])
    where = np.full(shape[0], -1, dtype=np.int64)
    where[states] = np.arange(states.size)
    prob, ranked, count = slot_expectations(catalogues, value, epsilon, visits.slate_size, states)
    stats = np.empty((2, shape[0], shape[1], 4))
    accumulate_cells_nb(slots, visits.visit_ptr, stats)
    sums = stats.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        prior = sums[:, :3] / sums[:, 3:]
    prior = np.nan_to_num(prior)
    use_values = reward_model == "values"
    value_prior = float(sums[:, 0].sum() / sums[:, 3].sum())
    correction = np.empty((visits.n_visits, 3))
    correct_residuals_nb(
        slots, visits.visit_ptr, weight, stats, prior, value, value_prior, use_values, correction
    )
    m = visits.slots_per_visit
    visit_fold = np.arange(visits.n_visits) % 2
    visit_state = where[slots["state"][visits.visit_ptr[:-1]]]
    per_visit = correction
    for f in (0, 1):
        chosen = visit_fold == f
        other = stats[1 - f]
        for k in range(3):
            if k == 0 and use_values:
                model = np.where(np.isfinite(value), value, value_prior)
            else:
                model = (other[:, :, k] + prior[1 - f, k]) / (other[:, :, 3] + 1.0)
            dm = np.cumsum(
                expected_slate_scores(catalogues, prob, ranked, count, states, model), axis=1
            )
            per_visit[chosen, k] += dm[visit_state[chosen], m[chosen] - 1]
    total = per_visit.mean(axis=0)
    return Estimate(
        "dr",
        epsilon,
        _metric_intervals(visits, _totals(visits, total, per_visit - total)),
        visits.n_visits,
        visits.n_slots,
        **_weight_diagnostics(weight, clip),
        extra={"reward_model": reward_model},
    )
