"""Sweeps: a grid of exploration settings x replicates, run in parallel, summarised with CIs.

Grid
----
A *setting* is (response model, slate size, policy, policy parameter): epsilon for
``eps-greedy``; ``c`` for ``decaying`` (epsilon_t = min(1, c / visits to the state)); ``tau``
for ``softmax``; ``c`` for ``ucb1``; ``sigma`` for ``thompson`` (the reward noise scale of the
Gaussian posterior). A *cell* is one replicate of a setting: ``episodes`` visits from the run
directory's latest snapshot, with per-block metrics (``blocks`` blocks per cell). Every cell
runs the engine's :class:`~rlreco.engine.simulation.Simulator` with the setting's policy.

Random streams
--------------
Cell ``(setting, replicate)`` runs a :class:`~rlreco.engine.simulation.Simulator` on the
stream key ``(streams.SWEEP, setting_id, replicate)`` under the sweep seed (the simulator
derives its state and visit streams from it), where ``setting_id`` is a 64-bit hash (SHA-256)
of the setting's *values*: the policy, the parameter's exact binary value, the slate size and
the response model (a truth table by the SHA-256 of its content). Grid coordinates are
deliberately not used: a cell keeps its numbers when the grid around it grows or is
reordered, so :func:`run_cell` re-runs any one cell alone and reproduces it bit for bit, and a
sweep directory reuses finished cells of any grid over the same base (run, snapshot, seed,
visits per cell, blocks).

Execution
---------
``workers=1`` runs the cells in the calling process; more workers use a process pool with the
``spawn`` start method (forking a process that holds threads, such as a progress bar's, can
deadlock), whose workers read the run directory themselves, in parallel; Ctrl-C terminates
the pool at once. ``scheduler="tcp://HOST:PORT"`` runs the cells on an existing Dask
distributed cluster (extra ``rlreco[dask]``): the driver scatters the run's columns to the
workers, so they need no shared file system (truth-table responses are read by path, though).
Every worker process builds the tables and each response model once and copies the tables per
cell; only the driver writes files. All paths run the same function on the same data, so the
results are identical whatever the execution; only wall-clock times differ.

Statistics
----------
Per setting, over replicates: mean and 95% Student-t interval of reward per visit, reward per
visit over the last 10% of blocks, click rate and buy rate (per shown product), share of
explored slots, cumulative expected regret and regret per visit (when the response model knows
the truth), and visits/s. The best setting per metric is compared with the runner-up by
Welch's t-test (two-sided, 5% level); see :mod:`rlreco.engine.statistics`.
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
import os
import signal
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rlreco.config import RunConfig, config_from_dict
from rlreco.engine import streams
from rlreco.engine.response import Response, build_response, truth_from_frame
from rlreco.engine.simulation import (
    DEFAULT_POLICY_PARAM,
    METRIC_SUMS,
    POLICY_PARAMS,
    SimulationParams,
    Simulator,
)
from rlreco.engine.state_space import StateSpace
from rlreco.engine.statistics import t_interval, t_quantile, welch_test
from rlreco.engine.tables import Tables
from rlreco.errors import ConfigError, RlrecoError, SnapshotError
from rlreco.io.run_dir import RunDir, file_sha256
from rlreco.io.sweep_dir import SweepDir
from rlreco.io.truth import read_truth_table

#: parameter values of the policies other than eps-greedy when the spec gives none
DEFAULT_POLICY_PARAMS: dict[str, tuple[float, ...]] = {
    policy: (value,) for policy, value in DEFAULT_POLICY_PARAM.items()
}
#: response models known by name; anything else must be a truth-table Parquet file
RESPONSE_NAMES = ("seed", "popularity")
#: columns of the per-block metric sums of a cell, in order
METRIC_COLUMNS: tuple[str, ...] = tuple(METRIC_SUMS or ())
#: columns identifying a setting, in order
SETTING_COLUMNS = ("policy", "param_name", "param", "slate_size", "response")
#: replicate-level metrics summarised per setting
SUMMARY_METRICS = (
    "reward_per_visit",
    "final_reward_per_visit",
    "click_rate",
    "buy_rate",
    "explored_share",
    "regret",
    "regret_per_visit",
    "visits_per_second",
)
#: metric -> whether larger is better, for the best-setting comparison
BEST_DIRECTION: dict[str, bool] = {
    "reward_per_visit": True,
    "final_reward_per_visit": True,
    "click_rate": True,
    "buy_rate": True,
    "regret": False,
}
#: share of the last blocks that "final" metrics average over
FINAL_SHARE = 0.1
LEVEL = 0.95
SIGNIFICANCE = 0.05
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
#: how long to wait for a Dask scheduler
CONNECT_TIMEOUT = "10s"


# ---- grid ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """One point of the grid.

    Attributes
    ----------
    policy : str
        A key of :data:`POLICY_PARAMS`.
    param : float
        The policy's parameter (epsilon for ``eps-greedy``).
    slate_size : int
    response : str
        ``seed``, ``popularity`` or the absolute path of a truth-table Parquet file.
    response_id : str
        ``response`` for named models, ``sha256:<hex>`` of the file for truth tables.
    """

    policy: str
    param: float
    slate_size: int
    response: str
    response_id: str

    @property
    def param_name(self) -> str:
        """Name of the policy's parameter."""
        return POLICY_PARAMS[self.policy]

    @property
    def label(self) -> str:
        """Readable one-line description."""
        return (
            f"{self.policy} {self.param_name}={self.param:g} n={self.slate_size} "
            f"{Path(self.response).name}"
        )

    @property
    def digest(self) -> str:
        """SHA-256 (hex) of the setting's values; independent of grid order and paths."""
        identity = {
            "policy": self.policy,
            "param": float(self.param).hex(),
            "slate_size": int(self.slate_size),
            "response": self.response_id,
        }
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()

    @property
    def stream_id(self) -> int:
        """64-bit stream key of the setting (first 16 hex digits of :attr:`digest`)."""
        return int(self.digest[:16], 16)

    def columns(self) -> dict[str, Any]:
        """Values of :data:`SETTING_COLUMNS`."""
        return {
            "policy": self.policy,
            "param_name": self.param_name,
            "param": float(self.param),
            "slate_size": int(self.slate_size),
            "response": self.response,
        }

    def cell_key(self, replicate: int) -> str:
        """File-name-safe key of one replicate, readable and unique."""
        response = Path(self.response).stem if self.response_id != self.response else self.response
        safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in response)
        return (
            f"{self.policy}-{self.param_name}{self.param:.6g}-n{self.slate_size}-{safe}"
            f"-{self.digest[:8]}-r{replicate:03d}"
        )


