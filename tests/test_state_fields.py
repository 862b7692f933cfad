"""Configurable state fields, streamed snapshots and the memory limit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from rlreco.app.prepare import prepare
from rlreco.app.simulate import Run, simulate_run
from rlreco.cli import app
from rlreco.config import RunConfig, config_from_dict
from rlreco.engine.tables import Tables
from rlreco.errors import ConfigError, SyncError
from rlreco.io.atomic_files import write_json
from rlreco.io.mongo_layout import check_seed_documents, parse_state, state_slices
from rlreco.io.run_dir import MANIFEST, RunDir

COUNTRIES = ("United Kingdom", "EIRE", "Channel_Islands")  # one value holds the separator


def transactions(path: Path, seed: int = 0) -> Path:
    """A small CSV in the UCI layout with countries and order hours (8-17)."""
    rng = np.random.default_rng(seed)
    days = pd.bdate_range("2011-01-03", "2011-03-31")
    rows = []
    for i in range(900):
        customer = int(rng.integers(0, 40))
        when = days[rng.integers(0, len(days))] + pd.Timedelta(hours=int(8 + customer % 10))
        rows.append(
            {
                "InvoiceNo": f"5{i:05d}",
                "StockCode": f"P{rng.integers(1, 40):03d}",
                "Description": "thing",
                "Quantity": int(rng.integers(1, 12)),
                "InvoiceDate": when.strftime("%m/%d/%Y %H:%M"),
                "UnitPrice": float(rng.integers(1, 9)),
                "CustomerID": f"{12000 + customer}",
                "Country": COUNTRIES[customer % 3],
                "Channel": "web" if i % 2 else "shop",
            }
        )
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def config(data: Path, fields: list[str], **extra: object) -> RunConfig:
    raw: dict[str, object] = {
        "data": {"path": str(data), "columns": {"channel": "Channel"}},
        "state": {"fields": fields},  # the [state] spelling of [states]
        "policy": {"slate_size": 3},
    }
    raw.update(extra)
    return config_from_dict(raw)


def test_default_fields_keep_the_original_ids_and_order(tmp_path: Path) -> None:
    data = transactions(tmp_path / "t.csv")
    prepare(config(data, ["segment", "month", "half", "weekday"]), out=tmp_path / "r")
    run = Run.load(tmp_path / "r")
    assert run.run_dir.fields == ("segment", "month", "half", "weekday")
    ids = run.space.state_ids.tolist()
    assert ids[0] == "Q1_January_0_Monday" and ids[1] == "Q1_January_0_Tuesday"
    states = pq.read_table(tmp_path / "r" / "state_space" / "states.parquet")
    assert states.schema.names == [
        "state_id", "state", "segment", "month", "half", "weekday", "weight",
    ]  # fmt: skip


def test_country_hour_and_a_categorical_column_make_states(tmp_path: Path) -> None:
    data = transactions(tmp_path / "t.csv")
    fields = ["segment", "country", "hour", "channel"]
    summary = prepare(config(data, fields), out=tmp_path / "r")
    run = Run.load(tmp_path / "r")
    space = run.space
    assert space.fields == tuple(fields)
    assert space.levels[1] == ("Channel_Islands", "EIRE", "United Kingdom")  # sorted
    assert space.levels[2] == tuple(str(h) for h in range(8, 18))  # numeric order
    assert space.levels[3] == ("shop", "web")
    assert summary.states_total == space.n_states == len(space.segments) * 3 * 10 * 2
    # ids: escaped values joined in field order; unique and parsed back exactly
    ids = space.state_ids.tolist()
    assert len(set(ids)) == len(ids)
    assert f"{space.segments[0]}_Channel%5FIslands_8_shop" == ids[0]
    for state_id in range(0, space.n_states, 7):
        values = parse_state(ids[state_id], space.fields)
        assert values == tuple(space.field_values(f)[state_id].item() for f in space.fields)
    # the run directory records the fields: manifest and the states/snapshot columns
    manifest = json.loads((tmp_path / "r" / MANIFEST).read_text())
    assert manifest["state_fields"] == fields
    assert manifest["config"]["states"]["fields"] == fields
    snapshot = pq.read_table(tmp_path / "r" / manifest["snapshot"])
    assert snapshot.schema.names[:6] == ["state_id", "state", *fields]
    assert snapshot.schema.field("hour").type == "int8"
    # each history row is counted in its own state: weights add up to the rows with a customer
    assert space.state_weight.sum() == 900
    simulate_run(tmp_path / "r", 2_000)
    again = Run.load(tmp_path / "r")
    assert again.space.fields == tuple(fields) and again.run_dir.visits == 2_000


def test_holdout_works_with_other_fields(tmp_path: Path) -> None:
    data = transactions(tmp_path / "t.csv")
    cfg = config(data, ["segment", "country"], holdout={"split": "customers:0.3"})
    summary = prepare(cfg, out=tmp_path / "r")
    assert summary.holdout is not None
    truth = pq.read_table(tmp_path / "r" / "holdout" / "truth-all.parquet").to_pandas()
    run = Run.load(tmp_path / "r")
    assert set(truth["state_id"]) <= set(run.space.state_ids.tolist())
    assert any("Channel%5FIslands" in s for s in truth["state_id"])


@pytest.mark.parametrize(
    ("fields", "columns", "expected"),
    [
        (["segment", "colour"], {}, "key 'states.fields' = ['segment', 'colour']: unknown "),
        (["segment", "channel"], {"channel": "Nope"}, "key 'states.fields' value 'channel': "),
        (["month", "weekday"], {}, "expected distinct field names including 'segment'"),
    ],
)
def test_bad_state_fields_are_one_line_and_write_nothing(
    tmp_path: Path, fields: list[str], columns: dict[str, str], expected: str
) -> None:
    data = transactions(tmp_path / "t.csv")
    (tmp_path / "run.toml").write_text(
        f'[data]\npath = "{data}"\n[data.columns]\n'
        + "".join(f'{k} = "{v}"\n' for k, v in columns.items())
        + f"[states]\nfields = {json.dumps(fields)}\n"
    )
    result = CliRunner().invoke(
        app, ["prepare", "--config", str(tmp_path / "run.toml"), "--out", str(tmp_path / "r")]
    )
    assert result.exit_code == 2
    line = result.output.strip()
    assert "\n" not in line and expected in line, line
    assert not (tmp_path / "r").exists()


def test_a_state_space_over_the_memory_limit_is_refused_before_allocation(
    tmp_path: Path,
) -> None:
    data = transactions(tmp_path / "t.csv")
    fields = ["segment", "country", "hour", "channel", "month", "weekday"]
    cfg = config(data, fields, simulation={"memory_limit_mb": 1})  # 3,600 x 39 x 32 B > 1 MB
    with pytest.raises(ConfigError, match=r"memory_limit_mb' = 1: prepare of .* needs an "):
        prepare(cfg, out=tmp_path / "r")
    assert not (tmp_path / "r").exists()
    # the same space fits in a larger limit; simulate checks the limit of the run's config
    prepare(cfg.replace(**{"simulation.memory_limit_mb": 64}), out=tmp_path / "r")
    manifest = json.loads((tmp_path / "r" / MANIFEST).read_text())
    manifest["config"]["simulation"]["memory_limit_mb"] = 5  # prepare: 4.5 MB; simulate: 5.9
    write_json(tmp_path / "r" / MANIFEST, manifest)
    with pytest.raises(ConfigError, match=r"simulate of 3,600 states x 39 products \(140,400 cel"):
        simulate_run(tmp_path / "r", 10)
    assert RunDir.open(tmp_path / "r").visits == 0


def test_snapshots_stream_in_bounded_groups_and_read_back_exactly(tmp_path: Path) -> None:
    data = transactions(tmp_path / "t.csv")
    prepare(config(data, ["segment", "country", "hour"]), out=tmp_path / "r")
    simulate_run(tmp_path / "r", 20_000)
    run = Run.load(tmp_path / "r")
    whole = run.tables.to_columns(run.space)
    groups = list(run.tables.iter_columns(run.space, max_cells=100))
    assert len(groups) > 3 and all(g["state_id"].size <= 100 for g in groups)
    for name, column in whole.items():
        assert np.array_equal(np.concatenate([g[name] for g in groups]), column), name
    assert Tables.from_groups(groups, run.space).equals(run.tables)
    # the latest snapshot, read row group by row group, is the tables
    stored = pq.read_table(tmp_path / "r" / run.run_dir.manifest["snapshot"])
    assert stored.num_rows == whole["state_id"].size
    assert Tables.from_columns(run.run_dir.read_snapshot(), run.space).equals(run.tables)


def test_a_run_directory_without_recorded_fields_is_read_with_the_default_ones(
    tmp_path: Path,
) -> None:
    data = transactions(tmp_path / "t.csv")
    prepare(config(data, ["segment", "month", "half", "weekday"]), out=tmp_path / "r")
    manifest = json.loads((tmp_path / "r" / MANIFEST).read_text())
    del manifest["state_fields"]  # as written before fields were configurable
    del manifest["config"]["states"]["fields"]
    del manifest["config"]["data"]["columns"]["country"]
    write_json(tmp_path / "r" / MANIFEST, manifest)
    simulate_run(tmp_path / "r", 1_000)
    run = Run.load(tmp_path / "r")
    assert run.space.fields == ("segment", "month", "half", "weekday")
    assert run.run_dir.visits == 1_000


def test_a_seed_document_over_16_mb_is_refused() -> None:
    n = 600_000  # x 30 bytes per cell > 16 MB
    frame = pd.DataFrame(
        {
            "state": ["Q1_x"] * n + ["Q2_x"],
            "product_code": [f"{i:020d}" for i in range(n)] + ["a"],
        }
    )
    ordered, slices = state_slices(frame)
    with pytest.raises(SyncError, match=r"state 'Q1_x' has 600,000 known cells: .*--layout tidy"):
        check_seed_documents(ordered, slices)
    small, small_slices = state_slices(frame.iloc[-1000:])
    check_seed_documents(small, small_slices)


def test_config_round_trips_fields_and_categorical_columns() -> None:
    cfg = config_from_dict(
        {"state": {"fields": ["segment", "channel"]}, "data": {"columns": {"channel": "Ch"}}}
    )
    assert cfg.states.fields == ("segment", "channel")
    assert cfg.data.columns.source_of("channel") == "Ch"
    assert config_from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match=r"'state\.fields' is also given as 'states\.fields'"):
        config_from_dict({"state": {"fields": ["segment"]}, "states": {"fields": ["segment"]}})
    with pytest.raises(ConfigError, match=r"'data\.columns\.value'"):
        config_from_dict({"data": {"columns": {"value": "V"}}})
