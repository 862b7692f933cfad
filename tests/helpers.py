"""Helpers shared by test modules: small prepared runs, sweep specs and kernel bundles."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
from naive import NaiveWorld

from rlreco.app.sweep_grid import SweepSpec
from rlreco.config import RunConfig
from rlreco.engine.kernels.candidate_cache import CACHE_CAPACITY
from rlreco.engine.kernels.policy import new_policy_state
from rlreco.engine.kernels.records import (
    Learner,
    PolicyParams,
    ResponseArrays,
    ResponseModel,
    TopNSearch,
    World,
)
from rlreco.engine.kernels.topn import index_depth, new_index
from rlreco.engine.response import count_cdf
from rlreco.engine.state_space import StateSpace
from rlreco.engine.tables import Tables
from rlreco.io.run_dir import RunDir
from rlreco.schema import DEFAULT_STATE_FIELDS, LOG_DTYPE, TRUTH_DTYPE

#: visits per cell and blocks per cell of :func:`small_spec`
EPISODES = 3_000
BLOCKS = 6
#: the log buffer of a kernel call that does not log
NO_LOG = np.zeros(0, dtype=LOG_DTYPE)
#: mean rewards of (ignored, clicked, bought) used by the kernel reference tests
REWARDS = (-2.0, 1.0, 5.0)
CLICK_CDF = count_cdf((0.5, 0.3, 0.15, 0.05), "click_probs")
BUY_CDF = count_cdf((0.6, 0.0, 0.2, 0.1, 0.1), "buy_probs")


def synthetic_run(
    path: Path, seed: int = 0, n_products: int = 40, config: RunConfig | None = None
) -> RunDir:
    """A small prepared run: 2 segments x 2 months x 1 half x 2 weekdays, 40 products (catalogues
    of 25), with ``config`` (default: the defaults)."""
    rng = np.random.default_rng(seed)
    grid = np.indices((2, 2, 1, 2)).reshape(4, -1)
    catalogues = [
        np.sort(rng.choice(n_products, 25, replace=False)).astype(np.int32) for _ in range(2)
    ]
    space = StateSpace.from_grid(
        DEFAULT_STATE_FIELDS,
        (("Q1", "Q2"), ("November", "December"), ("0",), ("Monday", "Thursday")),
        state_weight=rng.integers(1, 50, grid.shape[1]).astype(np.float64),
        product_codes=np.array([f"P{i:03d}" for i in range(n_products)]),
        product_names=np.array([f"product {i}" for i in range(n_products)]),
        catalogue_ptr=np.array([0, 25, 50], dtype=np.int64),
        catalogue_items=np.concatenate(catalogues),
    )
    tables = Tables.empty(space.n_states, n_products)
    for s in range(space.n_states):
        known = rng.choice(catalogues[space.state_segment[s]], 6, replace=False)
        tables.value[s, known] = np.round(rng.normal(2.0, 1.0, known.size), 2)
        tables.cells["reward"][s, known] = np.round(rng.normal(2.0, 1.0, known.size), 2)
        tables.cells["count"][s, known] = rng.integers(1, 9, known.size)
    manifest = {"run_id": uuid.uuid4().hex, "config": (config or RunConfig()).to_dict(), "seed": 1}
    return RunDir.create(
        path, manifest=manifest, space=space.to_columns(), snapshot=tables.to_columns(space)
    )


def small_spec(**changes: object) -> SweepSpec:
    fields: dict[str, object] = {
        "epsilons": (0.0, 0.2, 1.0),
        "replicates": 3,
        "episodes": EPISODES,
        "responses": ("seed",),
        "seed": 7,
        "blocks": BLOCKS,
    }
    fields.update(changes)
    return SweepSpec(**fields)  # type: ignore[arg-type]


def naive_world(
    space: StateSpace,
    tables: Tables,
    *,
    epsilon: float,
    slate_size: int,
    truth: np.ndarray | None,
    best_mu: np.ndarray | None,
    empirical: bool,
    step_size: float | None = None,
) -> NaiveWorld:
    """The reference world of a state space and tables (copies)."""
    return NaiveWorld(
        value=tables.value.copy(),
        reward=tables.cells["reward"].copy(),
        count=tables.cells["count"].copy(),
        reco_count=tables.cells["reco_count"].copy(),
        state_segment=space.state_segment,
        catalogues=[space.catalogue(g).tolist() for g in range(space.n_segments)],
        epsilon=epsilon,
        slate_size=slate_size,
        rewards=REWARDS,
        click_cdf=CLICK_CDF,
        buy_cdf=BUY_CDF,
        truth=None if truth is None else (truth["p_click"], truth["p_buy"]),
        best_mu=best_mu,
        state_cdf=np.cumsum(space.state_weight) if empirical else None,
        step_size=step_size,
    )


def kernel_world(
    space: StateSpace, *, empirical: bool, phase_weights: np.ndarray | None = None
) -> World:
    """The :class:`World` bundle of a state space (one response phase, or one per row of
    ``phase_weights`` under empirical sampling)."""
    if phase_weights is None:
        phase_weights = space.state_weight[None, :]
    cdf = np.cumsum(phase_weights, axis=1) if empirical else np.empty((len(phase_weights), 0))
    return World(
        np.ascontiguousarray(space.state_segment, dtype=np.int16),
        np.ascontiguousarray(space.catalogue_ptr, dtype=np.int64),
        np.ascontiguousarray(space.catalogue_items, dtype=np.int32),
        cdf,
    )


def kernel_learner(
    tables: Tables,
    search: int = TopNSearch.tree,
    policy: PolicyParams | None = None,
    world: World | None = None,
) -> Learner:
    """A :class:`Learner` on the tables' padded values and cells, derived arrays built (the
    structures of ``policy`` too, over ``world``'s catalogues)."""
    n_states = tables.shape[0]
    tree = search == TopNSearch.tree
    width = tables.padded.shape[1]
    return Learner(
        tables.padded,
        new_index(tables.padded) if tree else np.empty((n_states, 0)),
        index_depth(width) if tree else 1,
        tables.cells,
        np.zeros(n_states),
        np.full(n_states, -1, dtype=np.int64),
        np.zeros((n_states, CACHE_CAPACITY), dtype=np.int64),
        np.zeros(n_states, dtype=np.int64),
        tables.reco_count.sum(axis=1),
        new_policy_state(
            -1 if policy is None else policy.code,
            0.0 if policy is None else policy.param,
            1 if policy is None else policy.slate_size,
            tables.padded,
            tables.cells,
            world
            if world is not None
            else World(
                np.zeros(n_states, dtype=np.int16),
                np.zeros(2, dtype=np.int64),
                np.zeros(0, dtype=np.int32),
                np.empty(0),
            ),
        ),
    )