@dataclass(frozen=True)
class SweepSpec:
    """What to sweep.

    Attributes
    ----------
    epsilons : sequence of float
        Epsilon values of ``eps-greedy`` (each in [0, 1]); required when it is a policy.
    replicates : int
        Independent replicates per setting (>= 1; >= 2 for confidence intervals).
    episodes : int
        Visits per cell (>= 1).
    policies : sequence of str
        Keys of :data:`POLICY_PARAMS`.
    slate_sizes : sequence of int, optional
        Slate sizes; default the run's ``policy.slate_size``.
    responses : sequence of str, optional
        ``seed``, ``popularity`` or truth-table Parquet paths; default the run's
        ``response.model``.
    params : mapping of str to sequence of float
        Parameter values of the other policies; default :data:`DEFAULT_POLICY_PARAMS`.
    seed : int, optional
        Sweep seed (>= 0); default the run's ``simulation.seed``.
    blocks : int
        Metric blocks per cell (>= 1): the resolution of the learning curves.
    """

    epsilons: Sequence[float]
    replicates: int
    episodes: int
    policies: Sequence[str] = ("eps-greedy",)
    slate_sizes: Sequence[int] | None = None
    responses: Sequence[str] | None = None
    params: Mapping[str, Sequence[float]] = field(default_factory=dict)
    seed: int | None = None
    blocks: int = 100

    def validate(self) -> None:
        """Check the grid; raise a one-line :class:`ConfigError` naming the bad value."""
        if not self.policies:
            raise ConfigError("policies: empty list; allowed: " + ", ".join(POLICY_PARAMS))
        for policy in self.policies:
            if policy not in POLICY_PARAMS:
                raise ConfigError(
                    f"policies: unknown policy {policy!r}; allowed: " + ", ".join(POLICY_PARAMS)
                )
        _unique("policies", list(self.policies))
        if "eps-greedy" in self.policies:
            _check_values("epsilons", self.epsilons, lambda v: 0.0 <= v <= 1.0, "in [0, 1]")
        for policy, values in self.params.items():
            if policy not in POLICY_PARAMS or policy == "eps-greedy":
                raise ConfigError(
                    f"params: unknown policy {policy!r}; allowed: "
                    + ", ".join(p for p in POLICY_PARAMS if p != "eps-greedy")
                )
            name = f"{policy}.{POLICY_PARAMS[policy]}"
            if policy in ("softmax", "thompson"):
                _check_values(name, values, lambda v: 0.0 < v < math.inf, "finite and > 0")
            else:
                _check_values(name, values, lambda v: 0.0 <= v < math.inf, "finite and >= 0")
        _check_int("replicates", self.replicates, 1)
        _check_int("episodes", self.episodes, 1)
        _check_int("blocks", self.blocks, 1)
        if self.seed is not None:
            _check_int("seed", self.seed, 0)
        if self.slate_sizes is not None:
            if not self.slate_sizes:
                raise ConfigError("slate sizes: empty list; give at least one integer >= 1")
            for size in self.slate_sizes:
                _check_int("slate sizes", size, 1)
            _unique("slate sizes", list(self.slate_sizes))
        if self.responses is not None:
            if not self.responses:
                raise ConfigError("responses: empty list; give seed, popularity or a file")
            _unique("responses", list(self.responses))
            for response in self.responses:
                if response not in RESPONSE_NAMES and not Path(response).is_file():
                    raise ConfigError(
                        f"responses: {response!r} is neither seed, popularity nor an existing "
                        "truth-table file"
                    )

    def policy_values(self, policy: str) -> tuple[float, ...]:
        """Parameter values of one policy."""
        if policy == "eps-greedy":
            return tuple(float(e) for e in self.epsilons)
        return tuple(float(v) for v in self.params.get(policy, DEFAULT_POLICY_PARAMS[policy]))

    def settings(self, config: RunConfig) -> list[Setting]:
        """Settings in grid order (response, slate size, policy, parameter)."""
        responses = self.responses if self.responses is not None else (config.response.model,)
        slates = self.slate_sizes if self.slate_sizes is not None else (config.policy.slate_size,)
        out = []
        for response in responses:
            if response in RESPONSE_NAMES:
                name, ident = response, response
            else:
                path = Path(response).resolve()
                if not path.is_file():
                    raise ConfigError(f"responses: truth table {path} not found")
                name, ident = str(path), f"sha256:{file_sha256(path)}"
            for slate in slates:
                for policy in self.policies:
                    for value in self.policy_values(policy):
                        out.append(Setting(policy, float(value), int(slate), name, ident))
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible description."""
        return {
            "epsilons": [float(e) for e in self.epsilons],
            "replicates": int(self.replicates),
            "episodes": int(self.episodes),
            "policies": list(self.policies),
            "slate_sizes": None if self.slate_sizes is None else [int(s) for s in self.slate_sizes],
            "responses": None if self.responses is None else [str(r) for r in self.responses],
            "params": {k: [float(v) for v in vs] for k, vs in self.params.items()},
            "seed": self.seed,
            "blocks": int(self.blocks),
        }


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"{name}: {value!r} is not an integer >= {minimum}")


def _check_values(
    name: str, values: Sequence[float], ok: Callable[[float], bool], allowed: str
) -> None:
    if len(values) == 0:
        raise ConfigError(f"{name}: empty list; give at least one value {allowed}")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float, np.number)) or not ok(float(v)):
            raise ConfigError(f"{name}: {v!r} is not a number {allowed}")
    _unique(name, [float(v) for v in values])


def _unique(name: str, values: list[Any]) -> None:
    seen: set[Any] = set()
    for v in values:
        if v in seen:
            raise ConfigError(f"{name}: {v!r} appears twice")
        seen.add(v)


# ---- one cell --------------------------------------------------------------------------------


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
    """

    token: str
    space: dict[str, dict[str, np.ndarray]]
    snapshot: dict[str, np.ndarray]
    history: dict[str, np.ndarray] | None
    config: dict[str, Any]

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
            token=f"{manifest['run_id']}:{manifest['snapshot']}",
            space=run.read_space(),
            # per-row state names are redundant with state_id: shipping them to every worker
            # would triple the payload
            snapshot={k: v for k, v in snapshot.items() if k in PAYLOAD_SNAPSHOT_COLUMNS},
            history=history,
            config=manifest["config"],
        )


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

    Parameters
    ----------
    payload : RunPayload
    """

    def __init__(self, payload: RunPayload) -> None:
        self.space = StateSpace.from_columns(payload.space)
        self.tables = Tables.from_columns(payload.snapshot, self.space)
        self.config = config_from_dict(payload.config, source="run manifest")
        if payload.history is None:
            self.history_count = self.tables.count.copy()
        else:
            self.history_count = np.zeros(self.tables.shape, dtype=np.int64)
            h = payload.history
            self.history_count[h["state_id"], h["product_id"]] = h["count"]
        self._responses: dict[tuple[str, int], Response] = {}

    def params(self, task: CellTask) -> SimulationParams:
        """Simulation parameters of a cell: the run's configuration with the cell's setting."""
        setting = task.setting
        if setting.policy == "eps-greedy":
            policy: dict[str, Any] = {"epsilon": setting.param}
        else:
            policy = {"policy": setting.policy, "policy_param": setting.param}
        return SimulationParams.from_config(
            self.config,
            slate_size=setting.slate_size,
            response=setting.response,
            metrics_block=task.metrics_block,
            **policy,
        )

    def response(self, params: SimulationParams) -> Response:
        """The response model of some parameters, built on first use."""
        key = (params.response, params.slate_size)
        if key not in self._responses:
            self._responses[key] = build_response(
                params.response,
                self.space,
                rewards=params.rewards,
                slate_size=params.slate_size,
                click_probs=params.click_probs,
                buy_probs=params.buy_probs,
                history_count=self.history_count,
            )
        return self._responses[key]


_LOADED: dict[str, LoadedRun] = {}
_LOADED_LOCK = threading.Lock()


def load_payload(payload: RunPayload) -> LoadedRun:
    """Build (once per process and run) the state space and tables of a payload."""
    with _LOADED_LOCK:
        loaded = _LOADED.get(payload.token)
        if loaded is None:
            loaded = LoadedRun(payload)
            # load the compiled kernel now, so that no cell's timing includes it
            Simulator(loaded.space, loaded.tables.copy(), SimulationParams(slate_size=1)).run(1)
            _LOADED.clear()  # one run at a time: bounded memory in long-lived Dask workers
            _LOADED[payload.token] = loaded
    return loaded


def execute_cell(payload: RunPayload, task: CellTask) -> CellOutcome:
    """Simulate one cell from a copy of the run's tables (the function every worker runs)."""
    return simulate_cell(load_payload(payload), task)


