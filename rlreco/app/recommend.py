"""Online visits: one customer visit against a run directory or MongoDB.

:func:`recommend` plays one customer visit with the simulator's kernels
(:func:`rlreco.engine.online.play_online_visit`) on one state's row, against a run directory or
MongoDB (atomic per state: concurrent visits lose no update). The CLI command ``recommend``
only parses its options and calls it.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rlreco.app.mongo_sync import SOCKET_TIMEOUT_MS, cell_ids
from rlreco.app.simulate import SNAPSHOT_CELL_COLUMNS, policy_state_of, snapshot_stream
from rlreco.config import RunConfig, config_from_dict
from rlreco.engine import streams
from rlreco.engine.kernels.draw import draw_state_nb
from rlreco.engine.kernels.records import CELL_DTYPE, PolicyParams, TopNSearch
from rlreco.engine.online import play_online_visit
from rlreco.engine.response import count_cdf
from rlreco.engine.simulation import POLICIES, POLICY_STATE, SimulationParams
from rlreco.engine.state_space import StateSpace
from rlreco.engine.tables import Tables
from rlreco.errors import SimulationError
from rlreco.io.mongo import (
    DEFAULT_DB,
    CodeIndex,
    RetryPolicy,
    apply_visit,
    connect,
    read_state,
    redact_uri,
)
from rlreco.io.mongo_layout import check_layout
from rlreco.io.mongo_visit import write_visit_log
from rlreco.io.parquet_tables import SCHEMAS
from rlreco.io.run_dir import RunDir
from rlreco.io.visit_log import log_documents, write_log_part
from rlreco.schema import LOG_DTYPE

__all__ = ["VisitReport", "recommend"]

#: Outcome names by :data:`Outcome` code.
OUTCOME_NAMES = ("ignored", "clicked", "bought")


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
class _Visit:
    """Everything one visit needs besides the state's cells."""

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
    plan: _Visit, value: np.ndarray, cells: np.ndarray, state_visits: np.ndarray | None = None
) -> dict[str, Any]:
    """Choose a slate, respond and update, with the engine's kernels, on one state's row.

    Parameters
    ----------
    plan : _Visit
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
    plan: _Visit,
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


def state_rows(frame: pd.DataFrame, plan: _Visit) -> tuple[np.ndarray, np.ndarray]:
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
    plan: _Visit, slate: np.ndarray, value: np.ndarray, cells: np.ndarray
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


def recommend(
    run_dir: str | Path,
    *,
    uri: str | None = None,
    db: str = DEFAULT_DB,
    layout: str = "seed",
    run_id: str | None = None,
    state: str | None = None,
    respond: str = "simulate",
    clicked: Sequence[str] = (),
    bought: Sequence[str] = (),
    visit: int | None = None,
    timeout_ms: int = 5000,
    policy: RetryPolicy | None = None,
    log: bool = False,
) -> VisitReport:
    """One customer visit, as the original ``rlRecoMain.py`` does it, with the engine's kernels.

    Pick the state (``state``, or uniformly from the state space), read only that state's
    cells, recommend a slate by the run's configured policy (``policy.name``, default
    eps-greedy; its parameter and the slate size from the run's config),
    apply the simulated (``seed`` model) or the given response, update the slate's cells
    exactly as a simulated visit does, and write back only that state.

    Parameters
    ----------
    run_dir : path
        The run. Without ``uri`` its latest snapshot is read and a new snapshot is committed
        (episodes + 1; the visit is added to the current metrics block). With ``uri`` the run
        directory is only read, for its state space, product descriptions and config; the
        tables are MongoDB's.
    uri, db, layout, timeout_ms, policy
        MongoDB target, as for :func:`export_run`.
    run_id : str, optional
        Tidy layout: the stored run (default: the run directory's run id).
    state : str, optional
        State id such as ``Q1_December_0_Thursday``; default: drawn uniformly.
    respond : {"simulate", "given", "none"}
        ``simulate``: the seed model's click and purchase counts; ``given``: ``clicked`` and
        ``bought`` (a product in both counts as bought; others are ignored); ``none``: a dry
        run that shows the slate and changes nothing.
    clicked, bought : sequence of str
        Product codes of the given response; they must be in the slate.
    visit : int, optional
        Key of the visit's random stream ``streams.generator(seed, streams.ONLINE, visit)``
        (state draw, slate, response and reward draws, in the simulator's order). Default:
        the run's episode count (run directory: repeating a dry run's key gives its slate) or a
        random key (MongoDB; reported, so a visit can be replayed).
    log : bool
        Log the visit's slots with their propensities and a UTC timestamp (not a dry run):
        against a run directory a part ``logs/part-<visit index>.parquet`` written before the
        snapshot commit (the visit index is the run's visit count before it); with ``uri``
        documents upserted into the ``visit_log`` collection once the state's update is
        committed, keyed by run id, the visit key and the slot.

    Returns
    -------
    VisitReport

    Raises
    ------
    SimulationError
        One line: unknown state id or product code, a given product not in the slate, bad
        ``respond``, or a slate larger than the state's catalogue.
    SyncError, SnapshotError
        MongoDB or run directory errors (one line).
    """
    run = RunDir.open(run_dir)
    config = config_from_dict(run.manifest["config"], source=f"{run.path}/manifest.json")
    space = StateSpace.from_columns(run.read_space(), run.fields)
    if respond not in ("simulate", "given", "none"):
        raise SimulationError(f"respond {respond!r}: expected simulate, given or none")
    if respond != "given" and (clicked or bought):
        raise SimulationError(
            f"--clicked/--bought give the response: do not combine them with --respond {respond}"
        )
    products = space.product_index()
    for option, codes in (("--clicked", clicked), ("--bought", bought)):
        unknown = [c for c in codes if c not in products]
        if unknown:
            raise SimulationError(
                f"product {unknown[0]!r} given in {option} is not a product of {run.path}"
            )
    if visit is None:
        visit = run.episodes if uri is None else secrets.randbits(63)
    if visit < 0:
        raise SimulationError(f"visit key {visit}: expected an integer >= 0")
    rng = streams.generator(
        int(run.manifest.get("seed", config.simulation.seed)), streams.ONLINE, visit
    )
    state_id = pick_state(space, state, rng, run.path)
    segment = int(space.state_segment[state_id])
    size = int(space.catalog_ptr[segment + 1] - space.catalog_ptr[segment])
    if config.policy.slate_size > size:
        raise SimulationError(
            f"slate size {config.policy.slate_size} exceeds the catalogue of segment "
            f"{space.segments[segment]} ({size} products)"
        )
    rewards = config.rewards
    plan = _Visit(
        space=space,
        state_id=state_id,
        epsilon=config.policy.epsilon,
        slate_size=config.policy.slate_size,
        policy=config.policy.name,
        param=SimulationParams.from_config(config).param,
        step=config.policy.step_size.kernel_step,
        click_cdf=count_cdf(config.response.click_probs, "click_probs"),
        buy_cdf=count_cdf(config.response.buy_probs, "buy_probs"),
        outcome_reward=np.array([rewards.ignore, rewards.click, rewards.buy]),
        respond=respond,
        clicked=frozenset(clicked),
        bought=frozenset(bought),
        rng_state=rng.bit_generator.state,
    )
    if uri is None:
        return _visit_run_dir(run, config, plan, visit, log=log)
    return _visit_mongo(
        run,
        plan,
        visit,
        uri=uri,
        db=db,
        layout=layout,
        run_id=run_id,
        timeout_ms=timeout_ms,
        policy=policy,
        log=log,
    )


def visit_records(plan: _Visit, played: Mapping[str, Any], visit: int) -> np.ndarray:
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


def _visit_run_dir(
    run: RunDir, config: RunConfig, plan: _Visit, visit: int, *, log: bool
) -> VisitReport:
    """A visit on a run directory's latest snapshot, committed as a new snapshot."""
    space = plan.space
    tables = Tables.from_groups(run.iter_snapshot(columns=SNAPSHOT_CELL_COLUMNS), space)
    row = slice(plan.state_id, plan.state_id + 1)
    value, cells = tables.value[row], tables.cells[row]  # views: the kernels update the tables
    before = (value.copy(), cells.copy())
    kept = policy_state_of(run, plan.policy, run.episodes)
    state_visits = None
    if "state_visits" in kept:
        state_visits = kept["state_visits"][plan.state_id : plan.state_id + 1]
    elif "state_visits" in POLICY_STATE.get(plan.policy, ()):
        kept["state_visits"] = np.zeros(space.n_states, dtype=np.int64)  # a run's first visit
        state_visits = kept["state_visits"][plan.state_id : plan.state_id + 1]
    played = play_visit(plan, value, cells, state_visits)
    episodes = run.episodes
    if played["outcome"] is not None:
        metrics = add_to_metrics(
            run.read_metrics(), episodes, config.simulation.metrics_block, plan.slate_size, played
        )
        if log:
            write_log_part(
                run.path,
                visit_records(plan, played, episodes),
                run_id=str(run.manifest["run_id"]),
                state_names=space.state_ids,
                product_codes=space.product_codes,
                policy="eps-greedy",
                param=plan.epsilon,
                timestamp=np.full(plan.slate_size, np.datetime64(_now().replace(tzinfo=None))),
            )
        episodes += 1
        run.commit(
            episodes=episodes,
            snapshot=snapshot_stream(tables, space),
            metrics=metrics,
            updates={},
            policy_state=(plan.policy, kept),
        )
    return _report(plan, played, before, (value, cells), str(run.path), visit, episodes=episodes)


def _visit_mongo(
    run: RunDir,
    plan: _Visit,
    visit: int,
    *,
    uri: str,
    db: str,
    layout: str,
    run_id: str | None,
    timeout_ms: int,
    policy: RetryPolicy | None,
    log: bool,
) -> VisitReport:
    """A visit on one state's documents in MongoDB (atomic per state, see ``apply_visit``)."""
    kind = check_layout(layout)
    space = plan.space
    state = str(space.state_ids[plan.state_id])
    source = f"{redact_uri(uri)} {db} ({kind} layout)"
    index = CodeIndex(space.state_index(), space.product_index()) if kind == "seed" else None
    stored_run = (run_id or str(run.manifest["run_id"])) if kind == "tidy" else None
    outcome: dict[str, Any] = {}

    def step(frame: pd.DataFrame) -> pd.DataFrame:
        cell_ids(frame, space, source=source, base=run.path)
        value, cells = state_rows(frame, plan)
        before = (value.copy(), cells.copy())
        # MongoDB keeps no per-state visit count: decaying counts the state's shown slates
        shown = int(cells["reco_count"].sum()) // plan.slate_size
        played = play_visit(plan, value, cells, np.array([shown], dtype=np.int64))
        outcome.update(played=played, before=before, after=(value, cells))
        return changed_frame(plan, played["slate"], value, cells)

    client = connect(uri, timeout_ms, socket_timeout_ms=SOCKET_TIMEOUT_MS, policy=policy)
    try:
        common: dict[str, Any] = {
            "layout": kind,
            "db": db,
            "run_id": stored_run,
            "index": index,
            "policy": policy,
            "fields": space.fields,
        }
        if plan.respond == "none":
            step(read_state(client, state, **common))
            version, attempts = None, 1
        else:
            result = apply_visit(client, state, step, **common)
            version, attempts = result.version, result.attempts
            if log:
                records = visit_records(plan, outcome["played"], visit)
                documents = log_documents(
                    records,
                    run_id=stored_run or str(run.manifest["run_id"]),
                    state_names=space.state_ids,
                    product_codes=space.product_codes,
                    policy="eps-greedy",
                    param=plan.epsilon,
                    timestamp=_now(),
                )
                write_visit_log(client, documents, db=db, policy=policy)
    finally:
        client.close()
    return _report(
        plan,
        outcome["played"],
        outcome["before"],
        outcome["after"],
        source,
        visit,
        version=version,
        attempts=attempts,
    )


def _now() -> datetime:
    """The current time in UTC, to the microsecond (the log's resolution)."""
    return datetime.now(UTC)


def _report(
    plan: _Visit,
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
