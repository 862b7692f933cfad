"""One online visit on one state's row: its plan, its play with the engine's kernels, and
what it reports (a :class:`VisitReport`, its visit log records and its metrics)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rlreco.engine.kernels.draw import draw_state_nb
from rlreco.engine.kernels.records import PolicyParams, TopNSearch
from rlreco.engine.online import play_online_visit
from rlreco.engine.simulation import POLICIES
from rlreco.engine.state_space import StateSpace
from rlreco.engine.tables import Tables
from rlreco.errors import SimulationError
from rlreco.io.parquet_tables import SCHEMAS
from rlreco.schema import CELL_DTYPE, LOG_DTYPE, OUTCOME_NAMES


@dataclass(frozen=True)
class VisitReport:
    """One online visit (what :func:`recommend` returns).

    Attributes
    ----------
    source : str
        The run directory, or ``mongodb://***@host/db (layout)``.
    state, state_id : str, int
        The visited state.
    visit : int
        Key of the visit's random stream ``streams.generator(seed, ONLINE, visit)``.
    epsilon, slate_size : float, int
        From the run's config.
    policy, param : str, float
        The run's configured policy and its parameter (``epsilon`` for eps-greedy).
    respond : str
        ``simulate``, ``given`` or ``none`` (dry run: nothing updated or written).
    explored : int
        Slots filled by exploration.
    clicks, buys : int
        Click events and purchases of the response.
    total_reward : float
        Sum of the slate's drawn rewards.
    slate : list of dict
        Per slot: ``slot``, ``product_id``, ``product_code``, ``description``, ``outcome``,
        ``reward`` (this visit's draw), and ``before`` / ``after``: the cell's ``value``,
        ``reward``, ``count`` and ``reco_count`` (``before`` is None for a product new to the
        state; ``after`` and ``outcome`` are None in a dry run).
    episodes : int or None
        Run directory: its visit count after this visit.
    version : int or None
        MongoDB: visits committed to the state since its last export, this one included.
    attempts : int
        1 + the times a concurrent visit to the state committed first (MongoDB).
    """

    source: str
    state: str
    state_id: int
    visit: int
    epsilon: float
    slate_size: int
    respond: str
    explored: int
    clicks: int
    buys: int
    total_reward: float
    slate: list[dict[str, Any]]
    episodes: int | None = None
    version: int | None = None
    attempts: int = 1
    policy: str = "eps-greedy"
    param: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (for ``--json``)."""
        return asdict(self)


@dataclass(frozen=True)
class VisitPlan:
    """Everything one visit needs besides the state's cells (:func:`recommend` builds it)."""

    space: StateSpace
    state_id: int
    epsilon: float
    slate_size: int
    policy: str
    param: float
    step: float  # PolicyParams.step of the run's step size
    click_cdf: np.ndarray
    buy_cdf: np.ndarray
    outcome_reward: np.ndarray  # mean reward by Outcome code
    respond: str
    clicked: frozenset[str]
    bought: frozenset[str]
    rng_state: Mapping[str, Any]  # the stream after the state draw


def play_visit(
    plan: VisitPlan, value: np.ndarray, cells: np.ndarray, state_visits: np.ndarray | None = None
) -> dict[str, Any]:
    """Choose a slate, respond and update, with the engine's kernels, on one state's row.

    Parameters
    ----------
    plan : VisitPlan
    value : ndarray of float64, shape (1, n_products)
        The state's values (-inf unknown); updated in place unless a dry run.
    cells : ndarray of CELL_DTYPE, shape (1, n_products)
        The state's reward sums and counts; updated in place unless a dry run.
    state_visits : ndarray of int64, shape (1,), optional
        The state's visits so far, for ``decaying`` (counts this visit, in place).

    Returns
    -------
    dict
        ``slate`` (product ids), ``outcome`` (codes or None), ``explored``, ``clicks``,
        ``buys``, ``total_reward``.

    Raises
    ------
    SimulationError
        A given clicked or bought product that is not in the slate.
    """
    rng = np.random.Generator(np.random.PCG64())
    rng.bit_generator.state = dict(plan.rng_state)  # the same draws however often it runs
    visit = play_online_visit(
        rng,
        plan.space,
        plan.state_id,
        value,
        cells,
        policy=PolicyParams(
            POLICIES[plan.policy], plan.param, plan.slate_size, TopNSearch.tree, plan.step
        ),
        click_cdf=plan.click_cdf,
        buy_cdf=plan.buy_cdf,
        rewards=_outcome_rewards(plan.outcome_reward),
        respond=plan.respond,
        clicked=plan.clicked,
        bought=plan.bought,
        state_visits=state_visits,
    )
    row = visit.metrics[0]
    return {
        "slate": visit.slate,
        "outcome": visit.outcome,
        "propensity": visit.propensity,
        "reward": visit.reward,
        "explored": int(row["explored"]),
        "clicks": int(row["clicks"]),
        "buys": int(row["buys"]),
        "total_reward": float(row["reward_sum"]),
    }


def _outcome_rewards(outcome_reward: np.ndarray) -> tuple[float, float, float]:
    ignore, click, buy = (float(r) for r in outcome_reward)
    return (ignore, click, buy)


def slate_rows(
    plan: VisitPlan,
    played: Mapping[str, Any],
    before: tuple[np.ndarray, np.ndarray],
    after: tuple[np.ndarray, np.ndarray],
) -> list[dict[str, Any]]:
    """The slate of a played visit as report rows (see :class:`VisitReport`)."""

    def cell(row: tuple[np.ndarray, np.ndarray], product: int) -> dict[str, Any] | None:
        value, cells = row
        if not np.isfinite(value[0, product]):
            return None
        return {
            "value": float(value[0, product]),
            "reward": float(cells["reward"][0, product]),
            "count": int(cells["count"][0, product]),
            "reco_count": int(cells["reco_count"][0, product]),
        }

    rows = []
    outcome = played["outcome"]
    for slot, product in enumerate(played["slate"].tolist()):
        old, new = cell(before, product), cell(after, product) if outcome is not None else None
        reward = None
        if new is not None:
            # the drawn reward, recovered exactly: rewards are multiples of 0.01
            reward = (
                new["value"]
                if old is None
                else float(np.rint((new["reward"] - old["reward"]) * 100.0) / 100.0)
            )
        rows.append(
            {
                "slot": slot,
                "product_id": product,
                "product_code": str(plan.space.product_codes[product]),
                "description": str(plan.space.product_names[product]),
                "outcome": OUTCOME_NAMES[outcome[slot]] if outcome is not None else None,
                "reward": reward,
                "before": old,
                "after": new,
            }
        )
    return rows


def state_rows(frame: pd.DataFrame, plan: VisitPlan) -> tuple[np.ndarray, np.ndarray]:
    """One state's cells (snapshot frame with checked ids) as (1, n_products) rows."""
    n_products = plan.space.n_products
    value = np.full((1, n_products), -np.inf)
    cells = np.zeros((1, n_products), dtype=CELL_DTYPE)
    product = frame["product_id"].to_numpy(np.int64)
    value[0, product] = frame["value"].to_numpy(np.float64)
    for name in ("reward", "count", "reco_count"):
        cells[name][0, product] = frame[name].to_numpy(cells.dtype[name])
    return value, cells


def changed_frame(
    plan: VisitPlan, slate: np.ndarray, value: np.ndarray, cells: np.ndarray
) -> pd.DataFrame:
    """Snapshot rows of the slate's cells after a visit (what MongoDB writes)."""
    space, state_id = plan.space, plan.state_id
    columns = Tables(value, cells).to_columns(space)  # row 0 of a one-state table
    keep = np.isin(columns["product_id"], slate)
    frame = pd.DataFrame({k: v[keep] for k, v in columns.items()})
    states = space.to_columns()["states"]
    for name in ("state", *space.fields):
        frame[name] = states[name][state_id]
    frame["state_id"] = np.int32(state_id)
    return frame


def visit_records(plan: VisitPlan, played: Mapping[str, Any], visit: int) -> np.ndarray:
    """The slots of a played visit as visit log records (:data:`rlreco.schema.LOG_DTYPE`)."""
    slate = played["slate"]
    records = np.zeros(slate.size, dtype=LOG_DTYPE)
    records["visit"] = visit
    records["state"] = plan.state_id
    records["position"] = np.arange(slate.size)
    records["product"] = slate
    records["outcome"] = played["outcome"]
    records["reward"] = played["reward"]
    records["propensity"] = played["propensity"]
    return records


def pick_state(space: StateSpace, state: str | None, rng: np.random.Generator, where: Path) -> int:
    """Integer id of ``state``, or a uniform draw (the simulator's ``draw_state_nb``)."""
    if state is None:
        return int(draw_state_nb(rng, np.empty(0), space.n_states))
    found = space.state_index().get(state)
    if found is None:
        raise SimulationError(
            f"state {state!r} is not in the state space of {where} (e.g. {space.state_ids[0]}; "
            f"form {'_'.join(space.fields)})"
        )
    return found


def visit_report(
    plan: VisitPlan,
    played: Mapping[str, Any],
    before: tuple[np.ndarray, np.ndarray],
    after: tuple[np.ndarray, np.ndarray],
    source: str,
    visit: int,
    **extra: Any,
) -> VisitReport:
    return VisitReport(
        source=source,
        state=str(plan.space.state_ids[plan.state_id]),
        state_id=plan.state_id,
        visit=visit,
        epsilon=plan.epsilon,
        slate_size=plan.slate_size,
        respond=plan.respond,
        explored=played["explored"],
        clicks=played["clicks"],
        buys=played["buys"],
        total_reward=float(played["total_reward"]),
        slate=slate_rows(plan, played, before, after),
        policy=plan.policy,
        param=plan.param,
        **extra,
    )


def add_to_metrics(
    metrics: Mapping[str, np.ndarray] | None,
    episodes: int,
    block_size: int,
    slate_size: int,
    played: Mapping[str, Any],
) -> dict[str, np.ndarray]:
    """Per-block metrics with one more visit (global index ``episodes``) counted in its block.

    Keeps the metrics consistent with the episode count, as ``rlreco simulate`` requires; an
    online visit has no known truth, so it adds no regret.
    """
    names = SCHEMAS["metrics"].names
    columns = {
        n: np.asarray(metrics[n]).copy() if metrics else np.zeros(0, dtype=np.int64) for n in names
    }
    block = episodes // block_size
    if block == columns["block"].size:
        for name in names:
            extra = {"block": block, "first_visit": block * block_size}.get(name, 0)
            columns[name] = np.append(columns[name], extra)
    columns["visits"][block] += 1
    columns["slots"][block] += slate_size
    columns["reward_sum"] = columns["reward_sum"].astype(np.float64)
    columns["reward_sum"][block] += played["total_reward"]
    columns["clicks"][block] += played["clicks"]
    columns["buys"][block] += played["buys"]
    columns["explored"][block] += played["explored"]
    columns["regret_sum"] = columns["regret_sum"].astype(np.float64)
    return columns
