"""Fuzzing truth tables (``--response FILE``) and sweep directories (resumed by ``rlreco sweep``).

Truth tables are read in-process (file checks, then checked against the run's state space) and
through ``rlreco simulate --response FILE``; sweep directories through the sweep directory
reader and ``rlreco sweep`` resuming a finished sweep. Each case succeeds or is one line
(exit code 2) with the run directory, the truth file and the sweep directory unchanged.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import hypothesis.strategies as st
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fuzz_support import (
    cli_outcome,
    drive,
    examples,
    invalid_utf8,
    mutated,
    mutated_table,
    outcome,
    parquet_bytes,
    tally,
    tree_digest,
    unchanged,
)
from hypothesis import given
from typer.testing import CliRunner

from rlreco.cli import app
from rlreco.engine.state_space import StateSpace
from rlreco.engine.truth_table import truth_from_frame
from rlreco.io.run_dir import RunDir
from rlreco.io.sweep_dir import SWEEP_FILE, SweepDir
from rlreco.io.truth import read_truth_table

runner = CliRunner()


@pytest.fixture(scope="module")
def space(base_run: Path) -> StateSpace:
    return StateSpace.from_columns(RunDir.open(base_run).read_space())


def truth_table(space: StateSpace) -> pa.Table:
    """A valid truth table of the run: every (state, catalogue product) once."""
    rows = []
    for s, state in enumerate(space.state_ids.tolist()):
        for p in space.catalogue(int(space.state_segment[s])).tolist():
            rows.append((state, str(space.product_codes[p]), 0.05, 0.02))
    frame = pd.DataFrame(rows, columns=["state_id", "product_id", "p_click", "p_buy"])
    return pa.Table.from_pandas(frame, preserve_index=False)


# ------------------------------------------------------------------ truth tables


def test_fuzz_truth(space: StateSpace, tmp_path: Path) -> None:
    table = truth_table(space)
    path = tmp_path / "truth.parquet"

    def read() -> None:
        truth_from_frame(space, read_truth_table(path), source=str(path))

    @examples(500)
    @given(
        st.one_of(
            st.binary(max_size=256),
            mutated(parquet_bytes(table)),
            mutated_table(table).map(parquet_bytes),
            mutated_table(table).map(parquet_bytes),
        )
    )
    def case(data: bytes) -> None:
        tally("truth")
        path.write_bytes(data)
        with unchanged(tmp_path):
            message = outcome(read)
        if message is not None:
            assert str(path) in message, message

    drive("truth", case)


def test_truth_text_that_is_not_utf8(space: StateSpace, tmp_path: Path) -> None:
    """Invalid UTF-8 in ``state_id`` crashed with UnicodeDecodeError (found by make fuzz)."""
    table = truth_table(space)
    table = table.set_column(0, "state_id", invalid_utf8(table.num_rows))
    path = tmp_path / "truth.parquet"
    pq.write_table(table, path)
    message = outcome(lambda: read_truth_table(path))
    assert message is not None and str(path) in message and "UTF8" in message


def test_truth_probability_error_with_a_control_character_in_the_ids(
    space: StateSpace, tmp_path: Path
) -> None:
    """A state id holding "\\x1e" (a line break to str.splitlines) was printed raw in the
    out-of-range probability message: two lines (found by make fuzz)."""
    table = truth_table(space).slice(0, 3)
    table = table.set_column(0, "state_id", pa.array(["\x1e", "a\nb", "x"]))
    table = table.set_column(2, "p_click", pa.array([2.0, 0.1, 0.1]))
    path = tmp_path / "truth.parquet"
    pq.write_table(table, path)
    message = outcome(lambda: read_truth_table(path))
    assert message is not None and "row 0 ('\\x1e', " in message
    assert "p_click = 2.0 is not a probability" in message


def test_fuzz_truth_simulate(base_run: Path, space: StateSpace, tmp_path: Path) -> None:
    table = truth_table(space)
    truth = tmp_path / "truth.parquet"

    @examples(8)
    @given(st.one_of(mutated(parquet_bytes(table)), mutated_table(table).map(parquet_bytes)))
    def case(data: bytes) -> None:
        tally("truth.cli")
        truth.write_bytes(data)
        run = Path(shutil.copytree(base_run, tmp_path / "run"))
        try:
            before = tree_digest(run)
            result = runner.invoke(
                app, ["simulate", str(run), "-n", "20", "--response", str(truth), "--json"]
            )
            if cli_outcome(result) is not None:
                assert tree_digest(run) == before
            assert truth.read_bytes() == data
        finally:
            shutil.rmtree(run)

    drive("truth.cli", case)


# ------------------------------------------------------------------ sweep directories

SWEEP_ARGS = ["--epsilons", "0,0.2", "--replicates", "1", "--episodes", "50", "--workers", "1"]


@pytest.fixture(scope="module")
def base_sweep(base_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished two-cell sweep of the base run."""
    out = tmp_path_factory.mktemp("fuzz-sweep") / "sweep"
    result = runner.invoke(
        app, ["sweep", str(base_run), "--out", str(out), *SWEEP_ARGS, "--no-plots", "--json"]
    )
    assert result.exit_code == 0, result.output
    return out


