"""Online visits: one customer visit against a run directory or MongoDB.

:func:`recommend` plays one customer visit with the simulator's kernels
(:func:`rlreco.engine.online.play_online_visit`) on one state's row, against a run directory or
MongoDB (atomic per state: concurrent visits lose no update). The CLI command ``recommend``
only parses its options and calls it. The visit itself (plan, play on one state's row,
report): :mod:`rlreco.app.visit_plan`.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rlreco.app.mongo_sync import SOCKET_TIMEOUT_MS, cell_ids
from rlreco.app.run_tables import SNAPSHOT_CELL_COLUMNS
from rlreco.app.simulate import policy_state_of, snapshot_stream
from rlreco.app.visit_plan import (
    VisitPlan,
    VisitReport,
    add_to_metrics,
    changed_frame,
    pick_state,
    play_visit,
    state_rows,
    visit_records,
    visit_report,
)
from rlreco.config import RunConfig, config_from_dict
from rlreco.engine import streams
from rlreco.engine.response import count_cdf
from rlreco.engine.simulation import POLICY_STATE, SimulationParams
from rlreco.engine.state_space import StateSpace
from rlreco.engine.tables import Tables
from rlreco.engine.warmup import Warmup, warm_up_online
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
from rlreco.io.run_dir import RunDir
from rlreco.io.visit_log import log_documents, write_log_part

__all__ = ["VisitReport", "recommend"]


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
    on_warmup: Callable[[Warmup], None] | None = None,
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
    on_warmup : callable, optional
        Called with the :class:`~rlreco.engine.warmup.Warmup` that compiled (a machine's first
        run) or loaded the visit's kernels, before the state is read: a MongoDB visit never
        compiles inside its transaction.

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
        visit = run.visits if uri is None else secrets.randbits(63)
    if visit < 0:
        raise SimulationError(f"visit key {visit}: expected an integer >= 0")
    rng = streams.generator(
        int(run.manifest.get("seed", config.simulation.seed)), streams.ONLINE, visit
    )
    state_id = pick_state(space, state, rng, run.path)
    segment = int(space.state_segment[state_id])
    size = int(space.catalogue_ptr[segment + 1] - space.catalogue_ptr[segment])
    if config.policy.slate_size > size:
        raise SimulationError(
            f"slate size {config.policy.slate_size} exceeds the catalogue of segment "
            f"{space.segments[segment]} ({size} products)"
        )
    rewards = config.rewards
    plan = VisitPlan(
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
    warmup = warm_up_online(plan.policy)
    if on_warmup is not None:
        on_warmup(warmup)
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


def _visit_run_dir(
    run: RunDir, config: RunConfig, plan: VisitPlan, visit: int, *, log: bool
) -> VisitReport:
    """A visit on a run directory's latest snapshot, committed as a new snapshot."""
    space = plan.space
    tables = Tables.from_groups(run.iter_snapshot(columns=SNAPSHOT_CELL_COLUMNS), space)
    row = slice(plan.state_id, plan.state_id + 1)
    value, cells = tables.value[row], tables.cells[row]  # views: the kernels update the tables
    before = (value.copy(), cells.copy())
    kept = policy_state_of(run, plan.policy, run.visits)
    state_visits = None
    if "state_visits" in kept:
        state_visits = kept["state_visits"][plan.state_id : plan.state_id + 1]
    elif "state_visits" in POLICY_STATE.get(plan.policy, ()):
        kept["state_visits"] = np.zeros(space.n_states, dtype=np.int64)  # a run's first visit
        state_visits = kept["state_visits"][plan.state_id : plan.state_id + 1]
    played = play_visit(plan, value, cells, state_visits)
    episodes = run.visits
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
                policy=plan.policy,
                param=plan.param,
                timestamp=np.full(plan.slate_size, np.datetime64(_now().replace(tzinfo=None))),
            )
        episodes += 1
        run.commit(
            visits=episodes,
            snapshot=snapshot_stream(tables, space),
            metrics=metrics,
            updates={},
            policy_state=(plan.policy, kept),
        )
    return visit_report(
        plan, played, before, (value, cells), str(run.path), visit, episodes=episodes
    )


def _visit_mongo(
    run: RunDir,
    plan: VisitPlan,
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
                    policy=plan.policy,
                    param=plan.param,
                    timestamp=_now(),
                )
                write_visit_log(client, documents, db=db, policy=policy)
    finally:
        client.close()
    return visit_report(
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
