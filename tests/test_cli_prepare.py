"""`rlreco prepare` end to end: summary figures on the real data; bad input is one line, exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rlreco.cli import app
from rlreco.io.run_dir import RunDir

runner = CliRunner()


def test_prepare_embedded_json(tmp_path: Path, embedded_parquet: Path) -> None:
    out = tmp_path / "run"
    result = runner.invoke(app, ["prepare", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["rows_read"] == 541_909
    assert summary["rows_without_customer"] == 135_080
    assert summary["customers"] == 4_372
    assert sum(summary["customers_per_segment"].values()) == 4_372
    assert summary["states_total"] == 576
    assert summary["states_with_history"] == 572
    assert 255_000 < summary["known_pairs"] < 275_000  # the original: about 264,700
    assert summary["products_per_state_min"] == 1
    assert 400 <= summary["products_per_state_median"] <= 460
    assert 1_150 <= summary["products_per_state_max"] <= 1_300
    run = RunDir.open(out)
    assert run.manifest["data"]["rows_read"] == 541_909
    assert len(run.manifest["data"]["sha256"]) == 64
    assert run.manifest["packages"]["numba"]


def test_prepare_csv_matches_parquet(tmp_path: Path, shared_data: Path) -> None:
    outs = []
    for name in ("online_retail.csv.gz", "online_retail.parquet"):
        out = tmp_path / name.split(".")[0] / name.split(".")[-1]
        args = ["prepare", "--data", str(shared_data / name), "--out", str(out), "--json"]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        outs.append(json.loads(result.stdout))
    for summary in outs:
        del summary["data"], summary["run_dir"], summary["seconds"]
    assert outs[0] == outs[1]


def test_prepare_human_summary(tmp_path: Path, embedded_parquet: Path) -> None:
    result = runner.invoke(app, ["prepare", "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    for needle in ("541,909", "135,080", "572 / 576", "products per state", "wall time"):
        assert needle in result.stdout


@pytest.mark.parametrize(
    ("setup", "needle"),
    [
        (lambda d: d / "missing.csv", "file not found"),
        (
            lambda d: (d / "x.csv").write_text("a,b\n1,2\n") and d / "x.csv",
            "'InvoiceNo' (order_id)",
        ),
        (lambda d: (d / "e.csv").write_text("") or d / "e.csv", "no transactions"),
        (
            lambda d: (d / "bad.parquet").write_bytes(b"PAR1garbage") and d / "bad.parquet",
            "Parquet",
        ),
    ],
)
def test_bad_data_is_one_line_exit_2_nothing_written(tmp_path: Path, setup, needle: str) -> None:
    data = setup(tmp_path)
    out = tmp_path / "out"
    result = runner.invoke(app, ["prepare", "--data", str(data), "--out", str(out)])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and str(data.name) in lines[0]
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_bad_config_and_existing_out(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[policy]\nepsilon = 2\n")
    result = runner.invoke(app, ["prepare", "--config", str(cfg), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "key 'policy.epsilon' = 2: expected a number in [0, 1]" in result.stderr
    (tmp_path / "o").mkdir()
    result = runner.invoke(app, ["prepare", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "already exists" in result.stderr


def test_no_traceback_from_the_console_script(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "rlreco.cli",
            "prepare",
            "--data",
            str(tmp_path / "nope.csv"),
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1 and "nope.csv: file not found" in proc.stderr
