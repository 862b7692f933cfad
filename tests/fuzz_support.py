"""Shared parts of the fuzz tests (``tests/test_fuzz_*.py``).

Profiles (registered in ``conftest.py``, chosen by ``HYPOTHESIS_PROFILE``):

* ``ci`` (default): derandomized (fixed seeds), each test runs its ``ci`` example count once;
  all fuzz tests together stay within about a minute (``make test``).
* ``fuzz`` (``make fuzz``): random seeds; each test runs batches of up to :data:`FUZZ_BATCH`
  examples until its share of ``RLRECO_FUZZ_SECONDS`` (default 600) per surface has passed.

Every case must end in success, or in a :class:`~rlreco.errors.RlrecoError` whose message is
one line (the CLI: exit code 2 and one line on stderr), with nothing written or changed.
Anything else propagates and hypothesis reports the falsifying example.

:func:`tally` counts the cases per input surface; ``conftest.py`` prints the counts and times
at the end of the session.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import hypothesis.strategies as st
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from hypothesis import HealthCheck, settings

from rlreco.errors import RlrecoError

PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
#: Most examples per hypothesis run in the ``fuzz`` profile (runs repeat until the time is up).
FUZZ_BATCH = 500
#: Longest error line accepted (the CLI cuts longer ones; loaders should stay well below).
MAX_LINE = 1000

#: Cases, seconds and CPU seconds (this process, every thread) per surface in this session
#: (printed by ``conftest.py``; the CPU seconds do not grow with the load of a shared machine).
CASES: dict[str, int] = defaultdict(int)
SECONDS: dict[str, float] = defaultdict(float)
CPU_SECONDS: dict[str, float] = defaultdict(float)

_HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example]
if hasattr(HealthCheck, "function_scoped_fixture"):
    _HEALTH.append(HealthCheck.function_scoped_fixture)


def register_profiles() -> None:
    """Register the ``ci`` and ``fuzz`` profiles and load ``HYPOTHESIS_PROFILE``."""
    settings.register_profile(
        "ci",
        derandomize=True,
        deadline=None,
        database=None,
        print_blob=True,
        suppress_health_check=_HEALTH,
    )
    settings.register_profile("fuzz", deadline=None, print_blob=True, suppress_health_check=_HEALTH)
    settings.load_profile(PROFILE)


def fuzz_seconds() -> float | None:
    """Time budget per fuzz test in the ``fuzz`` profile, None in ``ci``."""
    if PROFILE != "fuzz":
        return None
    return float(os.environ.get("RLRECO_FUZZ_SECONDS", "600"))


T = TypeVar("T", bound=Callable[..., Any])


def examples(ci: int) -> Callable[[T], T]:
    """Settings of one fuzz test: ``ci`` examples in the ci profile, a batch in ``fuzz`` (at
    most ten times ``ci``: slow CLI cases come in small batches, so a surface's time is not
    overrun by much when a batch starts just before it is up)."""
    return settings(max_examples=ci if PROFILE != "fuzz" else min(FUZZ_BATCH, 10 * ci))


def drive(surface: str, test: Callable[[], None], share: float = 1.0) -> None:
    """Run a ``@given`` test once (ci), or again and again until its time is spent (fuzz):
    ``share`` of the surface's ``RLRECO_FUZZ_SECONDS`` (the shares of a surface's tests add
    up to 1)."""
    budget = fuzz_seconds()
    budget = None if budget is None else budget * share
    start, cpu = time.monotonic(), time.process_time()
    try:
        test()
        while budget is not None and time.monotonic() - start < budget:
            test()
    finally:
        SECONDS[surface] += time.monotonic() - start
        CPU_SECONDS[surface] += time.process_time() - cpu


def tally(surface: str) -> None:
    """Count one generated case of ``surface``."""
    CASES[surface] += 1


def check_one_line(message: str) -> str:
    """Assert that an error message is a single, reasonably short line; return it."""
    assert message.strip(), "empty error message"
    assert len(message.strip().splitlines()) == 1, f"not one line: {message!r}"
    assert len(message) <= MAX_LINE, f"{len(message)} characters: {message[:200]!r}..."
    return message


def outcome(call: Callable[[], Any]) -> str | None:
    """Run a loader: None on success, the one-line message of a :class:`RlrecoError`.

    Any other exception propagates (a crash: hypothesis shrinks and reports it).
    """
    try:
        call()
    except RlrecoError as exc:
        return check_one_line(str(exc))
    return None


def cli_outcome(result: Any) -> str | None:
    """A CliRunner result: None on exit 0, else assert exit 2 with one stderr line; return it."""
    if result.exit_code == 0:
        return None
    assert result.exit_code == 2, (
        f"exit code {result.exit_code}: {result.stderr or result.output}",
        result.exception,
    )
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


def tree_digest(path: Path) -> str | None:
    """Digest of a file or folder tree (names and bytes); None when ``path`` does not exist."""
    if not path.exists():
        return None
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*"))
    for item in files:
        digest.update(str(item.relative_to(path.parent)).encode() + b"\0")
        if item.is_file():
            digest.update(item.read_bytes())
        digest.update(b"\1")
    return digest.hexdigest()


#: A file modified this recently (ns) has its bytes compared too: a rewrite within one tick of
#: the file system's clock may leave its size and time unchanged.
RECENT_NS = 2_000_000_000


def tree_state(path: Path, hashed: set[Path] | None = None) -> tuple[list[Any], set[Path]]:
    """Names, inode, size and modification time of every entry of a file or tree, plus the
    bytes' digest of the files in ``hashed`` (default: those modified in the last
    :data:`RECENT_NS`); returns the state and the hashed files. Any write, rename or deletion
    shows, at the cost of reading only the files a case has just written."""
    if not path.exists():
        return [], set()
    items = [path] if path.is_file() else sorted(path.rglob("*"))
    if hashed is None:
        now = time.time_ns()
        hashed = {p for p in items if p.is_file() and now - p.stat().st_mtime_ns < RECENT_NS}
    state: list[Any] = []
    for item in items:
        info = item.stat()
        state.append((str(item), info.st_ino, info.st_size, info.st_mtime_ns))
        if item in hashed and item.is_file():
            state.append(hashlib.sha256(item.read_bytes()).digest())
    return state, hashed


@contextlib.contextmanager
def unchanged(*paths: Path) -> Iterator[None]:
    """Assert that every path (file or tree, or absent) is the same after the block: no entry
    added, removed, replaced or written (:func:`tree_state`)."""
    before = [tree_state(p) for p in paths]
    yield
    for path, (state, hashed) in zip(paths, before, strict=True):
        assert tree_state(path, hashed)[0] == state, f"{path} changed"


# ------------------------------------------------------------------ byte strategies


@st.composite
def mutated(draw: st.DrawFn, base: bytes, max_ops: int = 4) -> bytes:
    """``base`` with a few random edits: truncation, bit flips, NUL bytes, spans replaced,
    duplicated or deleted, line endings changed, or random bytes appended."""
    data = bytearray(base)
    for _ in range(draw(st.integers(1, max_ops))):
        op = draw(st.sampled_from(_MUTATIONS))
        n = len(data)
        i = draw(st.integers(0, max(n - 1, 0)))
        j = draw(st.integers(i, min(n, i + 256)))
        if op == "truncate":
            del data[i:]
        elif op == "flip" and n:
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and n:
            data[i] = draw(st.integers(0, 255))
        elif op == "nul":
            data[i:i] = b"\0" * draw(st.integers(1, 8))
        elif op == "replace":
            data[i:j] = draw(st.binary(max_size=64))
        elif op == "delete":
            del data[i:j]
        elif op == "duplicate":
            data[i:i] = data[i:j]
        elif op == "newlines":
            nl = draw(st.sampled_from([b"\r", b"\r\n", b"\n\r", b"\n\n"]))
            data[i:j] = bytes(data[i:j]).replace(b"\n", nl)
        else:  # append
            data += draw(st.binary(min_size=1, max_size=64))
    return bytes(data)


_MUTATIONS = (
    "truncate",
    "flip",
    "set",
    "nul",
    "replace",
    "delete",
    "duplicate",
    "newlines",
    "append",
)


def gzip_bytes(data: bytes) -> bytes:
    """gzip-compress deterministically (no timestamp)."""
    return gzip.compress(data, mtime=0)


def invalid_utf8(n: int) -> pa.Array:
    """``n`` strings that are not UTF-8 (b"\\x80"), built without Arrow's validation."""
    offsets = pa.py_buffer(np.arange(n + 1, dtype=np.int32).tobytes())
    return pa.Array.from_buffers(pa.string(), n, [None, offsets, pa.py_buffer(b"\x80" * n)])


