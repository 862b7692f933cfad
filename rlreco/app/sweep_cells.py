"""One cell of a sweep: a setting's replicate simulated from the run's starting tables.

A local sweep loads the run once (:func:`load_run`), loads the visit loops
(:func:`start_warm_up`, in a thread meanwhile) and builds the grid's response models once
(:meth:`LoadedRun.build_responses`; ``popularity`` is stored in the run directory for the next
sweep), and runs its cells on the loaded tables and their top-n index, resetting the rows each
cell changed; its forked workers inherit all of it (and change buffers of their own). Spawned
and Dask workers build the same once per process (:func:`load_run`, :func:`load_payload`).
The simulator and its kernels (numba) are imported where a run is loaded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from rlreco.app.cell_buffers import CellBuffers
from rlreco.app.run_tables import load_counts, load_known_cells
from rlreco.app.sweep_grid import Setting
from rlreco.app.truth import load_truth_tables
from rlreco.config import RunConfig, config_from_dict, is_schedule, parse_schedule
from rlreco.engine import streams
from rlreco.engine.response import (
    POPULARITY_VERSION,
    Response,
    build_response,
    known_response,
)
from rlreco.engine.simulation_params import SimulationParams
from rlreco.engine.state_space import StateSpace
from rlreco.engine.sweep_statistics import METRIC_COLUMNS
from rlreco.engine.tables import Tables, known_counts
from rlreco.errors import SimulationError, SnapshotError
from rlreco.io.array_cache import read_arrays, write_arrays
from rlreco.io.parquet_tables import reused_heap
from rlreco.io.run_dir import RunDir
from rlreco.schema import TRUTH_DTYPE

if TYPE_CHECKING:
    from rlreco.engine.warmup import Warmup

#: snapshot columns :meth:`Tables.from_columns` reads
PAYLOAD_SNAPSHOT_COLUMNS = (
    "state_id",
    "product_id",
    "product_code",
    "value",
    "reward",
    "count",
    "reco_count",
)


@dataclass(frozen=True)
class RunPayload:
    """Everything a worker needs from the run directory, as plain columns.

    Attributes
    ----------
    token : str
        Run id and snapshot name: the key of the worker's cache of built tables.
    space : dict
        ``RunDir.read_space()`` columns.
    snapshot : dict
        The latest snapshot's columns that :meth:`Tables.from_columns` reads.
    history : dict or None
        ``state_id``, ``product_id`` and ``count`` of the initial snapshot (the historical
        counts the ``popularity`` model derives from) when the latest snapshot is a later one.
    config : dict
        The run's configuration (``RunConfig.to_dict()``).
    state_weights : dict
        Per held-out truth file (path as a string; ``""`` for any other response): the state
        weights of ``holdout`` state sampling (empty for a run prepared without a holdout).
    """

    token: str
    space: dict[str, dict[str, np.ndarray]]
    snapshot: dict[str, np.ndarray]
    history: dict[str, np.ndarray] | None
    config: dict[str, Any]
    state_weights: dict[str, np.ndarray]

    @classmethod
    def read(cls, run: RunDir) -> RunPayload:
        """Read a run directory's state space, latest snapshot and historical counts."""
        manifest = run.manifest
        history = None
        if manifest["snapshot"] != manifest["initial_snapshot"]:
            initial = run.read_snapshot("initial")
            history = {k: initial[k] for k in ("state_id", "product_id", "count")}
        snapshot = run.read_snapshot()
        return cls(
            token=run_token(manifest),
            space=run.read_space(),
            # per-row state names are redundant with state_id: shipping them to every worker
            # would triple the payload
            snapshot={k: v for k, v in snapshot.items() if k in PAYLOAD_SNAPSHOT_COLUMNS},
            history=history,
            config=manifest["config"],
            state_weights=_holdout_weights(run),
        )


def run_token(manifest: dict[str, Any]) -> str:
    """Run id and latest snapshot of a run directory's manifest: what its cells start from."""
    return f"{manifest['run_id']}:{manifest['snapshot']}"


def _holdout_weights(run: RunDir) -> dict[str, np.ndarray]:
    """State weights of every held-out truth, by truth file (``""``: the ``all`` truth's)."""
    weights = {str(run.path / t["file"]): run.read_state_weights(t["name"]) for t in run.truths()}
    if weights:
        weights[""] = run.read_state_weights("all")
    return weights


