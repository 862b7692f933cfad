"""Simulating a run directory: load, simulate with checkpoints, commit; resumable.

:func:`simulate_run` is what ``rlreco simulate`` calls. It continues from the run's latest
snapshot (tables, RNG state, metrics and the policy's per-state state), writes a checkpoint
every ``checkpoint_every`` visits and at the end, and stops cleanly at a chunk boundary on
Ctrl-C (SIGINT), saving everything simulated so far. Because every checkpoint holds the
complete state (tables, the RNG state, per-block metric sums, the policy's per-state state such
as ``decaying``'s visits per state), a run of N visits under any policy gives bit-identical
tables and metrics whether it is simulated in one call, with checkpoints, or interrupted and
resumed.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import pandas as pd

from rlreco.app.cores import usable_cores
from rlreco.app.run_tables import load_counts, load_known_tables
from rlreco.app.truth import (
    load_truth_tables,
    monthly_schedule,
    phase_weights,
    resolve_response,
    response_spec,
    sampling_space,
)
from rlreco.config import RunConfig, StepSize, config_from_dict, parse_schedule
from rlreco.engine.memory import check_memory_limit
from rlreco.engine.response import uses_popularity
from rlreco.engine.simulation import (
    POLICY_STATE,
    SimulationParams,
    SimulationSummary,
    Simulator,
)
from rlreco.engine.state_space import StateSpace
from rlreco.engine.tables import Tables
from rlreco.engine.warmup import Warmup, warm_up_simulation
from rlreco.errors import ConfigError, SimulationError
from rlreco.io.parquet_tables import SCHEMAS, CellStream, use_system_allocator
from rlreco.io.run_dir import RunDir
from rlreco.io.visit_log import LogWriter, remove_log_parts_from
from rlreco.schema import POLICY_PARAMS

#: Visits per kernel call: progress and Ctrl-C are handled between calls.
CHUNK = 250_000


@dataclass
class Run:
    """A run directory loaded into memory."""

    run_dir: RunDir
    config: RunConfig
    space: StateSpace
    tables: Tables
    #: the loaded tables' known cells (:meth:`Tables.known_cells`), as loaded
    known: dict[str, np.ndarray] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        check: Callable[[RunConfig, StateSpace], None] | None = None,
        keep_known: bool = False,
        store: bool = False,
    ) -> Run:
        """Open a run directory (:meth:`open`) and load its state space and latest tables.

        The tables come from the run's cache of them when it holds the snapshot, else from the
        snapshot, read one row group at a time straight into the dense tables
        (:mod:`rlreco.app.run_tables`). ``keep_known`` keeps the tables' known cells as loaded
        (:attr:`known`; otherwise None); ``store`` stores them in the cache when it does not
        hold them.
        """
        run_dir, config, space = cls.open(path, check=check)
        tables, known = load_known_tables(run_dir, space, store=store)
        return cls(run_dir, config, space, tables, known if keep_known else None)

    @staticmethod
    def open(
        path: str | Path, *, check: Callable[[RunConfig, StateSpace], None] | None = None
    ) -> tuple[RunDir, RunConfig, StateSpace]:
        """A run directory with its configuration and state space, before any table is read;
        ``check`` is called with the config and state space (e.g. to refuse a state space too
        large for the memory limit before the tables are allocated)."""
        use_system_allocator()
        run_dir = RunDir.open(path)
        config = config_from_dict(run_dir.manifest["config"], source=f"{path}/manifest.json")
        space = StateSpace.from_columns(run_dir.read_space(), run_dir.fields)
        if check is not None:
            check(config, space)
        return run_dir, config, space

    def history_count(self) -> np.ndarray:
        """Historical counts: the initial snapshot's ``count`` table (no second set of tables
        when the cache holds the initial snapshot)."""
        return load_counts(self.run_dir, self.space)

    def metrics_frame(self) -> pd.DataFrame | None:
        """Stored per-block metric sums, or None before the first simulation."""
        columns = self.run_dir.read_metrics()
        return None if columns is None else pd.DataFrame(columns)


@contextlib.contextmanager
def sigint_flag() -> Iterator[Callable[[], bool]]:
    """Turn Ctrl-C into a flag polled at chunk boundaries (main thread only).

    A second Ctrl-C raises KeyboardInterrupt as usual.
    """
    hit = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield hit.is_set
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum: int, frame: FrameType | None) -> None:
        if hit.is_set():
            signal.signal(signal.SIGINT, previous)
            raise KeyboardInterrupt
        hit.set()

    signal.signal(signal.SIGINT, handler)
    try:
        yield hit.is_set
    finally:
        signal.signal(signal.SIGINT, previous)


def simulate_run(
    path: str | Path,
    episodes: int,
    *,
    epsilon: float | None = None,
    policy: str | None = None,
    param: float | None = None,
    step_size: str | None = None,
    seed: int | None = None,
    response: str | None = None,
    schedule: str | None = None,
    drift_every: int | None = None,
    state_sampling: str | None = None,
    checkpoint_every: int | None = None,
    chunk: int = CHUNK,
    progress: Callable[[int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_warmup: Callable[[Warmup], None] | None = None,
    log: bool = False,
) -> SimulationSummary:
    """Simulate ``episodes`` more visits on a run directory and commit the result.

    Parameters
    ----------
    path : path
        Run directory (from ``rlreco prepare``).
    episodes : int
        Visits to simulate (>= 1).
    epsilon, policy, param, response, state_sampling : optional
        Overrides of the run's config; they are recorded in the manifest and stay in force for
        later calls. ``policy`` is a slate policy's name (``policy.name``); ``param`` the
        parameter of a policy other than eps-greedy (``policy.param``; a new ``policy``
        without ``param`` takes that policy's default); ``epsilon`` is eps-greedy's.
        later calls.
    step_size : str, optional
        ``1/n`` or a constant step in (0, 1] (``--step-size``); an override like the others.
    schedule : str, optional
        A drifting truth ``VISITS=RESPONSE,...`` (``--schedule``): visit counts start at 0 and
        increase; each response as for ``response``.
    drift_every : int, optional
        A time holdout's monthly truths in order, each for this many visits
        (``--drift-every``). ``response``, ``schedule`` and ``drift_every`` exclude each other.
    seed : int, optional
        Seed of the run's random streams. Only a run that has not simulated yet can be given a
        new seed (its streams continue from the saved state afterwards).
    checkpoint_every : int, optional
        Visits between snapshots (default: the config's ``simulation.checkpoint_every``).
    chunk : int
        Visits per kernel call.
    progress : callable, optional
        Called with the visits simulated by this call so far.
    should_stop : callable, optional
        Polled between chunks in addition to Ctrl-C; True stops and saves.
    on_warmup : callable, optional
        Called with the :class:`~rlreco.engine.warmup.Warmup` that compiled (a machine's first
        run) or loaded the kernels before the visits, which is not counted in their visits/s.
    log : bool
        Write a visit log: one row per shown slot with its propensity, a part ``logs/part-<first
        visit>.parquet`` per call of the simulator's ``log``
        (:data:`~rlreco.engine.simulation.LOG_VISITS` visits, fewer at a chunk's end), each before
        the snapshot commit of its chunk boundary (:mod:`rlreco.io.visit_log`). Whether or not it
        logs, a call first deletes the parts that start at or after the committed visit count
        (written after the last commit), so a log written in one call, in chunks or resumed is the
        same.
    """
    if episodes < 1:
        raise SimulationError(f"--visits = {episodes}: expected an integer >= 1")
    step = None if step_size is None else StepSize.parse(step_size, "--step-size")
    chosen = [o for o, v in (("--response", response), ("--schedule", schedule),
                             ("--drift-every", drift_every)) if v is not None]  # fmt: skip
    if len(chosen) > 1:
        raise ConfigError(f"{' and '.join(chosen)}: each chooses the truth; give one of them")
    phases = None if schedule is None else parse_schedule(schedule, "--schedule")
    if drift_every is not None and drift_every < 1:
        raise ConfigError(f"--drift-every = {drift_every}: expected an integer >= 1")

    def fits(config: RunConfig, space: StateSpace) -> None:
        model = "truth" if schedule or drift_every else response or str(config.response.model)
        check_memory_limit(
            space.n_states,
            space.n_products,
            config.simulation.memory_limit_mb,
            simulate=True,
            truth=model != "seed",
            what="simulate",
        )

    run = Run.load(path, check=fits)
    manifest = run.run_dir.manifest
    done = run.run_dir.visits
    remove_log_parts_from(run.run_dir.path, done)
    changes = policy_changes(run.config, epsilon=epsilon, policy=policy, param=param)
    if step is not None:
        changes["policy.step_size"] = step.to_config()
    if response is not None:
        changes.update({"response.model": response, "response.schedule": [],
                        "response.drift_every": 0})  # fmt: skip
    if phases is not None:
        changes.update({"response.schedule": [f"{v}={r}" for v, r in phases],
                        "response.drift_every": 0})  # fmt: skip
    if drift_every is not None:
        monthly_schedule(run.run_dir, drift_every)  # a run without monthly truths: one line
        changes.update({"response.schedule": [], "response.drift_every": drift_every})
    if state_sampling is not None:
        changes["simulation.state_sampling"] = state_sampling
    if seed is not None and seed != run.config.simulation.seed:
        if done:
            raise SimulationError(
                f"--seed {seed}: this run has simulated {done:,} visits with seed "
                f"{run.config.simulation.seed}; a seed can only be set before the first visit"
            )
        changes["simulation.seed"] = seed
    config = run.config.replace(**changes) if changes else run.config
    every = checkpoint_every or config.simulation.checkpoint_every
    if every < 1:
        raise SimulationError(f"--checkpoint-every = {every}: expected an integer >= 1")
    policy_state = policy_state_of(run.run_dir, config.policy.name, done)
    wanted = response_spec(run.run_dir, config)
    resolved = resolve_response(run.run_dir, wanted)
    space, sampling = sampling_space(
        run.run_dir, run.space, config.simulation.state_sampling, resolved
    )
    simulator = Simulator(
        space,
        run.tables,
        SimulationParams.from_config(config, response=resolved, state_sampling=sampling),
        seed=config.simulation.seed,
        rng_state=manifest.get("rng_state"),
        episodes_done=done,
        metrics=run.metrics_frame(),
        history_count=run.history_count() if done and uses_popularity(wanted) else None,
        phase_weights=phase_weights(run.run_dir, config.simulation.state_sampling, resolved),
        truth_tables=load_truth_tables(resolved),
        policy_state=policy_state,
    )
    calls = list(manifest.get("simulations", []))
    committed = [done]
    params = simulator.params
    parts = None
    if log:
        parts = LogFlusher(
            LogWriter(
                run.run_dir.path,
                run_id=str(manifest["run_id"]),
                state_names=run.space.state_ids,
                product_codes=run.space.product_codes,
                policy=params.policy,
                param=params.param,
            )
        )

    def commit(summary: SimulationSummary | None = None) -> None:
        if parts is not None:
            parts.wait()  # every part up to this boundary is on disk before the commit
        total = simulator.episodes_total
        if total == committed[0]:
            return
        frame = simulator.metrics_frame()
        entry = {
            "from": committed[0],
            "to": total,
            "policy": config.policy.name,
            "epsilon": config.policy.epsilon,
            "param": SimulationParams.from_config(config).param,
            "step_size": config.policy.step_size.to_config(),
            "response": wanted,
            "log": log,
            "state_sampling": config.simulation.state_sampling,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        if summary is not None:
            entry["episodes_per_second"] = summary.episodes_per_second
        run.run_dir.commit(
            visits=total,
            snapshot=snapshot_stream(run.tables, run.space),
            metrics={name: frame[name].to_numpy() for name in SCHEMAS["metrics"].names},
            updates={
                "config": config.to_dict(),
                "seed": config.simulation.seed,
                "rng_state": simulator.rng_state,
                "simulations": [*calls, entry],
            },
            policy_state=(config.policy.name, simulator.policy_state),
        )
        calls.append(entry)
        committed[0] = total

    chunk = max(1, min(chunk, every))

    def on_chunk(n: int) -> None:
        if simulator.episodes_total - committed[0] >= every:
            commit()
        if progress is not None:
            progress(n)

    warmup = warm_up_simulation((params.policy,), logging=log)
    if on_warmup is not None:
        on_warmup(warmup)
    try:
        with sigint_flag() as interrupted:
            summary = simulator.run(
                episodes,
                chunk=chunk,
                progress=on_chunk,
                should_stop=lambda: interrupted() or bool(should_stop and should_stop()),
                log=parts,
            )
        commit(summary)
    finally:
        if parts is not None:
            parts.close()
    return summary


class LogFlusher:
    """The simulator's ``log`` callback: each call's records become a log part, encoded and
    written on one background thread while the (GIL-free) kernel simulates the next visits.

    At most one part is in flight: a call copies its records (the kernel reuses their buffer),
    waits for the previous part, then hands this one over. :meth:`wait` returns once every part
    handed over is on disk and raises the error of one that failed.

    A process that may run on one core only (its CPU affinity, e.g. ``taskset -c 0``) writes
    each part in the call instead: a second thread there buys no overlap, only preempts the
    kernel mid-chunk (each switch costs the kernel its cached table lines).
    """

    def __init__(self, writer: LogWriter, *, threaded: bool | None = None) -> None:
        self._writer = writer
        if threaded is None:
            threaded = usable_cores() > 1
        self._thread = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="rlreco-log") if threaded else None
        )
        self._pending: Future[Path] | None = None

    def __call__(self, records: np.ndarray) -> None:
        table = self._writer.table(records)
        if self._thread is None:
            self._writer.write(table)
            return
        self.wait()
        self._pending = self._thread.submit(self._writer.write, table)

    def wait(self) -> None:
        """Block until the part in flight is written (re-raising its error)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def close(self) -> None:
        """Stop the thread once the part in flight is written or failed (after an error
        elsewhere: its own error, if any, is the lesser news; :meth:`wait` reports it)."""
        self._pending = None
        if self._thread is not None:
            self._thread.shutdown(wait=True)


def policy_changes(
    config: RunConfig,
    *,
    epsilon: float | None = None,
    policy: str | None = None,
    param: float | None = None,
) -> dict[str, Any]:
    """Config changes (dotted keys) of the policy options of ``simulate``.

    Raises
    ------
    ConfigError
        ``--epsilon`` with a policy other than eps-greedy, or ``--param`` with eps-greedy.
    """
    changes: dict[str, Any] = {}
    name = config.policy.name if policy is None else policy
    if policy is not None:
        if policy not in POLICY_PARAMS:
            raise ConfigError(f"--policy {policy!r}: expected one of {', '.join(POLICY_PARAMS)}")
        changes["policy.name"] = policy
        if policy != config.policy.name:
            changes["policy.param"] = None  # another policy's parameter means nothing here
    if epsilon is not None:
        if name != "eps-greedy":
            raise ConfigError(
                f"--epsilon {epsilon:g}: the {name} policy takes --param "
                f"({POLICY_PARAMS[name]}); --epsilon is eps-greedy's"
            )
        changes["policy.epsilon"] = epsilon
    if param is not None:
        if name == "eps-greedy":
            raise ConfigError(
                f"--param {param:g}: eps-greedy takes --epsilon; --param is the parameter of "
                + ", ".join(f"{p} ({n})" for p, n in POLICY_PARAMS.items() if p != "eps-greedy")
            )
        changes["policy.param"] = param
    return changes


def policy_state_of(run_dir: RunDir, policy: str, done: int) -> dict[str, np.ndarray]:
    """The saved per-state state ``policy`` resumes from.

    Raises
    ------
    SimulationError
        The policy keeps a per-state state that this run, having simulated visits under
        another policy, does not have.
    """
    state = run_dir.read_policy_state(policy)
    if not state and done and POLICY_STATE.get(policy):
        entry = run_dir.manifest.get("policy_state") or {}
        before = entry.get("policy") or "a policy without it"
        raise SimulationError(
            f"--policy {policy}: its {', '.join(POLICY_STATE[policy])} per state must count "
            f"every visit, and this run's {done:,} visits were simulated under {before}; "
            f"prepare a new run for {policy}"
        )
    return state


def snapshot_stream(tables: Tables, space: StateSpace) -> CellStream:
    """The tables as a snapshot written one bounded row group at a time."""
    states = space.to_columns()["states"]
    return CellStream(
        groups=tables.iter_cells(space),
        states={name: states[name] for name in ("state", *space.fields)},
        product_codes=space.product_codes,
    )
