"""``evaluate``: off-policy estimates of epsilon-greedy targets on a visit log.

:func:`evaluate_log` is what ``rlreco evaluate`` calls. It reads a log (one of rlreco's, or
one written elsewhere through a :class:`~rlreco.io.foreign_log.ColumnMap`), maps its states and
products to the run's, checks it against the run, and estimates every (estimator, epsilon) of
the grid with :mod:`rlreco.engine.evaluation`. With ``out`` it writes, like a sweep directory,
``summary.parquet`` and ``summary.json`` (one row per estimator and target) and ``plots/``;
every file is written to a temporary name and renamed, and only after every check has passed.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from rlreco.app.simulate import Run
from rlreco.engine.evaluation import (
    ESTIMATORS,
    METRICS,
    REWARD_MODELS,
    Estimate,
    LoggedVisits,
    estimate_dr,
    estimate_ips,
    estimate_snips,
    importance_weights,
)
from rlreco.engine.kernels.estimators import (
    accumulate_cells_nb,
    correct_residuals_nb,
    expect_slots_nb,
    rank_top_nb,
    replay_log_nb,
    sum_weighted_nb,
    weigh_slots_nb,
)
from rlreco.engine.replay import estimate_replay, uniform_acceptance
from rlreco.engine.state_space import StateSpace
from rlreco.engine.tables import Tables
from rlreco.engine.target_slate import DR_MAX_SLATE, Catalogues
from rlreco.engine.warmup import Warmup, timed_first_use, tiny_run
from rlreco.errors import ConfigError, DataError, shown
from rlreco.io.atomic_files import atomic_path, write_json
from rlreco.io.foreign_log import ColumnMap, read_foreign_log
from rlreco.io.log_slots import LogSlots
from rlreco.io.visit_log import is_rlreco_log, read_visit_log
from rlreco.schema import LOG_DTYPE

#: target policies that can be evaluated offline
TARGET_POLICIES = ("eps-greedy",)
#: estimators that need the logging propensities
WEIGHTED = ("ips", "snips", "dr")


@dataclass(frozen=True)
class EvaluationSpec:
    """The grid of an evaluation.

    Attributes
    ----------
    epsilons : tuple of float
        Targets: the run's tables acted on epsilon-greedily with each epsilon.
    policies : tuple of str
        Target policies (:data:`TARGET_POLICIES`).
    estimators : tuple of str, optional
        Subset of :data:`~rlreco.engine.evaluation.ESTIMATORS`; None: every one the log allows.
    clip : float
        Weight cap of ``ips``, ``snips`` and ``dr`` (``inf``: none).
    reward_model : str
        ``dr``'s reward model: ``fitted`` or ``values``.
    snapshot : str
        The run's ``latest`` or ``initial`` tables.
    seed : int, optional
        Seed of the replay targets' draws (default: the run's seed).
    """

    epsilons: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2)
    policies: tuple[str, ...] = ("eps-greedy",)
    estimators: tuple[str, ...] | None = None
    clip: float = math.inf
    reward_model: str = "fitted"
    snapshot: str = "latest"
    seed: int | None = None

    def validate(self) -> None:
        """One-line :class:`ConfigError` for a bad grid."""
        if not self.epsilons:
            raise ConfigError("--epsilons: expected at least one epsilon")
        for eps in self.epsilons:
            if not 0.0 <= eps <= 1.0:
                raise ConfigError(f"--epsilons: {eps!r} is outside [0, 1]")
        for policy in self.policies:
            if policy not in TARGET_POLICIES:
                raise ConfigError(
                    f"--policies: {policy!r} cannot be evaluated offline; expected "
                    + ", ".join(TARGET_POLICIES)
                )
        for name in self.estimators or ():
            if name not in ESTIMATORS:
                raise ConfigError(f"--estimators: {name!r} is not one of {', '.join(ESTIMATORS)}")
        if not self.clip > 0.0:
            raise ConfigError(f"--clip {self.clip!r}: expected a number > 0")
        if self.reward_model not in REWARD_MODELS:
            raise ConfigError(f"--reward-model {self.reward_model!r}: expected fitted or values")
        if self.snapshot not in ("latest", "initial"):
            raise ConfigError(f"--snapshot {self.snapshot!r}: expected latest or initial")


@dataclass
class EvaluationResult:
    """Outcome of :func:`evaluate_log`.

    Attributes
    ----------
    summary : DataFrame
        One row per (estimator, policy, epsilon): :meth:`Estimate.row` columns plus ``policy``.
    log : dict
        What was read: source, visits, slots, states, products, logging policy, run id,
        whether propensities and outcomes are known, and replay's expected acceptance rate
        under uniform logging.
    skipped : list of str
        Estimators left out, with the reason.
    out : Path or None
    plots : list of Path
    seconds : float
    warmup : Warmup or None
        The estimators' first run, on a tiny log (:func:`warm_up_estimators`):
        ``compiled`` when it compiled their kernels (a machine's first evaluation).
    """

    summary: pd.DataFrame
    log: dict[str, Any]
    skipped: list[str]
    out: Path | None = None
    plots: list[Path] = field(default_factory=list)
    seconds: float = 0.0
    warmup: Warmup | None = None

    def rows(self) -> list[dict[str, Any]]:
        """JSON-compatible rows of the summary (NaN and inf become null)."""
        return [
            {key: _json_value(value) for key, value in row.items()}
            for row in self.summary.to_dict(orient="records")
        ]

    def document(self) -> dict[str, Any]:
        """Everything ``summary.json`` holds."""
        return {
            "log": self.log,
            "settings": self.rows(),
            "skipped": self.skipped,
            "out": None if self.out is None else str(self.out),
            "plots": [str(p) for p in self.plots],
            "seconds": round(self.seconds, 3),
        }


def _json_value(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(float(value)) else None
    return value


def read_log(path: str | Path, columns: ColumnMap | None, run: Run) -> LogSlots:
    """Read a log: rlreco's layout, or a foreign one through ``columns`` (default: the map a
    log-derived run was prepared with)."""
    if columns is None and is_rlreco_log(path):
        return read_visit_log(path)
    if columns is None:
        stored = (run.run_dir.manifest.get("log") or {}).get("columns")
        if not isinstance(stored, dict):
            raise DataError(
                f"{path}: not an rlreco visit log; map its columns with --context-cols, "
                "--item-col and --reward-col or --click-col"
            )
        columns = ColumnMap.from_dict(stored)
    return read_foreign_log(path, columns)


def logged_visits(log: LogSlots, space: StateSpace, slate_size: int) -> LoggedVisits:
    """Map a log's names to the run's ids and check it fits the run.

    Raises
    ------
    DataError
        A state or product that is not in the run, or a position beyond its slate size
        (one line naming the log and the row).
    """
    state_of = space.state_index()
    product_of = space.product_index()
    state_map = np.array([state_of.get(s, -1) for s in log.state_names.tolist()], dtype=np.int64)
    product_map = np.array(
        [product_of.get(p, -1) for p in log.product_codes.tolist()], dtype=np.int64
    )
    state = state_map[log.state_index]
    product = product_map[log.product_index]
    for ids, names, index, what, example in (
        (state, log.state_names, log.state_index, "state", space.state_ids[0]),
        (product, log.product_codes, log.product_index, "product", space.product_codes[0]),
    ):
        unknown = np.flatnonzero(ids < 0)
        if unknown.size:
            i = int(unknown[np.argmin(log.row[unknown])])
            raise DataError(
                f"{log.source}: row {int(log.row[i])}: {what} {shown(str(names[index[i]]))} is not "
                f"in the run (its {what}s look like {shown(str(example))})"
            )
    beyond = np.flatnonzero(log.position >= slate_size)
    if beyond.size:
        i = int(beyond[np.argmin(log.row[beyond])])
        raise DataError(
            f"{log.source}: row {int(log.row[i])}: position {int(log.position[i])} exceeds the "
            f"run's slate size {slate_size} (positions are 0..{slate_size - 1})"
        )
    slots = np.zeros(log.n_slots, dtype=LOG_DTYPE)
    slots["visit"] = log.visit
    slots["state"] = state
    slots["position"] = log.position
    slots["product"] = product
    slots["outcome"] = log.outcome
    slots["reward"] = log.reward
    slots["propensity"] = log.propensity
    return LoggedVisits.from_slots(slots, buys_known=log.buys_known)


def evaluate_log(
    log_path: str | Path,
    run_dir: str | Path,
    spec: EvaluationSpec,
    *,
    columns: ColumnMap | None = None,
    out: str | Path | None = None,
    plots: bool = True,
) -> EvaluationResult:
    """Estimate every target of ``spec`` on a log, against the run's state space and tables.

    Raises
    ------
    ConfigError
        A bad grid, or an estimator the log cannot serve (asked for explicitly).
    DataError
        A bad log (see :mod:`rlreco.io.visit_log` and :func:`logged_visits`).
    """
    start = time.perf_counter()
    spec.validate()
    result = evaluate_run(log_path, Run.load(run_dir), spec, columns=columns)
    if out is not None:
        result.out = Path(out)
        result.plots = _write(result, Path(out), plots)
    result.seconds = time.perf_counter() - start
    if out is not None:
        write_json(Path(out) / "summary.json", result.document())
    return result


def evaluate_run(
    log_path: str | Path, run: Run, spec: EvaluationSpec, *, columns: ColumnMap | None = None
) -> EvaluationResult:
    """:func:`evaluate_log` on a loaded run, writing nothing (``out`` None, ``seconds`` 0).

    Raises
    ------
    ConfigError, DataError
        As :func:`evaluate_log`.
    """
    spec.validate()
    log = read_log(log_path, columns, run)
    slate_size = run.config.policy.slate_size
    visits = logged_visits(log, run.space, slate_size)
    catalogues = Catalogues.of(run.space)
    tables = (
        run.tables
        if spec.snapshot == "latest"
        else Tables.from_columns(run.run_dir.read_snapshot("initial"), run.space)
    )
    estimators, skipped = _applicable(spec, visits, str(log_path))
    seed = spec.seed if spec.seed is not None else run.config.simulation.seed
    warmup = warm_up_estimators(spec, estimators, seed)
    # extreme (finite) rewards or propensities overflow to non-finite estimates (shown as
    # such, null in JSON), which is the arithmetic's answer rather than an error
    with np.errstate(over="ignore", invalid="ignore"):
        estimates = _estimate_grid(spec, visits, catalogues, tables, estimators, seed)
        acceptance = uniform_acceptance(visits, catalogues)
    summary = pd.DataFrame([{"policy": policy, **estimate.row()} for policy, estimate in estimates])
    info = {
        "source": log.source,
        "visits": visits.n_visits,
        "slots": visits.n_slots,
        "states": int(np.unique(visits.slots["state"]).size),
        "products": int(np.unique(visits.slots["product"]).size),
        "logging_policy": log.policy,
        "log_run_id": log.run_id,
        "run_dir": str(run.run_dir.path),
        "snapshot": run.run_dir.manifest[
            "snapshot" if spec.snapshot == "latest" else "initial_snapshot"
        ],
        "propensities_known": visits.propensities_known,
        "outcomes_known": visits.outcomes_known,
        "uniform_acceptance": acceptance,
        "clip": None if math.isinf(spec.clip) else spec.clip,
        "reward_model": spec.reward_model,
        "seed": seed,
    }
    return EvaluationResult(summary=summary, log=info, skipped=skipped, warmup=warmup)


#: the estimators' compiled kernels (all that an evaluation compiles)
ESTIMATOR_KERNELS = (
    rank_top_nb,
    weigh_slots_nb,
    expect_slots_nb,
    replay_log_nb,
    sum_weighted_nb,
    accumulate_cells_nb,
    correct_residuals_nb,
)


def warm_up_estimators(spec: EvaluationSpec, estimators: list[str], seed: int) -> Warmup:
    """Run the grid's estimators on a two-visit log of :func:`~rlreco.engine.warmup.tiny_run`,
    whose arrays have a real log's and run's types, timed apart: a machine's first evaluation
    compiles the estimators' kernels here, and the real estimates compile nothing more. A
    failure is left for the real estimates to raise."""
    space, tables = tiny_run()
    slots = np.zeros(4, dtype=LOG_DTYPE)
    slots["visit"] = [0, 0, 1, 1]
    slots["state"] = [0, 0, 1, 1]
    slots["position"] = [0, 1, 0, 1]
    slots["product"] = [0, 1, 2, 0]
    slots["outcome"] = [1, 0, 2, 0]
    slots["reward"] = [1.0, -1.0, 5.0, -1.0]
    slots["propensity"] = 0.5
    visits = LoggedVisits.from_slots(slots)

    def use() -> None:
        with np.errstate(all="ignore"), warnings.catch_warnings(), contextlib.suppress(Exception):
            warnings.simplefilter("ignore")
            _estimate_grid(spec, visits, Catalogues.of(space), tables, estimators, seed)

    return timed_first_use(use, ESTIMATOR_KERNELS)


def _estimate_grid(
    spec: EvaluationSpec,
    visits: LoggedVisits,
    catalogues: Catalogues,
    tables: Tables,
    estimators: list[str],
    seed: int,
) -> list[tuple[str, Estimate]]:
    """(policy, estimate) of every target and estimator, in grid order."""
    estimates: list[tuple[str, Estimate]] = []
    for policy in spec.policies:
        for eps in spec.epsilons:
            if any(name in WEIGHTED for name in estimators):
                _, weight = importance_weights(visits, catalogues, tables.value, eps, spec.clip)
            for name in estimators:
                if name == "replay":
                    estimate, _, _ = estimate_replay(
                        visits, catalogues, tables.value, tables.reco_count, epsilon=eps, seed=seed
                    )
                elif name == "ips":
                    estimate = estimate_ips(visits, weight, epsilon=eps, clip=spec.clip)
                elif name == "snips":
                    estimate = estimate_snips(visits, weight, epsilon=eps, clip=spec.clip)
                else:
                    estimate = estimate_dr(
                        visits, catalogues, tables.value, weight,
                        epsilon=eps, clip=spec.clip, reward_model=spec.reward_model,
                    )  # fmt: skip
                estimates.append((policy, estimate))
    return estimates


def _applicable(
    spec: EvaluationSpec, visits: LoggedVisits, source: str
) -> tuple[list[str], list[str]]:
    """The estimators to run, and the ones left out with the reason (an explicit request that
    the log cannot serve is an error)."""
    reasons = {}
    if not visits.propensities_known:
        reasons.update(
            {name: "the log has no propensities (map --propensity-col)" for name in WEIGHTED}
        )
    if visits.slate_size > DR_MAX_SLATE:
        for name in WEIGHTED:  # the target's exact slot distribution is O(2**slots) per state
            reasons.setdefault(name, f"visits of more than {DR_MAX_SLATE} slots")
    wanted = spec.estimators or ESTIMATORS
    for name in spec.estimators or ():
        if name in reasons:
            raise ConfigError(f"--estimators {name}: not possible on {source}: {reasons[name]}")
    chosen = [name for name in ESTIMATORS if name in wanted and name not in reasons]
    skipped = [f"{name}: {reasons[name]}" for name in wanted if name in reasons]
    return chosen, skipped


def _write(result: EvaluationResult, out: Path, plots: bool) -> list[Path]:
    """``summary.parquet`` and the plots (``summary.json`` is written last by the caller)."""
    out.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(result.summary, preserve_index=False)
    meta = {"kind": "evaluation", "schema_version": 1, "log": result.log}
    table = table.replace_schema_metadata(
        {**(table.schema.metadata or {}), b"rlreco": json.dumps(meta, default=str).encode()}
    )
    with atomic_path(out / "summary.parquet") as tmp:
        pq.write_table(table, tmp, compression="zstd")
    if not plots or result.summary.empty:
        return []
    from rlreco.io.plots import plot_estimates  # matplotlib loads only when plotting

    drawn = [
        name
        for name in METRICS
        if np.isfinite(result.summary[f"{name}_mean"].to_numpy(dtype=float)).any()
    ]
    return [plot_estimates(result.summary, drawn, out / "plots" / "estimates.png")]
