"""Atomic files and folders: written under a temporary name, renamed into place."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rlreco.errors import SnapshotError


def _process_umask() -> int:
    # os.umask can only be read by setting it: done once, at import, before any thread writes
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: modes of what is renamed into place: those of a plain open() or mkdir() under the umask
#: (tempfile creates its files and folders private to the owner)
_UMASK = _process_umask()
FILE_MODE = 0o666 & ~_UMASK
DIR_MODE = 0o777 & ~_UMASK


@contextlib.contextmanager
def staged_directory(path: Path, *, force: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder next to ``path``; rename it onto ``path`` on success.

    An existing ``path`` is replaced only with ``force``. On an exception the temporary folder
    is removed and ``path`` is left untouched.

    Raises
    ------
    SnapshotError
        If ``path`` exists and ``force`` is false.
    """
    if path.exists() and not force:
        raise SnapshotError(f"{path}: already exists; choose another --out or pass --force")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        tmp.chmod(DIR_MODE)
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; rename it onto ``target`` on success.

    On an exception the temporary file is removed and ``target`` is left untouched.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        tmp_path.chmod(FILE_MODE)
        yield tmp_path
        os.replace(tmp_path, target)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", encoding="utf-8")
