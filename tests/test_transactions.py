"""Transactions loader: canonical frame from CSV, gzip CSV, Parquet and XLSX; one-line errors."""

from __future__ import annotations

import datetime as dt
import gzip
import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rlreco.config import Columns, DataConfig
from rlreco.errors import DataError
from rlreco.io.transactions import (
    DERIVED_COLUMNS,
    SOURCE_COLUMNS,
    LoadReport,
    load_transactions,
)

DATA = DataConfig()

HEADER = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
# One row per case: plain row, comma in description, cancellation with float-text customer,
# Sunday with blank customer and description, leap day with a line break in the description
# and a blank-but-spaces customer, and a date before 1970.
TINY = HEADER + (
    "536365,85123,WHITE HANGING HEART T-LIGHT HOLDER,6,12/1/2010 8:26,2.55,17850,United Kingdom\n"
    '536366,85123A,"CREAM CUPID, HEARTS",2,12/15/2010 23:59,1.5, 12346 ,France\n'
    "C536379,D,Discount,-1,12/16/2010 0:00,27.5,17850.0,United Kingdom\n"
    "536380,22633,,3,12/5/2010 10:00,0.85,,United Kingdom\n"
    '536381,84029G,"LINE\nBREAK",1,2/29/2012 12:00,4.25,   ,EIRE\n'
    "536382,10002,OLD,1,12/31/1969 23:59,1.0,99,USA\n"
)
TINY_DATES = [
    dt.datetime(2010, 12, 1, 8, 26),
    dt.datetime(2010, 12, 15, 23, 59),
    dt.datetime(2010, 12, 16, 0, 0),
    dt.datetime(2010, 12, 5, 10, 0),
    dt.datetime(2012, 2, 29, 12, 0),
    dt.datetime(1969, 12, 31, 23, 59),
]


def write_text(path: Path, text: str, *, encoding: str = "ISO-8859-1") -> Path:
    """Write a (possibly gzip-compressed, by suffix) text file and return its path."""
    data = text.encode(encoding)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def load_error(path: Path, data: DataConfig = DATA) -> str:
    """Load a bad file and return the DataError message, checked to be one line."""
    with pytest.raises(DataError) as info:
        load_transactions(path, data, split_day=15)
    message = str(info.value)
    assert "\n" not in message and "\r" not in message
    assert message.startswith(f"{path}: ")
    return message


# --- real data -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_frames(shared_data: Path) -> dict[str, tuple[pd.DataFrame, LoadReport]]:
    return {
        name: load_transactions(shared_data / name, DATA, split_day=15)
        for name in ("online_retail.csv.gz", "online_retail.parquet")
    }


@pytest.mark.realdata
def test_real_csv_and_parquet_give_the_same_canonical_frame(real_frames):
    csv_frame, csv_report = real_frames["online_retail.csv.gz"]
    parquet_frame, parquet_report = real_frames["online_retail.parquet"]
    # assert_frame_equal is slow on 541,909-row categoricals: compare their dtype and codes
    names = ["weekday_name", "month_name"]
    pd.testing.assert_frame_equal(csv_frame.drop(columns=names), parquet_frame.drop(columns=names))
    for name in names:
        assert csv_frame[name].dtype == parquet_frame[name].dtype
        np.testing.assert_array_equal(csv_frame[name].cat.codes, parquet_frame[name].cat.codes)
    assert (csv_report.format, parquet_report.format) == ("csv", "parquet")
    for report in (csv_report, parquet_report):
        assert report.rows_read == report.rows == 541_909
        assert report.rows_without_customer == 135_080


@pytest.mark.realdata
def test_real_frame_contents(real_frames):
    frame, _ = real_frames["online_retail.csv.gz"]
    assert list(frame.columns) == [*SOURCE_COLUMNS, *DERIVED_COLUMNS]
    assert frame["product_id"].nunique() == 4_070
    assert frame["customer_id"].nunique() == 4_372
    assert frame["customer_id"].isna().sum() == 135_080
    assert frame["order_date"].min() == pd.Timestamp("2010-12-01 08:26")
    assert frame["order_date"].max() == pd.Timestamp("2011-12-09 12:50")
    assert not (frame["weekday"] == 5).any()  # the shop sent nothing on Saturdays
    assert "Saturday" not in set(frame["weekday_name"])
    assert frame["customer_id"].iloc[0] == "17850"
    assert not frame["customer_id"].str.endswith(".0").any()
    assert {"85123A", "22423", "POST"} <= set(frame["product_id"])
    assert (frame["quantity"] < 0).sum() > 0  # cancellations are kept
    assert frame["order_id"].str.startswith("C").sum() > 0