# -------------------------------------------------- Arrow tables: value-level mutations

#: Replacement values by Arrow type family.
ints = st.one_of(
    st.sampled_from([0, -1, 1, 2, 7, 2**31 - 1, -(2**31), 2**62]), st.integers(-5, 600)
)
floats = st.one_of(st.floats(), st.sampled_from([0.0, -0.0, 1e308, -1.0]))
texts = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["", "Q1", "Q9", "January", "Funday", "Q1_January_0_Monday", "85123A"]),
)


@cache
def replacement(kind: pa.DataType) -> st.SearchStrategy[Any]:
    """Values for a cell of type ``kind`` (one strategy per type: built once)."""
    if pa.types.is_integer(kind):
        bits = kind.bit_width
        return ints.filter(lambda v: -(2 ** (bits - 1)) <= v < 2 ** (bits - 1))
    if pa.types.is_floating(kind):
        return floats
    if pa.types.is_timestamp(kind):
        return st.one_of(st.integers(-(2**62), 2**62), st.sampled_from([0, -1, 2**63 - 1]))
    if pa.types.is_boolean(kind):
        return st.booleans()
    return texts


TABLE_OPS = st.sampled_from(
    ["set"] * 6 + ["null", "drop_row", "dup_row", "swap", "empty", "column", "meta"]
)
COLUMN_OPS = st.sampled_from(["drop", "rename", "float", "string", "add"])
TAGS = st.sampled_from(
    [
        b"{}",
        b"not json",
        b'{"kind": "states", "schema_version": 1}',
        b'{"kind": "snapshot", "schema_version": 2}',
        b'{"kind": "metrics", "schema_version": "1"}',
        b'["kind"]',
    ]
)


