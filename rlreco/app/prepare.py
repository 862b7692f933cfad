"""``prepare``: transactions -> RFM segments -> state space -> initial tables -> run directory."""

from __future__ import annotations

import dataclasses
import platform
import time
import uuid
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from rlreco import __version__
from rlreco.config import RunConfig
from rlreco.engine import streams
from rlreco.engine.history import history_from_frame
from rlreco.engine.segmentation import segment_customers
from rlreco.engine.state_space import build_state_space, history_states
from rlreco.engine.tables import build_initial_tables
from rlreco.io.run_dir import RunDir, file_sha256
from rlreco.io.transactions import load_transactions


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
    states_total: int
    states_with_history: int
    known_pairs: int
    products_per_state_min: int
    products_per_state_median: float
    products_per_state_max: int
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


def prepare(
    config: RunConfig, *, out: str | Path, data: str | Path | None = None, force: bool = False
) -> PrepareSummary:
    """Build a run directory from a transactions file.

    Parameters
    ----------
    config : RunConfig
    out : path
        Run directory to create.
    data : path, optional
        Transactions file; overrides ``config.data.path``.
    force : bool
        Replace ``out`` if it exists.
    """
    start = time.perf_counter()
    if data is not None:
        config = config.replace(**{"data.path": str(Path(data).resolve())})
    path = Path(config.data.path).resolve()
    frame, report = load_transactions(path, config.data, split_day=config.states.split_day)
    history = history_from_frame(frame, source=str(path))
    del frame
    segmentation = segment_customers(history, config)
    space = build_state_space(history, segmentation.customer_segment, segmentation.segment_names)
    row_state = history_states(history, segmentation.customer_segment, space)
    tables = build_initial_tables(
        space,
        row_state,
        history.product,
        history.quantity,
        streams.generator(config.simulation.seed, streams.TABLES),
    )
    per_state = tables.known.sum(axis=1)
    with_history = per_state[per_state > 0]
    counts = segmentation.counts()
    summary = PrepareSummary(
        run_dir=str(Path(out)),
        data=str(path),
        rows_read=report.rows_read,
        rows_without_customer=report.rows_without_customer,
        customers=history.n_customers,
        customers_per_segment={name: int(counts[name]) for name in space.segments},
        products=space.n_products,
        states_total=space.n_states,
        states_with_history=int(with_history.size),
        known_pairs=int(per_state.sum()),
        products_per_state_min=int(with_history.min()) if with_history.size else 0,
        products_per_state_median=float(np.median(with_history)) if with_history.size else 0.0,
        products_per_state_max=int(with_history.max()) if with_history.size else 0,
        seconds=0.0,
    )
    manifest = {
        "run_id": uuid.uuid4().hex,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": config.to_dict(),
        "seed": config.simulation.seed,
        "packages": package_versions(),
        "data": {
            "path": str(path),
            "sha256": file_sha256(path),
            "bytes": path.stat().st_size,
            "rows_read": report.rows_read,
            "rows_without_customer": report.rows_without_customer,
        },
        "prepare": summary.to_dict(),
    }
    RunDir.create(
        out,
        manifest=manifest,
        space=space.to_columns(),
        snapshot=tables.to_columns(space),
        force=force,
    )
    return dataclasses.replace(summary, seconds=round(time.perf_counter() - start, 3))