@pytest.mark.realdata
def test_real_derived_columns_match_pandas_calendar(real_frames):
    frame, _ = real_frames["online_retail.parquet"]
    when = frame["order_date"].dt
    days = (frame["order_date"] - pd.Timestamp("1970-01-01")).dt.days
    np.testing.assert_array_equal(frame["day_number"], days)
    np.testing.assert_array_equal(frame["year"], when.year)
    np.testing.assert_array_equal(frame["month"], when.month)
    np.testing.assert_array_equal(frame["day"], when.day)
    np.testing.assert_array_equal(frame["weekday"], when.day_of_week)
    np.testing.assert_array_equal(frame["month_half"], (when.day > 15).astype(np.int8))
    np.testing.assert_array_equal(frame["weekday_name"].astype(str), when.day_name())
    np.testing.assert_array_equal(frame["month_name"].astype(str), when.month_name())
    np.testing.assert_array_equal(frame["gross"], frame["quantity"] * frame["unit_price"])


# --- tiny hand-made files --------------------------------------------------------------------


def test_tiny_csv_canonical_columns_and_types(tmp_path):
    frame, report = load_transactions(write_text(tmp_path / "t.csv", TINY), DATA, split_day=15)
    assert report == LoadReport(
        path=str(tmp_path / "t.csv"), format="csv", rows_read=6, rows_without_customer=2, rows=6
    )
    assert list(frame.columns) == [*SOURCE_COLUMNS, *DERIVED_COLUMNS]  # Country dropped
    assert frame["order_id"].tolist() == [
        "536365", "536366", "C536379", "536380", "536381", "536382",
    ]  # fmt: skip
    assert frame["product_id"].tolist() == ["85123", "85123A", "D", "22633", "84029G", "10002"]
    assert frame["product"].isna().tolist() == [False, False, False, True, False, False]
    assert frame["product"].iloc[1] == "CREAM CUPID, HEARTS"
    assert frame["product"].iloc[4] == "LINE\nBREAK"
    # customer ids normalised: stripped, "17850.0" -> "17850", blank and spaces -> missing
    assert frame["customer_id"].tolist()[:3] == ["17850", "12346", "17850"]
    assert frame["customer_id"].isna().tolist() == [False, False, False, True, True, False]
    assert frame["quantity"].tolist() == [6, 2, -1, 3, 1, 1]  # cancellation kept
    assert frame["order_date"].tolist() == [pd.Timestamp(d) for d in TINY_DATES]
    dtypes = {c: str(t) for c, t in frame.dtypes.items()}
    assert dtypes == {
        "order_id": "str", "product_id": "str", "product": "str", "quantity": "int64",
        "order_date": "datetime64[us]", "unit_price": "float64", "customer_id": "str",
        "day_number": "int32", "year": "int16", "month": "int8", "day": "int8",
        "month_half": "int8", "weekday": "int8", "hour": "int8", "weekday_name": "category",
        "month_name": "category", "gross": "float64",
    }  # fmt: skip


def test_tiny_csv_derived_columns(tmp_path):
    path = write_text(tmp_path / "t.csv", TINY)
    frame, _ = load_transactions(path, DATA, split_day=15)
    assert frame["day_number"].tolist() == [14944, 14958, 14959, 14948, 15399, -1]
    assert frame["year"].tolist() == [2010, 2010, 2010, 2010, 2012, 1969]
    assert frame["month"].tolist() == [12, 12, 12, 12, 2, 12]
    assert frame["day"].tolist() == [1, 15, 16, 5, 29, 31]
    assert frame["month_half"].tolist() == [0, 0, 1, 0, 1, 1]  # day > 15
    assert frame["weekday"].tolist() == [2, 2, 3, 6, 2, 2]  # 0 = Monday
    assert frame["weekday_name"].tolist() == [
        "Wednesday", "Wednesday", "Thursday", "Sunday", "Wednesday", "Wednesday",
    ]  # fmt: skip
    assert frame["month_name"].tolist() == ["December"] * 4 + ["February", "December"]
    assert frame["gross"].tolist() == [6 * 2.55, 2 * 1.5, -27.5, 3 * 0.85, 4.25, 1.0]

    early, _ = load_transactions(path, DATA, split_day=4)
    assert early["month_half"].tolist() == [0, 1, 1, 1, 1, 1]
    others = [c for c in frame.columns if c != "month_half"]
    pd.testing.assert_frame_equal(early[others], frame[others])


