"""The export streamed from a snapshot file in batches of whole states (mongomock).

A file export must store exactly what the export of the same cells as a frame stores, however
the file's row groups and the batches cut the states; read no more than a batch of whole states
at a time; keep the digests of databases written before; and refuse bad cells or an over-size
seed state with one line before anything is written.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import mongomock
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from mongo_suite import (
    AWKWARD_CODES,
    FAST,
    code_index,
    contents,
    manifest,
    new_mongomock_db,
    patch_mongomock,
    synthetic_snapshot,
)

import rlreco.app.mongo_sync
import rlreco.io.mongo_cells
import rlreco.io.mongo_layout
from rlreco.errors import SnapshotError, SyncError
from rlreco.io.mongo import SnapshotFile, export_snapshot, import_snapshot
from rlreco.io.mongo_cells import frame_tables, state_batches
from rlreco.io.mongo_layout import SYNC_STATE, conform_snapshot, format_state, sort_snapshot
from rlreco.io.parquet_tables import CellStream, write_table
from rlreco.io.run_dir import RunDir
from rlreco.schema import DEFAULT_STATE_FIELDS

LAYOUTS = ("seed", "tidy")


def varied_snapshot() -> pd.DataFrame:
    """12 states of 1 to 23 cells (one larger than the small batches below), awkward codes."""
    frame = synthetic_snapshot(12, 23, 40, codes=AWKWARD_CODES)
    keep = np.ones(len(frame), dtype=bool)
    for k, state in enumerate(frame["state"].unique()):
        rows = np.flatnonzero((frame["state"] == state).to_numpy())
        keep[rows[1 + (5 * k) % 23 :]] = k == 3  # state 3 keeps all 23 cells
    return frame[keep].reset_index(drop=True)


def write_file(path: Path, frame: pd.DataFrame, row_group: int) -> SnapshotFile:
    """The frame's rows, in their order, as a snapshot file of ``row_group``-row groups."""
    write_table(path, "snapshot", {c: frame[c].to_numpy() for c in frame.columns})
    pq.write_table(pq.read_table(path), path, row_group_size=row_group)
    return SnapshotFile(path)


@pytest.fixture
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches of about 10 cells: states span row groups and batches."""
    monkeypatch.setattr(rlreco.io.mongo_cells, "BATCH_CELLS", 10)


@pytest.mark.usefixtures("small_batches")
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("row_group", [3, 7, 1000])
def test_file_export_stores_what_the_frame_export_stores(
    tmp_path: Path, layout: str, row_group: int
) -> None:
    frame = varied_snapshot()  # canonical order: by product id within a state, not by code
    source = write_file(tmp_path / "s.parquet", frame, row_group)
    by_frame, by_file = new_mongomock_db(), new_mongomock_db()
    want = export_snapshot(by_frame, frame, manifest(), layout=layout, batch_size=4, policy=FAST)
    got = export_snapshot(by_file, source, manifest(), layout=layout, batch_size=4, policy=FAST)
    assert contents(by_file) == contents(by_frame)
    assert (got.collections, got.round_trips) == (want.collections, want.round_trips)
    assert got.states_written == frame["state"].nunique()
    again = export_snapshot(by_file, source, manifest(), layout=layout, policy=FAST)
    assert (again.states_written, again.documents_written) == (0, 0)
    back, _ = import_snapshot(by_file, layout=layout, index=code_index(frame), policy=FAST)
    pd.testing.assert_frame_equal(back, frame, check_exact=True)


def test_a_file_whose_states_are_not_grouped_is_read_whole(tmp_path: Path) -> None:
    frame = varied_snapshot()
    shuffled = frame.sample(frac=1.0, random_state=3).reset_index(drop=True)
    source = write_file(tmp_path / "s.parquet", shuffled, 5)
    by_frame, by_file = new_mongomock_db(), new_mongomock_db()
    export_snapshot(by_frame, frame, manifest(), layout="seed", policy=FAST)
    export_snapshot(by_file, source, manifest(), layout="seed", policy=FAST)
    assert contents(by_file) == contents(by_frame)


@pytest.mark.parametrize("row_group", [1, 4, 50])
def test_batches_hold_whole_sorted_states_and_stay_bounded(tmp_path: Path, row_group: int) -> None:
    frame = varied_snapshot()
    source = write_file(tmp_path / "s.parquet", frame, row_group)
    parquet = pq.ParquetFile(source.path)
    tables = (parquet.read_row_group(g) for g in range(parquet.num_row_groups))
    batches = list(state_batches(tables, DEFAULT_STATE_FIELDS, max_cells=8))
    states = [s for b in batches for s in b.states]
    assert states == list(dict.fromkeys(frame["state"]))  # every state once, in file order
    largest = int(frame["state"].value_counts().max())
    for batch in batches:
        cells = int(batch.bounds[-1])
        assert cells < max(8, largest) + row_group
        assert len(batch.states) == 1 or cells < 8 + row_group
    ordered = frame.sort_values(["state", "product_code"])
    for batch in batches:
        for i, state in enumerate(batch.states):
            a, b = batch.bounds[i], batch.bounds[i + 1]
            cells = ordered[ordered["state"] == state]
            assert batch.codes[a:b].tolist() == cells["product_code"].tolist()
            assert batch.columns["value"][a:b].tolist() == cells["value"].tolist()
            assert batch.columns["product_id"][a:b].tolist() == cells["product_id"].tolist()
            assert batch.field_values[i] == tuple(cells[list(DEFAULT_STATE_FIELDS)].iloc[0])


def test_a_dictionary_holding_a_value_twice_is_read_by_value() -> None:
    frame = varied_snapshot().iloc[:18]  # states 0-2
    table = next(frame_tables(conform_snapshot(frame), DEFAULT_STATE_FIELDS))
    states = table.column("state").to_pylist()
    names = sorted(set(states))
    # every other row of a state points at a second copy of its id
    indices = [names.index(s) + len(names) * (k % 2) for k, s in enumerate(states)]
    doubled = pa.DictionaryArray.from_arrays(pa.array(indices, pa.int32()), pa.array(names * 2))
    table = table.set_column(table.schema.get_field_index("state"), "state", doubled)
    (batch,) = state_batches([table], DEFAULT_STATE_FIELDS)
    assert batch.states == names and batch.bounds.tolist() == [0, 1, 7, 18]


def reference_digest(cells: pd.DataFrame, layout: str) -> str:
    """A state's digest as exports have always computed it (cells sorted by code)."""
    h = hashlib.blake2b(layout.encode(), digest_size=16)
    h.update("\x00".join(cells["product_code"]).encode())
    columns = ["value", "reward", "count", "reco_count"]
    columns += ["product_id", "state_id"] if layout == "tidy" else []
    for column in columns:
        h.update(np.ascontiguousarray(cells[column].to_numpy()).tobytes())
    return h.hexdigest()


