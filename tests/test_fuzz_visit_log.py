"""Fuzzing visit logs: rlreco's own Parquet parts and foreign CSV / CSV.gz / Parquet logs.

What ``rlreco evaluate LOG --run RUN`` reads, in-process on a loaded run
(:func:`rlreco.app.evaluate.evaluate_run`: the log read, mapped to the run's states and
products, and every estimator computed), and on a subset through the CLI (``evaluate --out``,
and ``prepare --log`` for foreign logs). Cases: random bytes, truncated and corrupted Parquet
and gzip streams, columns of the wrong type, nulls, propensities outside (0, 1], positions
beyond the slate or not ``0..m-1``, unknown items and states, empty logs. Each case succeeds or
is one line (exit code 2), with the log, the run and any output unchanged or absent.
"""

from __future__ import annotations

import csv
import io
import shutil
from functools import cache
from pathlib import Path

import hypothesis.strategies as st
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fuzz_support import (
    cli_outcome,
    drive,
    examples,
    gzip_bytes,
    invalid_utf8,
    mixed_table,
    mutated,
    mutated_table,
    outcome,
    parquet_bytes,
    tally,
    tree_digest,
    unchanged,
)
from hypothesis import example, given
from naive_ope import log_visits, validation_world
from typer.testing import CliRunner

from rlreco.app.evaluate import EvaluationSpec, evaluate_run
from rlreco.app.log_prepare import prepare_from_log
from rlreco.app.simulate import Run
from rlreco.cli import app
from rlreco.config import RunConfig
from rlreco.io.foreign_log import ColumnMap
from rlreco.io.run_dir import RunDir
from rlreco.io.visit_log import LOG_FOLDER, write_log_part

runner = CliRunner()
EXAMPLE = Path(__file__).resolve().parent.parent / "data" / "example_log.csv"
#: Targets of an in-process case: every estimator, one epsilon (greedy, some, uniform).
SPECS = st.sampled_from([EvaluationSpec(epsilons=(eps,)) for eps in (0.0, 0.2, 1.0)])
#: The foreign log's full column map (the one the foreign run is prepared with).
FULL = ColumnMap(
    ("country", "device"), "item_id", position="slot", click="clicked",
    propensity="propensity", timestamp="timestamp", visit="visit_id",
)  # fmt: skip
#: Maps a foreign log may be read with: visits by key, by positions, one slot per row; rewards
#: from clicks or a reward column; with and without propensities.
MAPS = (
    FULL,
    ColumnMap(("country", "device"), "item_id", position="slot", click="clicked",
              propensity="propensity"),
    ColumnMap(("country", "device"), "item_id", reward="clicked", buy="clicked",
              propensity="propensity"),
    ColumnMap(("country", "device"), "item_id", position="slot", reward="propensity",
              visit="visit_id"),
)  # fmt: skip
HEADER = ["visit_id", "timestamp", "country", "device", "slot", "item_id", "clicked", "propensity"]


@cache
def example_frame() -> pd.DataFrame:
    """The first 30 visits (90 rows) of the example log, as text."""
    return pd.read_csv(EXAMPLE, dtype=str).head(90)


@cache
def base_csv() -> bytes:
    return example_frame().to_csv(index=False).encode()


@cache
def base_parquet() -> bytes:
    frame = example_frame().astype({"slot": "int64", "clicked": "int64", "propensity": "float64"})
    return parquet_bytes(pa.Table.from_pandas(frame, preserve_index=False))


@pytest.fixture(scope="module")
def rlreco_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run of the validation world (slate size 3) whose log is 40 visits in 2 parts."""
    space, tables, world = validation_world(seed=5, epsilon=0.5)
    path = tmp_path_factory.mktemp("fuzz-log") / "run"
    config = RunConfig().replace(**{"policy.slate_size": 3})
    run = RunDir.create(
        path,
        manifest={"run_id": "r" * 32, "config": config.to_dict(), "seed": 1},
        space=space.to_columns(),
        snapshot=tables.to_columns(space),
    )
    records = log_visits(world, np.random.default_rng(0), 0, 40)
    for first in (0, 20):
        write_log_part(
            run.path,
            records[first * 3 : (first + 20) * 3],
            run_id="r" * 32,
            state_names=space.state_ids,
            product_codes=space.product_codes,
            policy="eps-greedy",
            param=0.5,
        )
    return path


@pytest.fixture(scope="module")
def foreign_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run prepared from the first 30 visits of the example log (its map in the manifest)."""
    root = tmp_path_factory.mktemp("fuzz-foreign")
    (root / "log.csv").write_bytes(base_csv())
    prepare_from_log(RunConfig(), log=root / "log.csv", columns=FULL, out=root / "run",
                     tables="history")  # fmt: skip
    return root / "run"


