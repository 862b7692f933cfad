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
import io
import json
import struct
import zipfile
import zlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib import format as npy_format

from rlreco.io.atomic_files import atomic_path

CACHE_DIR = "cache"
#: A zip member's local header before its name and extra field (as :mod:`zipfile` reads it).
_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")


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
    """The cached arrays named in ``expected``, each of its shape (-1: a dimension of any
    length) and dtype there, or None (absent, unreadable, damaged, or of other shapes or
    dtypes). The arrays are read whole, their checksums checked (a damaged entry is None)."""
    path = cache_path(run_path, name, inputs)
    arrays = {}
    try:
        with zipfile.ZipFile(path) as archive, path.open("rb") as raw:
            for key, (shape, dtype) in expected.items():
                array = _read_member(archive, raw, f"{key}.npy", shape, dtype)
                if array is None:
                    return None
                arrays[key] = array
    except (OSError, KeyError, ValueError, EOFError, struct.error, zipfile.BadZipFile):
        return None
    return arrays


def _read_member(
    archive: zipfile.ZipFile,
    raw: io.BufferedReader,
    name: str,
    shape: tuple[int, ...],
    dtype: np.dtype[Any],
) -> np.ndarray | None:
    """One ``.npy`` member of an entry read straight from the file into a new array, or None:
    not stored uncompressed, not of ``shape`` (-1: any length) and ``dtype``, or not of the
    zip checksum the entry records for it."""
    info = archive.getinfo(name)
    if info.compress_type != zipfile.ZIP_STORED:
        return None
    with archive.open(info) as member:
        version = npy_format.read_magic(member)
        if version == (1, 0):
            found, fortran_order, found_dtype = npy_format.read_array_header_1_0(member)
        else:
            found, fortran_order, found_dtype = npy_format.read_array_header_2_0(member)
        header_size = member.tell()
    if (
        fortran_order
        or found_dtype != dtype
        or len(found) != len(shape)
        or any(want not in (-1, got) for want, got in zip(shape, found, strict=True))
    ):
        return None
    array = np.empty(found, dtype=dtype)
    data = array.reshape(-1).view(np.uint8)
    if info.file_size != header_size + data.size:
        return None
    # the member's bytes follow its local header (fixed part, then name and extra field)
    raw.seek(info.header_offset)
    local = raw.read(_LOCAL_HEADER.size)
    name_size, extra_size = _LOCAL_HEADER.unpack(local)[-2:]
    raw.seek(info.header_offset + _LOCAL_HEADER.size + name_size + extra_size)
    header = raw.read(header_size)
    if (
        raw.readinto(data.data) != data.size
        or zlib.crc32(data.data, zlib.crc32(header)) != info.CRC
    ):
        return None
    return array


def write_arrays(
    run_path: Path, name: str, inputs: Mapping[str, Any], arrays: Mapping[str, np.ndarray]
) -> None:
    """Store the arrays (nothing happens where the run directory cannot be written)."""
    path = cache_path(run_path, name, inputs)
    with contextlib.suppress(OSError), atomic_path(path) as tmp, tmp.open("wb") as stream:
        np.savez(stream, allow_pickle=False, **arrays)


def remove_others(run_path: Path, name: str, kept: Iterable[Mapping[str, Any]]) -> None:
    """Remove the stored arrays ``name`` of inputs other than ``kept`` (nothing happens where
    the run directory cannot be written)."""
    keep = {cache_path(run_path, name, inputs).name for inputs in kept}
    with contextlib.suppress(OSError):
        for path in (run_path / CACHE_DIR).glob(f"{name}-*.npz"):
            if path.name not in keep:
                path.unlink(missing_ok=True)
