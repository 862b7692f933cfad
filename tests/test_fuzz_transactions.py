"""Fuzzing the transactions loader: CSV, CSV.gz, Parquet and XLSX, whatever the bytes.

Each case ends in a loaded frame or in one :class:`~rlreco.errors.DataError` line; through the
CLI (``rlreco prepare``), in exit code 0, or 2 with one line on stderr and no run directory.
"""

from __future__ import annotations

import csv
import io
import random
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
    outcome,
    parquet_bytes,
    tally,
    tree_digest,
    unchanged,
)
from helpers import write_transactions
from hypothesis import example, given
from typer.testing import CliRunner

from rlreco.cli import app
from rlreco.config import Columns, DataConfig
from rlreco.io.transactions import load_transactions

runner = CliRunner()
#: the transactions columns the default config reads (categorical state columns aside)
COLUMNS = [v for k, v in vars(Columns()).items() if isinstance(v, str) and k != "country"]
#: Codecs files are written in, and the config encodings they are read with.
CODECS = ("utf-8", "utf-8-sig", "latin-1", "cp1252", "utf-16", "utf-32", "ascii", "shift_jis")


@cache
def base_frame() -> pd.DataFrame:
    """A small valid transactions table (40 rows) in the UCI layout."""
    buffer = io.StringIO()
    write_transactions(buffer, seed=3, n_rows=40)  # type: ignore[arg-type]  # to_csv target
    return pd.read_csv(io.StringIO(buffer.getvalue()), dtype=str)


@cache
def base_csv() -> bytes:
    return base_frame().to_csv(index=False).encode("latin-1")


@cache
def base_parquet() -> bytes:
    sink = io.BytesIO()
    frame = base_frame().astype({"Quantity": "int64", "UnitPrice": "float64"})
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), sink)
    return sink.getvalue()


@cache
def base_xlsx() -> bytes:
    sink = io.BytesIO()
    frame = base_frame().astype({"Quantity": "int64", "UnitPrice": "float64"})
    frame.head(12).to_excel(sink, index=False, engine="openpyxl")
    return sink.getvalue()


def load(path: Path, encoding: str = "ISO-8859-1") -> str | None:
    """Load in-process; None on success, else the one-line error (checked)."""
    data = DataConfig(encoding=encoding)
    message = outcome(lambda: load_transactions(path, data, split_day=15))
    if message is not None:
        assert str(path) in message, message
    return message


def load_bytes(tmp: Path, suffix: str, data: bytes, encoding: str = "ISO-8859-1") -> None:
    path = tmp / f"tx{suffix}"
    path.write_bytes(data)
    with unchanged(tmp):
        load(path, encoding)


def prepare(tmp: Path, data: Path) -> str | None:
    """``rlreco prepare`` on ``data``: exit 0, or 2 with one line, no run dir, data unchanged."""
    out = tmp / "run"
    before = tree_digest(data)
    result = runner.invoke(app, ["prepare", "--data", str(data), "--out", str(out), "--json"])
    message = cli_outcome(result)
    assert tree_digest(data) == before
    if message is not None:
        assert not out.exists(), "a failed prepare left a run directory"
        assert [p.name for p in tmp.iterdir() if p.name.startswith(".run")] == []
    return message


def random_file(seed: int, size: int = 4096) -> bytes:
    """``size`` bytes of ``random.Random(seed).getrandbits(8)``: the issue's reproduction."""
    rng = random.Random(seed)
    return bytes(rng.getrandbits(8) for _ in range(size))


# ------------------------------------------------------------------ regressions


@pytest.mark.parametrize("seed", range(1, 13))
def test_random_bytes_prepare_is_one_line(tmp_path: Path, seed: int) -> None:
    """Issue 12: seeds 5, 6, 8, 10 and 12 crashed csv.reader ("new-line character seen in
    unquoted field") while reading the header."""
    data = tmp_path / "random.csv"
    data.write_bytes(random_file(seed))
    message = prepare(tmp_path, data)
    assert message is not None and str(data) in message


def test_parquet_dates_pandas_cannot_hold(tmp_path: Path) -> None:
    """A date32 column with year 0 crashed the conversion to pandas (ValueError)."""
    frame = pa.Table.from_pandas(base_frame().head(3), preserve_index=False)
    frame = frame.set_column(
        frame.schema.get_field_index("CustomerID"),
        "CustomerID",
        pa.array([-719_893, 0, 1], pa.date32()),  # 0000-12-31, 1970-01-01, 1970-01-02
    )
    path = tmp_path / "tx.parquet"
    pq.write_table(frame, path)
    message = load(path)
    assert message is not None and "'CustomerID'" in message and "date32" in message


