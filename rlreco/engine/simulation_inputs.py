"""Checks of a simulation's inputs, and the state it resumes from (policy state, metric
blocks, RNG state), for :class:`rlreco.engine.simulation.Simulator`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rlreco.config import StepSize
from rlreco.engine.simulation_params import (
    METRIC_SUMS,
    POLICIES,
    POLICY_STATE,
    STATE_SAMPLING,
    TOPN_SEARCH,
    SimulationParams,
)
from rlreco.engine.state_space import StateSpace
from rlreco.engine.tables import Tables
from rlreco.errors import SimulationError, SnapshotError
from rlreco.schema import CELL_DTYPE, METRICS_DTYPE, POLICY_PARAMS, policy_param_problem


def state_visits_of(
    policy: str, policy_state: Mapping[str, np.ndarray] | None, n_states: int, episodes: int
) -> np.ndarray:
    """The visits per state a policy resumes from (zeros for a new run), checked."""
    names = POLICY_STATE.get(policy, ())
    given = dict(policy_state or {})
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise SnapshotError(
            f"policy state: {', '.join(unknown)} is not kept by the {policy} policy "
            f"(it keeps: {', '.join(names) or 'nothing'})"
        )
    if "state_visits" not in names:
        return np.zeros(n_states, dtype=np.int64)
    if "state_visits" not in given:
        if episodes:
            raise SnapshotError(
                f"policy state: state_visits missing for the {episodes} visits already simulated"
            )
        return np.zeros(n_states, dtype=np.int64)
    visits = np.asarray(given["state_visits"])
    if visits.shape != (n_states,) or not np.issubdtype(visits.dtype, np.integer):
        raise SnapshotError(
            f"policy state: state_visits has shape {visits.shape} and dtype {visits.dtype}, "
            f"expected ({n_states},) integers"
        )
    if visits.min(initial=0) < 0 or int(visits.sum()) != episodes:
        raise SnapshotError(
            f"policy state: state_visits sums to {int(visits.sum())}, not the {episodes} visits "
            "simulated"
        )
    return visits.astype(np.int64)


def phase_cdf(
    space: StateSpace, sampling: str, n_phases: int, phase_weights: np.ndarray | None
) -> np.ndarray:
    """Cumulative state weights per response phase, shape (n_phases, S); (n_phases, 0) under
    uniform sampling."""
    if sampling != "empirical":
        if phase_weights is not None:
            raise SimulationError("phase state weights need empirical state sampling")
        return np.empty((n_phases, 0))
    if phase_weights is None:
        weight = np.asarray(space.state_weight, dtype=np.float64)
        # a writable copy per phase: a read-only array (a broadcast view is one) is another
        # argument type to numba, and would compile the visit loop a second time
        return np.repeat(np.cumsum(weight)[np.newaxis, :], n_phases, axis=0)
    weights = np.asarray(phase_weights, dtype=np.float64)
    if weights.shape != (n_phases, space.n_states):
        raise SimulationError(
            f"phase state weights have shape {weights.shape}, expected "
            f"({n_phases}, {space.n_states}): one row per phase of the response"
        )
    empty = np.flatnonzero(~(weights.sum(axis=1) > 0))
    if empty.size or (weights < 0).any():
        raise SimulationError(
            f"phase {int(empty[0]) if empty.size else 0} of the response: its state weights "
            "must be >= 0 with a positive sum (no state to draw visits from)"
        )
    return np.cumsum(weights, axis=1)


def plain_state(state: Mapping[str, Any]) -> dict[str, Any]:
    """A bit generator state as plain JSON types (its integers are Python ints already)."""
    return {k: (plain_state(v) if isinstance(v, Mapping) else v) for k, v in state.items()}


def check_params(space: StateSpace, tables: Tables, params: SimulationParams) -> None:
    shape = (space.n_states, space.n_products)
    if tables.value.shape != shape or tables.cells.shape != shape:
        raise SimulationError(f"tables have shape {tables.value.shape}, the state space {shape}")
    if tables.value.dtype != np.float64 or tables.cells.dtype != CELL_DTYPE:
        raise SimulationError("tables must be float64 values and CELL_DTYPE cells")
    if not tables.cells.flags.c_contiguous:
        raise SimulationError("tables must be C-contiguous")
    if params.policy not in POLICIES:
        raise SimulationError(f"policy {params.policy!r}: expected one of {', '.join(POLICIES)}")
    if not 0.0 <= params.epsilon <= 1.0:
        raise SimulationError(f"epsilon = {params.epsilon!r}: expected a number in [0, 1]")
    check_policy_param(params)
    if params.slate_size < 1:
        raise SimulationError(f"slate size = {params.slate_size}: expected an integer >= 1")
    sizes = np.diff(space.catalogue_ptr)
    used = np.unique(space.state_segment)
    smallest = used[np.argmin(sizes[used])]
    if params.slate_size > sizes[smallest]:
        raise SimulationError(
            f"slate size {params.slate_size} exceeds the catalogue of segment "
            f"{space.segments[smallest]} ({sizes[smallest]} products); use a slate size <= "
            f"{sizes[smallest]}"
        )
    if params.state_sampling not in STATE_SAMPLING:
        raise SimulationError(
            f"state sampling {params.state_sampling!r}: expected uniform or empirical"
        )
    if params.state_sampling == "empirical" and not np.sum(space.state_weight) > 0:
        raise SimulationError("empirical state sampling: no state has historical transactions")
    if not isinstance(params.step_size, StepSize):
        raise SimulationError(f"step size {params.step_size!r}: expected a StepSize")
    if params.metrics_block < 1:
        raise SimulationError(f"metrics block = {params.metrics_block}: expected >= 1")
    if params.search not in TOPN_SEARCH:
        raise SimulationError(f"search {params.search!r}: expected tree or scan")
    if not isinstance(params.response, (str, Path)):
        raise SimulationError(f"response {params.response!r}: expected a string")


def check_policy_param(params: SimulationParams) -> None:
    """The policy's parameter: none for eps-greedy (it takes ``epsilon``), else in range."""
    policy, value = params.policy, params.policy_param
    if value is None:
        return
    if policy == "eps-greedy":
        raise SimulationError(
            f"policy parameter {value!r}: eps-greedy takes epsilon, not a policy parameter"
        )
    problem = policy_param_problem(policy, value)
    if problem is not None:
        raise SimulationError(f"{policy} {POLICY_PARAMS[policy]} = {value!r}: expected {problem}")


