"""``prepare``: transactions -> RFM segments -> state space -> initial tables -> run directory.

With a holdout (``holdout.split``), the learner's start comes from the training rows only and
the held-out rows become the truth tables in ``holdout/`` (:mod:`rlreco.engine.holdout`).
"""

from __future__ import annotations

import dataclasses
import platform
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from rlreco import __version__
from rlreco.app.simulate import snapshot_stream
from rlreco.config import RunConfig
from rlreco.engine import streams
from rlreco.engine.history import History, history_from_frame
from rlreco.engine.holdout import (
    Split,
    assign_segments,
    count_cells,
    customers_of,
    drop_products,
    excluded_products,
    held_out_rows,
    month_keys,
    parse_split,
)
from rlreco.engine.memory import check_memory_limit
from rlreco.engine.response import mean_per_slot, popularity_probabilities
from rlreco.engine.segmentation import segment_customers
from rlreco.engine.state_space import StateSpace, build_state_space, history_states
from rlreco.engine.tables import build_initial_tables
from rlreco.io.parquet_tables import use_system_allocator, write_table
from rlreco.io.run_dir import RunDir, file_sha256
from rlreco.io.transactions import load_transactions
from rlreco.io.truth import write_truth_table


@dataclass(frozen=True)
class PrepareSummary:
    """What ``prepare`` read and built (printed by ``rlreco prepare``)."""

    run_dir: str
    data: str
    rows_read: int
    rows_without_customer: int
    customers: int
    customers_per_segment: dict[str, int]
    products: int
    products_excluded: int
    states_total: int
    states_with_history: int
    known_pairs: int
    products_per_state_min: int
    products_per_state_median: float
    products_per_state_max: int
    holdout: dict[str, Any] | None
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible dict."""
        return dataclasses.asdict(self)


def package_versions() -> dict[str, str]:
    """Versions of Python and the packages that determine a run's numbers."""
    versions = {"python": platform.python_version(), "rlreco": __version__}
    for name in ("numpy", "numba", "pandas", "pyarrow"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:  # pragma: no cover - all are dependencies
            versions[name] = "missing"
    return versions


def new_manifest(config: RunConfig, path: Path, **data: Any) -> dict[str, Any]:
    """The manifest keys every new run directory starts with: a new run id, the config and
    seed, package versions, and the input file's path, hash, size and ``data`` counts."""
    return {
        "run_id": uuid.uuid4().hex,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": config.to_dict(),
        "seed": config.simulation.seed,
        "packages": package_versions(),
        "data": {
            "path": str(path),
            "sha256": file_sha256(path),
            "bytes": path.stat().st_size,
            **data,
        },
    }


def prepare(
    config: RunConfig, *, out: str | Path, data: str | Path | None = None, force: bool = False
) -> PrepareSummary:
    """Build a run directory from a transactions file.

    Parameters
    ----------
    config : RunConfig
        ``holdout.split`` (when set) holds out part of the data as the truth the learner is
        judged against (:mod:`rlreco.engine.holdout`); ``data.exclude_products`` lists codes
        that are not merchandise.
    out : path
        Run directory to create.
    data : path, optional
        Transactions file; overrides ``config.data.path``.
    force : bool
        Replace ``out`` if it exists.
    """
    start = time.perf_counter()
    use_system_allocator()
    if data is not None:
        config = config.replace(**{"data.path": str(Path(data).resolve())})
    if config.holdout.split and config.response.model == "seed":
        # a run prepared with a holdout is judged against it unless told otherwise
        config = config.replace(
            **{"response.model": "holdout", "simulation.state_sampling": "holdout"}
        )
    path = Path(config.data.path).resolve()
    categorical = config.states.columns()
    frame, report = load_transactions(
        path, config.data, split_day=config.states.split_day, categorical=categorical
    )
    full = history_from_frame(frame, source=str(path), categorical=categorical)
    del frame
    split = parse_split(config.holdout.split, config.holdout.seed) if config.holdout.split else None
    held = held_out_rows(full, split) if split else np.zeros(full.n_rows, dtype=bool)
    customer_segment, segment_names, counts = _segments(full, held, config)
    # non-merchandise rows count for RFM (customers paid them) but are no products to recommend
    dropped = excluded_products(full.product_codes, config.data.exclude_products)
    keep = ~dropped[full.product]
    history = drop_products(full, dropped)
    held = held[keep]
    space = build_state_space(history, customer_segment, segment_names, config.states.fields)
    # refuse before the tables are allocated (held-out truths need truth-sized arrays)
    check_memory_limit(
        space.n_states,
        space.n_products,
        config.simulation.memory_limit_mb,
        simulate=False,
        truth=split is not None,
        what="prepare",
    )
    row_state = history_states(history, customer_segment, space)
    train_state = np.where(held, -1, row_state)
    rows = history.customer >= 0
    space = dataclasses.replace(
        space,
        state_weight=np.bincount(train_state[train_state >= 0], minlength=space.n_states).astype(
            np.float64
        ),
    )
    tables = build_initial_tables(
        space,
        train_state,
        history.product,
        history.quantity,
        streams.generator(config.simulation.seed, streams.TABLES),
    )
    per_state = tables.known.sum(axis=1)
    with_history = per_state[per_state > 0]
    extra: list[Callable[[Path], None]] = []
    holdout_info: dict[str, Any] | None = None
    if split is not None:
        truths = _held_out_truths(space, history, row_state, held, split, config)
        extra.append(lambda tmp: _write_truths(tmp, space, truths))
        holdout_info = {
            "split": split.text,
            "seed": split.seed,
            "training": _side(history, rows & ~held, row_state),
            "held_out": _side(history, rows & held, row_state),
            "truths": [
                {"name": t.name, "file": f"holdout/truth-{t.name}.parquet", "rows": t.rows}
                for t in truths
            ],
        }
    summary = PrepareSummary(
        run_dir=str(Path(out)),
        data=str(path),
        rows_read=report.rows_read,
        rows_without_customer=report.rows_without_customer,
        customers=full.n_customers,
        customers_per_segment={name: int(counts[name]) for name in space.segments},
        products=space.n_products,
        products_excluded=int(dropped.sum()),
        states_total=space.n_states,
        states_with_history=int(with_history.size),
        known_pairs=int(per_state.sum()),
        products_per_state_min=int(with_history.min()) if with_history.size else 0,
        products_per_state_median=float(np.median(with_history)) if with_history.size else 0.0,
        products_per_state_max=int(with_history.max()) if with_history.size else 0,
        holdout=holdout_info,
        seconds=0.0,
    )
    manifest = {
        **new_manifest(
            config,
            path,
            rows_read=report.rows_read,
            rows_without_customer=report.rows_without_customer,
        ),
        "prepare": summary.to_dict(),
        "holdout": holdout_info,
        "state_fields": list(space.fields),
    }
    RunDir.create(
        out,
        manifest=manifest,
        space=space.to_columns(),
        snapshot=snapshot_stream(tables, space),
        extra=extra,
        force=force,
    )
    return dataclasses.replace(summary, seconds=round(time.perf_counter() - start, 3))


def _segments(
    history: History, held: np.ndarray, config: RunConfig
) -> tuple[np.ndarray, tuple[str, ...], dict[str, int]]:
    """Every customer's segment: fitted on the training rows, the others assigned with the
    training centres (see :mod:`rlreco.engine.holdout`).

    Returns
    -------
    (ndarray of int16, tuple of str, dict)
        Segment index per customer of ``history``, the segment names (sorted), and customers
        per segment name.
    """
    if not held.any():
        fitted = segment_customers(history, config)
        return fitted.customer_segment, fitted.segment_names, fitted.counts()
    training, train_ids = customers_of(history, ~held)
    fitted = segment_customers(training, config)
    names = np.full(history.n_customers, "", dtype=object)
    names[train_ids] = np.asarray(fitted.segment_names, dtype=object)[fitted.customer_segment]
    only_held = np.ones(history.n_customers, dtype=bool)
    only_held[train_ids] = False
    if only_held.any():
        rows = held & (history.customer >= 0) & only_held[np.maximum(history.customer, 0)]
        newcomers, new_ids = customers_of(history, rows)
        names[new_ids] = assign_segments(newcomers, fitted, config)
    segment_names = tuple(sorted(set(names.tolist())))
    index = {name: i for i, name in enumerate(segment_names)}
    customer_segment = np.array([index[n] for n in names.tolist()], dtype=np.int16)
    counts = np.bincount(customer_segment, minlength=len(segment_names))
    return customer_segment, segment_names, dict(zip(segment_names, counts.tolist(), strict=True))


@dataclass(frozen=True)
class _Truth:
    name: str
    rows: int
    p_click: np.ndarray
    p_buy: np.ndarray
    weight: np.ndarray


def _held_out_truths(
    space: StateSpace,
    history: History,
    row_state: np.ndarray,
    held: np.ndarray,
    split: Split,
    config: RunConfig,
) -> list[_Truth]:
    """The truth of the whole held-out part, and under a time split one per held-out month.

    Each is the ``popularity`` model's click and buy probabilities, calibrated the same way,
    with the held-out rows' counts in place of the history's.
    """
    slate = config.policy.slate_size
    click = mean_per_slot(config.response.click_probs, slate)
    buy = mean_per_slot(config.response.buy_probs, slate)
    parts = [("all", held & (row_state >= 0))]
    if split.mode == "time":
        month = month_keys(history.day)
        for key in np.unique(month[held]).tolist():
            parts.append((key, held & (row_state >= 0) & (month == key)))
    truths = []
    for name, rows in parts:
        state = np.where(rows, row_state, -1)
        count = count_cells(
            state, history.product, history.quantity, (space.n_states, space.n_products)
        )
        p_click, p_buy = popularity_probabilities(space, count, click, buy)
        weight = np.bincount(state[rows], minlength=space.n_states).astype(np.float64)
        truths.append(_Truth(name, int(rows.sum()), p_click, p_buy, weight))
    return truths


def _write_truths(folder: Path, space: StateSpace, truths: list[_Truth]) -> None:
    """Truth tables (the user truth-file format) and their state weights under ``holdout/``."""
    state_ids = space.state_ids
    segment_state = [np.flatnonzero(space.state_segment == g) for g in range(space.n_segments)]
    cells = [
        (np.repeat(states, space.catalogue(g).size), np.tile(space.catalogue(g), states.size))
        for g, states in enumerate(segment_state)
    ]
    state = np.concatenate([c[0] for c in cells])
    product = np.concatenate([c[1] for c in cells])
    weight_columns: dict[str, list[np.ndarray]] = {"truth": [], "state_id": [], "weight": []}
    for truth in truths:
        write_truth_table(
            folder / "holdout" / f"truth-{truth.name}.parquet",
            {
                "state_id": state_ids[state],
                "product_id": space.product_codes[product],
                "p_click": truth.p_click[state, product],
                "p_buy": truth.p_buy[state, product],
            },
        )
        covered = np.flatnonzero(truth.weight > 0)
        weight_columns["truth"].append(np.full(covered.size, truth.name))
        weight_columns["state_id"].append(covered.astype(np.int32))
        weight_columns["weight"].append(truth.weight[covered])
    write_table(
        folder / "holdout" / "state_weights.parquet",
        "state_weights",
        {k: np.concatenate(v) for k, v in weight_columns.items()},
    )


def _side(history: History, rows: np.ndarray, row_state: np.ndarray) -> dict[str, int]:
    """Rows, customers, products and states of one side of the split (rows with a customer)."""
    return {
        "rows": int(rows.sum()),
        "customers": int(np.unique(history.customer[rows]).size),
        "products": int(np.unique(history.product[rows]).size),
        "states": int(np.unique(row_state[rows]).size),
    }
