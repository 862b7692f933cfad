"""Run directory: atomic writes, schema validation, bit-identical save/load of tables."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import rlreco
from rlreco.engine.history import History
from rlreco.engine.state_space import StateSpace, build_state_space, history_states
from rlreco.engine.tables import Tables, build_initial_tables
from rlreco.errors import SnapshotError
from rlreco.io.atomic_files import atomic_path, staged_directory
from rlreco.io.parquet_tables import SCHEMAS, read_table, write_table
from rlreco.io.run_dir import RunDir


def small_history(seed: int = 0, n_rows: int = 400) -> History:
    rng = np.random.default_rng(seed)
    codes = np.array(["10002", "22423", "85123A", "POST", "C2", "M"])
    return History(
        customer=rng.integers(-1, 12, n_rows).astype(np.int32),
        product=rng.integers(0, codes.size, n_rows).astype(np.int32),
        day=rng.integers(14_900, 15_200, n_rows).astype(np.int32),
        month=rng.integers(1, 13, n_rows).astype(np.int8),
        half=rng.integers(0, 2, n_rows).astype(np.int8),
        weekday=rng.integers(0, 6, n_rows).astype(np.int8),
        quantity=rng.integers(-3, 20, n_rows).astype(np.int64),
        gross=rng.normal(10, 3, n_rows),
        customer_ids=np.array([f"{12000 + i}" for i in range(12)]),
        product_codes=codes,
        product_names=np.array([f"product {c}" for c in codes]),
        last_day=15_200,
    )


def small_run(seed: int = 0) -> tuple[StateSpace, Tables]:
    history = small_history(seed)
    cust_seg = (np.arange(12) % 3).astype(np.int16)
    space = build_state_space(history, cust_seg, ("Q1", "Q2", "Q3"))
    state = history_states(history, cust_seg, space)
    tables = build_initial_tables(
        space, state, history.product, history.quantity, np.random.default_rng(seed)
    )
    return space, tables


def test_state_space_shape_and_ids() -> None:
    space, tables = small_run()
    assert space.n_states == 3 * 12 * 2 * 6
    assert space.state_ids[0] == "Q1_January_0_Monday"
    assert space.state_ids[-1] == "Q3_December_1_Saturday"
    # the integer id is segment-major over the observed components
    assert list(space.state_ids).index("Q2_March_1_Tuesday") == ((1 * 12 + 2) * 2 + 1) * 6 + 1
    assert tables.shape == (space.n_states, space.n_products)
    known = tables.known
    assert np.all(np.isfinite(tables.value[known])) and np.all(np.isneginf(tables.value[~known]))
    assert np.all(tables.reco_count == 0)
    # values are N(count, 1) rounded to cents: within 6 sigma and on the cent grid
    assert np.all(np.abs(tables.value[known] - tables.count[known]) < 6)
    assert np.allclose(tables.value[known] * 100, np.rint(tables.value[known] * 100))


def test_counts_match_history_sums() -> None:
    history = small_history(1)
    cust_seg = (np.arange(12) % 3).astype(np.int16)
    space = build_state_space(history, cust_seg, ("Q1", "Q2", "Q3"))
    state = history_states(history, cust_seg, space)
    tables = build_initial_tables(
        space, state, history.product, history.quantity, np.random.default_rng(0)
    )
    expected = np.zeros(tables.shape, dtype=np.int64)
    seen = np.zeros(tables.shape, dtype=bool)
    for s, p, q in zip(state, history.product, history.quantity, strict=True):
        if s >= 0:
            expected[s, p] += q
            seen[s, p] = True
    assert np.array_equal(tables.count, expected)
    assert np.array_equal(tables.known, seen)
    # catalogues: products each segment's customers bought
    for g in range(3):
        rows = (history.customer >= 0) & (cust_seg[np.maximum(history.customer, 0)] == g)
        assert np.array_equal(space.catalogue(g), np.unique(history.product[rows]))


def test_run_dir_round_trip_is_bit_identical(tmp_path: Path) -> None:
    space, tables = small_run()
    tables.value[0, 0] = 0.1 + 0.2  # a value with no short decimal form
    tables.cells["count"][0, 0] = -5
    run = RunDir.create(
        tmp_path / "run",
        manifest={"run_id": "x", "config": {}},
        space=space.to_columns(),
        snapshot=tables.to_columns(space),
    )
    again = RunDir.open(run.path)
    space2 = StateSpace.from_columns(again.read_space())
    tables2 = Tables.from_columns(again.read_snapshot(), space2)
    assert tables2.equals(tables)
    assert np.array_equal(space2.catalogue_items, space.catalogue_items)
    assert np.array_equal(space2.state_ids, space.state_ids)
    assert again.visits == 0


def test_create_refuses_existing_and_force_replaces(tmp_path: Path) -> None:
    space, tables = small_run()
    kw = dict(manifest={"run_id": "a", "config": {}}, space=space.to_columns(),
              snapshot=tables.to_columns(space))  # fmt: skip
    RunDir.create(tmp_path / "run", **kw)
    with pytest.raises(SnapshotError, match="already exists"):
        RunDir.create(tmp_path / "run", **kw)
    RunDir.create(tmp_path / "run", force=True, **{**kw, "manifest": {"run_id": "b", "config": {}}})
    assert RunDir.open(tmp_path / "run").manifest["run_id"] == "b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_corrupt_and_foreign_files_are_one_line(tmp_path: Path) -> None:
    space, tables = small_run()
    run = RunDir.create(tmp_path / "run", manifest={"run_id": "a", "config": {}},
                        space=space.to_columns(), snapshot=tables.to_columns(space))  # fmt: skip
    snap = run.path / run.manifest["snapshot"]
    good = snap.read_bytes()
    snap.write_bytes(good[: len(good) // 2])
    with pytest.raises(SnapshotError, match="corrupt or not a Parquet file") as info:
        run.read_snapshot()
    assert "\n" not in str(info.value) and str(snap) in str(info.value)
    pd.DataFrame({"a": [1, 2]}).to_parquet(snap)
    with pytest.raises(SnapshotError, match="not an rlreco snapshot file"):
        run.read_snapshot()
    snap.write_bytes(good)
    write_table(snap, "metrics", {k: np.zeros(1) for k in SCHEMAS["metrics"].names})
    with pytest.raises(SnapshotError, match=r"not an rlreco snapshot file \(metrics\)"):
        run.read_snapshot()
    (run.path / "manifest.json").write_text("{not json")
    with pytest.raises(SnapshotError, match="corrupt manifest"):
        RunDir.open(run.path)
    (run.path / "manifest.json").write_text(json.dumps({"run_id": "a"}))
    with pytest.raises(SnapshotError, match="manifest lacks"):
        RunDir.open(run.path)
    with pytest.raises(SnapshotError, match="not a run directory"):
        RunDir.open(tmp_path)
    with pytest.raises(SnapshotError, match="run directory not found"):
        RunDir.open(tmp_path / "nope")


def test_snapshot_content_is_validated(tmp_path: Path) -> None:
    space, tables = small_run()
    cols = tables.to_columns(space)
    cols["product_id"] = cols["product_id"].copy()
    cols["product_id"][0] = space.n_products + 3
    with pytest.raises(SnapshotError, match="product_id outside"):
        Tables.from_columns(cols, space)
    cols = tables.to_columns(space)
    cols["value"] = cols["value"].copy()
    cols["value"][0] = np.nan
    with pytest.raises(SnapshotError, match="non-finite"):
        Tables.from_columns(cols, space)


def test_atomic_write_leaves_nothing_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out.parquet"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.parquet"]
    with pytest.raises(SnapshotError, match="file not found"):
        read_table(tmp_path / "missing.parquet", "snapshot")


def test_commit_keeps_initial_and_replaces_previous(tmp_path: Path) -> None:
    space, tables = small_run()
    run = RunDir.create(tmp_path / "run", manifest={"run_id": "a", "config": {}},
                        space=space.to_columns(), snapshot=tables.to_columns(space))  # fmt: skip
    metrics = {k: np.zeros(2) for k in SCHEMAS["metrics"].names}
    for episodes in (100, 200):
        tables.cells["reco_count"][0, 0] = episodes
        run.commit(visits=episodes, snapshot=tables.to_columns(space), metrics=metrics,
                   updates={"rng_state": {"k": episodes}})  # fmt: skip
    again = RunDir.open(run.path)
    assert again.visits == 200 and again.manifest["rng_state"] == {"k": 200}
    names = sorted(p.name for p in (run.path / "snapshots").iterdir())
    assert names == ["episodes-000000000000000.parquet", "episodes-000000000000200.parquet"]
    assert Tables.from_columns(again.read_snapshot(), space).reco_count[0, 0] == 200
    assert Tables.from_columns(again.read_snapshot("initial"), space).reco_count[0, 0] == 0


#: A commit killed (no clean-up runs) just before or just after its manifest is written.
CRASHING_COMMIT = """
import os, sys
import numpy as np
from rlreco.io import run_dir
from rlreco.io.parquet_tables import SCHEMAS