@pytest.mark.usefixtures("small_batches")
@pytest.mark.parametrize("layout", LAYOUTS)
def test_digests_are_those_earlier_exports_stored(tmp_path: Path, layout: str) -> None:
    frame = varied_snapshot()
    db = new_mongomock_db()
    export_snapshot(db, write_file(tmp_path / "s.parquet", frame, 4), manifest(), layout=layout)
    stored = {d["state"]: d["digest"] for d in db[SYNC_STATE].find({})}
    ordered = frame.sort_values("product_code")
    assert stored == {
        state: reference_digest(cells, layout) for state, cells in ordered.groupby("state")
    }


def test_bad_cells_in_a_file_are_the_frame_errors_and_write_nothing(tmp_path: Path) -> None:
    frame = varied_snapshot()
    # rows 1-6 are state 1's, 7-17 state 2's: a copy of row 4 within state 1 or after row 8
    twice = pd.concat([frame.iloc[:5], frame.iloc[[4]], frame.iloc[5:]], ignore_index=True)
    apart = pd.concat([frame.iloc[:9], frame.iloc[[4]], frame.iloc[9:]], ignore_index=True)
    wrong, all_wrong = frame.copy(), frame.copy()
    wrong.loc[17, "month"] = "Smarch"
    all_wrong.loc[1:6, "half"] = 1 - all_wrong.loc[1:6, "half"]
    for k, bad in enumerate((twice, apart, wrong, all_wrong)):
        with pytest.raises(SnapshotError) as expected:
            conform_snapshot(bad)
        db = new_mongomock_db()
        source = write_file(tmp_path / f"{k}.parquet", bad, 6)
        with pytest.raises(SnapshotError) as info:
            export_snapshot(db, source, manifest(), layout="tidy", policy=FAST)
        assert str(info.value) == str(expected.value)
        assert "\n" not in str(info.value)
        assert db.list_collection_names() == []


def test_a_file_without_the_runs_state_fields_is_one_line(tmp_path: Path) -> None:
    frame = varied_snapshot()
    fields = [*DEFAULT_STATE_FIELDS, "country"]
    run = {**manifest(), "state_fields": fields}
    with pytest.raises(SnapshotError) as expected:
        export_snapshot(new_mongomock_db(), frame, run, policy=FAST)
    db = new_mongomock_db()
    with pytest.raises(SnapshotError) as info:
        export_snapshot(db, write_file(tmp_path / "s.parquet", frame, 5), run, policy=FAST)
    assert str(info.value) == str(expected.value)
    assert str(info.value).startswith("snapshot lacks column(s) country; required: state_id")
    assert db.list_collection_names() == []


