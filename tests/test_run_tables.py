"""The run's tables kept in its derived-array cache, and the cell buffer a sweep restores: the
same tables bit for bit from the cache as from the snapshot, never from a damaged or stale
entry, and sweeps byte-identical with or without the cache."""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import small_spec, synthetic_run

from rlreco.app import cell_buffers, run_tables, sweep_cells, sweep_execution
from rlreco.app.simulate import Run, simulate_run
from rlreco.app.sweep import run_sweep
from rlreco.app.sweep_grid import Setting
from rlreco.engine.kernels.topn import new_index
from rlreco.engine.state_space import StateSpace
from rlreco.engine.tables import Tables, check_known_cells, copy_rows
from rlreco.errors import SnapshotError
from rlreco.io import array_cache
from rlreco.io.run_dir import RunDir


def parquet_tables(run: RunDir, which: str = "latest") -> Tables:
    """The tables straight from the snapshot's row groups (no cache)."""
    groups = run.iter_snapshot(which, run_tables.SNAPSHOT_CELL_COLUMNS)
    return Tables.from_groups(groups, StateSpace.from_columns(run.read_space(), run.fields))


def entries(run: RunDir) -> list[Path]:
    return sorted((run.path / array_cache.CACHE_DIR).glob(f"{run_tables.CACHE_NAME}-*.npz"))


