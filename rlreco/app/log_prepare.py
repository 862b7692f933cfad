"""``prepare --log``: a run directory from a visit log written by another system.

The state space has no calendar: its states are the distinct tuples of the log's context
columns, each with the label ``v1|v2|...`` as its string id (``%`` and ``|`` inside a value
escaped as ``%25`` and ``%7C``), sorted; its products are the log's distinct items (codes as
strings), sorted; it has one segment, ``all``, whose catalogue is every product (exploration
and padding draw from it). A state's weight is its number of visits in the log. The slate size
is the log's largest number of slots per visit.

Tables: ``empty`` (every cell unknown: the learning targets start from nothing) or ``history``
(every logged (state, product) known, with ``reco_count`` and ``count`` its number of shows,
``reward`` the sum of its logged rewards and ``value`` their mean, so an incremental-mean update
continues from the log). The column map is stored in the manifest, so ``rlreco evaluate`` reads
further logs of the same system without it.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rlreco.app.prepare import new_manifest
from rlreco.config import RunConfig
from rlreco.engine.state_space import StateSpace
from rlreco.engine.tables import Tables
from rlreco.errors import ConfigError
from rlreco.io.foreign_log import ColumnMap, read_foreign_log
from rlreco.io.run_dir import RunDir

#: the one segment of a log-derived state space
LOG_SEGMENT = "all"
TABLE_STARTS = ("empty", "history")


@dataclass(frozen=True)
class LogPrepareSummary:
    """What ``prepare --log`` read and built (printed by ``rlreco prepare --log``)."""

    run_dir: str
    log: str
    rows_read: int
    visits: int
    states: int
    products: int
    slate_size: int
    tables: str
    known_pairs: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible dict."""
        return dataclasses.asdict(self)


def prepare_from_log(
    config: RunConfig,
    *,
    log: str | Path,
    columns: ColumnMap,
    out: str | Path,
    tables: str = "empty",
    force: bool = False,
) -> LogPrepareSummary:
    """Build a run directory from a foreign visit log (module docstring).

    Raises
    ------
    DataError
        A bad log (:func:`rlreco.io.foreign_log.read_foreign_log`).
    ConfigError
        An unknown ``tables`` start.
    """
    start = time.perf_counter()
    if tables not in TABLE_STARTS:
        raise ConfigError(f"--tables {tables!r}: expected empty or history")
    path = Path(log).resolve()
    slots = read_foreign_log(path, columns)
    state_order = np.argsort(slots.state_names, kind="stable")
    state_rank = np.empty(state_order.size, dtype=np.int64)
    state_rank[state_order] = np.arange(state_order.size)
    product_order = np.argsort(slots.product_codes, kind="stable")
    product_rank = np.empty(product_order.size, dtype=np.int64)
    product_rank[product_order] = np.arange(product_order.size)
    state = state_rank[slots.state_index]
    product = product_rank[slots.product_index]
    n_states, n_products = state_order.size, product_order.size
    first = np.flatnonzero(slots.position == 0)
    space = StateSpace.without_calendar(
        slots.state_names[state_order].astype(str),
        LOG_SEGMENT,
        state_weight=np.bincount(state[first], minlength=n_states).astype(np.float64),
        product_codes=slots.product_codes[product_order].astype(str),
        product_names=np.full(n_products, ""),
        catalogue_ptr=np.array([0, n_products], dtype=np.int64),
        catalogue_items=np.arange(n_products, dtype=np.int32),
    )
    start_tables = Tables.empty(n_states, n_products)
    if tables == "history":
        flat = state * n_products + product
        shows = np.bincount(flat, minlength=n_states * n_products)
        total = np.bincount(flat, weights=slots.reward, minlength=n_states * n_products)
        known = shows > 0
        start_tables.cells["count"].reshape(-1)[:] = shows
        start_tables.cells["reco_count"].reshape(-1)[:] = shows
        start_tables.cells["reward"].reshape(-1)[known] = total[known]
        # value is a view of the padded buffer: write it by (state, product)
        start_tables.value[known.reshape(n_states, n_products)] = total[known] / shows[known]
    slate_size = int(slots.position.max()) + 1
    config = config.replace(**{"data.path": str(path), "policy.slate_size": slate_size})
    summary = LogPrepareSummary(
        run_dir=str(Path(out)),
        log=str(path),
        rows_read=slots.n_slots,
        visits=slots.n_visits,
        states=n_states,
        products=n_products,
        slate_size=slate_size,
        tables=tables,
        known_pairs=int(start_tables.known.sum()),
        seconds=0.0,
    )
    manifest = {
        **new_manifest(config, path, rows_read=slots.n_slots),
        "prepare": {**summary.to_dict(), "states_total": n_states},
        "log": {"columns": columns.to_dict(), "tables": tables},
        "holdout": None,
    }
    RunDir.create(
        out,
        manifest=manifest,
        space=space.to_columns(),
        snapshot=start_tables.to_columns(space),
        force=force,
    )
    return dataclasses.replace(summary, seconds=round(time.perf_counter() - start, 3))
