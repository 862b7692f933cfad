"""The dense tables of a run directory's snapshots, kept for the next load as their known cells.

Rebuilding the dense tables from a snapshot's Parquet row groups decodes and checks every cell
(product codes, duplicates) each time a run is loaded; a sweep or ``simulate`` loads the same
snapshot again and again. The first load stores the known cells
(:meth:`~rlreco.engine.tables.Tables.known_cells`: flat cell ids and the four numbers, a few
bytes per known cell, far less than the dense tables) in the run directory's derived-array
cache (:mod:`rlreco.io.array_cache`), keyed by the SHA-256 of the snapshot file and of the state
space files the checks read: a changed file is a new key, so an entry is never stale. The next
loads read them back (zip checksums checked), check them again
(:func:`~rlreco.engine.tables.check_known_cells`) and scatter them into the tables: the same
tables, bit for bit. A missing, damaged or unwritable entry means the snapshot is read, as
without the cache. Sweeps store entries; ``simulate`` and ``evaluate`` only read them (the
snapshot ``simulate`` loads is the one it replaces). At most two entries are kept per run: the
latest snapshot's and the initial one's (the historical counts of the ``popularity``
response).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np

from rlreco.engine.state_space import StateSpace
from rlreco.engine.tables import KNOWN_CELL_DTYPES, Tables, check_known_cells, known_counts
from rlreco.errors import SnapshotError
from rlreco.io.array_cache import read_arrays, remove_others, write_arrays
from rlreco.io.run_dir import RunDir, file_sha256

#: Name of the entries in the derived-array cache.
CACHE_NAME = "tables"
#: Version of the stored layout (part of the key: a new layout never reads an old entry).
LAYOUT_VERSION = 1
#: Snapshot columns the dense tables are rebuilt from.
SNAPSHOT_CELL_COLUMNS = (
    "state_id", "product_id", "product_code", "value", "reward", "count", "reco_count",
)  # fmt: skip
SNAPSHOT_KEYS = {"latest": "snapshot", "initial": "initial_snapshot"}


def load_known_tables(
    run_dir: RunDir, space: StateSpace, which: str = "latest", *, store: bool = False
) -> tuple[Tables, dict[str, np.ndarray]]:
    """The tables of the latest (or ``"initial"``) snapshot, from the cache when it holds them,
    and their :meth:`~rlreco.engine.tables.Tables.known_cells`; with ``store``, they are stored
    there when it does not (a loader whose run goes on to replace the snapshot, such as
    ``simulate``, leaves the run directory as it is).

    Raises
    ------
    SnapshotError
        The snapshot cannot be read or does not fit the state space (from the snapshot
        itself: the cache only ever holds a snapshot that could).
    """
    tables, known = load_known_cells(run_dir, space, which, store=store)
    if tables is None:
        tables = Tables.from_known_cells(known, space.n_states, space.n_products)
    return tables, known


def load_known_cells(
    run_dir: RunDir, space: StateSpace, which: str = "latest", *, store: bool = False
) -> tuple[Tables | None, dict[str, np.ndarray]]:
    """:func:`load_known_tables` without building the dense tables where the cache holds the
    known cells (checked): ``(None, known)``; else the tables read from the snapshot, and
    their known cells.
    """
    inputs = cache_inputs(run_dir, which)
    known = _read_known(run_dir.path, inputs)
    if known is not None:
        with contextlib.suppress(SnapshotError):  # checked there: damaged, read the snapshot
            check_known_cells(known, space.n_states, space.n_products)
            return None, known
    tables = Tables.from_groups(run_dir.iter_snapshot(which, SNAPSHOT_CELL_COLUMNS), space)
    known = tables.known_cells()
    if store:
        _store(run_dir, inputs, known)
    return tables, known


def load_counts(
    run_dir: RunDir, space: StateSpace, which: str = "initial", *, store: bool = False
) -> np.ndarray:
    """The ``count`` table of a snapshot (default the initial one: the historical counts),
    int64 (n_states, n_products), from the cache when it holds the snapshot (``store``: as
    for :func:`load_known_tables`)."""
    tables, known = load_known_cells(run_dir, space, which, store=store)
    if tables is not None:
        return tables.count.copy()
    return known_counts(known, space.n_states, space.n_products)


def cache_inputs(run_dir: RunDir, which: str) -> dict[str, Any] | None:
    """What a snapshot's tables are computed from: the SHA-256 of the snapshot file and of the
    state space files its checks read (None: a file cannot be read; the snapshot's own reader
    reports it)."""
    try:
        name = run_dir.manifest[SNAPSHOT_KEYS[which]]
        folder = run_dir.path / "state_space"
        return {
            "version": LAYOUT_VERSION,
            "snapshot": file_sha256(run_dir.path / name),
            "states": file_sha256(folder / "states.parquet"),
            "products": file_sha256(folder / "products.parquet"),
        }
    except (OSError, TypeError):
        return None


def _read_known(run_path: Path, inputs: dict[str, Any] | None) -> dict[str, np.ndarray] | None:
    """The stored known cells of ``inputs`` (unchecked: see :func:`check_known_cells`), or
    None."""
    if inputs is None:
        return None
    expected = {name: ((-1,), dtype) for name, dtype in KNOWN_CELL_DTYPES.items()}
    return read_arrays(run_path, CACHE_NAME, inputs, expected)


def _store(run_dir: RunDir, inputs: dict[str, Any] | None, known: dict[str, np.ndarray]) -> None:
    """Store the known cells of ``inputs`` and remove the entries of snapshots the run no
    longer names as its latest or initial one."""
    if inputs is None:
        return
    write_arrays(run_dir.path, CACHE_NAME, inputs, known)
    kept = [inputs]
    for which in SNAPSHOT_KEYS:
        other = cache_inputs(run_dir, which)
        if other is not None:
            kept.append(other)
    remove_others(run_dir.path, CACHE_NAME, kept)