def simulate_cell(loaded: LoadedRun, task: CellTask) -> CellOutcome:
    """Run one cell on a copy of the loaded tables, in its own random stream, with the engine's
    :class:`Simulator` (every policy)."""
    params = loaded.params(task)
    simulator = Simulator(
        loaded.space,
        loaded.tables.copy(),
        params,
        seed=task.seed,
        stream=task.stream,
        response=loaded.response(params),
    )
    summary = simulator.run(task.episodes)
    frame = simulator.metrics_frame()
    metrics = {name: frame[name].to_numpy() for name in METRIC_COLUMNS}
    return CellOutcome(task.key, metrics, summary.seconds)


# ---- execution -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SweepProgress:
    """Progress of a sweep, passed to the ``progress`` callback after every cell.

    Attributes
    ----------
    cells_total : int
        Cells of the grid.
    cells_done : int
        Cells finished, including those skipped because a previous run finished them.
    cells_skipped : int
        Cells found finished on disk at the start.
    cells_failed : int
        Cells that raised in this run.
    visits_done, visits_total : int
        Visits simulated so far / to simulate in this run (skipped cells excluded).
    seconds : float
        Wall time since the cells started.
    last_cell : str or None
        Key of the cell that just finished or failed.
    """

    cells_total: int
    cells_done: int
    cells_skipped: int
    cells_failed: int
    visits_done: int
    visits_total: int
    seconds: float
    last_cell: str | None

    @property
    def visits_per_second(self) -> float:
        """Visits simulated per wall-clock second in this run."""
        return self.visits_done / self.seconds if self.seconds > 0 else 0.0


