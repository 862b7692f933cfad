"""What a simulation runs and what it reports: :class:`SimulationParams`, the policy and
search names the kernels know, and :class:`SimulationSummary` (the driver is
:class:`rlreco.engine.simulation.Simulator`)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rlreco.config import SEED_BUY_PROBS, SEED_CLICK_PROBS, RunConfig, StepSize
from rlreco.engine.kernels.records import Policy, TopNSearch
from rlreco.errors import SimulationError
from rlreco.schema import DEFAULT_POLICY_PARAM, METRICS_DTYPE

#: Raw per-block sums, as stored (see :data:`~rlreco.schema.METRICS_DTYPE`).
METRIC_SUMS: tuple[str, ...] = tuple(METRICS_DTYPE.names or ())
#: Columns of :meth:`Simulator.metrics_frame`.
METRIC_COLUMNS = (
    "block",
    "first_visit",
    *METRIC_SUMS,
    "mean_reward",
    "click_rate",
    "buy_rate",
    "explored_share",
    "mean_regret",
)
STATE_SAMPLING = {"uniform": 0, "empirical": 1}
TOPN_SEARCH = {"tree": TopNSearch.tree, "scan": TopNSearch.scan}
#: policy name -> :data:`~rlreco.engine.kernels.records.Policy` code
POLICIES: dict[str, int] = {
    "eps-greedy": Policy.eps_greedy,
    "decaying": Policy.decaying,
    "softmax": Policy.softmax,
    "ucb1": Policy.ucb1,
    "thompson": Policy.thompson,
}
#: per-state policy state that must survive a resume, by policy (:attr:`Simulator.policy_state`)
POLICY_STATE: dict[str, tuple[str, ...]] = {"decaying": ("state_visits",)}


@dataclass(frozen=True)
class SimulationParams:
    """What to simulate.

    Attributes
    ----------
    epsilon : float
        Exploration probability per slot of ``eps-greedy``, in [0, 1].
    slate_size : int
        Products per slate (at most the smallest segment catalogue).
    rewards : (float, float, float)
        Mean reward of an ignored, a clicked and a bought product, in
        :data:`~rlreco.engine.kernels.records.Outcome` order (each draw is N(mean, 1)).
    response : str
        ``"seed"``, ``"popularity"``, the path of a truth-table Parquet file, or a schedule of
        known truths ``VISITS=RESPONSE,...`` (:mod:`rlreco.engine.response`).
    click_probs, buy_probs : tuple of float
        Seed model distributions of the click and purchase counts per visit.
    state_sampling : str
        ``"uniform"`` over all states or ``"empirical"`` (by historical transactions).
    metrics_block : int
        Visits per metric block.
    search : str
        Top-n search: ``"tree"`` (the 8-ary max tree index) or ``"scan"`` (the O(n_products)
        baseline; same results, for benchmarks).
    policy : str
        A key of :data:`POLICIES` (see :mod:`rlreco.engine.kernels.policy`).
    policy_param : float or None
        The parameter of a policy other than ``eps-greedy`` (see :data:`POLICY_PARAMS`); None
        takes :data:`DEFAULT_POLICY_PARAM`. ``eps-greedy`` uses ``epsilon``.
    step_size : StepSize
        How a shown product's value follows its rewards: ``1/n`` (the sample average) or a
        constant step.
    """

    epsilon: float = 0.1
    slate_size: int = 10
    rewards: tuple[float, float, float] = (-2.0, 1.0, 5.0)
    response: str = "seed"
    click_probs: tuple[float, ...] = SEED_CLICK_PROBS
    buy_probs: tuple[float, ...] = SEED_BUY_PROBS
    state_sampling: str = "uniform"
    metrics_block: int = 10_000
    search: str = "tree"
    policy: str = "eps-greedy"
    policy_param: float | None = None
    step_size: StepSize = field(default_factory=StepSize)

    @property
    def param(self) -> float:
        """The policy's parameter value (``epsilon`` for ``eps-greedy``)."""
        if self.policy == "eps-greedy":
            return float(self.epsilon)
        if self.policy_param is None:
            return DEFAULT_POLICY_PARAM[self.policy]
        return float(self.policy_param)

    @classmethod
    def from_config(cls, config: RunConfig, **changes: Any) -> SimulationParams:
        """Parameters of a run configuration, with optional overrides (e.g. ``epsilon=0.2``)."""
        params = cls(
            epsilon=config.policy.epsilon,
            slate_size=config.policy.slate_size,
            rewards=(config.rewards.ignore, config.rewards.click, config.rewards.buy),
            response=str(config.response.model),
            click_probs=tuple(config.response.click_probs),
            buy_probs=tuple(config.response.buy_probs),
            state_sampling=config.simulation.state_sampling,
            metrics_block=config.simulation.metrics_block,
            policy=config.policy.name,
            policy_param=config.policy.param,
            step_size=config.policy.step_size,
        )
        return dataclasses.replace(params, **changes)


@dataclass(frozen=True)
class SimulationSummary:
    """Outcome of one :meth:`Simulator.run` call (rates over the visits of that call).

    Attributes
    ----------
    episodes : int
        Visits simulated by the call.
    episodes_total : int
        Visits simulated by the run so far.
    seconds : float
        Wall time of the call's kernel work.
    episodes_per_second : float
    mean_reward : float
        Reward per visit (sum over the slate).
    click_rate, buy_rate : float
        Click events and purchases per shown product.
    mean_regret : float or None
        Expected regret per visit; None when the response model does not know the truth.
    explored_share : float
        Share of explored slots.
    stopped : bool
        Whether ``should_stop`` ended the call early.
    """

    episodes: int
    episodes_total: int
    seconds: float
    episodes_per_second: float
    mean_reward: float
    click_rate: float
    buy_rate: float
    mean_regret: float | None
    explored_share: float
    stopped: bool

    @classmethod
    def combine(cls, parts: Sequence[SimulationSummary]) -> SimulationSummary:
        """One summary of consecutive :meth:`Simulator.run` calls of one simulator.

        Rates are weighted by visits (every visit shows the same number of products), regret by
        the visits of the parts that know it.
        """
        if not parts:
            raise SimulationError("no simulation summaries to combine")
        episodes = sum(p.episodes for p in parts)
        seconds = sum(p.seconds for p in parts)

        def mean(name: str) -> float:
            if not episodes:
                return float("nan")
            return math.fsum(getattr(p, name) * p.episodes for p in parts if p.episodes) / episodes

        known = [p for p in parts if p.mean_regret is not None and p.episodes]
        regret_visits = sum(p.episodes for p in known)
        return cls(
            episodes=episodes,
            episodes_total=parts[-1].episodes_total,
            seconds=seconds,
            episodes_per_second=episodes / seconds if seconds > 0 else float("nan"),
            mean_reward=mean("mean_reward"),
            click_rate=mean("click_rate"),
            buy_rate=mean("buy_rate"),
            mean_regret=(
                math.fsum((p.mean_regret or 0.0) * p.episodes for p in known) / regret_visits
                if regret_visits
                else None
            ),
            explored_share=mean("explored_share"),
            stopped=any(p.stopped for p in parts),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible dict (NaN becomes None)."""
        return {
            k: (None if isinstance(v, float) and not np.isfinite(v) else v)
            for k, v in dataclasses.asdict(self).items()
        }