@pytest.mark.parametrize("name", ["t.txt", "t.csv.gz", "t.gz", "T.CSV"])
def test_csv_suffixes_and_compression_give_the_same_frame(tmp_path, name):
    expected, _ = load_transactions(write_text(tmp_path / "t.csv", TINY), DATA, split_day=15)
    frame, report = load_transactions(write_text(tmp_path / name, TINY), DATA, split_day=15)
    assert report.format == "csv"
    pd.testing.assert_frame_equal(frame, expected)


def test_quoted_line_breaks_across_csv_blocks(tmp_path):
    """Descriptions with line breaks must not split rows where Arrow cuts the file in blocks."""
    row = '536381,84029G,"LINE\nBREAK",1,2/29/2012 12:00,4.25,17850,EIRE\n'
    path = write_text(tmp_path / "big.csv", HEADER + row * 40_000)  # 2.4 MB, > 1 block
    frame, report = load_transactions(path, DATA, split_day=15)
    assert report.rows == 40_000
    assert (frame["product"] == "LINE\nBREAK").all()


def test_utf8_encoding_with_byte_order_mark(tmp_path):
    text = TINY.replace("OLD", "OLD £ café")
    path = write_text(tmp_path / "u.csv", text, encoding="utf-8-sig")
    frame, _ = load_transactions(path, DataConfig(encoding="utf-8"), split_day=15)
    assert frame["order_id"].iloc[0] == "536365"  # the mark is not part of 'InvoiceNo'
    assert frame["product"].iloc[5] == "OLD £ café"


def test_blank_lines_before_the_header_are_skipped(tmp_path):
    expected, _ = load_transactions(write_text(tmp_path / "t.csv", TINY), DATA, split_day=15)
    frame, _ = load_transactions(write_text(tmp_path / "b.csv", "\n\n" + TINY), DATA, split_day=15)
    pd.testing.assert_frame_equal(frame, expected)


RENAMED = Columns(
    order_id="order",
    product_id="sku",
    product="name",
    quantity="qty",
    order_date="when",
    unit_price="price",
    customer_id="client",
)


def test_column_mapping_with_renamed_columns(tmp_path):
    text = (
        "extra,client,when,sku,qty,price,order,name\n"
        "x,17850,2010-12-01 08:26:00,85123,6,2.55,536365,HEART\n"
        "y,,2010-12-16 00:00:00,D,-1,27.5,C536379,Discount\n"
    )
    data = DataConfig(columns=RENAMED, date_format="%Y-%m-%d %H:%M:%S")
    frame, report = load_transactions(write_text(tmp_path / "r.csv", text), data, split_day=15)
    assert list(frame.columns) == [*SOURCE_COLUMNS, *DERIVED_COLUMNS]
    assert frame["order_id"].tolist() == ["536365", "C536379"]
    assert frame["product_id"].tolist() == ["85123", "D"]
    assert frame["product"].tolist() == ["HEART", "Discount"]
    assert frame["quantity"].tolist() == [6, -1]
    assert frame["unit_price"].tolist() == [2.55, 27.5]
    assert frame["order_date"].tolist() == [
        pd.Timestamp(2010, 12, 1, 8, 26), pd.Timestamp(2010, 12, 16),
    ]  # fmt: skip
    assert frame["month_half"].tolist() == [0, 1]
    assert report.rows_without_customer == 1


