"""Checks of a run directory's manifest and state space tables (one-line SnapshotError)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from rlreco.errors import SnapshotError, shown
from rlreco.io.parquet_tables import fields_of_columns
from rlreco.schema import DEFAULT_STATE_FIELDS, format_state_id

#: The pending metrics a commit writes before its manifest (rlreco.io.run_dir).
_PENDING = re.compile(r"\.metrics-[0-9]{15}\.parquet")


def check_manifest(mpath: Path, manifest: Mapping[str, Any]) -> None:
    """Types of the manifest keys a run directory is read by (one-line SnapshotError)."""

    def bad(key: str, allowed: str) -> SnapshotError:
        return SnapshotError(
            f"{mpath}: key '{key}' = {shown(manifest.get(key), 60)}: expected {allowed}"
        )

    episodes = manifest["episodes"]
    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 0:
        raise bad("episodes", "an integer >= 0")
    if not isinstance(manifest["run_id"], str) or not manifest["run_id"]:
        raise bad("run_id", "a non-empty string")
    if not isinstance(manifest["config"], dict):
        raise bad("config", "a JSON object")
    for key in ("snapshot", "initial_snapshot", "metrics"):
        name = manifest.get(key)
        if key == "metrics" and name is None:
            continue
        if not isinstance(name, str) or not name.isprintable():
            raise bad(key, "the relative path of a file in the run directory")
        parts = Path(name).parts
        if not parts or Path(name).is_absolute() or ".." in parts:
            raise bad(key, "the relative path of a file in the run directory")
    pending = manifest.get("metrics_pending")
    if pending is not None and not (isinstance(pending, str) and _PENDING.fullmatch(pending)):
        raise bad("metrics_pending", "null or the name .metrics-<15 digits>.parquet")
    seed = manifest.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise bad("seed", "an integer >= 0")
    if not isinstance(manifest.get("rng_state"), dict | None):
        raise bad("rng_state", "a JSON object or null")
    if not isinstance(manifest.get("simulations", []), list):
        raise bad("simulations", "a list")


def check_space(folder: Path, space: Mapping[str, Mapping[str, np.ndarray]]) -> None:
    """The three state space tables agree (one-line SnapshotError naming the file and row)."""
    states, products, catalogues = space["states"], space["products"], space["catalogues"]

    def bad(kind: str, row: int, what: str) -> SnapshotError:
        return SnapshotError(f"{folder / kind}.parquet: row {row}: {what}")

    for kind, ids, name in (
        ("states", states["state_id"], "state_id"),
        ("products", products["product_id"], "product_id"),
    ):
        if ids.size == 0:
            raise SnapshotError(f"{folder / kind}.parquet: no rows")
        wrong = np.flatnonzero(ids != np.arange(ids.size))
        if wrong.size:
            row = int(wrong[0])
            raise bad(kind, row, f"{name} {ids[row]}, expected {row} (ids are 0..n-1 in order)")
    fields = fields_of_columns("states", list(states))
    if "segment" not in fields:  # catalogues are per segment: the field is required
        raise SnapshotError(f"{folder / 'states'}.parquet: no 'segment' column (it is required)")
    if "half" in fields:
        wrong = np.flatnonzero(~np.isin(states["half"], (0, 1)))
        if wrong.size:
            raise bad("states", int(wrong[0]), f"half {states['half'][wrong[0]]}, expected 0 or 1")
    # a log-derived state space has no calendar: its ids are the logs' context labels, its
    # months and weekdays empty (rlreco.engine.state_space)
    labelled = fields == DEFAULT_STATE_FIELDS and all(
        not np.any(np.asarray(states[f]).astype(str) != "") for f in ("month", "weekday")
    )
    components = zip(*(states[f].tolist() for f in fields), strict=True)
    for row, (state, parts) in enumerate(zip(states["state"].tolist(), components, strict=True)):
        if labelled:
            break
        if state != format_state_id(list(parts)):
            joined = shown("_".join(fields), 80)  # field names come from the file
            raise bad("states", row, f"state {shown(state)} is not its fields {joined} joined")
    weight = states["weight"]
    wrong = np.flatnonzero(~(np.isfinite(weight) & (weight >= 0)))
    if wrong.size:
        raise bad("states", int(wrong[0]), f"weight {weight[wrong[0]]}, expected a number >= 0")
    for kind, values, name in (
        ("states", states["state"], "state"),
        ("products", products["product_code"], "product_code"),
    ):
        _, first, counts = np.unique(values, return_index=True, return_counts=True)
        if (counts > 1).any():
            row = int(np.sort(first[counts > 1])[0])
            raise bad(kind, row, f"{name} {shown(values[row])} appears more than once")
    product = catalogues["product_id"]
    wrong = np.flatnonzero((product < 0) | (product >= products["product_id"].size))
    if wrong.size:
        raise bad("catalogues", int(wrong[0]), f"product_id {product[wrong[0]]} is not a product")
    segments = set(states["segment"].tolist())
    for row, segment in enumerate(catalogues["segment"].tolist()):
        if segment not in segments:
            raise bad("catalogues", row, f"segment {shown(segment)} has no state")
    pairs = np.unique(
        np.stack([np.unique(catalogues["segment"], return_inverse=True)[1], product]), axis=1
    )
    if pairs.shape[1] != product.size:
        raise SnapshotError(f"{folder / 'catalogues'}.parquet: a (segment, product) pair repeats")
    missing = segments - set(catalogues["segment"].tolist())
    if missing:
        raise SnapshotError(
            f"{folder / 'catalogues'}.parquet: segment {shown(min(missing))} has no products"
        )
