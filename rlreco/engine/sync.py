"""MongoDB and run directories: export a run's tables, import them back, serve online visits.

The CLI commands ``export-mongo``, ``import-mongo`` and ``recommend`` only parse their options
and call :func:`export_run`, :func:`import_run` and :func:`recommend`.

* **Export** writes the latest snapshot of a run directory in the ``seed`` layout (the original
  design's collections) or the ``tidy`` layout (one document per cell, plus the manifest);
  incremental and idempotent (:func:`rlreco.io.mongo.export_snapshot`).
* **Import** reads either layout back, checks every cell against the state space of a base run
  directory (the run whose state space the tables belong to) and writes a new run directory
  with that state space and the imported tables. Export then import is exact: the new run's
  tables equal the exported ones bit for bit.
* **Online visits**: :func:`recommend` plays one customer visit with the simulator's kernels
  (:func:`rlreco.engine.online.play_online_visit`) on one state's row, against
  a run directory or MongoDB (atomic per state: concurrent visits lose no update).
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rlreco.config import RunConfig, config_from_dict
from rlreco.engine import streams
from rlreco.engine.kernels.draw import draw_state_nb
from rlreco.engine.kernels.records import CELL_DTYPE, Policy, PolicyParams, TopNSearch
from rlreco.engine.online import play_online_visit
from rlreco.engine.response import count_cdf
from rlreco.engine.state_space import StateSpace
from rlreco.engine.tables import Tables
from rlreco.errors import SimulationError, SyncError
from rlreco.io.mongo import (
    DEFAULT_DB,
    CodeIndex,
    ExportReport,
    RetryPolicy,
    apply_visit,
    connect,
    export_snapshot,
    import_snapshot,
    read_state,
    redact_uri,
)
from rlreco.io.mongo_layout import check_layout, conform_snapshot
from rlreco.io.run_dir import SCHEMAS, RunDir

__all__ = [
    "DEFAULT_DB",
    "ImportSummary",
    "VisitReport",
    "export_run",
    "import_run",
    "recommend",
]

#: Per-operation socket timeout: a server that stops answering fails (and is retried) after it.
SOCKET_TIMEOUT_MS = 60_000
#: Manifest keys a tidy import takes from the stored manifest of the run (the rest, which
#: describes the state space and its data, comes from the base run).
RUN_KEYS = ("run_id", "episodes", "rng_state", "config", "seed")


@dataclass(frozen=True)
class ImportSummary:
    """What :func:`import_run` read and wrote.

    Attributes
    ----------
    run_dir, base_run : str
        The run directory written and the one whose state space it uses.
    layout, database : str
        Source of the tables.
    run_id : str
        Run id of the new run directory (tidy: the imported run's; seed: a new one).
    states, cells : int
        States with at least one known cell, and known cells, imported.
    episodes : int
        Visits the imported tables have seen (tidy: from the stored manifest; seed: the base
        run's, as the seed layout stores no run metadata).
    seconds : float
        Wall time.
    """

    run_dir: str
    base_run: str
    layout: str
    database: str
    run_id: str
    states: int
    cells: int
    episodes: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (for ``--json``)."""
        return asdict(self)


def snapshot_frame(columns: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """Long-form snapshot columns (as :meth:`RunDir.read_snapshot` gives them) as a frame."""
    return conform_snapshot(pd.DataFrame(dict(columns)))


def frame_columns(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """Numpy columns of a snapshot frame (string columns as numpy ``str``)."""
    return {
        c: frame[c].to_numpy(dtype=str) if frame[c].dtype == "str" else frame[c].to_numpy()
        for c in frame.columns
    }


def export_run(
    run_dir: str | Path,
    *,
    uri: str,
    db: str = DEFAULT_DB,
    layout: str = "seed",
    timeout_ms: int = 5000,
    batch_size: int = 1000,
    policy: RetryPolicy | None = None,
    force: bool = False,
) -> ExportReport:
    """Export the latest snapshot of a run directory to MongoDB.

    Parameters
    ----------
    run_dir : path
        Run directory (``rlreco prepare`` / ``simulate`` output).
    uri : str
        ``mongodb://`` connection string (never shown with its password).
    db : str
        Database (default the original design's ``rlRecomendation``).
    layout : {"seed", "tidy"}
        Document layout (:mod:`rlreco.io.mongo_layout`).
    timeout_ms : int
        Server selection and connect timeout: an unreachable server fails within it.
    batch_size : int
        Most documents per bulk write.
    policy : RetryPolicy, optional
        Retries of transient faults.
    force : bool
        Rewrite every state, even those unchanged since the last export.

    Returns
    -------
    ExportReport
        Documents written, unchanged and deleted per collection, round trips, wall time.

    Raises
    ------
    SnapshotError
        The run directory is missing or corrupt.
    SyncError
        One line: bad URI or layout, unreachable server, failed authentication, refused write.
    """
    check_layout(layout)
    run = RunDir.open(run_dir)
    # connect first: an unreachable server fails within the timeout, before any heavy reading
    client = connect(uri, timeout_ms, socket_timeout_ms=SOCKET_TIMEOUT_MS, policy=policy)
    try:
        frame = snapshot_frame(run.read_snapshot())
        return export_snapshot(
            client,
            frame,
            run.manifest,
            db=db,
            layout=layout,
            batch_size=batch_size,
            policy=policy,
            force=force,
        )
    finally:
        client.close()


def import_run(
    *,
    uri: str,
    base_run: str | Path,
    out: str | Path,
    db: str = DEFAULT_DB,
    layout: str = "seed",
    run_id: str | None = None,
    timeout_ms: int = 5000,
    policy: RetryPolicy | None = None,
    force: bool = False,
) -> ImportSummary:
    """Load tables from MongoDB into a new run directory with the state space of ``base_run``.

    Parameters
    ----------
    uri, db, layout, timeout_ms, policy
        As for :func:`export_run`.
    base_run : path
        Run directory whose state space (states, products, catalogues) the stored tables
        belong to; its state space files, initial snapshot and manifest are copied.
    out : path
        Run directory to write.
    run_id : str, optional
        Tidy layout: the run to load (default: the only run stored).
    force : bool
        Replace ``out`` if it exists.

    Returns
    -------
    ImportSummary

    Notes
    -----
    The new manifest is the base run's, with, for the tidy layout, the stored run's ``run_id``,
    ``episodes``, ``rng_state``, ``config`` and ``seed`` (so exporting the new run again writes
    nothing), and for the seed layout a new ``run_id``. ``imported_from`` records the source
    (layout, database, run id; never the URI).

    Raises
    ------
    SyncError
        One line: a stored state id or product code that is not in the base run's state space,
        a product outside its state's segment catalogue, an unknown run, or a database error.
    SnapshotError
        ``base_run`` missing or corrupt, or ``out`` exists without ``force``.
    """
    started = time.perf_counter()
    kind = check_layout(layout)
    base = RunDir.open(base_run)
    space = StateSpace.from_columns(base.read_space())
    client = connect(uri, timeout_ms, socket_timeout_ms=SOCKET_TIMEOUT_MS, policy=policy)
    try:
        frame, stored = import_snapshot(client, db=db, layout=kind, run_id=run_id, policy=policy)
    finally:
        client.close()
    source = f"{db} ({kind} layout)"
    tables = tables_in_space(frame, space, source=source, base=base.path)
    updates: dict[str, Any] = {"run_id": uuid.uuid4().hex}
    if stored is not None:
        updates.update({k: stored[k] for k in RUN_KEYS if k in stored})
    episodes = updates.get("episodes", base.episodes)
    if not isinstance(episodes, int) or isinstance(episodes, bool) or episodes < 0:
        raise SyncError(
            f"manifest stored in {db}.runs has episodes {episodes!r}, not an integer >= 0"
        )
    updates["episodes"] = episodes
    updates["imported_from"] = {
        "layout": kind,
        "database": db,
        "run_id": stored.get("run_id") if stored is not None else None,
        "base_run": str(base.path),
    }
    derived = base.derive(out, snapshot=tables.to_columns(space), updates=updates, force=force)
    return ImportSummary(
        run_dir=str(derived.path),
        base_run=str(base.path),
        layout=kind,
        database=db,
        run_id=str(updates["run_id"]),
        states=int(np.count_nonzero(tables.known.any(axis=1))),
        cells=int(np.count_nonzero(tables.known)),
        episodes=episodes,
        seconds=round(time.perf_counter() - started, 3),
    )


def tables_in_space(frame: pd.DataFrame, space: StateSpace, *, source: str, base: Path) -> Tables:
    """Dense tables of a snapshot frame read from MongoDB, checked by :func:`cell_ids`."""
    frame = conform_snapshot(frame, f"snapshot read from {source}")
    state_id, product_id = cell_ids(frame, space, source=source, base=base)
    columns = frame_columns(frame)
    columns["state_id"] = state_id
    columns["product_id"] = product_id
    return Tables.from_columns(columns, space)


def cell_ids(
    frame: pd.DataFrame, space: StateSpace, *, source: str, base: Path
) -> tuple[np.ndarray, np.ndarray]:
    """State and product ids of cells read from MongoDB, checked against a state space.

    State ids and product codes are looked up by their strings; integer ids stored alongside
    (tidy layout) must agree with them, and every product must be in its state's segment
    catalogue.

    Parameters
    ----------
    frame : pandas.DataFrame
        Snapshot columns (``state_id``/``product_id`` -1 where the layout stores none).
    space : StateSpace
        The base run's state space.
    source : str
        Names the data in error messages.
    base : Path
        The run directory of ``space``, named in error messages.

    Returns
    -------
    state_id, product_id : ndarray of int32, shape (n_cells,)

    Raises
    ------
    SyncError
        One line naming the first offending cell.
    """
    states = frame["state"].tolist()
    codes = frame["product_code"].tolist()
    state_index, product_index = space.state_index(), space.product_index()
    state_id = np.array([state_index.get(s, -1) for s in states], dtype=np.int64)
    product_id = np.array([product_index.get(c, -1) for c in codes], dtype=np.int64)
    where = f"in the state space of {base}"
    bad = np.flatnonzero(state_id < 0)
    if bad.size:
        raise SyncError(f"{source}: state {states[bad[0]]!r} is not {where}")
    bad = np.flatnonzero(product_id < 0)
    if bad.size:
        raise SyncError(
            f"{source}: product {codes[bad[0]]!r} (state {states[bad[0]]}) is not {where}"
        )
    for column, found in (("state_id", state_id), ("product_id", product_id)):
        stored = frame[column].to_numpy(np.int64)
        bad = np.flatnonzero((stored != -1) & (stored != found))
        if bad.size:
            row = bad[0]
            raise SyncError(
                f"{source}: cell (state {states[row]}, product {codes[row]!r}) has {column} "
                f"{stored[row]} but it is {found[row]} {where}"
            )
    n_products = space.n_products
    segment = space.state_segment[state_id].astype(np.int64)
    catalogue_cells = (
        np.repeat(np.arange(space.n_segments), np.diff(space.catalog_ptr)) * n_products
        + space.catalog_items
    )
    bad = np.flatnonzero(~np.isin(segment * n_products + product_id, catalogue_cells))
    if bad.size:
        row = bad[0]
        raise SyncError(
            f"{source}: product {codes[row]!r} of state {states[row]} is not in the catalogue "
            f"of segment {space.segments[segment[row]]} {where}"
        )
    return state_id.astype(np.int32), product_id.astype(np.int32)


# ------------------------------------------------------------------ online visits

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
    click_cdf: np.ndarray
    buy_cdf: np.ndarray
    outcome_reward: np.ndarray  # mean reward by Outcome code
    respond: str
    clicked: frozenset[str]
    bought: frozenset[str]
    rng_state: Mapping[str, Any]  # the stream after the state draw


def play_visit(plan: _Visit, value: np.ndarray, cells: np.ndarray) -> dict[str, Any]:
    """Choose a slate, respond and update, with the engine's kernels, on one state's row.

    Parameters
    ----------
    plan : _Visit
    value : ndarray of float64, shape (1, n_products)
        The state's values (-inf unknown); updated in place unless a dry run.
    cells : ndarray of CELL_DTYPE, shape (1, n_products)
        The state's reward sums and counts; updated in place unless a dry run.

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
        policy=PolicyParams(Policy.eps_greedy, plan.epsilon, plan.slate_size, TopNSearch.tree),
        click_cdf=plan.click_cdf,
        buy_cdf=plan.buy_cdf,
        rewards=_outcome_rewards(plan.outcome_reward),
        respond=plan.respond,
        clicked=plan.clicked,
        bought=plan.bought,
    )
    row = visit.metrics[0]
    return {
        "slate": visit.slate,
        "outcome": visit.outcome,
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
    for name in ("state", "segment", "month", "half", "weekday"):
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
) -> VisitReport:
    """One customer visit, as the original ``rlRecoMain.py`` does it, with the engine's kernels.

    Pick the state (``state``, or uniformly from the state space), read only that state's
    cells, recommend a slate by epsilon-greedy (epsilon and slate size from the run's config),
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
    space = StateSpace.from_columns(run.read_space())
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
        click_cdf=count_cdf(config.response.click_probs, "click_probs"),
        buy_cdf=count_cdf(config.response.buy_probs, "buy_probs"),
        outcome_reward=np.array([rewards.ignore, rewards.click, rewards.buy]),
        respond=respond,
        clicked=frozenset(clicked),
        bought=frozenset(bought),
        rng_state=rng.bit_generator.state,
    )
    if uri is None:
        return _visit_run_dir(run, config, plan, visit)
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
    )


def pick_state(space: StateSpace, state: str | None, rng: np.random.Generator, where: Path) -> int:
    """Integer id of ``state``, or a uniform draw (the simulator's ``draw_state_nb``)."""
    if state is None:
        return int(draw_state_nb(rng, np.empty(0), space.n_states))
    found = space.state_index().get(state)
    if found is None:
        raise SimulationError(
            f"state {state!r} is not in the state space of {where} (e.g. {space.state_ids[0]}; "
            "form segment_month_half_weekday)"
        )
    return found


def _visit_run_dir(run: RunDir, config: RunConfig, plan: _Visit, visit: int) -> VisitReport:
    """A visit on a run directory's latest snapshot, committed as a new snapshot."""
    space = plan.space
    tables = Tables.from_columns(run.read_snapshot(), space)
    row = slice(plan.state_id, plan.state_id + 1)
    value, cells = tables.value[row], tables.cells[row]  # views: the kernels update the tables
    before = (value.copy(), cells.copy())
    played = play_visit(plan, value, cells)
    episodes = run.episodes
    if played["outcome"] is not None:
        metrics = add_to_metrics(
            run.read_metrics(), episodes, config.simulation.metrics_block, plan.slate_size, played
        )
        episodes += 1
        run.commit(
            episodes=episodes, snapshot=tables.to_columns(space), metrics=metrics, updates={}
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
        played = play_visit(plan, value, cells)
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
        }
        if plan.respond == "none":
            step(read_state(client, state, **common))
            version, attempts = None, 1
        else:
            result = apply_visit(client, state, step, **common)
            version, attempts = result.version, result.attempts
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