@dataclass(frozen=True)
class CellTask:
    """One cell to simulate: a setting's replicate and the sweep's base values."""

    key: str
    setting: Setting
    replicate: int
    seed: int
    episodes: int
    metrics_block: int

    @property
    def stream(self) -> tuple[int, ...]:
        """Stream key of the cell under the sweep seed."""
        return (streams.SWEEP, self.setting.stream_id, self.replicate)


@dataclass(frozen=True)
class CellOutcome:
    """Per-block metric sums of one simulated cell and its kernel time in seconds."""

    key: str
    metrics: dict[str, np.ndarray]
    seconds: float


class LoadedRun:
    """A run's state space, starting tables and configuration, built once per process,
    with the response models its cells have used (built once per model and slate size).

    Its cells run on :attr:`buffers` (:class:`~rlreco.app.cell_buffers.CellBuffers`): the
    loaded tables are the starting tables whenever no cell of this process runs on them.

    Parameters
    ----------
    payload : RunPayload
    """

    def __init__(self, payload: RunPayload) -> None:
        space = StateSpace.from_columns(payload.space)
        tables = Tables.from_columns(payload.snapshot, space)
        history_count = None
        if payload.history is not None:
            history_count = np.zeros(tables.shape, dtype=np.int64)
            h = payload.history
            history_count[h["state_id"], h["product_id"]] = h["count"]
        config = config_from_dict(payload.config, source="run manifest")
        self._setup(space, tables, config, history_count, payload.state_weights)

    @classmethod
    def read(cls, path: str | Path, *, dense: bool = True) -> tuple[str, LoadedRun]:
        """Load a run straight from its directory, one snapshot row group at a time (what a
        pool worker does; the same tables as ``LoadedRun(RunPayload.read(run_dir))``), with
        its :func:`run_token`; the run's tables are stored for the next sweep.

        ``dense=False`` skips the dense tables where the run's cache holds their known cells:
        what a process that forks workers for the cells does (each builds its own buffer,
        :mod:`rlreco.app.cell_buffers`); :attr:`tables` builds them on first use.
        """
        from rlreco.app.simulate import Run

        run_dir, config, space = Run.open(path)
        tables, known = load_known_cells(run_dir, space, store=True)
        if tables is None and dense:
            tables = Tables.from_known_cells(known, space.n_states, space.n_products)
        manifest = run_dir.manifest
        history_count = (
            None
            if manifest["snapshot"] == manifest["initial_snapshot"]
            else load_counts(run_dir, space, store=True)
        )
        loaded = cls.__new__(cls)
        weights = _holdout_weights(run_dir)
        loaded._setup(space, tables, config, history_count, weights, known)
        # what the popularity model is computed from besides the parameters: the run's space
        # and initial counts, fixed for a run id
        loaded._cache = (
            run_dir.path,
            {"run_id": manifest["run_id"], "initial_snapshot": manifest["initial_snapshot"]},
        )
        return run_token(manifest), loaded

    def _setup(
        self,
        space: StateSpace,
        tables: Tables | None,
        config: RunConfig,
        history_count: np.ndarray | None,
        state_weights: dict[str, np.ndarray],
        known: dict[str, np.ndarray] | None = None,
    ) -> None:
        self.space = space
        self.config = config
        if known is None:
            known = cast(Tables, tables).known_cells()
        # the buffers this process's cells change, reset from the starting tables' known cells
        self.buffers = CellBuffers(known, (space.n_states, space.n_products), tables)
        # None: the starting tables' counts (built from the known cells on first use)
        self._history_count = history_count
        self._responses: dict[tuple[str, int], Response] = {}
        self._state_weights = state_weights
        # run directory and run inputs of the stored popularity models (None: not stored)
        self._cache: tuple[Path, dict[str, Any]] | None = None

    @property
    def tables(self) -> Tables:
        """The run's starting tables (built from the known cells on first use by a process that
        loaded without them; the starting tables whenever no cell of this process runs)."""
        return self.buffers.loaded

    def build_responses(self, tasks: list[CellTask]) -> None:
        """Build (or read, see :meth:`response`) the response model of every task's parameters,
        once, before any cell runs (and before worker processes are forked from this one, which
        then share them). A failure is left for the cells to meet again and report, one cell at
        a time (as if nothing had been built)."""
        wanted: dict[tuple[str, int], SimulationParams] = {}
        for task in tasks:
            params = self.params(task)
            wanted.setdefault((params.response, params.slate_size), params)
        for params in wanted.values():
            with contextlib.suppress(Exception):
                self.response(params)

    @property
    def history_count(self) -> np.ndarray:
        """Historical counts (the initial snapshot's ``count``), int64 (n_states, n_products):
        what the ``popularity`` model derives from."""
        if self._history_count is None:
            self._history_count = known_counts(self.buffers.known, *self.buffers.shape)
        return self._history_count

    def params(self, task: CellTask) -> SimulationParams:
        """Simulation parameters of a cell: the run's configuration with the cell's setting."""
        setting = task.setting
        sampling = self.config.simulation.state_sampling
        # the cell's policy, whatever the run's config names
        policy: dict[str, Any] = {"policy": setting.policy, "policy_param": None}
        if setting.policy == "eps-greedy":
            policy["epsilon"] = setting.param
        else:
            policy["policy_param"] = setting.param
        return SimulationParams.from_config(
            self.config,
            slate_size=setting.slate_size,
            response=setting.response,
            metrics_block=task.metrics_block,
            step_size=setting.step_size,
            state_sampling="empirical" if sampling == "holdout" else sampling,
            **policy,
        )

    def sampling_space(self, task: CellTask) -> StateSpace:
        """The state space whose weights drive a cell's state sampling (``holdout``: the
        held-out rows of the cell's truth, see :mod:`rlreco.app.truth`)."""
        if self.config.simulation.state_sampling != "holdout":
            return self.space
        weights = self._state_weights
        if not weights:
            raise SimulationError(
                "state sampling holdout: the run was prepared without --holdout; "
                "use uniform or empirical"
            )
        weight = weights.get(task.setting.response, weights[""])
        return dataclasses.replace(self.space, state_weight=weight)

    def phase_weights(self, task: CellTask) -> np.ndarray | None:
        """Per-phase state weights of a schedule under ``holdout`` sampling (each phase's
        truth's held-out rows; see :func:`rlreco.app.truth.phase_weights`), else None."""
        response = task.setting.response
        if self.config.simulation.state_sampling != "holdout" or not is_schedule(response):
            return None
        self.sampling_space(task)  # a run without a holdout: one line
        weights = self._state_weights
        phases = parse_schedule(response, "--schedule")
        return np.stack([weights.get(phase, weights[""]) for _, phase in phases])

    def response(self, params: SimulationParams) -> Response:
        """The response model of some parameters, built on first use."""
        key = (params.response, params.slate_size)
        if key not in self._responses:
            stored = self._stored_popularity(params)
            if stored is not None:
                self._responses[key] = stored
                return stored
            with reused_heap():
                self._responses[key] = build_response(
                    params.response,
                    self.space,
                    rewards=params.rewards,
                    slate_size=params.slate_size,
                    click_probs=params.click_probs,
                    buy_probs=params.buy_probs,
                    history_count=self.history_count,
                    truth_tables=load_truth_tables(params.response),
                )
            self._store_popularity(params, self._responses[key])
        return self._responses[key]

    def _popularity_inputs(self, params: SimulationParams) -> tuple[Path, dict[str, Any]] | None:
        """The run directory of a stored ``popularity`` model and everything its arrays are
        computed from (None: not stored)."""
        if self._cache is None or params.response != "popularity":
            return None
        return self._cache[0], {
            **self._cache[1],
            "version": POPULARITY_VERSION,
            "shape": list(self.buffers.shape),
            "slate_size": int(params.slate_size),
            "rewards": [float(r).hex() for r in params.rewards],
            "click_probs": [float(p).hex() for p in params.click_probs],
            "buy_probs": [float(p).hex() for p in params.buy_probs],
        }

    def _stored_popularity(self, params: SimulationParams) -> Response | None:
        """The ``popularity`` model of some parameters as an earlier sweep stored it in the run
        directory (:mod:`rlreco.io.array_cache`), or None."""
        stored = self._popularity_inputs(params)
        if stored is None:
            return None
        run_path, inputs = stored
        expected = {
            "truth": (self.buffers.shape, np.dtype(TRUTH_DTYPE)),
            "best_mu": ((self.space.n_states,), np.dtype(np.float64)),
        }
        arrays = read_arrays(run_path, "popularity", inputs, expected)
        if arrays is None:
            return None
        return known_response(
            params.response,
            arrays["truth"],
            arrays["best_mu"],
            rewards=params.rewards,
            click_probs=params.click_probs,
            buy_probs=params.buy_probs,
        )

    def _store_popularity(self, params: SimulationParams, response: Response) -> None:
        stored = self._popularity_inputs(params)
        if stored is not None:
            run_path, inputs = stored
            arrays = {"truth": response.truth[0], "best_mu": response.best_mu[0]}
            write_arrays(run_path, "popularity", inputs, arrays)