def test_an_over_size_seed_state_is_refused_before_anything_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rlreco.io.mongo_layout, "MAX_DOCUMENT_BYTES", 600)
    frame = varied_snapshot()  # state 3, the first over the limit, has 23 cells: 637 bytes
    big = frame["state"].unique()[3]
    db = new_mongomock_db()
    source = write_file(tmp_path / "s.parquet", frame, 5)
    with pytest.raises(SyncError) as info:
        export_snapshot(db, source, manifest(), layout="seed", policy=FAST)
    message = str(info.value)
    assert message.startswith(f"state {big!r} has 23 known cells: its seed documents would be")
    assert "such states); export with --layout tidy" in message and "\n" not in message
    assert db.list_collection_names() == []
    report = export_snapshot(db, source, manifest(), layout="tidy", policy=FAST)
    assert report.collections["cells"].written == len(frame)


def test_frame_tables_sort_states_and_codes() -> None:
    frame = varied_snapshot().sample(frac=1.0, random_state=1).reset_index(drop=True)
    table = next(frame_tables(conform_snapshot(frame), DEFAULT_STATE_FIELDS))
    got = table.to_pandas()
    pd.testing.assert_series_equal(
        got["product_code"],
        frame.sort_values(["state", "product_code"])["product_code"].reset_index(drop=True),
        check_dtype=False,
    )


# ------------------------------------------------------------- export-mongo of a run directory


def country_run(path: Path, n_states: int, per_state: int, n_products: int) -> RunDir:
    """A small synthetic version of the large state space: five state fields, many states,
    the snapshot written in row groups as ``simulate`` writes it."""
    fields = ["segment", "month", "half", "weekday", "country"]
    rng = np.random.default_rng(5)
    combos = [
        (seg, month, half, day, country)
        for seg in ("Q1", "Q2")
        for month in ("May", "June")
        for half in (0, 1)
        for day in ("Monday", "Friday")
        for country in ("EIRE", "United Kingdom", "Channel_Islands", "Côte d'Ivoire")
    ][:n_states]
    states: dict[str, Any] = {
        "state_id": np.arange(n_states, dtype=np.int32),
        "state": np.array([format_state(*c) for c in combos], dtype=object),
    }
    for k, name in enumerate(fields):
        states[name] = np.array([c[k] for c in combos], dtype=np.int8 if k == 2 else object)
    states["weight"] = np.ones(n_states)
    codes = np.array([f"C{i}" if i % 7 else f"{i}.{i}" for i in range(n_products)], dtype=object)
    space = {
        "states": states,
        "products": {
            "product_id": np.arange(n_products, dtype=np.int32),
            "product_code": codes,
            "description": codes,
        },
        "catalogues": {
            "segment": np.repeat(np.array(["Q1", "Q2"], dtype=object), n_products),
            "product_id": np.tile(np.arange(n_products, dtype=np.int32), 2),
        },
    }
    product = np.concatenate(
        [np.sort(rng.choice(n_products, per_state, replace=False)) for _ in range(n_states)]
    ).astype(np.int32)
    count = rng.integers(1, 9, product.size)
    group = {
        "state_id": np.repeat(np.arange(n_states, dtype=np.int32), per_state),
        "product_id": product,
        "value": rng.normal(size=product.size),
        "reward": rng.normal(size=product.size),
        "count": count,
        "reco_count": count - 1,
    }
    stream = CellStream(
        groups=[group],
        states={name: states[name] for name in ("state", *fields)},
        product_codes=codes,
    )
    return RunDir.create(
        path,
        manifest={"run_id": "country", "config": {}, "seed": 1, "state_fields": fields},
        space=space,
        snapshot=stream,
    )


@pytest.mark.usefixtures("small_batches")
@pytest.mark.parametrize("layout", LAYOUTS)
def test_export_run_of_a_country_state_space_streams_its_row_groups(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, layout: str
) -> None:
    monkeypatch.setattr(rlreco.io.parquet_tables, "ROW_GROUP", 16)
    run = country_run(tmp_path / "run", 64, 6, 30)
    path = run.path / run.manifest["snapshot"]
    assert pq.ParquetFile(path).num_row_groups == 24  # a state's 6 cells span two groups
    patch_mongomock()
    client = mongomock.MongoClient()
    monkeypatch.setattr(rlreco.app.mongo_sync, "connect", lambda *a, **k: client)
    report = rlreco.app.mongo_sync.export_run(run.path, uri="mongodb://h", layout=layout)
    assert report.states_written == 64
    frame = sort_snapshot(conform_snapshot(pd.DataFrame(run.read_snapshot()), fields=run.fields))
    got, _ = import_snapshot(
        client["rlRecomendation"], layout=layout, index=code_index(frame), fields=run.fields
    )
    pd.testing.assert_frame_equal(got, frame, check_exact=True)