def evaluate(
    path: Path,
    run: Run,
    columns: ColumnMap | None = None,
    spec: EvaluationSpec = EvaluationSpec(epsilons=(0.0, 0.3)),  # noqa: B008 (frozen)
) -> str | None:
    """Evaluate in-process: None on success, else the checked one-line error naming the
    log (or the option that mapped it)."""
    message = outcome(lambda: evaluate_run(path, run, spec, columns=columns))
    if message is not None:
        assert path.name in message or message.startswith("--"), message
    return message


# ------------------------------------------------------------------ rlreco's own logs


def part_paths(run: Path) -> list[Path]:
    return sorted((run / LOG_FOLDER).glob("part-*.parquet"))


@st.composite
def part_edit(draw: st.DrawFn, run: Path) -> tuple[int, bytes]:
    """One part replaced: random or mutated bytes, or a value-level edit of its table (cells set
    to extremes or nulls, rows dropped or duplicated, columns dropped, renamed or retyped, the
    metadata changed, the table emptied)."""
    parts = part_paths(run)
    i = draw(st.integers(0, len(parts) - 1))
    data = parts[i].read_bytes()
    how = draw(st.integers(0, 9))
    if how == 0:
        return i, draw(st.binary(max_size=256))
    if how <= 2:
        return i, draw(mutated(data))
    table = pq.read_table(io.BytesIO(data))
    # every column nullable, as another tool might rewrite it (rlreco's parts declare most of
    # them required, and Arrow would refuse a null in such a column)
    nullable = pa.schema([f.with_nullable(True) for f in table.schema], table.schema.metadata)
    return i, draw(mutated_table(table.cast(nullable)).map(parquet_bytes))


def fuzz_parts(rlreco_run: Path, tmp_path: Path, n: int, share: float, folder: bool) -> None:
    run_copy = Path(shutil.copytree(rlreco_run, tmp_path / "run"))
    loaded = Run.load(run_copy)
    parts = part_paths(run_copy)
    originals = [p.read_bytes() for p in parts]
    target = run_copy if folder else None

    @examples(n)
    @given(part_edit(rlreco_run), SPECS)
    def case(edit: tuple[int, bytes], spec: EvaluationSpec) -> None:
        tally("visit_log.rlreco")
        i, data = edit
        parts[i].write_bytes(data)
        try:
            with unchanged(run_copy):
                evaluate(target or parts[i], loaded, spec=spec)
        finally:
            parts[i].write_bytes(originals[i])

    drive("visit_log.rlreco", case, share=share)


def test_fuzz_rlreco_log_part(rlreco_run: Path, tmp_path: Path) -> None:
    """One part file given as the log."""
    fuzz_parts(rlreco_run, tmp_path, 300, 0.5, folder=False)


def test_fuzz_rlreco_log_folder(rlreco_run: Path, tmp_path: Path) -> None:
    """The run directory given as the log (every part read and concatenated)."""
    fuzz_parts(rlreco_run, tmp_path, 250, 0.5, folder=True)


# ------------------------------------------------------------------ foreign logs

#: Cells of the value-level foreign CSVs: valid-looking, extreme and wrong values.
log_cell = st.one_of(
    st.text(max_size=8),
    st.sampled_from(
        ["", "0", "1", "2", "3", "-1", "1.5", "0.5", "1e-400", "1e400", "nan", "inf", "-0",
         "true", "False", "yes", "9" * 25, "0x10", "FR", "DE", "UK", "mobile", "desktop",
         "SKU100", "SKU999", "v0", "v1", "2024-03-01T08:00:50Z", "2024-13-45", "NaT"]
    ),
)  # fmt: skip


