"""MongoDB and run directories: export a run's tables to MongoDB and import them back.

The CLI commands ``export-mongo`` and ``import-mongo`` only parse their options and call
:func:`export_run` and :func:`import_run`.

* **Export** writes the latest snapshot of a run directory in the ``seed`` layout (the original
  design's collections) or the ``tidy`` layout (one document per cell, plus the manifest);
  incremental and idempotent (:func:`rlreco.io.mongo.export_snapshot`).
* **Import** reads either layout back, checks every cell against the state space of a base run
  directory (the run whose state space the tables belong to) and writes a new run directory
  with that state space and the imported tables. Export then import is exact: the new run's
  tables equal the exported ones bit for bit.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rlreco.app.simulate import snapshot_stream
from rlreco.engine.state_space import StateSpace
from rlreco.engine.tables import Tables
from rlreco.errors import SyncError
from rlreco.io.mongo import (
    DEFAULT_DB,
    ExportReport,
    RetryPolicy,
    SnapshotFile,
    connect,
    export_snapshot,
    import_snapshot,
)
from rlreco.io.mongo_layout import check_layout, conform_snapshot
from rlreco.io.run_dir import RunDir

__all__ = ["DEFAULT_DB", "ImportSummary", "export_run", "import_run"]

#: Per-operation socket timeout: a server that stops answering fails (and is retried) after it.
SOCKET_TIMEOUT_MS = 60_000
#: Manifest keys a tidy import takes from the stored manifest of the run (the rest, which
#: describes the state space and its data, comes from the base run).
RUN_KEYS = ("run_id", "episodes", "rng_state", "config", "seed")


@dataclass(frozen=True)
class ImportSummary:
    """What :func:`import_run` read and wrote.

    Attributes
    ----------
    run_dir, base_run : str
        The run directory written and the one whose state space it uses.
    layout, database : str
        Source of the tables.
    run_id : str
        Run id of the new run directory (tidy: the imported run's; seed: a new one).
    states, cells : int
        States with at least one known cell, and known cells, imported.
    episodes : int
        Visits the imported tables have seen (tidy: from the stored manifest; seed: the base
        run's, as the seed layout stores no run metadata).
    seconds : float
        Wall time.
    """

    run_dir: str
    base_run: str
    layout: str
    database: str
    run_id: str
    states: int
    cells: int
    episodes: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (for ``--json``)."""
        return asdict(self)


def frame_columns(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """Numpy columns of a snapshot frame (string columns as numpy ``str``)."""
    return {
        c: frame[c].to_numpy(dtype=str) if frame[c].dtype == "str" else frame[c].to_numpy()
        for c in frame.columns
    }


def export_run(
    run_dir: str | Path,
    *,
    uri: str,
    db: str = DEFAULT_DB,
    layout: str = "seed",
    timeout_ms: int = 5000,
    batch_size: int = 1000,
    policy: RetryPolicy | None = None,
    force: bool = False,
) -> ExportReport:
    """Export the latest snapshot of a run directory to MongoDB.

    Parameters
    ----------
    run_dir : path
        Run directory (``rlreco prepare`` / ``simulate`` output).
    uri : str
        ``mongodb://`` connection string (never shown with its password).
    db : str
        Database (default the original design's ``rlRecomendation``).
    layout : {"seed", "tidy"}
        Document layout (:mod:`rlreco.io.mongo_layout`).
    timeout_ms : int
        Server selection and connect timeout: an unreachable server fails within it.
    batch_size : int
        Most documents per bulk write.
    policy : RetryPolicy, optional
        Retries of transient faults.
    force : bool
        Rewrite every state, even those unchanged since the last export.

    Returns
    -------
    ExportReport
        Documents written, unchanged and deleted per collection, round trips, wall time.

    Raises
    ------
    SnapshotError
        The run directory is missing or corrupt.
    SyncError
        One line: bad URI or layout, unreachable server, failed authentication, refused write.
    """
    check_layout(layout)
    run = RunDir.open(run_dir)
    # connect first: an unreachable server fails within the timeout, before any heavy reading
    client = connect(uri, timeout_ms, socket_timeout_ms=SOCKET_TIMEOUT_MS, policy=policy)
    try:
        return export_snapshot(
            client,
            SnapshotFile(run.path / run.manifest["snapshot"]),
            run.manifest,
            db=db,
            layout=layout,
            batch_size=batch_size,
            policy=policy,
            force=force,
        )
    finally:
        client.close()


def import_run(
    *,
    uri: str,
    base_run: str | Path,
    out: str | Path,
    db: str = DEFAULT_DB,
    layout: str = "seed",
    run_id: str | None = None,
    timeout_ms: int = 5000,
    policy: RetryPolicy | None = None,
    force: bool = False,
) -> ImportSummary:
    """Load tables from MongoDB into a new run directory with the state space of ``base_run``.

    Parameters
    ----------
    uri, db, layout, timeout_ms, policy
        As for :func:`export_run`.
    base_run : path
        Run directory whose state space (states, products, catalogues) the stored tables
        belong to; its state space files, initial snapshot and manifest are copied.
    out : path
        Run directory to write.
    run_id : str, optional
        Tidy layout: the run to load (default: the only run stored).
    force : bool
        Replace ``out`` if it exists.

    Returns
    -------
    ImportSummary

    Notes
    -----
    The new manifest is the base run's, with, for the tidy layout, the stored run's ``run_id``,
    ``episodes``, ``rng_state``, ``config`` and ``seed`` (so exporting the new run again writes
    nothing), and for the seed layout a new ``run_id``. ``imported_from`` records the source
    (layout, database, run id; never the URI).

    Raises
    ------
    SyncError
        One line: a stored state id or product code that is not in the base run's state space,
        a product outside its state's segment catalogue, an unknown run, or a database error.
    SnapshotError
        ``base_run`` missing or corrupt, or ``out`` exists without ``force``.
    """
    started = time.perf_counter()
    kind = check_layout(layout)
    base = RunDir.open(base_run)
    space = StateSpace.from_columns(base.read_space(), base.fields)
    client = connect(uri, timeout_ms, socket_timeout_ms=SOCKET_TIMEOUT_MS, policy=policy)
    try:
        frame, stored = import_snapshot(
            client, db=db, layout=kind, run_id=run_id, policy=policy, fields=space.fields
        )
    finally:
        client.close()
    source = f"{db} ({kind} layout)"
    tables = tables_in_space(frame, space, source=source, base=base.path)
    updates: dict[str, Any] = {"run_id": uuid.uuid4().hex}
    if stored is not None:
        updates.update({k: stored[k] for k in RUN_KEYS if k in stored})
    episodes = updates.get("episodes", base.visits)
    if not isinstance(episodes, int) or isinstance(episodes, bool) or episodes < 0:
        raise SyncError(
            f"manifest stored in {db}.runs has episodes {episodes!r}, not an integer >= 0"
        )
    updates["episodes"] = episodes
    updates["imported_from"] = {
        "layout": kind,
        "database": db,
        "run_id": stored.get("run_id") if stored is not None else None,
        "base_run": str(base.path),
    }
    derived = base.derive(
        out, snapshot=snapshot_stream(tables, space), updates=updates, force=force
    )
    return ImportSummary(
        run_dir=str(derived.path),
        base_run=str(base.path),
        layout=kind,
        database=db,
        run_id=str(updates["run_id"]),
        states=int(np.count_nonzero(tables.known.any(axis=1))),
        cells=int(np.count_nonzero(tables.known)),
        episodes=episodes,
        seconds=round(time.perf_counter() - started, 3),
    )


def tables_in_space(frame: pd.DataFrame, space: StateSpace, *, source: str, base: Path) -> Tables:
    """Dense tables of a snapshot frame read from MongoDB, checked by :func:`cell_ids`."""
    frame = conform_snapshot(frame, f"snapshot read from {source}", space.fields)
    state_id, product_id = cell_ids(frame, space, source=source, base=base)
    columns = frame_columns(frame)
    columns["state_id"] = state_id
    columns["product_id"] = product_id
    return Tables.from_columns(columns, space)


def cell_ids(
    frame: pd.DataFrame, space: StateSpace, *, source: str, base: Path
) -> tuple[np.ndarray, np.ndarray]:
    """State and product ids of cells read from MongoDB, checked against a state space.

    State ids and product codes are looked up by their strings; integer ids stored alongside
    (tidy layout) must agree with them, and every product must be in its state's segment
    catalogue.

    Parameters
    ----------
    frame : pandas.DataFrame
        Snapshot columns (``state_id``/``product_id`` -1 where the layout stores none).
    space : StateSpace
        The base run's state space.
    source : str
        Names the data in error messages.
    base : Path
        The run directory of ``space``, named in error messages.

    Returns
    -------
    state_id, product_id : ndarray of int32, shape (n_cells,)

    Raises
    ------
    SyncError
        One line naming the first offending cell.
    """
    states = frame["state"].tolist()
    codes = frame["product_code"].tolist()
    state_index, product_index = space.state_index(), space.product_index()
    state_id = np.array([state_index.get(s, -1) for s in states], dtype=np.int64)
    product_id = np.array([product_index.get(c, -1) for c in codes], dtype=np.int64)
    where = f"in the state space of {base}"
    bad = np.flatnonzero(state_id < 0)
    if bad.size:
        raise SyncError(f"{source}: state {states[bad[0]]!r} is not {where}")
    bad = np.flatnonzero(product_id < 0)
    if bad.size:
        raise SyncError(
            f"{source}: product {codes[bad[0]]!r} (state {states[bad[0]]}) is not {where}"
        )
    for column, found in (("state_id", state_id), ("product_id", product_id)):
        stored = frame[column].to_numpy(np.int64)
        bad = np.flatnonzero((stored != -1) & (stored != found))
        if bad.size:
            row = bad[0]
            raise SyncError(
                f"{source}: cell (state {states[row]}, product {codes[row]!r}) has {column} "
                f"{stored[row]} but it is {found[row]} {where}"
            )
    n_products = space.n_products
    segment = space.state_segment[state_id].astype(np.int64)
    catalogue_cells = (
        np.repeat(np.arange(space.n_segments), np.diff(space.catalogue_ptr)) * n_products
        + space.catalogue_items
    )
    bad = np.flatnonzero(~np.isin(segment * n_products + product_id, catalogue_cells))
    if bad.size:
        row = bad[0]
        raise SyncError(
            f"{source}: product {codes[row]!r} of state {states[row]} is not in the catalogue "
            f"of segment {space.segments[segment[row]]} {where}"
        )
    return state_id.astype(np.int32), product_id.astype(np.int32)
