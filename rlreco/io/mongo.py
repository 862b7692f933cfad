"""MongoDB sync of a run's learned tables: export a snapshot, import it back, serve visits.

Layouts, field-name escaping and the snapshot frame are described in
:mod:`rlreco.io.mongo_layout`; retries and error messages in :mod:`rlreco.io.mongo_connection`;
online visits (:func:`read_state`, :func:`apply_visit`) in :mod:`rlreco.io.mongo_visit`, with
each layout's reads and version-guarded writes of one state in :mod:`rlreco.io.mongo_state_store`;
the export itself (:func:`export_snapshot`, streamed in bounded batches of whole states) in
:mod:`rlreco.io.mongo_export`, reading the snapshot through :mod:`rlreco.io.mongo_source` and
:mod:`rlreco.io.mongo_cells`.

Export is idempotent and incremental. Each state's content digest is kept in ``sync_state``
(seed: keyed by state, since the seed database holds one snapshot; tidy: by run and state) and
written only after all of the state's documents, so an export interrupted at any point and run
again rewrites exactly the states whose digest is missing or different and leaves nothing
duplicated (every write is an upsert on a unique key). A state is rewritten whole: its
documents are replaced and cells absent from the snapshot are deleted; states absent from the
snapshot are deleted. The digest covers what the layout stores, not ``episodes`` or
``updated_at``, so a longer run rewrites only the states its visits changed. Writes made by
other programs (e.g. the original's code) are not detected; ``force=True`` rewrites everything.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from rlreco.errors import SyncError, shown
from rlreco.io.mongo_connection import MongoLink, RetryPolicy, connect, database_of, redact_uri
from rlreco.io.mongo_export import CollectionCounts, ExportReport, export_snapshot
from rlreco.io.mongo_layout import (
    CELLS,
    DEFAULT_DB,
    RUNS,
    SEED_COLLECTIONS,
    SNAPSHOT_DTYPES,
    VERSION_FIELD,
    CodeIndex,
    check_layout,
    decode_manifest,
    frame_from_seed,
    frame_from_tidy,
    unescape_field,
)
from rlreco.io.mongo_source import SnapshotFile
from rlreco.io.mongo_visit import VisitResult, VisitStep, apply_visit, read_state, resolve_run_id
from rlreco.schema import DEFAULT_STATE_FIELDS

__all__ = [
    "DEFAULT_DB",
    "SNAPSHOT_DTYPES",
    "CodeIndex",
    "CollectionCounts",
    "ExportReport",
    "RetryPolicy",
    "SnapshotFile",
    "VisitResult",
    "VisitStep",
    "apply_visit",
    "connect",
    "export_snapshot",
    "import_snapshot",
    "read_state",
    "redact_uri",
]


def import_snapshot(
    client_or_db: Any,
    *,
    db: str = DEFAULT_DB,
    layout: str = "seed",
    run_id: str | None = None,
    index: CodeIndex | None = None,
    policy: RetryPolicy | None = None,
    fields: tuple[str, ...] = DEFAULT_STATE_FIELDS,
) -> tuple[pd.DataFrame, dict[str, Any] | None]:
    """Read a snapshot back from MongoDB.

    Parameters
    ----------
    client_or_db, db, layout, policy
        As for :func:`export_snapshot`.
    run_id : str, optional
        Tidy layout: the run (default: the only run in ``runs``).
    index : CodeIndex, optional
        Seed layout, which stores no integer ids: maps state ids and StockCodes to
        ``state_id``/``product_id``; without it both columns are -1.
    fields : tuple of str
        State fields of the run the tables belong to (the state ids are parsed into them).

    Returns
    -------
    snapshot : pandas.DataFrame
        Snapshot columns and dtypes, sorted by (state_id, product_id, state, product_code);
        bit-identical numbers to what was exported.
    manifest : dict or None
        The run's manifest (tidy), None for the seed layout.

    Raises
    ------
    SyncError
        Unknown run, several runs and no ``run_id``, a state id that does not parse, a code
        missing from ``index``, or a database error.
    """
    kind = check_layout(layout)
    link = MongoLink(database_of(client_or_db, db), policy or RetryPolicy())
    if kind == "seed":
        tables = {column: _seed_table(link, name) for column, name in SEED_COLLECTIONS.items()}
        return frame_from_seed(tables, index, fields), None
    run = resolve_run_id(link, run_id)
    runs = link.db[RUNS]
    record = link.run(f"read of {link.db.name}.{RUNS}", lambda: runs.find_one({"_id": run}))
    hidden = {"_id": 0, "run_id": 0, "episodes": 0, "updated_at": 0, VERSION_FIELD: 0}
    docs = link.find_all(CELLS, {"run_id": run}, hidden)
    if record is None and not docs:
        raise SyncError(f"run {run!r} not found in {link.db.name}.{RUNS} or .{CELLS}")
    stored = record.get("manifest") if record is not None else None
    manifest = decode_manifest(stored) if stored is not None else None
    if manifest is not None:
        _check_stored_manifest(manifest, f"{link.db.name}.{RUNS} document {run!r}")
    return frame_from_tidy(docs, fields), manifest


#: Types of the manifest keys an import takes from a stored run (absent keys are allowed).
_MANIFEST_TYPES: dict[str, tuple[type, ...]] = {
    "run_id": (str,),
    "episodes": (int,),
    "seed": (int,),
    "config": (dict,),
    "rng_state": (dict, type(None)),
}


def _check_stored_manifest(manifest: Any, where: str) -> None:
    """One-line SyncError unless a stored manifest is an object with keys of the right types."""
    if not isinstance(manifest, dict):
        raise SyncError(f"{where}: manifest = {shown(manifest)}: expected a document")
    for key, types in _MANIFEST_TYPES.items():
        value = manifest.get(key)
        if key in manifest and (not isinstance(value, types) or isinstance(value, bool)):
            allowed = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise SyncError(f"{where}: manifest key {key!r} = {shown(value)}: expected {allowed}")


def _seed_table(link: MongoLink, name: str) -> dict[str, dict[str, Any]]:
    """State id -> StockCode -> number, from one seed collection (names unescaped)."""
    table: dict[str, dict[str, Any]] = {}
    for doc in link.find_all(name, {}):
        for key, cells in doc.items():
            if key in ("_id", VERSION_FIELD):
                continue
            if not isinstance(cells, Mapping):
                raise SyncError(
                    f"{link.db.name}.{name} document {doc['_id']!r}: field {key!r} is not a "
                    "document of StockCode -> number"
                )
            table[unescape_field(key)] = {unescape_field(c): v for c, v in cells.items()}
    return table