def snapshot_unread(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make reading a snapshot's row groups fail: what still loads came from the cache."""

    def unread(*args: object, **kwargs: object) -> Tables:
        raise AssertionError("the snapshot was read")

    monkeypatch.setattr(run_tables.Tables, "from_groups", unread)


def test_tables_come_back_from_the_cache_bit_for_bit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = synthetic_run(tmp_path / "run", seed=3)
    expected = parquet_tables(run)
    assert entries(run) == []
    assert Run.load(run.path).tables.equals(expected)
    assert entries(run) == []  # a plain load (simulate's, evaluate's) only reads the cache
    first = Run.load(run.path, store=True)  # reads the snapshot, stores the known cells
    assert first.tables.equals(expected)
    assert len(entries(run)) == 1
    snapshot_unread(monkeypatch)
    again = Run.load(run.path)
    assert again.tables.equals(expected)
    # the kernels' layout: aligned rows, -inf padding, value a view of it
    assert again.tables.padded.ctypes.data % 64 == 0
    assert np.all(again.tables.padded[:, expected.shape[1] :] == -np.inf)
    assert np.shares_memory(again.tables.value, again.tables.padded)
    assert again.history_count().tobytes() == expected.count.tobytes()


def test_known_cells_round_trip_and_are_checked() -> None:
    rng = np.random.default_rng(0)
    tables = Tables.empty(5, 11)
    cells = rng.choice(55, 20, replace=False)
    tables.value[cells // 11, cells % 11] = rng.normal(size=20)
    tables.cells.reshape(-1)["count"][cells] = rng.integers(1, 9, 20)
    tables.cells.reshape(-1)["reward"][cells] = rng.normal(size=20)
    known = tables.known_cells()
    assert known["cell"].tolist() == sorted(cells.tolist())
    assert Tables.from_known_cells(known, 5, 11).equals(tables)
    bad = [
        {**known, "cell": known["cell"][::-1].copy()},  # not increasing
        {**known, "cell": known["cell"] + 55 - known["cell"][-1]},  # out of range
        {**known, "value": np.where(known["value"] > 0, np.inf, known["value"])},
        {**known, "count": known["count"][:-1]},  # another length
        {**known, "reco_count": known["reco_count"].astype(np.int32)},  # another dtype
    ]
    for arrays in bad:
        with pytest.raises(SnapshotError):
            check_known_cells(arrays, 5, 11)


def damage_truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def damage_a_data_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("value.npy")
    data[info.header_offset + info.compress_size // 2 + 100] ^= 0x10  # inside value's numbers
    path.write_bytes(bytes(data))


def damage_with_valid_checksums(path: Path) -> None:
    # a readable entry whose cells are not what known_cells gives (e.g. a bug elsewhere)
    with np.load(path) as stored:
        known = {name: stored[name] for name in stored.files}
    known["cell"] = known["cell"][::-1].copy()
    with path.open("wb") as stream:
        np.savez(stream, **known)


def damage_compressed(path: Path) -> None:
    with np.load(path) as stored:
        known = {name: stored[name] for name in stored.files}
    with path.open("wb") as stream:
        np.savez_compressed(stream, **known)


@pytest.mark.parametrize(
    "damage",
    [damage_truncated, damage_a_data_byte, damage_with_valid_checksums, damage_compressed],
)
def test_a_damaged_entry_is_never_used_and_is_replaced(
    tmp_path: Path, damage: Callable[[Path], None]
) -> None:
    run = synthetic_run(tmp_path / "run", seed=4)
    expected = parquet_tables(run)
    Run.load(run.path, store=True)
    (entry,) = entries(run)
    damage(entry)
    assert Run.load(run.path, store=True).tables.equals(expected)
    # stored again, whole: the next load reads it
    inputs = run_tables.cache_inputs(run, "latest")
    assert inputs is not None
    stored = array_cache.read_arrays(
        run.path, run_tables.CACHE_NAME, inputs, {"cell": ((-1,), np.dtype(np.int64))}
    )
    assert stored is not None
    assert stored["cell"].tolist() == expected.known_cells()["cell"].tolist()


def test_a_new_snapshot_is_a_new_entry_and_old_entries_go(tmp_path: Path) -> None:
    run = synthetic_run(tmp_path / "run", seed=5)
    initial = parquet_tables(run)
    Run.load(run.path, store=True)
    before = sorted(p.name for p in entries(run))
    simulate_run(run.path, 300, response="popularity")  # reads the entry, stores none
    assert sorted(p.name for p in entries(run)) == before
    run = RunDir.open(run.path)
    latest = parquet_tables(run)
    assert not latest.equals(initial)
    assert Run.load(run.path, store=True).tables.equals(latest)  # not the initial's entry
    loaded = Run.load(run.path)
    assert loaded.tables.equals(latest)
    assert loaded.history_count().tobytes() == initial.count.tobytes()
    assert len(entries(run)) == 2  # latest and initial
    simulate_run(run.path, 200)
    run = RunDir.open(run.path)
    _, swept = sweep_cells.LoadedRun.read(run.path)  # a sweep stores what it loads
    assert swept.tables.equals(parquet_tables(run))
    assert swept.history_count.tobytes() == initial.count.tobytes()
    names = {p.name for p in entries(run)}
    assert len(names) == 2  # the previous latest snapshot's entry is gone
    for which in ("latest", "initial"):
        inputs = run_tables.cache_inputs(run, which)
        assert inputs is not None
        assert array_cache.cache_path(run.path, run_tables.CACHE_NAME, inputs).name in names


def test_a_run_that_cannot_store_its_tables_still_loads(tmp_path: Path) -> None:
    run = synthetic_run(tmp_path / "run", seed=6)
    (run.path / array_cache.CACHE_DIR).write_text("not a folder")
    expected = parquet_tables(run)
    assert Run.load(run.path, store=True).tables.equals(expected)
    assert sweep_cells.LoadedRun.read(run.path)[1].tables.equals(expected)
    assert (run.path / array_cache.CACHE_DIR).read_text() == "not a folder"


def test_a_corrupt_snapshot_is_reported_with_or_without_an_entry(tmp_path: Path) -> None:
    run = synthetic_run(tmp_path / "run", seed=7)
    Run.load(run.path, store=True)
    snapshot = run.path / run.manifest["snapshot"]
    snapshot.write_bytes(b"not parquet")  # another content: another key, no entry
    with pytest.raises(SnapshotError, match="corrupt or not a Parquet file"):
        Run.load(run.path)


def test_read_arrays_takes_any_length_where_asked_and_checks_the_rest(tmp_path: Path) -> None:
    arrays = {"a": np.arange(6, dtype=np.int64).reshape(2, 3), "b": np.zeros(0)}
    array_cache.write_arrays(tmp_path, "x", {"k": 1}, arrays)
    any_rows = {"a": ((-1, 3), np.dtype(np.int64)), "b": ((-1,), np.dtype(np.float64))}
    read = array_cache.read_arrays(tmp_path, "x", {"k": 1}, any_rows)
    assert read is not None
    assert read["a"].tolist() == arrays["a"].tolist() and read["b"].size == 0
    assert read["a"].flags.writeable
    for expected in (
        {"a": ((2, 4), np.dtype(np.int64))},
        {"a": ((-1,), np.dtype(np.int64))},
        {"a": ((2, 3), np.dtype(np.int32))},
        {"c": ((-1,), np.dtype(np.int64))},
    ):
        assert array_cache.read_arrays(tmp_path, "x", {"k": 1}, expected) is None
    assert array_cache.read_arrays(tmp_path, "x", {"k": 2}, any_rows) is None


# ---- the cell buffer -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "param"),
    [("eps-greedy", 0.3), ("decaying", 1.0), ("softmax", 0.5), ("ucb1", 1.0), ("thompson", 1.0)],
)
def test_the_cell_buffer_is_the_starting_tables_again_after_every_cell(
    tmp_path: Path, policy: str, param: float
) -> None:
    run = synthetic_run(tmp_path / "run", seed=8)
    _, loaded = sweep_cells.LoadedRun.read(run.path)
    pristine = loaded.tables.copy()
    setting = Setting(policy, param, 3, "popularity", "popularity")
    index = new_index(pristine.padded)
    with loaded.buffers.cell_tables() as cell:
        buffer, buffer_index = cell.tables, cell.index
    assert buffer is loaded.tables  # the loaded tables are the first buffer
    for visits in (3, 40, 2000):  # a few states, most, all
        task = sweep_cells.CellTask("k", setting, 0, 1, visits, 10)
        sweep_cells.simulate_cell(loaded, task)
        assert loaded.buffers._spare is not None
        assert loaded.buffers._spare[0] is buffer  # the same buffer, restored
        assert loaded.buffers._spare[1] is buffer_index
        assert buffer.equals(pristine)
        assert loaded.tables.equals(pristine)
        assert buffer_index.tobytes() == index.tobytes()


def first_cell_in_worker(task: sweep_cells.CellTask) -> tuple[bool, bool, dict[str, bytes]]:
    """In a forked pool worker: run a cell, and say whether the buffer it changed shares memory
    with the loaded tables, and whether those are still the starting tables."""
    loaded = sweep_execution._WORKER_RUN[0]
    assert isinstance(loaded, sweep_cells.LoadedRun)
    outcome = sweep_cells.simulate_cell(loaded, task)
    assert loaded.buffers._spare is not None
    buffer = loaded.buffers._spare[0]
    shared = any(
        np.shares_memory(mine, theirs)
        for mine in (buffer.padded, buffer.cells)
        for theirs in (loaded.tables.padded, loaded.tables.cells)
    )
    metrics = {name: array.tobytes() for name, array in outcome.metrics.items()}
    return shared, loaded.tables.equals(loaded.tables.copy()), metrics


def test_a_forked_worker_changes_a_buffer_of_its_own_with_the_same_results(
    tmp_path: Path,
) -> None:
    run = synthetic_run(tmp_path / "run", seed=8)
    _, loaded = sweep_cells.LoadedRun.read(run.path)
    pristine = loaded.tables.copy()
    task = sweep_cells.CellTask(
        "k", Setting("eps-greedy", 0.3, 3, "popularity", "popularity"), 0, 1, 500, 10
    )
    loaded.build_responses([task])
    pool = sweep_execution.fork_pool(loaded, 1)
    try:
        shared, unchanged, metrics = pool.submit(first_cell_in_worker, task).result()
    finally:
        sweep_execution.stop_pool(pool)
    assert not shared and unchanged
    assert (
        loaded.buffers._spare is not None and loaded.buffers._spare[0] is loaded.tables
    )  # still this one's
    here = sweep_cells.simulate_cell(loaded, task)
    assert metrics == {name: array.tobytes() for name, array in here.metrics.items()}
    assert loaded.tables.equals(pristine)


def test_shown_per_state_from_the_known_cells_is_the_row_sums_of_the_tables() -> None:
    rng = np.random.default_rng(3)
    tables = Tables.empty(7, 11)
    known_cells = rng.random((7, 11)) < 0.3
    known_cells[2] = False  # a state with no known cell
    tables.value[known_cells] = rng.normal(size=known_cells.sum())
    tables.cells["reco_count"][known_cells] = rng.integers(0, 2**40, known_cells.sum())
    sums = cell_buffers.shown_per_state(tables.known_cells(), 7, 11)
    assert sums.dtype == np.int64 and sums[2] == 0
    np.testing.assert_array_equal(sums, tables.reco_count.sum(axis=1))


def cells_in_worker(task: sweep_cells.CellTask) -> tuple[bool, dict[str, bytes]]:
    """In a forked pool worker: run a cell twice, and say whether the process had loaded
    tables besides its buffer at any point (with the metrics of the second cell)."""
    loaded = sweep_execution._WORKER_RUN[0]
    assert isinstance(loaded, sweep_cells.LoadedRun)
    had_tables = loaded.buffers._loaded is not None
    sweep_cells.simulate_cell(loaded, task)
    outcome = sweep_cells.simulate_cell(loaded, task)
    had_tables |= loaded.buffers._loaded is not None
    return had_tables, {name: array.tobytes() for name, array in outcome.metrics.items()}


def test_a_run_loaded_for_workers_skips_the_dense_tables_with_the_same_results(
    tmp_path: Path,
) -> None:
    """``dense=False`` (a sweep process that forks its workers): with the run's cache, no dense
    tables in the loading process; each worker builds its buffer from the known cells, and the
    cells, the counts and the tables built on demand are those of a dense load."""
    run = synthetic_run(tmp_path / "run", seed=8)
    _, dense = sweep_cells.LoadedRun.read(run.path)  # stores the known cells
    _, light = sweep_cells.LoadedRun.read(run.path, dense=False)
    assert light.buffers._loaded is None and light.buffers._spare is None
    np.testing.assert_array_equal(light.buffers.shown_per_state, dense.buffers.shown_per_state)
    np.testing.assert_array_equal(light.history_count, dense.history_count)
    task = sweep_cells.CellTask(
        "k", Setting("eps-greedy", 0.3, 3, "popularity", "popularity"), 0, 1, 500, 10
    )
    light.build_responses([task])
    pool = sweep_execution.fork_pool(light, 1)
    try:
        had_tables, metrics = pool.submit(cells_in_worker, task).result()
    finally:
        sweep_execution.stop_pool(pool)
    assert not had_tables and light.buffers._loaded is None
    here = sweep_cells.simulate_cell(dense, task)
    assert metrics == {name: array.tobytes() for name, array in here.metrics.items()}
    assert light.tables.equals(dense.tables)  # built on demand


def test_reset_rows_makes_exactly_the_rows_asked_those_of_the_known_cells() -> None:
    rng = np.random.default_rng(1)
    source = Tables.empty(9, 13)
    known_cells = rng.random((9, 13)) < 0.4
    source.value[known_cells] = rng.normal(size=known_cells.sum())
    source.cells["count"][known_cells] = rng.integers(1, 5, known_cells.sum())
    source.cells["reco_count"][known_cells] = rng.integers(0, 5, known_cells.sum())
    source.cells["reward"][known_cells] = rng.normal(size=known_cells.sum())
    known = source.known_cells()
    target = source.copy()
    target.value[:] = 0.0  # every cell known, other numbers
    target.cells["count"][:] = -1
    target.cells["reward"][:] = 7.0
    target.padded[:, 13:] = 1.0  # and the padding too
    rows = np.array([0, 1, 2, 5, 7, 8])
    target.reset_rows(known, rows)
    for s in range(9):
        same = s in rows.tolist()
        assert (target.padded[s].tobytes() == source.padded[s].tobytes()) == same
        assert (target.cells[s].tobytes() == source.cells[s].tobytes()) == same
    target.reset_rows(known, np.array([4, 3, 6]))  # in any order
    assert target.equals(source)
    assert target.padded.tobytes() == source.padded.tobytes()
    with pytest.raises(IndexError, match=r"a row outside 0\.\.8"):
        target.reset_rows(known, np.array([3, 9]))


def test_copy_rows_copies_exactly_the_rows_asked() -> None:
    source = np.arange(40.0).reshape(10, 4)
    target = np.zeros((10, 4))
    rows = np.array([0, 1, 2, 4, 7, 8, 9])  # three runs of consecutive rows
    copy_rows(source, target, rows)
    for s in range(10):
        assert np.array_equal(target[s], source[s] if s in rows.tolist() else np.zeros(4))
    copy_rows(source, target, np.zeros(0, dtype=np.int64))  # nothing to copy
    copy_rows(source, target, np.array([3, 5, 6]))
    assert np.array_equal(target, source)


# ---- sweeps ----------------------------------------------------------------------------------


def test_sweeps_are_byte_identical_with_and_without_the_cache(tmp_path: Path) -> None:
    run = synthetic_run(tmp_path / "run", seed=9)
    spec = small_spec(epsilons=(0.0, 0.2), replicates=2, responses=("popularity", "seed"))
    outputs = {}
    for name, workers, cached in (("none", 1, False), ("one", 1, True), ("two", 2, True)):
        sweep_cells._LOADED.clear()
        if not cached:
            for path in (run.path / array_cache.CACHE_DIR).glob("*.npz"):
                path.unlink()
        result = run_sweep(run.path, spec, tmp_path / name, workers=workers, plots=False)
        assert len(entries(run)) == 1
        outputs[name] = result.results.drop(columns="cell_seconds")
    for name in ("one", "two"):
        pd.testing.assert_frame_equal(outputs[name], outputs["none"])
        assert outputs[name].to_csv().encode() == outputs["none"].to_csv().encode()


def test_read_arrays_refuses_a_large_member_with_a_damaged_byte(tmp_path: Path) -> None:
    # larger than zipfile's reads of the header: only the member's checksum sees the damage
    arrays = {"a": np.arange(100_000, dtype=np.float64)}
    array_cache.write_arrays(tmp_path, "x", {}, arrays)
    path = array_cache.cache_path(tmp_path, "x", {})
    expected = {"a": ((-1,), np.dtype(np.float64))}
    assert array_cache.read_arrays(tmp_path, "x", {}, expected) is not None
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    assert array_cache.read_arrays(tmp_path, "x", {}, expected) is None