_LOADED: dict[str, LoadedRun] = {}
_LOADED_LOCK = threading.Lock()


def load_payload(payload: RunPayload) -> LoadedRun:
    """Build (once per process and run) the state space and tables of a payload."""
    with _LOADED_LOCK:
        loaded = _LOADED.get(payload.token)
        if loaded is None:
            loaded = LoadedRun(payload)
            _LOADED.clear()  # one run at a time: bounded memory in long-lived Dask workers
            _LOADED[payload.token] = loaded
    return loaded


def load_run(path: str | Path, token: str, *, dense: bool = True) -> LoadedRun:
    """:func:`load_payload` straight from the run directory (one snapshot row group at a time,
    no payload of columns in between: what the sweep process does when it runs the cells);
    ``dense`` as in :meth:`LoadedRun.read`. The run stays loaded for the next sweep of this
    process."""
    with _LOADED_LOCK:
        loaded = _LOADED.get(token)
        if loaded is None:
            found, loaded = LoadedRun.read(path, dense=dense)
            if found != token:
                raise SnapshotError(f"{path}: the run directory changed while the sweep started")
            _LOADED.clear()
            _LOADED[token] = loaded
    return loaded


def execute_cell(payload: RunPayload, task: CellTask) -> CellOutcome:
    """Simulate one cell from a copy of the run's tables (the function every worker runs)."""
    return simulate_cell(load_payload(payload), task)