@st.composite
def foreign_csv(draw: st.DrawFn) -> bytes:
    """The example log's header (sometimes shuffled or cut) over some of its rows with cells
    replaced, rows dropped or duplicated, and random rows added; or no rows at all."""
    frame = example_frame()
    header = list(HEADER)
    if draw(st.integers(0, 4)) == 0:
        header = draw(st.permutations(header))
    if draw(st.integers(0, 9)) == 0:
        header = header[: draw(st.integers(0, len(header)))]
    rows = frame[header].head(draw(st.integers(0, 30))).to_numpy().tolist()
    for _ in range(draw(st.integers(0, 4))):
        if rows and header:
            r = draw(st.integers(0, len(rows) - 1))
            rows[r][draw(st.integers(0, len(header) - 1))] = draw(log_cell)
    if rows and draw(st.booleans()):
        r = draw(st.integers(0, len(rows) - 1))
        if draw(st.booleans()):
            del rows[r]
        else:
            rows.insert(draw(st.integers(0, len(rows))), list(rows[r]))
    extra = draw(st.lists(st.lists(log_cell, max_size=9), max_size=2))  # may be ragged
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator=draw(st.sampled_from(["\n", "\r\n"])))
    writer.writerow(header)
    writer.writerows(rows + extra)
    return buffer.getvalue().encode()


@st.composite
def foreign_parquet(draw: st.DrawFn) -> bytes:
    """The mapped columns, each of a random Arrow type and values, or the example's values
    (some rows), plus a value-level edit."""
    if draw(st.booleans()):
        table = pq.read_table(io.BytesIO(base_parquet()))
        return draw(mutated_table(table.slice(0, draw(st.integers(0, 30)))).map(parquet_bytes))
    names = draw(st.lists(st.sampled_from([*HEADER, "other"]), max_size=9))
    if draw(st.booleans()):
        names = list(dict.fromkeys([*HEADER, *names]))
    base = pq.read_table(io.BytesIO(base_parquet()))
    return parquet_bytes(mixed_table(draw, names, lambda n: base.slice(0, n)))


#: (suffix, bytes) of a foreign log file.
foreign_file = st.one_of(
    st.tuples(st.sampled_from([".csv", ".csv.gz", ".parquet"]), st.binary(max_size=512)),
    st.tuples(st.just(".csv"), mutated(base_csv())),
    st.tuples(st.just(".csv.gz"), mutated(gzip_bytes(base_csv()))),
    st.tuples(st.just(".csv.gz"), mutated(base_csv()).map(gzip_bytes)),
    st.tuples(st.just(".parquet"), mutated(base_parquet())),
    st.tuples(st.just(".csv"), foreign_csv()),
    st.tuples(st.just(".csv.gz"), foreign_csv().map(gzip_bytes)),
    st.tuples(st.just(".parquet"), foreign_parquet()),
)


def test_fuzz_foreign_log(foreign_run: Path, tmp_path: Path) -> None:
    loaded = Run.load(foreign_run)
    before = tree_digest(foreign_run)

    @examples(520)
    @given(foreign_file, st.one_of(st.none(), st.sampled_from(MAPS)), SPECS)
    @example((".csv", base_csv()), None, EvaluationSpec())
    @example((".csv", b""), FULL, EvaluationSpec())
    @example((".csv", ",".join(HEADER).encode() + b"\n"), FULL, EvaluationSpec())
    def case(log: tuple[str, bytes], columns: ColumnMap | None, spec: EvaluationSpec) -> None:
        tally("visit_log.foreign")
        suffix, data = log
        path = tmp_path / f"log{suffix}"
        path.write_bytes(data)
        try:
            with unchanged(tmp_path):
                evaluate(path, loaded, columns, spec)
        finally:
            path.unlink()

    drive("visit_log.foreign", case)
    assert tree_digest(foreign_run) == before


def test_valid_base_logs_evaluate(rlreco_run: Path, foreign_run: Path, tmp_path: Path) -> None:
    """The fuzzers' starting points are valid: every estimator runs on each of them."""
    assert evaluate(rlreco_run, Run.load(rlreco_run)) is None
    assert evaluate(part_paths(rlreco_run)[1], Run.load(rlreco_run)) is None
    for suffix, data in (
        (".csv", base_csv()),
        (".csv.gz", gzip_bytes(base_csv())),
        (".parquet", base_parquet()),
    ):
        path = tmp_path / f"log{suffix}"
        path.write_bytes(data)
        for columns in (None, *MAPS):
            result = evaluate_run(path, Run.load(foreign_run), EvaluationSpec(), columns=columns)
            assert set(result.summary["estimator"]) >= {"replay"}, (suffix, columns)


