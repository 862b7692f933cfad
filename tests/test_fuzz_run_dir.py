"""Fuzzing run directories: manifest, state space, snapshots and metrics, byte and value level.

In-process, a fuzzed run directory is read the way every command reads one (manifest, config,
state space, both snapshots, metrics, checked against each other); through the CLI,
``rlreco recommend --respond none`` (read only) and ``rlreco simulate`` on a copy. Each case
succeeds or is one line (exit code 2) with the run directory unchanged.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fuzz_support import (
    cli_outcome,
    drive,
    examples,
    ints,
    invalid_utf8,
    mutated,
    mutated_table,
    outcome,
    parquet_bytes,
    tally,
    texts,
    tree_digest,
    unchanged,
)
from hypothesis import given
from typer.testing import CliRunner

from rlreco.cli import app
from rlreco.config import config_from_dict
from rlreco.engine.state_space import StateSpace
from rlreco.engine.tables import Tables
from rlreco.io.run_dir import MANIFEST, RunDir

runner = CliRunner()
#: Run directory files by surface name (the snapshots are found from the manifest).
FILES = {
    "states": "state_space/states.parquet",
    "products": "state_space/products.parquet",
    "catalogues": "state_space/catalogues.parquet",
    "metrics": "metrics.parquet",
}


def surface_path(run: Path, surface: str) -> Path:
    """The file of a surface in ``run`` (``snapshot``: the latest, ``initial``: the first)."""
    if surface in FILES:
        return run / FILES[surface]
    if surface == "manifest":
        return run / MANIFEST
    manifest = json.loads((run / MANIFEST).read_text())
    return run / manifest["snapshot" if surface == "snapshot" else "initial_snapshot"]


def read_run(path: Path) -> None:
    """Everything a command reads from a run directory, checked against each other."""
    run = RunDir.open(path)
    config_from_dict(run.manifest["config"], source=f"{path}/manifest.json")
    space = StateSpace.from_columns(run.read_space())
    Tables.from_columns(run.read_snapshot(), space)
    Tables.from_columns(run.read_snapshot("initial"), space)
    run.read_metrics()


def reader(path: Path, surface: str) -> Callable[[], None]:
    """What a command reads when ``surface`` is the file that changed (the other files are
    valid, so their reading is done once here): as :func:`read_run`, faster."""
    if surface == "manifest":
        return lambda: read_run(path)
    run = RunDir.open(path)
    columns = run.read_space()
    space = StateSpace.from_columns(columns)
    snapshot = run.read_snapshot()
    if surface in ("states", "products", "catalogues"):

        def read_space() -> None:
            Tables.from_columns(snapshot, StateSpace.from_columns(RunDir.open(path).read_space()))

        return read_space
    if surface == "metrics":
        return lambda: RunDir.open(path).read_metrics() and None
    which = "latest" if surface == "snapshot" else "initial"
    return lambda: Tables.from_columns(RunDir.open(path).read_snapshot(which), space) and None


#: JSON values of every kind (built once: building strategies per draw is slow).
json_value = st.recursive(
    st.one_of(st.none(), st.booleans(), ints, st.floats(allow_nan=False), texts),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(texts, inner, max_size=3)),
    max_leaves=4,
)
#: What a manifest key is set to: any JSON value, or a path-like string.
manifest_value = st.one_of(
    json_value,
    st.sampled_from(
        [
            "snapshots/episodes-000000000000000.parquet",
            "metrics.parquet",
            "manifest.json",
            "../run",
            "state_space",
            "/",
        ]
    ),
)


@st.composite
def manifest_edit(draw: st.DrawFn, manifest: dict[str, Any]) -> bytes:
    """The manifest with keys removed or set to values of any JSON type (nested keys too)."""
    doc = json.loads(json.dumps(manifest))
    for _ in range(draw(st.integers(1, 3))):
        node = doc
        while isinstance(node, dict) and node and draw(st.booleans()):
            key = draw(st.sampled_from(sorted(node)))
            if not isinstance(node[key], dict):
                break
            node = node[key]
        if not isinstance(node, dict) or not node:
            continue
        key = draw(st.sampled_from(sorted(node)))
        if draw(st.integers(0, 4)) == 0:
            del node[key]
        else:
            node[key] = draw(manifest_value)
    return json.dumps(doc).encode()


# ------------------------------------------------------------------ in-process fuzzing


@pytest.fixture
def run(base_run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(base_run, tmp_path / "run"))


def fuzz_file(run: Path, surface: str, data_strategy: st.SearchStrategy[bytes], n: int) -> None:
    """Fuzz one file of the run; the two snapshots share one surface (and its time)."""
    target = surface_path(run, surface)
    original = target.read_bytes()
    read = reader(run, surface)
    label = "run_dir.snapshots" if surface in ("snapshot", "initial") else f"run_dir.{surface}"

    @examples(n)
    @given(data_strategy)
    def case(data: bytes) -> None:
        tally(label)
        target.write_bytes(data)
        try:
            with unchanged(run):
                outcome(read)
        finally:
            target.write_bytes(original)

    drive(label, case, share=0.25 if label == "run_dir.snapshots" else 0.5)


SURFACES = ["manifest", "states", "products", "catalogues", "snapshot", "initial", "metrics"]


@pytest.mark.parametrize("surface", SURFACES)
def test_fuzz_run_dir_bytes(run: Path, surface: str) -> None:
    original = surface_path(run, surface).read_bytes()
    n = 50 if surface in ("snapshot", "initial") else 100
    fuzz_file(run, surface, st.one_of(st.binary(max_size=256), mutated(original)), n)


@pytest.mark.parametrize("surface", [s for s in SURFACES if s != "manifest"])
def test_fuzz_run_dir_values(run: Path, surface: str) -> None:
    table = pq.read_table(surface_path(run, surface))
    n = 200 if surface in ("snapshot", "initial") else 400
    fuzz_file(run, surface, mutated_table(table).map(parquet_bytes), n)


def test_fuzz_run_dir_manifest_values(run: Path) -> None:
    manifest = json.loads((run / MANIFEST).read_text())
    fuzz_file(run, "manifest", manifest_edit(manifest), 400)


# ------------------------------------------------------------------ through the CLI


def cli_case(run: Path, work: Path) -> None:
    """recommend (dry run, read only) and simulate on a copy: exit 0 or 2, nothing changed."""
    before = tree_digest(run)
    state = "Q1_January_0_Monday"
    for args in (
        ["recommend", str(run), "--respond", "none", "--json"],
        ["recommend", str(run), "--respond", "none", "--state", state, "--json"],
    ):
        cli_outcome(runner.invoke(app, args))
        assert tree_digest(run) == before, args
    copy = Path(shutil.copytree(run, work / "copy"))
    try:
        result = runner.invoke(app, ["simulate", str(copy), "-n", "20", "--json"])
        if cli_outcome(result) is not None:
            assert _same_tree(copy, run)
    finally:
        shutil.rmtree(copy)


def _same_tree(a: Path, b: Path) -> bool:
    files_a = sorted(p.relative_to(a) for p in a.rglob("*"))
    files_b = sorted(p.relative_to(b) for p in b.rglob("*"))
    return files_a == files_b and all(
        (a / f).read_bytes() == (b / f).read_bytes() for f in files_a if (a / f).is_file()
    )


def test_fuzz_run_dir_cli(run: Path, tmp_path: Path) -> None:
    manifest = json.loads((run / MANIFEST).read_text())
    originals = {s: surface_path(run, s).read_bytes() for s in SURFACES}
    tables = {s: pq.read_table(surface_path(run, s)) for s in SURFACES if s != "manifest"}
    edit = st.one_of(
        st.tuples(st.just("manifest"), manifest_edit(manifest)),
        *(st.tuples(st.just(s), mutated_table(t).map(parquet_bytes)) for s, t in tables.items()),
        st.tuples(st.sampled_from(SURFACES), st.binary(max_size=64)),
    )

    @examples(8)
    @given(edit)
    def case(change: tuple[str, bytes]) -> None:
        surface, data = change
        tally("run_dir.cli")
        target = surface_path(run, surface)
        target.write_bytes(data)
        try:
            cli_case(run, tmp_path)
        finally:
            target.write_bytes(originals[surface])

    drive("run_dir.cli", case)


# ------------------------------------------------------------------ regressions found by fuzzing


@pytest.mark.parametrize(
    "value", [None, True, 7, "/etc/passwd", "../run/manifest.json", "\r", "a\x00b"]
)
def test_manifest_snapshot_not_a_relative_path(run: Path, value: Any) -> None:
    """``"snapshot": null`` crashed with TypeError (Path / None)."""
    manifest = json.loads((run / MANIFEST).read_text())
    manifest["snapshot"] = value
    (run / MANIFEST).write_text(json.dumps(manifest))
    message = outcome(lambda: read_run(run))
    assert message is not None and "'snapshot'" in message and "relative path" in message


def test_empty_catalogues(run: Path) -> None:
    """An empty catalogues table crashed the state space with TypeError (lexsort of floats)."""
    path = surface_path(run, "catalogues")
    table = pq.read_table(path)
    pq.write_table(table.slice(0, 0), path)
    message = outcome(lambda: read_run(run))
    assert message is not None and "catalogues.parquet" in message and "no products" in message


@pytest.mark.parametrize("surface", ["states", "products", "snapshot"])
def test_text_that_is_not_utf8(run: Path, surface: str) -> None:
    """A string column holding invalid UTF-8 crashed with UnicodeDecodeError (found by make
    fuzz)."""
    path = surface_path(run, surface)
    table = pq.read_table(path)
    c = table.schema.get_field_index("product_code" if surface != "states" else "state")
    table = table.set_column(c, table.schema.field(c), invalid_utf8(table.num_rows))
    pq.write_table(table, path)
    message = outcome(lambda: read_run(run))
    assert message is not None and path.name in message and "UTF8" in message


def test_column_name_that_is_not_utf8(run: Path) -> None:
    """A Parquet footer naming a column in invalid UTF-8 crashed pq.read_table with
    UnicodeDecodeError (found by make fuzz)."""
    path = surface_path(run, "states")
    data = path.read_bytes()
    assert b"\x18\x07segment" in data  # the schema element's name (Thrift string of 7 bytes)
    path.write_bytes(data.replace(b"\x18\x07segment", b"\x18\x07\xf3egment", 1))
    message = outcome(lambda: read_run(run))
    assert message is not None and "states.parquet" in message


def test_states_without_a_segment_column(run: Path) -> None:
    """A states table whose segment column was dropped passed the schema check (fields are
    read from the columns) and crashed the space check with KeyError (found by make fuzz)."""
    path = surface_path(run, "states")
    table = pq.read_table(path)
    pq.write_table(table.remove_column(table.schema.get_field_index("segment")), path)
    message = outcome(lambda: read_run(run))
    assert message is not None and "states.parquet" in message and "'segment'" in message


def test_states_with_two_columns_of_one_name(run: Path) -> None:
    """Two extra state-field columns named "" matched the schema and crashed the column reads
    with KeyError (found by make fuzz)."""
    path = surface_path(run, "states")
    table = pq.read_table(path)
    extra = pa.array([""] * table.num_rows)
    w = table.schema.get_field_index("weight")
    table = table.add_column(w, "", extra).add_column(w, "", extra)
    pq.write_table(table, path)
    message = outcome(lambda: read_run(run))
    assert message is not None and "states.parquet" in message and "appears twice" in message


def test_states_with_a_field_named_by_a_record_separator(run: Path) -> None:
    """A state field named "\\x1e" (a line boundary to ``str.splitlines``) broke the one-line
    rule of the state-id check (found by make fuzz)."""
    path = surface_path(run, "states")
    table = pq.read_table(path)
    w = table.schema.get_field_index("weight")
    table = table.add_column(w, "\x1e", pa.array(["x"] * table.num_rows))
    pq.write_table(table, path)
    message = outcome(lambda: read_run(run))
    assert message is not None and "states.parquet" in message and "\\x1e" in message