def kernel_response(
    n_states: int,
    truth: np.ndarray | None = None,
    best_mu: np.ndarray | None = None,
    phase_start: tuple[int, ...] = (0,),
) -> ResponseArrays:
    """The ``seed`` response (no ``truth``) or a ``truth`` response, with :data:`REWARDS`.

    ``truth`` (S, P) and ``best_mu`` (S,) are one phase; with several ``phase_start``, they are
    stacked per phase: (F, S, P) and (F, S).
    """
    starts = np.array(phase_start, dtype=np.int64)
    if truth is None:
        return ResponseArrays(
            ResponseModel.seed,
            CLICK_CDF,
            BUY_CDF,
            np.empty((1, n_states, 0), dtype=TRUTH_DTYPE),
            np.zeros((1, n_states)),
            np.array(REWARDS),
            starts,
        )
    assert best_mu is not None
    if truth.ndim == 2:
        truth, best_mu = truth[None], best_mu[None]
    return ResponseArrays(
        ResponseModel.truth, CLICK_CDF, BUY_CDF, truth, best_mu, np.array(REWARDS), starts
    )


def policy_params(
    code: int,
    param: float,
    slate_size: int,
    search: int = TopNSearch.tree,
    step_size: float | None = None,
) -> PolicyParams:
    """A :class:`PolicyParams` bundle (``step_size`` None: the sample average)."""
    return PolicyParams(code, float(param), slate_size, search, step_size or 0.0)


#: Product codes that need escaping as MongoDB field names, at the front of the small CSV.
AWKWARD_CODES = ("A.B", "$X", "50%OFF")


def write_transactions(path: Path, seed: int = 0, n_rows: int = 500) -> None:
    """A small transactions CSV in the UCI layout: 40 customers, 24 products, 3 months."""
    rng = np.random.default_rng(seed)
    codes = np.asarray([*AWKWARD_CODES, *(str(21000 + i) for i in range(21))])
    customer = rng.integers(0, 40, n_rows)
    day = rng.integers(0, 90, n_rows)
    product = codes[rng.integers(0, codes.size, n_rows)]
    dates = pd.Timestamp("2011-01-01 09:00") + pd.to_timedelta(day, unit="D")
    pd.DataFrame(
        {
            "InvoiceNo": [f"5{c:03d}{d:03d}" for c, d in zip(customer, day, strict=True)],
            "StockCode": product,
            "Description": [f"ITEM {c}" for c in product],
            "Quantity": rng.integers(1, 25, n_rows),
            "InvoiceDate": dates.strftime("%m/%d/%Y %H:%M"),
            "UnitPrice": rng.integers(50, 1000, n_rows) / 100,
            "CustomerID": (12000 + customer).astype(float),
            "Country": "United Kingdom",
        }
    ).to_csv(path, index=False)


def fresh_python(script: str, **env: str) -> list[str]:
    """Words a fresh interpreter prints running ``script`` (this tree first on its path)."""
    root = str(Path(__file__).resolve().parent.parent)
    environ = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    environ.update(PYTHONPATH=root, **env)
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=environ, check=True
    )
    return proc.stdout.split()
