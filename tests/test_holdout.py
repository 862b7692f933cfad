"""Held-out truth: the learner starts from the training rows only, the truth from the rest."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from rlreco.app.prepare import prepare
from rlreco.cli import app
from rlreco.config import RunConfig
from rlreco.engine.holdout import excluded_products, held_out_rows, parse_split
from rlreco.io.run_dir import RunDir
from rlreco.io.truth import read_truth_table

SPLIT = "2011-07-01"


def transactions(seed: int = 0, held_quantity: int = 0) -> pd.DataFrame:
    """Six months of training rows (Jan-Jun 2011, weekdays), then held-out rows in July.

    The held-out part has a customer (C99), a product (P999) and states (every July state)
    never seen in training. ``held_quantity`` changes only held-out rows.
    """
    rng = np.random.default_rng(seed)
    rows = []
    days = pd.bdate_range("2011-01-03", "2011-06-30")
    for i in range(600):
        customer = f"C{rng.integers(1, 21):02d}"
        rows.append(
            {
                "InvoiceNo": f"5{i:05d}",
                "StockCode": f"P{rng.integers(1, 16):03d}",
                "Description": "thing",
                "Quantity": int(rng.integers(1, 12)),
                "InvoiceDate": days[rng.integers(0, len(days))] + pd.Timedelta(hours=10),
                "UnitPrice": float(rng.integers(1, 9)),
                "CustomerID": customer,
                "Country": "United Kingdom",
            }
        )
    rows.append({**rows[0], "InvoiceNo": "POSTAGE", "StockCode": "POST", "Quantity": 1})
    july = pd.bdate_range("2011-07-01", "2011-07-29")
    for i in range(120):
        customer = "C99" if i % 4 == 0 else f"C{(i % 20) + 1:02d}"
        product = "P999" if i % 3 == 0 else f"P{(i % 15) + 1:03d}"
        rows.append(
            {
                "InvoiceNo": f"6{i:05d}",
                "StockCode": product,
                "Description": "new thing" if product == "P999" else "thing",
                "Quantity": 1 + (i % 5) + held_quantity,
                "InvoiceDate": july[i % len(july)] + pd.Timedelta(hours=11),
                "UnitPrice": 2.0 + held_quantity,
                "CustomerID": customer,
                "Country": "United Kingdom",
            }
        )
    frame = pd.DataFrame(rows)
    frame["CustomerID"] = frame["CustomerID"].str[1:].astype(float)
    return frame


def write(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_parquet(path)
    return path


def prepared(tmp_path: Path, name: str, frame: pd.DataFrame, split: str) -> RunDir:
    config = RunConfig().replace(**{"holdout.split": split, "policy.slate_size": 3})
    data = write(frame, tmp_path / f"{name}.parquet")
    prepare(config, out=tmp_path / name, data=data)
    return RunDir.open(tmp_path / name)


def test_held_out_customer_product_and_states_start_unknown(tmp_path: Path) -> None:
    run = prepared(tmp_path, "run", transactions(), f"time:{SPLIT}")
    space = run.read_space()
    snapshot = run.read_snapshot("initial")
    codes = space["products"]["product_code"]
    assert "P999" in codes.tolist()  # in the state space and catalogues ...
    assert "P999" not in snapshot["product_code"].tolist()  # ... but no known cell
    assert "POST" not in codes.tolist()  # excluded by default: not merchandise
    states = space["states"]
    july = states["month"] == "July"
    assert july.any()
    assert set(snapshot["state_id"].tolist()).isdisjoint(np.flatnonzero(july).tolist())
    assert np.all(states["weight"][july] == 0)
    info = run.manifest["holdout"]
    frame = transactions()
    held_customers = frame.loc[frame["InvoiceDate"] >= SPLIT, "CustomerID"].nunique()
    assert info["held_out"]["customers"] == held_customers == 16  # C99 among them
    assert info["training"]["customers"] == 20
    held_products = frame.loc[frame["InvoiceDate"] >= SPLIT, "StockCode"].nunique()
    assert info["training"]["products"] == 15 and info["held_out"]["products"] == held_products
    assert [t["name"] for t in info["truths"]] == ["all", "2011-07"]
    # the truth comes from the held-out rows: P999 was bought in July, so it is likely there
    truth = read_truth_table(run.truth_path("all"))
    july_ids = set(states["state"][july].tolist())
    new = truth[(truth["product_id"] == "P999") & truth["state_id"].isin(july_ids)]
    old = truth[(truth["product_id"] == "P001") & truth["state_id"].isin(july_ids)]
    assert new["p_buy"].mean() > old["p_buy"].mean() > 0
    weights = run.read_state_weights("all")
    assert weights.sum() == info["held_out"]["rows"] and np.all(weights[~july] == 0)


def test_changing_held_out_rows_changes_no_initial_table(tmp_path: Path) -> None:
    a = prepared(tmp_path, "a", transactions(held_quantity=0), f"time:{SPLIT}")
    b = prepared(tmp_path, "b", transactions(held_quantity=7), f"time:{SPLIT}")
    for kind, columns in a.read_space().items():
        other = b.read_space()[kind]
        for name, values in columns.items():
            np.testing.assert_array_equal(values, other[name], err_msg=f"{kind}.{name}")
    sa, sb = a.read_snapshot("initial"), b.read_snapshot("initial")
    for name, values in sa.items():
        np.testing.assert_array_equal(values, sb[name], err_msg=name)
    assert a.manifest["holdout"]["training"] == b.manifest["holdout"]["training"]
    # ... while the truth does change
    ta = read_truth_table(a.truth_path("all"))
    tb = read_truth_table(b.truth_path("all"))
    assert not np.array_equal(ta["p_buy"].to_numpy(), tb["p_buy"].to_numpy())


def test_customer_split_is_deterministic_and_seeded(tmp_path: Path) -> None:
    frame = transactions()
    a = prepared(tmp_path, "a", frame, "customers:0.3")
    b = prepared(tmp_path, "b", frame, "customers:0.3")
    assert a.manifest["holdout"]["held_out"] == b.manifest["holdout"]["held_out"]
    held = a.manifest["holdout"]["held_out"]["customers"]
    assert 0 < held < 21
    # a held-out customer has no row in training: the initial tables count only the others
    config = RunConfig().replace(**{"holdout.split": "customers:0.3", "holdout.seed": 5})
    prepare(config, out=tmp_path / "c", data=write(frame, tmp_path / "c.parquet"))
    other = RunDir.open(tmp_path / "c").manifest["holdout"]["held_out"]
    assert other != a.manifest["holdout"]["held_out"]


def test_split_helpers() -> None:
    codes = np.array(["POST", "85123A", "gift_0001_10", "M", "m", "DCGS0003"])
    assert excluded_products(codes, RunConfig().data.exclude_products).tolist() == [
        True,
        False,
        True,
        True,
        True,
        False,
    ]
    split = parse_split("time:2011-07-01", 0)
    assert split.mode == "time" and split.day == (pd.Timestamp("2011-07-01") - pd.Timestamp(0)).days
    assert parse_split("customers:0.25", 3).fraction == 0.25


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("customers:1.5", "holdout.split"),
        ("customers:0", "holdout.split"),
        ("time:2011-02-30", "holdout.split"),
        ("time:2012-01-01", "outside the data"),
        ("time:2011-01-03", "outside the data"),
        ("customers:0.000001", "held-out part has no rows"),
    ],
)
def test_bad_holdout_is_one_line_and_writes_nothing(
    tmp_path: Path, option: str, message: str
) -> None:
    data = write(transactions(), tmp_path / "data.parquet")
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["prepare", "--data", str(data), "--out", str(out), "--holdout", option]
    )
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["data.parquet"]


def test_prepare_json_reports_the_split(tmp_path: Path) -> None:
    data = write(transactions(), tmp_path / "data.parquet")
    args = ["prepare", "--data", str(data), "--out", str(tmp_path / "r"), "--json"]
    result = CliRunner().invoke(app, [*args, "--holdout", f"time:{SPLIT}"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["holdout"]["split"] == f"time:{SPLIT}"
    assert summary["products_excluded"] == 1
    config = RunDir.open(tmp_path / "r").manifest["config"]
    assert config["response"]["model"] == "holdout"
    assert config["simulation"]["state_sampling"] == "holdout"


def test_held_out_rows_of_a_time_split_are_on_or_after_the_date(tmp_path: Path) -> None:
    run = prepared(tmp_path, "run", transactions(), f"time:{SPLIT}")
    assert run.manifest["holdout"]["held_out"]["rows"] == 120
    split = parse_split(f"time:{SPLIT}", 0)
    from rlreco.engine.history import history_from_frame
    from rlreco.io.transactions import load_transactions

    frame, _ = load_transactions(tmp_path / "run.parquet", RunConfig().data, split_day=15)
    history = history_from_frame(frame)
    held = held_out_rows(history, split)
    assert held.sum() == 120 and np.all(history.day[held] >= split.day)


def test_simulate_and_sweep_judge_against_the_held_out_truth(tmp_path: Path) -> None:
    run = prepared(tmp_path, "run", transactions(), f"time:{SPLIT}")
    runner = CliRunner()
    result = runner.invoke(app, ["simulate", str(run.path), "-n", "3000", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["mean_regret"] is not None
    # the held-out states are July's: only they may be visited under holdout sampling
    from rlreco.app.truth import sampling_space
    from rlreco.engine.state_space import StateSpace

    space = StateSpace.from_columns(run.read_space())
    sampled, mode = sampling_space(run, space, "holdout", str(run.truth_path("2011-07")))
    july = run.read_space()["states"]["month"] == "July"
    assert mode == "empirical" and sampled.state_weight[~july].sum() == 0
    assert sampled.state_weight[july].sum() == 120
    argv = ["sweep", str(run.path), "--out", str(tmp_path / "sw"), "--epsilons", "0,0.5",
            "--replicates", "2", "--episodes", "2000", "--blocks", "2", "--workers", "1",
            "--response", "holdout,holdout:2011-07", "--json"]  # fmt: skip
    result = runner.invoke(app, argv)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert {Path(v["response"]).name for v in out["verdicts"]} == {
        "truth-all.parquet",
        "truth-2011-07.parquet",
    }
    for verdict in out["verdicts"]:
        assert verdict["metric"] == "regret_per_visit"
        (alternative,) = verdict["alternatives"]
        assert alternative["cost_per_1000"] > 0


def test_holdout_sampling_needs_a_holdout(tmp_path: Path) -> None:
    data = write(transactions(), tmp_path / "data.parquet")
    prepare(RunConfig(), out=tmp_path / "plain", data=data)
    result = CliRunner().invoke(
        app, ["simulate", str(tmp_path / "plain"), "-n", "10", "--state-sampling", "holdout"]
    )
    assert result.exit_code == 2 and "prepared without --holdout" in result.output
    result = CliRunner().invoke(
        app, ["simulate", str(tmp_path / "plain"), "-n", "10", "--response", "holdout"]
    )
    assert result.exit_code == 2 and "prepared without a holdout" in result.output