def sweep_files(sweep: Path) -> list[Path]:
    return sorted(p for p in sweep.rglob("*") if p.is_file())


def sweep_edit(sweep: Path) -> st.SearchStrategy[tuple[str, bytes]]:
    """One file of the sweep directory replaced: random or mutated bytes, or (Parquet) a
    value-level mutation, or (sweep.json) a JSON edit."""
    files = {str(p.relative_to(sweep)): p.read_bytes() for p in sweep_files(sweep)}
    tables = {
        name: pq.read_table(io.BytesIO(data))
        for name, data in files.items()
        if name.endswith(".parquet")
    }
    return _sweep_edit(files, tables)


@st.composite
def _sweep_edit(
    draw: st.DrawFn, files: dict[str, bytes], tables: dict[str, pa.Table]
) -> tuple[str, bytes]:
    name = draw(st.sampled_from(sorted(files)))
    original = files[name]
    if name in tables and draw(st.booleans()):
        return name, draw(mutated_table(tables[name]).map(parquet_bytes))
    if name == SWEEP_FILE and draw(st.booleans()):
        doc = json.loads(original)
        key = draw(st.sampled_from(["schema_version", "base", "grid"]))
        doc[key] = draw(
            st.one_of(st.none(), st.integers(), st.text(max_size=5), st.just({}), st.just([]))
        )
        return name, json.dumps(doc).encode()
    return name, draw(st.one_of(st.binary(max_size=128), mutated(original)))


def test_fuzz_sweep_dir_cells(base_sweep: Path, tmp_path: Path) -> None:
    """The sweep directory reader on every cell file and sweep.json, in-process."""
    sweep = Path(shutil.copytree(base_sweep, tmp_path / "sweep"))
    base = json.loads((sweep / SWEEP_FILE).read_text())["base"]

    def read() -> None:
        SweepDir.check(sweep, base)  # reads every cell as a resumed sweep does

    @examples(500)
    @given(sweep_edit(sweep))
    def case(edit: tuple[str, bytes]) -> None:
        tally("sweep_dir")
        name, data = edit
        target = sweep / name
        original = target.read_bytes()
        target.write_bytes(data)
        try:
            with unchanged(sweep):
                outcome(read)
        finally:
            target.write_bytes(original)

    drive("sweep_dir", case)


def test_fuzz_sweep_dir_resume(base_run: Path, base_sweep: Path, tmp_path: Path) -> None:
    """``rlreco sweep`` resuming a fuzzed sweep directory: exit 0, or 2 and nothing changed."""
    originals = {p: p.read_bytes() for p in sweep_files(base_sweep)}

    @examples(8)
    @given(sweep_edit(base_sweep))
    def case(edit: tuple[str, bytes]) -> None:
        tally("sweep_dir.cli")
        sweep = Path(shutil.copytree(base_sweep, tmp_path / "sweep"))
        try:
            name, data = edit
            (sweep / name).write_bytes(data)
            before = tree_digest(sweep)
            run_before = tree_digest(base_run)
            result = runner.invoke(
                app,
                ["sweep", str(base_run), "--out", str(sweep), *SWEEP_ARGS, "--no-plots", "--json"],
            )
            if cli_outcome(result) is not None:
                assert tree_digest(sweep) == before
            else:
                summary = json.loads(result.stdout)
                assert summary["cells_total"] == 2
            assert tree_digest(base_run) == run_before
        finally:
            shutil.rmtree(tmp_path / "sweep")
        assert all(p.read_bytes() == b for p, b in originals.items())

    drive("sweep_dir.cli", case)


def test_sweep_with_corrupt_cell_changes_nothing(
    base_run: Path,
    base_sweep: Path,
    tmp_path: Path,
) -> None:
    """A corrupt finished cell used to be found only after the sweep had rewritten sweep.json
    and run the other cells; now it is refused before anything is written."""
    sweep = Path(shutil.copytree(base_sweep, tmp_path / "sweep"))
    cell = sorted((sweep / "cells").glob("*.parquet"))[0]
    cell.write_bytes(cell.read_bytes()[:100])
    (sweep / "results.parquet").unlink()
    before = tree_digest(sweep)
    result = runner.invoke(
        app,
        [
            "sweep",
            str(base_run),
            "--out",
            str(sweep),
            "--epsilons",
            "0,0.2,0.5",
            *SWEEP_ARGS[2:],
            "--no-plots",
        ],
    )
    message = cli_outcome(result)
    assert message is not None and cell.name in message and "delete" in message
    assert tree_digest(sweep) == before


def test_sweep_cell_with_corrupt_pandas_metadata(base_sweep: Path, tmp_path: Path) -> None:
    """Corrupt pandas metadata in a cell file crashed with JSONDecodeError (found by make
    fuzz)."""
    sweep = Path(shutil.copytree(base_sweep, tmp_path / "sweep"))
    base = json.loads((sweep / SWEEP_FILE).read_text())["base"]
    cell = sorted((sweep / "cells").glob("*.parquet"))[0]
    table = pq.read_table(cell)
    pq.write_table(table.replace_schema_metadata({**table.schema.metadata, b"pandas": b"{"}), cell)
    message = outcome(lambda: SweepDir.check(sweep, base))
    assert message is not None and cell.name in message and "delete it" in message