def test_parquet_text_that_is_not_utf8(tmp_path: Path) -> None:
    """Invalid UTF-8 in a string column crashed date parsing with ArrowException ("Wrapping
    ... failed"; found by make fuzz)."""
    table = pa.Table.from_pandas(base_frame().head(3), preserve_index=False)
    c = table.schema.get_field_index("InvoiceDate")
    table = table.set_column(c, "InvoiceDate", invalid_utf8(3))
    path = tmp_path / "tx.parquet"
    pq.write_table(table, path)
    message = load(path)
    assert message is not None and "cannot read as Parquet" in message and "UTF8" in message


def test_header_with_markup_and_control_characters(tmp_path: Path) -> None:
    """A header naming columns "[/x]" and "\\x0b" broke rich's markup and the one-line rule."""
    data = tmp_path / "tx.csv"
    data.write_bytes(b"[/x],\x0bA,\x85B\nx,y,z\n")
    message = prepare(tmp_path, data)
    assert message is not None and "[/x]" in message and "InvoiceNo" in message


# ------------------------------------------------------------------ CSV


def test_fuzz_csv_random_bytes(tmp_path: Path) -> None:
    @examples(200)
    @given(st.binary(max_size=4096))
    @example(random_file(5))
    @example(b'a,b\n"x\ny')
    @example(b"\xff\xfe\x00\x00")
    def case(data: bytes) -> None:
        tally("csv")
        load_bytes(tmp_path, ".csv", data)

    drive("csv", case, share=0.3)


def test_fuzz_csv_mutated(tmp_path: Path) -> None:
    @examples(150)
    @given(mutated(base_csv()), st.sampled_from(CODECS))
    def case(data: bytes, encoding: str) -> None:
        tally("csv")
        load_bytes(tmp_path, ".csv", data, encoding)

    drive("csv", case, share=0.3)


#: Text cells: anything, including NUL, quotes, separators, line breaks and long runs.
cell_text = st.one_of(
    st.text(max_size=20),
    st.text(alphabet=st.sampled_from('0123456789.-+eE,"\r\n\0 /:'), max_size=20),
    st.sampled_from(["", "nan", "NaN", "inf", "-inf", "1e400", "9" * 30, "12/31/2011 25:61"]),
    st.integers(0, 200_000).map(lambda n: "x" * n),
)


@st.composite
def csv_document(draw: st.DrawFn) -> tuple[bytes, str]:
    """A CSV with the expected header (sometimes shuffled or shortened) and random cells,
    encoded in one codec and read with another, with some line ending."""
    header = list(COLUMNS)
    if draw(st.booleans()):
        header = draw(st.permutations(header))
    if draw(st.integers(0, 9)) == 0:
        header = header[: draw(st.integers(0, len(header)))]
    rows = draw(st.lists(st.lists(cell_text, min_size=0, max_size=9), max_size=6))
    valid = base_frame()[COLUMNS].head(draw(st.integers(0, 5))).to_numpy().tolist()
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows + valid)  # rows may be ragged
    text = ",".join(header) + "\n" + buffer.getvalue()
    text = text.replace("\n", draw(st.sampled_from(["\n", "\r\n", "\r"])))
    codec = draw(st.sampled_from(CODECS))
    return text.encode(codec, errors="replace"), draw(st.sampled_from(CODECS))


def test_fuzz_csv_values(tmp_path: Path) -> None:
    @examples(150)
    @given(csv_document())
    def case(doc: tuple[bytes, str]) -> None:
        tally("csv")
        load_bytes(tmp_path, ".csv", *doc)

    drive("csv", case, share=0.3)


def test_fuzz_csv_prepare(tmp_path: Path) -> None:
    """The CLI on a subset: random, mutated and value-fuzzed CSVs."""

    @examples(8)
    @given(
        st.one_of(st.binary(max_size=4096), mutated(base_csv()), csv_document().map(lambda d: d[0]))
    )
    def case(data: bytes) -> None:
        tally("csv")
        path = tmp_path / "tx.csv"
        path.write_bytes(data)
        prepare(tmp_path, path)
        shutil.rmtree(tmp_path / "run", ignore_errors=True)

    drive("csv", case, share=0.1)


# ------------------------------------------------------------------ CSV.gz