ProgressCallback = Callable[[SweepProgress], None]


@dataclass(frozen=True)
class CellError:
    """Why a cell failed: one line for the summary and the full traceback for its error file."""

    line: str
    report: str

    @classmethod
    def from_exception(cls, exc: BaseException) -> CellError:
        """Describe an exception: a user error's own message, else its type and first line."""
        first = str(exc).splitlines()[0] if str(exc) else ""
        if isinstance(exc, RlrecoError) and first:
            line = first
        else:
            line = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
        return cls(line, "".join(traceback.format_exception(exc)))


#: a finished cell: its task and either its outcome or its error
Completed = tuple[CellTask, CellOutcome | None, CellError | None]


def default_workers() -> int:
    """Cores available to this process."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _attempt(loaded: LoadedRun, task: CellTask) -> Completed:
    """Simulate one cell; an exception becomes the cell's error (the other cells go on)."""
    try:
        return task, simulate_cell(loaded, task), None
    except Exception as exc:
        return task, None, CellError.from_exception(exc)


def _run_inline(payload: RunPayload, tasks: list[CellTask]) -> Iterator[Completed]:
    loaded = load_payload(payload)
    for task in tasks:
        yield _attempt(loaded, task)


#: what a pool worker loaded, or why it could not
_WORKER_RUN: list[LoadedRun | CellError] = []