# ------------------------------------------------------------------ through the CLI


def test_fuzz_visit_log_cli(rlreco_run: Path, foreign_run: Path, tmp_path: Path) -> None:
    """``rlreco evaluate --out`` on a fuzzed part or foreign log, and ``prepare --log`` on the
    foreign ones: exit 0, or 2 with one line and no output; the run and the log unchanged."""
    run_copy = Path(shutil.copytree(rlreco_run, tmp_path / "rlreco"))
    parts = part_paths(run_copy)
    originals = [p.read_bytes() for p in parts]

    @examples(8)
    @given(st.one_of(part_edit(rlreco_run), foreign_file), st.booleans())
    def case(change: tuple[int | str, bytes], as_json: bool) -> None:
        tally("visit_log.cli")
        which, data = change
        out = tmp_path / "eval"
        if isinstance(which, int):
            log, run = parts[which], run_copy
        else:
            log, run = tmp_path / f"log{which}", foreign_run
        log.write_bytes(data)
        runs_before = tree_digest(run_copy), tree_digest(foreign_run)
        try:
            argv = ["evaluate", str(log), "--run", str(run), "--epsilons", "0,0.3",
                    "--out", str(out), "--no-plots"] + ["--json"] * as_json  # fmt: skip
            if cli_outcome(runner.invoke(app, argv)) is not None:
                assert not out.exists(), "a failed evaluate left an output"
            if isinstance(which, str):
                prepared = tmp_path / "prepared"
                argv = ["prepare", "--log", str(log), "--context-cols", "country,device",
                        "--item-col", "item_id", "--position-col", "slot", "--click-col",
                        "clicked", "--propensity-col", "propensity", "--out", str(prepared),
                        "--json"]  # fmt: skip
                if cli_outcome(runner.invoke(app, argv)) is not None:
                    assert not prepared.exists(), "a failed prepare --log left a run directory"
                shutil.rmtree(prepared, ignore_errors=True)
            assert log.read_bytes() == data
            assert (tree_digest(run_copy), tree_digest(foreign_run)) == runs_before
        finally:
            shutil.rmtree(out, ignore_errors=True)
            if isinstance(which, int):
                parts[which].write_bytes(originals[which])
            else:
                log.unlink()

    drive("visit_log.cli", case)


# ------------------------------------------------------------------ regressions


def test_part_with_text_that_is_not_utf8(rlreco_run: Path, tmp_path: Path) -> None:
    """A part whose state names are not UTF-8 is one line naming the part."""
    run = Path(shutil.copytree(rlreco_run, tmp_path / "run"))
    part = part_paths(run)[0]
    table = pq.read_table(part)
    c = table.schema.get_field_index("state_name")
    pq.write_table(table.set_column(c, table.schema.field(c), invalid_utf8(table.num_rows)), part)
    message = evaluate(run, Run.load(run))
    assert message is not None and part.name in message and "UTF8" in message


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_reward_that_is_not_finite(rlreco_run: Path, tmp_path: Path, value: float) -> None:
    """A NaN or infinite reward made every estimate undefined (RuntimeWarning from numpy, found
    by fuzzing); now it is one line naming the column and the row."""
    run = Path(shutil.copytree(rlreco_run, tmp_path / "run"))
    part = part_paths(run)[1]
    table = pq.read_table(part)
    c = table.schema.get_field_index("reward")
    reward = table.column(c).to_numpy().copy()
    reward[4] = value
    pq.write_table(table.set_column(c, table.schema.field(c), pa.array(reward)), part)
    message = evaluate(part, Run.load(run))
    assert message is not None and "column 'reward' row 4" in message and "finite" in message


def test_foreign_reward_that_is_not_finite(foreign_run: Path, tmp_path: Path) -> None:
    """The same for a foreign log's reward column ("1e400" reads as inf)."""
    frame = example_frame().copy()
    frame.loc[5, "propensity"] = "1e400"
    path = tmp_path / "log.csv"
    frame.to_csv(path, index=False)
    message = evaluate(path, Run.load(foreign_run), MAPS[3])
    assert message is not None and "column 'propensity' row 5" in message and "finite" in message