def test_parquet_numeric_codes_and_native_dates(tmp_path):
    """Numbers where text is expected (float customer ids, int codes) become integer text."""
    table = pa.table(
        {
            "order": pa.array([536365, 536366, 536367], pa.int64()),
            "sku": pa.array([85123, 22633, 10002], pa.int64()),
            "name": pa.array(["HEART", None, "OLD"]),
            "qty": pa.array([6, -2, 1], pa.int32()),
            "when": pa.array(
                [
                    dt.datetime(2010, 12, 1, 8, 26),
                    dt.datetime(2011, 1, 20),
                    dt.datetime(2011, 1, 2),
                ],
                pa.timestamp("ns"),
            ),
            "price": pa.array([2.55, 1.0, 3.5]),
            "client": pa.array([17850.0, None, 123456789012.0]),
            "unused": pa.array(["a", "b", "c"]),
        }
    )
    path = tmp_path / "n.pq"
    pq.write_table(table, path)
    frame, report = load_transactions(path, DataConfig(columns=RENAMED), split_day=15)
    assert report.format == "parquet" and report.rows_without_customer == 1
    assert frame["order_id"].tolist() == ["536365", "536366", "536367"]
    assert frame["product_id"].tolist() == ["85123", "22633", "10002"]
    assert frame["customer_id"].iloc[0] == "17850"
    assert frame["customer_id"].iloc[2] == "123456789012"  # not "1.23456789012e+11"
    assert pd.isna(frame["customer_id"].iloc[1]) and pd.isna(frame["product"].iloc[1])
    assert frame["quantity"].dtype == np.int64 and frame["quantity"].tolist() == [6, -2, 1]
    assert frame["order_date"].dtype == "datetime64[us]"
    assert frame["weekday"].tolist() == [2, 3, 6]
    assert frame["month_half"].tolist() == [0, 1, 0]


def test_parquet_text_dates_are_parsed_with_the_format(tmp_path):
    csv_frame, _ = load_transactions(write_text(tmp_path / "t.csv", TINY), DATA, split_day=15)
    source = pd.read_csv(tmp_path / "t.csv", dtype=str, keep_default_na=False)
    pq.write_table(pa.Table.from_pandas(source, preserve_index=False), tmp_path / "t.parquet")
    frame, _ = load_transactions(tmp_path / "t.parquet", DATA, split_day=15)
    pd.testing.assert_frame_equal(frame, csv_frame)


def test_parquet_from_pandas_with_offset_index_and_categoricals(tmp_path):
    expected, _ = load_transactions(write_text(tmp_path / "t.csv", TINY), DATA, split_day=15)
    source = pd.read_csv(tmp_path / "t.csv", dtype={"StockCode": "category", "InvoiceNo": str})
    source.index = source.index + 100
    source.to_parquet(tmp_path / "t.parquet")
    source.iloc[2:].to_parquet(tmp_path / "tail.parquet")
    frame, _ = load_transactions(tmp_path / "t.parquet", DATA, split_day=15)
    tail, _ = load_transactions(tmp_path / "tail.parquet", DATA, split_day=15)
    pd.testing.assert_frame_equal(frame, expected)
    pd.testing.assert_frame_equal(tail, expected.iloc[2:].reset_index(drop=True))


def _write_xlsx(path: Path, rows: list[list[object]]) -> Path:
    openpyxl = pytest.importorskip("openpyxl")
    book = openpyxl.Workbook()
    sheet = book.active
    for row in rows:
        sheet.append(row)
    book.save(path)
    return path


def test_xlsx_round_trip(tmp_path):
    expected, _ = load_transactions(write_text(tmp_path / "t.csv", TINY), DATA, split_day=15)
    rows: list[list[object]] = [HEADER.strip().split(",")]
    for rec in expected.itertuples():
        # numbers where Excel users type numbers; one date typed as text in the CSV format
        is_number = rec.product_id.isdigit()
        when: object = rec.order_date.to_pydatetime()
        if rec.Index == 2:
            when = "12/16/2010 0:00"
        rows.append(
            [
                int(rec.order_id) if rec.order_id.isdigit() else rec.order_id,
                int(rec.product_id) if is_number else rec.product_id,
                None if pd.isna(rec.product) else rec.product,
                rec.quantity,
                when,
                rec.unit_price,
                None if pd.isna(rec.customer_id) else int(rec.customer_id),
                "somewhere",
            ]
        )
    path = _write_xlsx(tmp_path / "t.xlsx", rows)
    frame, report = load_transactions(path, DATA, split_day=15)
    assert report == LoadReport(
        path=str(path), format="xlsx", rows_read=6, rows_without_customer=2, rows=6
    )
    pd.testing.assert_frame_equal(frame, expected)
    assert frame["product_id"].iloc[0] == "85123"


