"""Simulating a run directory: load, simulate with checkpoints, commit; resumable.

:func:`simulate_run` is what ``rlreco simulate`` calls. It continues from the run's latest
snapshot (tables, RNG state and metrics), writes a checkpoint every ``checkpoint_every`` visits
and at the end, and stops cleanly at a chunk boundary on Ctrl-C (SIGINT), saving everything
simulated so far. Because every checkpoint holds the complete state (tables, the RNG state,
per-block metric sums), a run of N visits gives bit-identical tables and metrics whether it is
simulated in one call, with checkpoints, or interrupted and resumed.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import pandas as pd

from rlreco.app.truth import resolve_response, sampling_space
from rlreco.config import RunConfig, config_from_dict
from rlreco.engine.memory import check_memory_limit
from rlreco.engine.simulation import SimulationParams, SimulationSummary, Simulator
from rlreco.engine.state_space import StateSpace
from rlreco.engine.tables import Tables
from rlreco.errors import SimulationError, SnapshotError
from rlreco.io.run_dir import SCHEMAS, CellStream, RunDir, use_system_allocator

#: Snapshot columns the dense tables are rebuilt from.
SNAPSHOT_CELL_COLUMNS = (
    "state_id", "product_id", "product_code", "value", "reward", "count", "reco_count",
)  # fmt: skip

#: Visits per kernel call: progress and Ctrl-C are handled between calls.
CHUNK = 250_000


@dataclass
class Run:
    """A run directory loaded into memory."""

    run_dir: RunDir
    config: RunConfig
    space: StateSpace
    tables: Tables

    @classmethod
    def load(
        cls, path: str | Path, *, check: Callable[[RunConfig, StateSpace], None] | None = None
    ) -> Run:
        """Open a run directory and load its state space and latest tables.

        ``check`` is called with the config and state space before the tables are allocated
        (e.g. to refuse a state space too large for the memory limit). The snapshot is read
        one row group at a time straight into the dense tables.
        """
        use_system_allocator()
        run_dir = RunDir.open(path)
        config = config_from_dict(run_dir.manifest["config"], source=f"{path}/manifest.json")
        space = StateSpace.from_columns(run_dir.read_space(), run_dir.fields)
        if check is not None:
            check(config, space)
        tables = Tables.from_groups(run_dir.iter_snapshot(columns=SNAPSHOT_CELL_COLUMNS), space)
        return cls(run_dir, config, space, tables)

    def history_count(self) -> np.ndarray:
        """Historical counts: the initial snapshot's ``count`` table, read one row group at a
        time (no second set of tables)."""
        count = np.zeros((self.space.n_states, self.space.n_products), dtype=np.int64)
        n_p = self.space.n_products
        for group in self.run_dir.iter_snapshot("initial", ("state_id", "product_id", "count")):
            state = group["state_id"].astype(np.int64)
            product = group["product_id"].astype(np.int64)
            if state.size and (
                state.min() < 0
                or state.max() >= self.space.n_states
                or product.min() < 0
                or product.max() >= n_p
            ):
                raise SnapshotError("initial snapshot: state_id or product_id out of range")
            count[state, product] = group["count"]
        return count

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
    seed: int | None = None,
    response: str | None = None,
    state_sampling: str | None = None,
    checkpoint_every: int | None = None,
    chunk: int = CHUNK,
    progress: Callable[[int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> SimulationSummary:
    """Simulate ``episodes`` more visits on a run directory and commit the result.

    Parameters
    ----------
    path : path
        Run directory (from ``rlreco prepare``).
    episodes : int
        Visits to simulate (>= 1).
    epsilon, response, state_sampling : optional
        Overrides of the run's config; they are recorded in the manifest and stay in force for
        later calls.
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
    """
    if episodes < 1:
        raise SimulationError(f"--episodes = {episodes}: expected an integer >= 1")

    def fits(config: RunConfig, space: StateSpace) -> None:
        model = response if response is not None else str(config.response.model)
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
    done = run.run_dir.episodes
    changes: dict[str, Any] = {}
    if epsilon is not None:
        changes["policy.epsilon"] = epsilon
    if response is not None:
        changes["response.model"] = response
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
    response_spec = resolve_response(run.run_dir, str(config.response.model))
    space, sampling = sampling_space(
        run.run_dir, run.space, config.simulation.state_sampling, response_spec
    )
    simulator = Simulator(
        space,
        run.tables,
        SimulationParams.from_config(config, response=response_spec, state_sampling=sampling),
        seed=config.simulation.seed,
        rng_state=manifest.get("rng_state"),
        episodes_done=done,
        metrics=run.metrics_frame(),
        history_count=run.history_count()
        if done and config.response.model == "popularity"
        else None,
    )
    log = list(manifest.get("simulations", []))
    committed = [done]

    def commit(summary: SimulationSummary | None = None) -> None:
        total = simulator.episodes_total
        if total == committed[0]:
            return
        frame = simulator.metrics_frame()
        entry = {
            "from": committed[0],
            "to": total,
            "epsilon": config.policy.epsilon,
            "response": config.response.model,
            "state_sampling": config.simulation.state_sampling,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        if summary is not None:
            entry["episodes_per_second"] = summary.episodes_per_second
        run.run_dir.commit(
            episodes=total,
            snapshot=snapshot_stream(run.tables, run.space),
            metrics={name: frame[name].to_numpy() for name in SCHEMAS["metrics"].names},
            updates={
                "config": config.to_dict(),
                "seed": config.simulation.seed,
                "rng_state": simulator.rng_state,
                "simulations": [*log, entry],
            },
        )
        log.append(entry)
        committed[0] = total

    chunk = max(1, min(chunk, every))

    def on_chunk(n: int) -> None:
        if simulator.episodes_total - committed[0] >= every:
            commit()
        if progress is not None:
            progress(n)

    with sigint_flag() as interrupted:
        summary = simulator.run(
            episodes,
            chunk=chunk,
            progress=on_chunk,
            should_stop=lambda: interrupted() or bool(should_stop and should_stop()),
        )
    commit(summary)
    return summary


def snapshot_stream(tables: Tables, space: StateSpace) -> CellStream:
    """The tables as a snapshot written one bounded row group at a time."""
    states = space.to_columns()["states"]
    return CellStream(
        groups=tables.iter_cells(space),
        states={name: states[name] for name in ("state", *space.fields)},
        product_codes=space.product_codes,
    )