@st.composite
def mutated_table(draw: st.DrawFn, table: pa.Table) -> pa.Table:
    """``table`` (metadata kept) with a few edits: cells set (to extreme, foreign or null
    values), rows dropped, duplicated or swapped, columns dropped, added, renamed or retyped,
    or the rlreco metadata changed."""
    for _ in range(draw(st.integers(1, 3))):
        n = table.num_rows
        op = draw(TABLE_OPS)
        meta = table.schema.metadata
        if op in ("set", "null") and n and table.num_columns:
            c = draw(st.integers(0, table.num_columns - 1))
            field = table.schema.field(c)
            row = draw(st.integers(0, n - 1))
            new = pa.scalar(None if op == "null" else draw(replacement(field.type)), field.type)
            mask = pa.array(np.arange(n) == row)
            table = table.set_column(c, field, pc.if_else(mask, new, table.column(c)))
        elif op == "drop_row" and n:
            row = draw(st.integers(0, n - 1))
            table = pa.concat_tables([table.slice(0, row), table.slice(row + 1)])
        elif op == "dup_row" and n:
            row = draw(st.integers(0, n - 1))
            table = pa.concat_tables([table, table.slice(row, 1)])
        elif op == "swap" and n > 1:
            i, j = draw(st.integers(0, n - 1)), draw(st.integers(0, n - 1))
            order = list(range(n))
            order[i], order[j] = order[j], order[i]
            table = table.take(order)
        elif op == "empty":
            table = table.slice(0, 0)
        elif op == "column" and table.num_columns:
            c = draw(st.integers(0, table.num_columns - 1))
            how = draw(COLUMN_OPS)
            field = table.schema.field(c)
            if how == "drop":
                table = table.remove_column(c)
            elif how == "rename":
                table = table.rename_columns(
                    [draw(texts) if i == c else f.name for i, f in enumerate(table.schema)]
                )
            elif how == "add":
                table = table.append_column("extra", pa.array([1] * n, pa.int64()))
            else:
                kind = pa.float64() if how == "float" else pa.string()
                with contextlib.suppress(pa.ArrowException):  # not castable: unchanged
                    table = table.set_column(c, field.name, table.column(c).cast(kind))
        elif op == "meta":
            info = draw(TAGS)
            meta = {**(meta or {}), b"rlreco": info}
        table = table.replace_schema_metadata(meta)
    return table


def parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


#: Arrow columns of any of the types a Parquet writer may hand us.
arrow_column = st.one_of(
    st.lists(st.one_of(st.none(), st.text(max_size=12)), max_size=6).map(
        lambda v: pa.array(v, pa.string())
    ),
    st.lists(st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)), max_size=6).map(
        lambda v: pa.array(v, pa.int64())
    ),
    st.lists(st.one_of(st.none(), st.floats()), max_size=6).map(
        lambda v: pa.array(v, pa.float64())
    ),
    st.lists(st.one_of(st.none(), st.booleans()), max_size=6).map(
        lambda v: pa.array(v, pa.bool_())
    ),
    st.lists(st.one_of(st.none(), st.binary(max_size=8)), max_size=6).map(
        lambda v: pa.array(v, pa.binary())
    ),
    st.lists(st.one_of(st.none(), st.integers(-(2**62), 2**62)), max_size=6).map(
        lambda v: pa.array(v, pa.timestamp("ns"))
    ),
    st.lists(st.one_of(st.none(), st.integers(-(2**31), 2**31 - 1)), max_size=6).map(
        lambda v: pa.array(v, pa.date32())
    ),
    st.lists(st.one_of(st.none(), st.integers(-5, 5)), max_size=6).map(
        lambda v: pa.array(v, pa.int8()).dictionary_encode()
    ),
    st.lists(st.lists(st.integers(0, 9), max_size=2), max_size=6).map(
        lambda v: pa.array(v, pa.list_(pa.int64()))
    ),
)


def mixed_table(draw: st.DrawFn, names: list[str], base: Callable[[int], pa.Table]) -> pa.Table:
    """A table with columns ``names`` (duplicates allowed) of random types and values; on a
    coin flip, some of them taken instead from ``base(n)``, the first ``n`` rows of a valid
    table, so that the other columns are what breaks it."""
    columns = [draw(arrow_column) for _ in names]
    n = min((len(c) for c in columns), default=0)
    if draw(st.booleans()):
        valid = base(n)
        columns = [
            valid.column(name).combine_chunks()
            if name in valid.column_names and draw(st.booleans())
            else col
            for name, col in zip(names, columns, strict=True)
        ]
    return pa.table([c.slice(0, n) for c in columns], names=names)