def test_xlsx_without_openpyxl_says_how_to_install(tmp_path, monkeypatch):
    path = tmp_path / "t.xlsx"
    path.write_bytes(b"PK")
    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        return None if name == "openpyxl" else real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    assert "pip install rlreco[xlsx]" in load_error(path)


def test_loader_writes_nothing(tmp_path):
    path = write_text(tmp_path / "t.csv.gz", TINY)
    before = sorted(tmp_path.rglob("*"))
    load_transactions(path, DATA, split_day=15)
    assert sorted(tmp_path.rglob("*")) == before


# --- bad input: one-line DataError naming the file, column and rows ---------------------------


def test_missing_file(tmp_path):
    assert load_error(tmp_path / "nope.csv") == f"{tmp_path / 'nope.csv'}: file not found"


def test_unsupported_suffix_lists_formats(tmp_path):
    path = write_text(tmp_path / "t.json", "{}")
    message = load_error(path)
    assert "'.json'" in message
    for listed in (".csv", ".csv.gz", ".parquet", ".xlsx"):
        assert listed in message


def test_garbage_parquet(tmp_path):
    path = tmp_path / "bad.parquet"
    path.write_bytes(b"this is not parquet at all" * 10)
    assert "cannot read as Parquet: " in load_error(path)


@pytest.mark.parametrize("damage", ["truncated", "not gzip"])
def test_damaged_gzip(tmp_path, damage):
    packed = gzip.compress((TINY * 2000).encode())
    path = tmp_path / "bad.csv.gz"
    path.write_bytes(packed[: len(packed) // 2] if damage == "truncated" else b"plain text" * 50)
    assert "cannot read as CSV: " in load_error(path)


def test_garbage_xlsx(tmp_path):
    pytest.importorskip("openpyxl")
    path = tmp_path / "bad.xlsx"
    path.write_bytes(b"not a zip workbook" * 10)
    assert "cannot read as XLSX: " in load_error(path)


def test_unknown_encoding(tmp_path):
    path = write_text(tmp_path / "t.csv", TINY)
    assert "unknown text encoding 'klingon'" in load_error(path, DataConfig(encoding="klingon"))


def test_missing_mapped_column_csv(tmp_path):
    path = write_text(tmp_path / "t.csv", TINY.replace("InvoiceDate", "Date", 1))
    message = load_error(path)
    assert message == (
        f"{path}: column 'InvoiceDate' (order_date) not found; columns are: InvoiceNo, "
        "StockCode, Description, Quantity, Date, UnitPrice, CustomerID, Country"
    )


def test_missing_mapped_columns_parquet(tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"InvoiceNo": ["1"], "Qty": [1]}), path)
    message = load_error(path)
    assert "'StockCode' (product_id)" in message and "'Quantity' (quantity)" in message
    assert message.endswith("not found; columns are: InvoiceNo, Qty")


def test_missing_mapped_column_xlsx(tmp_path):
    path = _write_xlsx(tmp_path / "t.xlsx", [["InvoiceNo", "Other"], [1, 2]])
    message = load_error(path)
    assert "columns 'StockCode' (product_id), 'Description' (product)," in message
    assert message.endswith("'CustomerID' (customer_id) not found; columns are: InvoiceNo, Other")


SIMPLE_ROW = "536365,85123A,WHITE HANGING HEART T-LIGHT HOLDER,6,12/1/2010 8:26,2.55,17850,UK"


def _with_bad_values(column: int, bad: dict[int, str]) -> str:
    """12 simple data rows with field ``column`` replaced on the given (1-based) data rows."""
    rows = [SIMPLE_ROW.split(",") for _ in range(12)]
    for data_row, value in bad.items():
        rows[data_row - 1][column] = value
    return HEADER + "".join(",".join(r) + "\n" for r in rows)