def blocks_from_frame(
    metrics: pd.DataFrame | None, metrics_block: int, episodes: int
) -> np.ndarray:
    """Per-block sums from a :meth:`Simulator.metrics_frame`, checked against the visit count."""
    if metrics is None or len(metrics) == 0:
        if episodes:
            raise SnapshotError(f"metrics: missing for the {episodes} visits already simulated")
        return np.zeros(0, dtype=METRICS_DTYPE)
    missing = [name for name in ("block", *METRIC_SUMS) if name not in metrics.columns]
    if missing:
        raise SnapshotError(f"metrics: missing column(s) {', '.join(missing)}")
    if not np.array_equal(metrics["block"].to_numpy(), np.arange(len(metrics))):
        raise SnapshotError("metrics: blocks are not 0, 1, 2, ... in order")
    blocks = np.zeros(len(metrics), dtype=METRICS_DTYPE)
    for name in METRIC_SUMS:
        blocks[name] = metrics[name].to_numpy(dtype=blocks.dtype[name])
    expected = np.minimum(metrics_block, episodes - np.arange(len(metrics)) * metrics_block)
    if int(blocks["visits"].sum()) != episodes or not np.array_equal(blocks["visits"], expected):
        raise SnapshotError(
            f"metrics: {int(blocks['visits'].sum())} visits in blocks of {metrics_block} do not "
            f"match the {episodes} visits simulated"
        )
    return blocks