def simulate_cell(loaded: LoadedRun, task: CellTask) -> CellOutcome:
    """Run one cell on a copy of the loaded tables, in its own random stream, with the engine's
    :class:`Simulator` (every policy)."""
    from rlreco.engine.simulation import Simulator

    params = loaded.params(task)
    warm_up((params.policy,))
    with loaded.buffers.cell_tables() as cell:
        simulator = Simulator(
            loaded.sampling_space(task),
            cell.tables,
            params,
            seed=task.seed,
            stream=task.stream,
            response=loaded.response(params),
            phase_weights=loaded.phase_weights(task),
            index=cell.index,
            shown_per_state=cell.shown_per_state,
        )
        summary = simulator.run(task.episodes)
        cell.changed = loaded.buffers.changed_rows(simulator.shown_per_state)
    sums = simulator.metric_sums()
    metrics = {name: sums[name] for name in METRIC_COLUMNS}
    return CellOutcome(task.key, metrics, summary.seconds)


#: policies whose visit loops this process has loaded (kernels are per process, not per run)
_WARM: set[str] = set()


def warm_up(policies: tuple[str, ...]) -> Warmup | None:
    """Load (or compile) the visit loops of ``policies`` not loaded yet in this process, and
    with the first of them the kernel that resets a cell's tables; None if all were loaded."""
    new = tuple(p for p in dict.fromkeys(policies) if p not in _WARM)
    if not new:
        return None
    from rlreco.engine.warmup import warm_up_cell_reset, warm_up_simulation

    outcome = warm_up_simulation(new)
    if not _WARM:
        outcome += warm_up_cell_reset()
    _WARM.update(new)
    return outcome


class WarmUpThread:
    """The visit loops of a sweep's policies loading in a thread (:func:`start_warm_up`)."""

    def __init__(self, policies: tuple[str, ...]) -> None:
        self.outcome: Warmup | None = None
        self._thread = threading.Thread(
            target=self._load, args=(policies,), name="rlreco-warm-up", daemon=True
        )
        self._thread.start()

    def _load(self, policies: tuple[str, ...]) -> None:
        with contextlib.suppress(Exception):  # left for the cells to meet again
            self.outcome = warm_up(policies)

    def join(self) -> Warmup | None:
        """Wait for the loading; what it did (None if it loaded nothing new, or failed)."""
        self._thread.join()
        return self.outcome


def start_warm_up(tasks: list[CellTask]) -> WarmUpThread:
    """Load the visit loops of the tasks' policies in a thread (numba's loading holds the GIL
    for much of it, reading the run and building response models do not); join it before
    forking. A failure is left for the cells to meet again.
    """
    # imported by the calling thread, not both: the reader of the run imports the same modules
    import rlreco.engine.warmup  # noqa: F401

    return WarmUpThread(tuple(dict.fromkeys(t.setting.policy for t in tasks)))