path, point = sys.argv[1], sys.argv[2]
write_json = run_dir.write_json

def crash_around_manifest(target, obj):
    if target.name == run_dir.MANIFEST and point == "before":
        os._exit(17)
    write_json(target, obj)
    if target.name == run_dir.MANIFEST and point == "after":
        os._exit(17)

run_dir.write_json = crash_around_manifest
run = run_dir.RunDir.open(path)
metrics = {k: np.full(3, 2) for k in SCHEMAS["metrics"].names}
run.commit(visits=200, snapshot=run.read_snapshot(), metrics=metrics, updates={})
"""


@pytest.mark.parametrize(("point", "episodes"), [("before", 100), ("after", 200)])
def test_a_commit_killed_around_its_manifest_reads_as_old_or_new(
    tmp_path: Path, point: str, episodes: int
) -> None:
    # metrics.parquet is replaced in place: written before the manifest, a crash between the
    # two left the old manifest with the new metrics (a run that never existed)
    space, tables = small_run()
    run = RunDir.create(tmp_path / "run", manifest={"run_id": "a", "config": {}},
                        space=space.to_columns(), snapshot=tables.to_columns(space))  # fmt: skip
    old = {k: np.full(2, 1) for k in SCHEMAS["metrics"].names}
    run.commit(visits=100, snapshot=tables.to_columns(space), metrics=old, updates={})
    env = {**os.environ, "PYTHONPATH": str(Path(rlreco.__file__).resolve().parent.parent)}
    done = subprocess.run(
        [sys.executable, "-c", CRASHING_COMMIT, str(run.path), point], env=env, check=False
    )
    assert done.returncode == 17
    again = RunDir.open(run.path)
    metrics = again.read_metrics()
    assert again.visits == episodes and metrics is not None
    expected = 1 if episodes == 100 else 2
    assert metrics["visits"].tolist() == [expected] * (2 if episodes == 100 else 3)
    Tables.from_columns(again.read_snapshot(), space)  # the snapshot it names is whole
    # the next commit finishes (or discards) what the killed one left under a pending name
    again.commit(visits=300, snapshot=tables.to_columns(space), metrics=None, updates={})
    assert not list(run.path.glob(".metrics-*"))
    kept = RunDir.open(run.path).read_metrics()
    assert kept is not None and np.array_equal(kept["visits"], metrics["visits"])


def test_a_missing_value_in_a_column_named_by_a_control_character_is_one_line(
    tmp_path: Path,
) -> None:
    # found by the long fuzz: the column name comes from the file and is shown escaped
    import pyarrow as pa
    import pyarrow.parquet as pq

    from rlreco.io.parquet_tables import schema_of

    schema = schema_of("states", ["segment", "\r"]).with_metadata(
        {b"rlreco": json.dumps({"kind": "states", "schema_version": 1}).encode()}
    )
    columns = {"state_id": [0], "state": ["Q1_x"], "segment": ["Q1"], "\r": [None], "weight": [1.0]}
    path = tmp_path / "states.parquet"
    pq.write_table(pa.table(columns, schema=schema), path)
    with pytest.raises(SnapshotError) as caught:
        read_table(path, "states")
    message = str(caught.value)
    assert len(message.splitlines()) == 1, message
    assert "column '\\r' has 1 missing values" in message


def test_atomic_outputs_get_the_modes_of_plain_files(tmp_path: Path) -> None:
    # tempfile makes its files and folders private to the owner; what is renamed into place
    # gets the modes a plain open() or mkdir() would under the process's umask
    with atomic_path(tmp_path / "a.json") as tmp:
        tmp.write_text("{}")
    with staged_directory(tmp_path / "d") as folder:
        (folder / "x").write_text("x")
    plain = tmp_path / "plain"
    plain.write_text("p")
    plain_dir = tmp_path / "plain_dir"
    plain_dir.mkdir()
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == plain.stat().st_mode & 0o777
    assert (tmp_path / "d").stat().st_mode & 0o777 == plain_dir.stat().st_mode & 0o777