def test_fuzz_csv_gz(tmp_path: Path) -> None:
    compressed = gzip_bytes(base_csv())

    @examples(490)
    @given(
        st.one_of(
            st.binary(max_size=2048),
            st.binary(max_size=2048).map(gzip_bytes),
            mutated(compressed),
            mutated(base_csv()).map(gzip_bytes),
            st.integers(0, len(compressed)).map(lambda n: compressed[:n]),
        )
    )
    @example(compressed[: len(compressed) // 2])
    @example(compressed + b"\x1f\x8b")
    def case(data: bytes) -> None:
        tally("csv.gz")
        load_bytes(tmp_path, ".csv.gz", data)

    drive("csv.gz", case, share=0.8)


def test_fuzz_csv_gz_prepare(tmp_path: Path) -> None:
    compressed = gzip_bytes(base_csv())

    @examples(8)
    @given(st.one_of(mutated(compressed), st.binary(max_size=512)))
    def case(data: bytes) -> None:
        tally("csv.gz")
        path = tmp_path / "tx.csv.gz"
        path.write_bytes(data)
        prepare(tmp_path, path)
        shutil.rmtree(tmp_path / "run", ignore_errors=True)

    drive("csv.gz", case, share=0.2)


# ------------------------------------------------------------------ Parquet


def test_fuzz_parquet_bytes(tmp_path: Path) -> None:
    @examples(260)
    @given(st.one_of(st.binary(max_size=2048), mutated(base_parquet())))
    @example(base_parquet()[:-9])
    @example(b"PAR1" + b"\0" * 16 + b"PAR1")
    def case(data: bytes) -> None:
        tally("parquet")
        load_bytes(tmp_path, ".parquet", data)

    drive("parquet", case, share=0.4)


@st.composite
def parquet_table(draw: st.DrawFn) -> bytes:
    """A valid Parquet file: the mapped columns (some missing or duplicated in name) of any
    types, random values, or rows of the valid base with some columns replaced."""
    names = draw(st.lists(st.sampled_from([*COLUMNS, "Country", ""]), max_size=9))
    if draw(st.booleans()):
        names = list(dict.fromkeys([*COLUMNS, *names]))
    table = mixed_table(
        draw, names, lambda n: pa.Table.from_pandas(base_frame().head(n), preserve_index=False)
    )
    return parquet_bytes(table)


def test_fuzz_parquet_values(tmp_path: Path) -> None:
    @examples(230)
    @given(parquet_table())
    def case(data: bytes) -> None:
        tally("parquet")
        load_bytes(tmp_path, ".parquet", data)

    drive("parquet", case, share=0.4)


def test_fuzz_parquet_prepare(tmp_path: Path) -> None:
    @examples(8)
    @given(st.one_of(mutated(base_parquet()), parquet_table()))
    def case(data: bytes) -> None:
        tally("parquet")
        path = tmp_path / "tx.parquet"
        path.write_bytes(data)
        prepare(tmp_path, path)
        shutil.rmtree(tmp_path / "run", ignore_errors=True)

    drive("parquet", case, share=0.2)


# ------------------------------------------------------------------ XLSX


def test_fuzz_xlsx_bytes(tmp_path: Path) -> None:
    @examples(440)
    @given(st.one_of(st.binary(max_size=1024), mutated(base_xlsx(), max_ops=2)))
    @example(base_xlsx()[:-22])
    def case(data: bytes) -> None:
        tally("xlsx")
        load_bytes(tmp_path, ".xlsx", data)

    drive("xlsx", case, share=0.5)


xlsx_cell = st.one_of(
    st.none(),
    st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), max_size=10),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.datetimes(min_value=pd.Timestamp("1900-03-01").to_pydatetime()),
)


def test_fuzz_xlsx_values(tmp_path: Path) -> None:
    @examples(52)
    @given(
        st.lists(st.sampled_from([*COLUMNS, "Other"]), min_size=1, max_size=9, unique=True),
        st.lists(st.lists(xlsx_cell, min_size=9, max_size=9), max_size=4),
    )
    def case(header: list[str], rows: list[list[object]]) -> None:
        tally("xlsx")
        frame = pd.DataFrame([r[: len(header)] for r in rows], columns=header, dtype=object)
        path = tmp_path / "tx.xlsx"
        frame.to_excel(path, index=False, engine="openpyxl")
        with unchanged(tmp_path):
            load(path)

    drive("xlsx", case, share=0.3)


def test_fuzz_xlsx_prepare(tmp_path: Path) -> None:
    @examples(8)
    @given(mutated(base_xlsx(), max_ops=2))
    def case(data: bytes) -> None:
        tally("xlsx")
        path = tmp_path / "tx.xlsx"
        path.write_bytes(data)
        prepare(tmp_path, path)
        shutil.rmtree(tmp_path / "run", ignore_errors=True)

    drive("xlsx", case, share=0.2)


def test_valid_base_files_load(tmp_path: Path) -> None:
    """The fuzzers' starting points are valid: the loader reads each of them."""
    for suffix, data in (
        (".csv", base_csv()),
        (".csv.gz", gzip_bytes(base_csv())),
        (".parquet", base_parquet()),
        (".xlsx", base_xlsx()),
    ):
        path = tmp_path / f"tx{suffix}"
        path.write_bytes(data)
        frame, report = load_transactions(path, DataConfig(), split_day=15)
        assert report.rows_read == len(frame) > 0
        assert np.issubdtype(frame["quantity"].dtype, np.integer)
