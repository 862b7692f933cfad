"""Arrays derived from a run directory, kept in it for the next process that needs them.

Layout::

    RUN_DIR/cache/<name>-<key>.npz   the arrays, uncompressed; <key>: the first 16 hex digits
                                     of the SHA-256 of everything they were computed from

A sweep's ``popularity`` response model costs a sweep far more to build than to read back
(figures in README, Performance). The key covers every input (the caller lists
them, the run id among them: a run directory rebuilt by ``prepare`` has a new one), so an
entry is never stale; entries are written to a temporary name and renamed into place. The cache
is an optimisation only: a missing, unreadable or unwritable entry (a read-only run directory)
means the arrays are computed again, never an error.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from rlreco.io.atomic_files import atomic_path

CACHE_DIR = "cache"


def cache_path(run_path: Path, name: str, inputs: Mapping[str, Any]) -> Path:
    """The file of the arrays ``name`` computed from ``inputs`` (JSON-compatible values)."""
    text = json.dumps({"name": name, **inputs}, sort_keys=True)
    key = hashlib.sha256(text.encode()).hexdigest()[:16]
    return run_path / CACHE_DIR / f"{name}-{key}.npz"


def read_arrays(
    run_path: Path,
    name: str,
    inputs: Mapping[str, Any],
    expected: Mapping[str, tuple[tuple[int, ...], np.dtype[Any]]],
) -> dict[str, np.ndarray] | None:
    """The cached arrays named in ``expected``, each of its shape and dtype there, or None
    (absent, unreadable, or of other shapes or dtypes)."""
    path = cache_path(run_path, name, inputs)
    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {key: stored[key] for key in expected}
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
        return None
    for key, (shape, dtype) in expected.items():
        if arrays[key].shape != shape or arrays[key].dtype != dtype:
            return None
    return arrays


def write_arrays(
    run_path: Path, name: str, inputs: Mapping[str, Any], arrays: Mapping[str, np.ndarray]
) -> None:
    """Store the arrays (nothing happens where the run directory cannot be written)."""
    path = cache_path(run_path, name, inputs)
    with contextlib.suppress(OSError), atomic_path(path) as tmp, tmp.open("wb") as stream:
        np.savez(stream, allow_pickle=False, **arrays)