def _init_worker(run_path: str, token: str) -> None:
    """Load the run in a pool worker, from the run directory itself.

    Reading the files costs each worker a fraction of a second, in parallel; receiving the
    driver's payload through the spawn pipe instead would start the workers one after another.
    Ctrl-C is the driver's to handle (it terminates the pool). A failure is kept and reported
    by every cell: a raising initializer would make the pool respawn workers forever.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        payload = RunPayload.read(RunDir.open(run_path))
        if payload.token != token:
            raise SnapshotError(f"{run_path}: the run directory changed while the sweep started")
        _WORKER_RUN.append(load_payload(payload))
    except Exception as exc:
        _WORKER_RUN.append(CellError.from_exception(exc))


def _pool_cell(task: CellTask) -> Completed:
    loaded = _WORKER_RUN[0]
    if isinstance(loaded, CellError):
        return task, None, loaded
    return _attempt(loaded, task)


def _run_pool(
    run_path: Path, payload: RunPayload, tasks: list[CellTask], workers: int
) -> Iterator[Completed]:
    context = multiprocessing.get_context("spawn")
    pool = context.Pool(workers, initializer=_init_worker, initargs=(str(run_path), payload.token))
    try:
        yield from pool.imap_unordered(_pool_cell, tasks, chunksize=1)
        pool.close()
    finally:
        # on Ctrl-C or any error: stop the running cells now (finished ones are saved)
        pool.terminate()
        pool.join()


def _run_dask(payload: RunPayload, tasks: list[CellTask], address: str) -> Iterator[Completed]:
    try:
        import distributed
    except ImportError:
        raise ConfigError(
            "--scheduler needs Dask distributed: pip install 'rlreco[dask]'"
        ) from None
    dask: Any = distributed  # untyped package
    try:
        client = dask.Client(address, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError, ValueError) as exc:
        raise ConfigError(f"cannot connect to Dask scheduler {address}: {exc}") from None
    try:
        shared = client.scatter(payload, broadcast=True)
        run = uuid.uuid4().hex[:8]
        futures = {
            client.submit(
                execute_cell, shared, task, key=f"rlreco-{run}-{task.key}", pure=False
            ): task
            for task in tasks
        }
        for future in dask.as_completed(list(futures)):
            task = futures.pop(future)
            if future.status == "finished":
                yield task, future.result(), None
            else:
                yield task, None, CellError.from_exception(future.exception())
            future.release()
    finally:
        client.close()


# ---- results and statistics ------------------------------------------------------------------


def replicate_metrics(results: pd.DataFrame) -> pd.DataFrame:
    """Replicate-level metrics: one row per cell (setting and replicate).

    Parameters
    ----------
    results : DataFrame
        Per-block results (setting columns, ``replicate``, ``block``, metric columns,
        ``cell_seconds``).
    """
    keys = [*SETTING_COLUMNS, "replicate"]
    results = results.sort_values([*keys, "block"], kind="stable")
    grouped = results.groupby(keys, sort=False, dropna=False)
    sums = grouped[list(METRIC_COLUMNS)].sum()
    n_blocks = grouped["block"].transform("size")
    rank_from_end = n_blocks - grouped.cumcount()
    tail = results[rank_from_end <= np.ceil(FINAL_SHARE * n_blocks)]
    tail_sums = tail.groupby(keys, sort=False, dropna=False)[["visits", "reward_sum"]].sum()
    seconds = grouped["cell_seconds"].first()
    out = pd.DataFrame(index=sums.index)
    visits = sums["visits"].astype(float)
    slots = sums["slots"].astype(float)
    out["visits"] = sums["visits"]
    out["reward_per_visit"] = sums["reward_sum"] / visits
    out["final_reward_per_visit"] = tail_sums["reward_sum"] / tail_sums["visits"].astype(float)
    out["click_rate"] = sums["clicks"] / slots
    out["buy_rate"] = sums["buys"] / slots
    out["explored_share"] = sums["explored"] / slots
    known = sums["regret_visits"] == sums["visits"]
    out["regret"] = sums["regret_sum"].where(known, np.nan)
    out["regret_per_visit"] = out["regret"] / visits
    out["visits_per_second"] = visits / seconds
    return out.reset_index()


def summarise(replicates: pd.DataFrame, settings: list[Setting]) -> pd.DataFrame:
    """Mean and 95% t-interval of every summary metric per setting, in grid order.

    Settings without any finished replicate get NaN statistics and ``replicates`` 0.
    """
    rows = []
    for setting in settings:
        cols = setting.columns()
        mask = np.ones(len(replicates), dtype=bool)
        for name in SETTING_COLUMNS:
            mask &= (replicates[name] == cols[name]).to_numpy()
        mine = replicates[mask]
        row: dict[str, Any] = {"label": setting.label, **cols, "replicates": len(mine)}
        for metric in SUMMARY_METRICS:
            ci = t_interval(mine[metric].to_numpy(dtype=float), LEVEL)
            row[f"{metric}_mean"] = ci.mean
            row[f"{metric}_low"] = ci.low
            row[f"{metric}_high"] = ci.high
        rows.append(row)
    return pd.DataFrame(rows)


def best_settings(summary: pd.DataFrame, replicates: pd.DataFrame) -> list[dict[str, Any]]:
    """Best setting per metric and whether it beats the runner-up significantly.

    Returns
    -------
    list of dict
        Per metric of :data:`BEST_DIRECTION` with a finite mean: ``metric``, ``higher_is_better``,
        ``best`` and ``runner_up`` (labels), their means, ``p_value`` (Welch, two-sided; None
        when a side has fewer than two replicates) and ``significant`` (p < 0.05).
    """
    out = []
    for metric, higher in BEST_DIRECTION.items():
        means = summary[f"{metric}_mean"].to_numpy(dtype=float)
        finite = np.flatnonzero(np.isfinite(means))
        if finite.size == 0:
            continue
        order = finite[np.argsort(-means[finite] if higher else means[finite], kind="stable")]
        best = summary.iloc[order[0]]
        entry: dict[str, Any] = {
            "metric": metric,
            "higher_is_better": higher,
            "best": best["label"],
            "best_mean": float(best[f"{metric}_mean"]),
            "runner_up": None,
            "runner_up_mean": None,
            "p_value": None,
            "significant": None,
        }
        if order.size > 1:
            second = summary.iloc[order[1]]
            p = welch_test(_values(replicates, best, metric), _values(replicates, second, metric))
            entry.update(
                runner_up=second["label"],
                runner_up_mean=float(second[f"{metric}_mean"]),
                p_value=None if math.isnan(p) else p,
                significant=None if math.isnan(p) else bool(p < SIGNIFICANCE),
            )
        out.append(entry)
    return out


def _values(replicates: pd.DataFrame, setting: pd.Series, metric: str) -> np.ndarray:
    mask = np.ones(len(replicates), dtype=bool)
    for name in SETTING_COLUMNS:
        mask &= (replicates[name] == setting[name]).to_numpy()
    return replicates.loc[mask, metric].to_numpy(dtype=float)


def learning_curves(results: pd.DataFrame) -> pd.DataFrame:
    """Per setting and block: mean and 95% interval over replicates of the block's reward per
    visit and of the cumulative expected regret.

    Parameters
    ----------
    results : DataFrame
        Per-block results with every cell's blocks in order (as :func:`run_sweep` writes them).

    Returns
    -------
    DataFrame
        Setting columns, ``metric`` (``reward_per_visit`` or ``regret``), ``block``,
        ``visits`` (visits simulated at the block's end), ``mean``, ``low``, ``high``, ``n``.
    """
    keys = [*SETTING_COLUMNS, "replicate"]
    frame = results.copy()
    grouped = frame.groupby(keys, sort=False, dropna=False)
    frame["visits_end"] = grouped["visits"].cumsum()
    frame["reward_per_visit"] = frame["reward_sum"] / frame["visits"].astype(float)
    known = grouped["regret_visits"].transform("sum") == grouped["visits"].transform("sum")
    frame["regret"] = grouped["regret_sum"].cumsum().where(known, np.nan)
    parts = []
    for metric in ("reward_per_visit", "regret"):
        stats = (
            frame.groupby([*SETTING_COLUMNS, "block"], sort=False, dropna=False)
            .agg(
                visits=("visits_end", "mean"),
                mean=(metric, "mean"),
                std=(metric, "std"),
                n=(metric, "count"),
            )
            .reset_index()
        )
        quantile = {
            n: t_quantile(0.5 + 0.5 * LEVEL, n - 1) if n >= 2 else math.nan
            for n in stats["n"].unique().tolist()
        }
        half = stats["n"].map(quantile) * stats["std"] / np.sqrt(stats["n"].astype(float))
        stats["low"] = stats["mean"] - half
        stats["high"] = stats["mean"] + half
        stats.insert(len(SETTING_COLUMNS), "metric", metric)
        parts.append(stats.drop(columns="std"))
    return pd.concat(parts, ignore_index=True)


# ---- the sweep -------------------------------------------------------------------------------


@dataclass
class SweepResult:
    """Outcome of :func:`run_sweep`.

    Attributes
    ----------
    out : Path
        The sweep directory.
    summary : DataFrame
        One row per setting (grid order): ``label``, setting columns, ``replicates`` (finished),
        and ``<metric>_mean``, ``<metric>_low``, ``<metric>_high`` per :data:`SUMMARY_METRICS`.
    results : DataFrame
        Per-block metrics of every finished cell (the content of ``results.parquet``).
    best : list of dict
        :func:`best_settings`.
    failures : list of dict
        ``{"cell", "label", "replicate", "error"}`` per failed cell.
    cells_total, cells_run, cells_skipped : int
        Cells of the grid, simulated now, and found finished on disk.
    seconds : float
        Wall time of this call.
    plots : list of Path
        PNG files written.
    """

    out: Path
    summary: pd.DataFrame
    results: pd.DataFrame
    best: list[dict[str, Any]]
    failures: list[dict[str, Any]]
    cells_total: int
    cells_run: int
    cells_skipped: int
    seconds: float
    plots: list[Path]

    def to_json(self) -> list[dict[str, Any]]:
        """One JSON-compatible object per setting: setting values, ``replicates``, and
        ``<metric>_mean`` / ``_low`` / ``_high`` (null where undefined)."""
        return [
            {key: _json_value(value) for key, value in row.items()}
            for row in self.summary.to_dict(orient="records")
        ]

    def document(self) -> dict[str, Any]:
        """Everything ``summary.json`` holds: settings, best per metric, failures, counts."""
        return {
            "settings": self.to_json(),
            "best": self.best,
            "failures": self.failures,
            "cells_total": self.cells_total,
            "cells_run": self.cells_run,
            "cells_skipped": self.cells_skipped,
            "seconds": round(self.seconds, 3),
            "plots": [str(p) for p in self.plots],
        }


def _json_value(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if not math.isfinite(float(value)) else float(value)
    return value


def sweep_base(run: RunDir, spec: SweepSpec, config: RunConfig) -> dict[str, Any]:
    """Values every cell's numbers depend on besides the cell itself."""
    return {
        "run_id": run.manifest["run_id"],
        "snapshot": run.manifest["snapshot"],
        "seed": spec.seed if spec.seed is not None else config.simulation.seed,
        "episodes": int(spec.episodes),
        "blocks": int(spec.blocks),
    }


def sweep_tasks(
    spec: SweepSpec, settings: list[Setting], base: Mapping[str, Any]
) -> list[CellTask]:
    """Every cell of the grid in grid order (settings, then replicates)."""
    block = -(-int(spec.episodes) // int(spec.blocks))
    return [
        CellTask(
            key=s.cell_key(r),
            setting=s,
            replicate=r,
            seed=int(base["seed"]),
            episodes=int(spec.episodes),
            metrics_block=block,
        )
        for s in settings
        for r in range(spec.replicates)
    ]


def check_settings(space: StateSpace, settings: list[Setting]) -> None:
    """Reject, before any cell runs, settings that every replicate would fail on.

    Raises
    ------
    ConfigError
        A slate size larger than the catalogue of a segment with states.
    DataError
        A truth table that does not fit the run (checked once here, not per cell).
    """
    sizes = np.diff(space.catalog_ptr)[np.unique(space.state_segment)]
    smallest = int(sizes.min()) if sizes.size else 0
    for slate in sorted({s.slate_size for s in settings}):
        if slate > smallest:
            raise ConfigError(
                f"slate sizes: {slate} exceeds the smallest segment catalogue ({smallest} products)"
            )
    for response in sorted({s.response for s in settings} - set(RESPONSE_NAMES)):
        truth_from_frame(space, read_truth_table(response), source=response)


def run_cell(run_dir: str | Path, spec: SweepSpec, setting: Setting, replicate: int) -> CellOutcome:
    """Re-run one cell of a sweep alone, in this process; reproduces the sweep's numbers."""
    spec.validate()
    if not 0 <= replicate < spec.replicates:
        raise ConfigError(f"replicate {replicate} is outside 0..{spec.replicates - 1}")
    run = RunDir.open(run_dir)
    config = config_from_dict(run.manifest["config"], source=f"{run.path}/manifest.json")
    tasks = sweep_tasks(spec, [setting], sweep_base(run, spec, config))
    return execute_cell(RunPayload.read(run), tasks[replicate])


def run_sweep(
    run_dir: str | Path,
    spec: SweepSpec,
    out: str | Path,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    progress: ProgressCallback | None = None,
    force: bool = False,
    plots: bool = True,
) -> SweepResult:
    """Run (or resume) a sweep and write its results, summary and plots into ``out``.

    Parameters
    ----------
    run_dir : path
        A prepared run directory; every cell starts from its latest snapshot.
    spec : SweepSpec
    out : path
        Sweep directory; finished cells found there are skipped.
    workers : int, optional
        Local worker processes (default: all cores; 1 runs in this process). Ignored with
        ``scheduler``.
    scheduler : str, optional
        Address of a Dask distributed scheduler (``tcp://HOST:PORT``).
    progress : callable, optional
        Called with a :class:`SweepProgress` at the start and after every cell.
    force : bool
        Discard an existing sweep directory whose base differs.
    plots : bool
        Write the PNG plots.

    Raises
    ------
    ConfigError
        Bad grid, foreign sweep directory, or unreachable scheduler.
    """
    start = time.perf_counter()
    spec.validate()
    if workers is not None:
        _check_int("workers", workers, 1)
    run = RunDir.open(run_dir)
    config = config_from_dict(run.manifest["config"], source=f"{run.path}/manifest.json")
    settings = spec.settings(config)
    payload = RunPayload.read(run)
    check_settings(StateSpace.from_columns(payload.space), settings)
    base = sweep_base(run, spec, config)
    sweep = SweepDir.prepare(out, base, {"run_dir": str(run.path), **spec.to_dict()}, force=force)
    tasks = sweep_tasks(spec, settings, base)
    todo = [t for t in tasks if not sweep.finished(t.key)]
    skipped = len(tasks) - len(todo)
    failures: list[dict[str, Any]] = []
    state = {"done": skipped, "visits": 0}
    cells_start = time.perf_counter()

    def report(last: str | None) -> None:
        if progress is not None:
            progress(
                SweepProgress(
                    cells_total=len(tasks),
                    cells_done=state["done"],
                    cells_skipped=skipped,
                    cells_failed=len(failures),
                    visits_done=state["visits"],
                    visits_total=len(todo) * int(spec.episodes),
                    seconds=time.perf_counter() - cells_start,
                    last_cell=last,
                )
            )

    report(None)
    if todo:
        if scheduler is not None:
            completed = _run_dask(payload, todo, scheduler)
        else:
            n = min(workers or default_workers(), len(todo))
            completed = (
                _run_inline(payload, todo) if n == 1 else _run_pool(run.path, payload, todo, n)
            )
        for task, outcome, error in completed:
            if outcome is not None:
                frame = pd.DataFrame({"block": np.arange(len(outcome.metrics["visits"]))})
                for name in METRIC_COLUMNS:
                    frame[name] = outcome.metrics[name]
                sweep.write_cell(
                    task.key,
                    frame,
                    {
                        "base": sweep.base,
                        "setting": task.setting.columns(),
                        "replicate": task.replicate,
                        "seconds": outcome.seconds,
                    },
                )
                state["visits"] += int(spec.episodes)
            elif error is not None:
                sweep.write_failure(task.key, error.report)
                failures.append(
                    {
                        "cell": task.key,
                        "label": task.setting.label,
                        "replicate": task.replicate,
                        "error": error.line,
                    }
                )
            state["done"] += 1
            report(task.key)
    results = _combine(sweep, tasks)
    sweep.write_results(results)
    replicates = (
        replicate_metrics(results)
        if len(results)
        else pd.DataFrame(columns=[*SETTING_COLUMNS, "replicate", *SUMMARY_METRICS])
    )
    summary = summarise(replicates, settings)
    best = best_settings(summary, replicates)
    written: list[Path] = []
    if plots and len(results):
        # matplotlib loads lazily: worker processes import this module and never plot
        from rlreco.io.plots import write_sweep_plots

        written = write_sweep_plots(learning_curves(results), summary, sweep.plots_dir)
    result = SweepResult(
        out=sweep.path,
        summary=summary,
        results=results,
        best=best,
        failures=failures,
        cells_total=len(tasks),
        cells_run=len(todo),
        cells_skipped=skipped,
        seconds=time.perf_counter() - start,
        plots=written,
    )
    sweep.write_summary(summary, result.document())
    return result


def _combine(sweep: SweepDir, tasks: list[CellTask]) -> pd.DataFrame:
    """Per-block results of every finished cell of the grid, in grid order."""
    frames = []
    for task in tasks:
        if not sweep.finished(task.key):
            continue
        frame, info = sweep.read_cell(task.key)
        head = pd.DataFrame(
            {name: [value] * len(frame) for name, value in task.setting.columns().items()}
        )
        head["replicate"] = task.replicate
        head["cell"] = task.key
        frame = pd.concat([head, frame.reset_index(drop=True)], axis=1)
        frame["cell_seconds"] = float(info["seconds"])
        frames.append(frame)
    if not frames:
        columns = [*SETTING_COLUMNS, "replicate", "cell", "block", *METRIC_COLUMNS, "cell_seconds"]
        return pd.DataFrame({c: [] for c in columns})
    return pd.concat(frames, ignore_index=True)