def test_unparseable_dates_name_rows_and_samples(tmp_path):
    text = _with_bad_values(4, {2: "2010-13-45", 5: "x", 9: "", 10: "13/1/2010 8:26"})
    path = write_text(tmp_path / "d.csv", text)
    assert load_error(path) == (
        f"{path}: column 'InvoiceDate' (order_date): 4 values do not match date format "
        "'%m/%d/%Y %H:%M' (first at data rows 2, 5, 9, ...: '2010-13-45', 'x', ''; "
        "data row 1 = first row below the header)"
    )


def test_one_unparseable_date(tmp_path):
    path = write_text(tmp_path / "d.csv.gz", _with_bad_values(4, {12: "12/1/2010"}))
    assert load_error(path) == (
        f"{path}: column 'InvoiceDate' (order_date): 1 value does not match date format "
        "'%m/%d/%Y %H:%M' (first at data row 12: '12/1/2010'; "
        "data row 1 = first row below the header)"
    )


def test_invalid_date_format(tmp_path):
    path = write_text(tmp_path / "t.csv", TINY)
    message = load_error(path, DataConfig(date_format="%m/%d/%Y %Q"))
    assert "cannot parse dates with format '%m/%d/%Y %Q'" in message


def test_bad_quantities(tmp_path):
    path = write_text(tmp_path / "q.csv", _with_bad_values(3, {3: "x", 4: "", 7: "1.5"}))
    assert load_error(path) == (
        f"{path}: column 'Quantity' (quantity): 3 values are not whole numbers "
        "(first at data rows 3, 4, 7: 'x', '', '1.5'; data row 1 = first row below the header)"
    )


def test_whole_number_text_quantities_are_accepted(tmp_path):
    path = write_text(tmp_path / "q.csv", _with_bad_values(3, {1: " 6.0", 2: "+2", 3: "-1"}))
    frame, _ = load_transactions(path, DATA, split_day=15)
    assert frame["quantity"].tolist()[:4] == [6, 2, -1, 6]


def test_bad_unit_prices(tmp_path):
    path = write_text(tmp_path / "p.csv", _with_bad_values(5, {1: "2;55", 11: "", 12: "inf"}))
    assert load_error(path) == (
        f"{path}: column 'UnitPrice' (unit_price): 3 values are not numbers "
        "(first at data rows 1, 11, 12: '2;55', '', 'inf'; "
        "data row 1 = first row below the header)"
    )


def test_csv_parse_error(tmp_path):
    path = write_text(tmp_path / "p.csv", _with_bad_values(5, {3: "2,55"}))
    assert "cannot read as CSV: CSV parse error: Expected 8 columns, got 9" in load_error(path)


def test_missing_product_id(tmp_path):
    path = write_text(tmp_path / "m.csv", _with_bad_values(1, {6: "  "}))
    assert load_error(path) == (
        f"{path}: column 'StockCode' (product_id): 1 value is missing "
        "(first at data row 6: '  '; data row 1 = first row below the header)"
    )


def test_parquet_missing_values_use_parquet_row_numbers(tmp_path):
    path = tmp_path / "q.parquet"
    frame = pd.read_csv(write_text(tmp_path / "t.csv", TINY), dtype={"StockCode": str})
    frame.loc[1, "Quantity"] = None
    frame.to_parquet(path)
    assert load_error(path) == (
        f"{path}: column 'Quantity' (quantity): 1 value is not a whole number "
        "(first at data row 2: missing; data row 1 = first row)"
    )


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("empty.csv", b""),
        ("header.csv", HEADER.encode()),
        ("blank.csv", b"\n\n"),
        ("empty.csv.gz", gzip.compress(b"")),
        ("header.csv.gz", gzip.compress(HEADER.encode())),
    ],
)
def test_empty_csv(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    assert load_error(path) == f"{path}: no transactions (empty file)"


def test_empty_parquet(tmp_path):
    path = tmp_path / "empty.parquet"
    frame = pd.read_csv(write_text(tmp_path / "t.csv", TINY), dtype=str).iloc[:0]
    frame.to_parquet(path)
    assert load_error(path) == f"{path}: no transactions (empty file)"


def test_empty_xlsx(tmp_path):
    path = _write_xlsx(tmp_path / "empty.xlsx", [])
    assert load_error(path) == f"{path}: no transactions (empty file)"