def test_rewards_whose_estimates_overflow(rlreco_run: Path, tmp_path: Path) -> None:
    """Rewards near the float maximum overflowed numpy's sums of squares (RuntimeWarning: a
    crash under -W error, noise on stderr otherwise; found by fuzzing): the estimates are the
    arithmetic's answer, not finite where it overflowed, and the command succeeds."""
    run = Path(shutil.copytree(rlreco_run, tmp_path / "run"))
    part = part_paths(run)[0]
    table = pq.read_table(part)
    c = table.schema.get_field_index("reward")
    reward = np.full(table.num_rows, 1.7e308)
    pq.write_table(table.set_column(c, table.schema.field(c), pa.array(reward)), part)
    result = evaluate_run(part, Run.load(run), EvaluationSpec(epsilons=(0.0, 0.3)))
    means = result.summary["reward_per_visit_mean"].to_numpy(dtype=float)
    assert set(result.summary["estimator"]) == {"replay", "ips", "snips", "dr"}
    assert not np.isfinite(means).all()
    out = tmp_path / "eval"
    argv = ["evaluate", str(part), "--run", str(run), "--out", str(out), "--no-plots", "--json"]
    result_cli = runner.invoke(app, argv)
    assert result_cli.exit_code == 0, result_cli.output
    assert (out / "summary.json").is_file()


@pytest.mark.parametrize("value", ["1E20", "inf", "-1e400", "18446744073709551615"])
def test_position_out_of_range(foreign_run: Path, tmp_path: Path, value: str) -> None:
    """A position of 1E20 overflowed the cast to int64 (RuntimeWarning: invalid value
    encountered in cast; found by make fuzz); now one line naming the column and the row."""
    frame = example_frame().copy()
    frame.loc[4, "slot"] = value
    path = tmp_path / "log.csv"
    frame.to_csv(path, index=False)
    message = evaluate(path, Run.load(foreign_run), FULL)
    assert message is not None and "column 'slot' row 4" in message and "outside" in message


def test_uint64_position_out_of_range(foreign_run: Path, tmp_path: Path) -> None:
    """A uint64 position above the int64 range wrapped to a negative number when cast."""
    table = pq.read_table(io.BytesIO(base_parquet()))
    c = table.schema.get_field_index("slot")
    slot = table.column(c).to_numpy().astype(np.uint64)
    slot[4] = 2**64 - 1
    path = tmp_path / "log.parquet"
    pq.write_table(table.set_column(c, "slot", pa.array(slot)), path)
    message = evaluate(path, Run.load(foreign_run), FULL)
    assert message is not None and "column 'slot' row 4" in message and "outside" in message


def test_part_with_a_column_name_that_is_not_utf8(rlreco_run: Path, tmp_path: Path) -> None:
    """A part whose footer names a column in invalid UTF-8 crashed the check for rlreco's
    layout (pq.read_schema: UnicodeDecodeError; found by make fuzz)."""
    run = Path(shutil.copytree(rlreco_run, tmp_path / "run"))
    part = part_paths(run)[0]
    data = part.read_bytes()
    assert b"\x18\x0cproduct_code" in data  # the schema element's name (Thrift string of 12)
    part.write_bytes(data.replace(b"\x18\x0cproduct_code", b"\x18\x0c\x80roduct_code", 1))
    message = evaluate(part, Run.load(run))
    assert message is not None and part.name in message
    message = evaluate(run, Run.load(run))
    assert message is not None and part.name in message


@pytest.mark.parametrize(
    ("column", "values"),
    [
        ("country", pa.array([b"\x80"] * 90, pa.binary())),  # not UTF-8: the cast raised
        ("item_id", pa.array([1e300] * 90)),  # the int64 cast of an integral float warned
        ("visit_id", pa.array([np.inf] * 90)),
    ],
)
def test_key_column_that_is_not_text(
    foreign_run: Path, tmp_path: Path, column: str, values: pa.Array
) -> None:
    """A context column of bytes that are not UTF-8 crashed with ArrowInvalid (found by make
    fuzz); huge or infinite floats as ids are read as their text, not cast to int64."""
    table = pq.read_table(io.BytesIO(base_parquet()))
    table = table.set_column(table.schema.get_field_index(column), column, values)
    path = tmp_path / "log.parquet"
    pq.write_table(table, path)
    message = evaluate(path, Run.load(foreign_run), FULL)
    assert message is not None, column
    if column == "country":
        assert "column 'country' of type binary cannot be read as text" in message
