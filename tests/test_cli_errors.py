"""The CLI's crash-free edge: bad input is exit 2 and one line; anything unexpected is exit 3
and one line suggesting --debug, which shows the traceback instead; no partial output."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from fuzz_support import tree_digest
from helpers import write_transactions
from typer.testing import CliRunner

import rlreco.io.run_dir
import rlreco.io.transactions
from rlreco.cli import EXIT_UNEXPECTED, app

runner = CliRunner()


def boom(*args: Any, **kwargs: Any) -> Any:
    raise ZeroDivisionError("simulated bug\nsecond line")


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "tx.csv"
    write_transactions(path)
    return path


def test_unexpected_error_is_one_line_exit_3(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rlreco.io.transactions, "_derived", boom)
    out = tmp_path / "run"
    result = runner.invoke(app, ["prepare", "--data", str(data), "--out", str(out)])
    assert result.exit_code == EXIT_UNEXPECTED == 3
    lines = result.stderr.strip().splitlines()
    assert lines == [
        "error: rlreco prepare failed unexpectedly (ZeroDivisionError: simulated bug); "
        "rerun with --debug for the traceback"
    ]
    assert not out.exists() and list(tmp_path.iterdir()) == [data]


def test_debug_shows_the_traceback(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rlreco.io.transactions, "_derived", boom)
    out = tmp_path / "run"
    result = runner.invoke(app, ["--debug", "prepare", "--data", str(data), "--out", str(out)])
    assert result.exit_code == 3
    assert "Traceback (most recent call last)" in result.stderr
    assert "in boom" in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "error: rlreco prepare failed unexpectedly (ZeroDivisionError: simulated bug)"
    )
    assert not out.exists()


def test_unexpected_error_while_writing_leaves_no_partial_run(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure after simulate or prepare started writing leaves the run as it was (the new
    snapshot and pending metrics are removed; prepare's staging folder is removed)."""
    out = tmp_path / "run"
    assert runner.invoke(app, ["prepare", "--data", str(data), "--out", str(out)]).exit_code == 0
    assert runner.invoke(app, ["simulate", str(out), "-n", "100"]).exit_code == 0  # has metrics
    before = tree_digest(out)
    monkeypatch.setattr(rlreco.io.run_dir, "write_json", boom)  # the commit point fails
    result = runner.invoke(app, ["simulate", str(out), "-n", "100"])
    assert result.exit_code == 3 and "rlreco simulate failed unexpectedly" in result.stderr
    assert tree_digest(out) == before
    result = runner.invoke(app, ["prepare", "--data", str(data), "--out", str(out), "--force"])
    assert result.exit_code == 3
    assert tree_digest(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "tx.csv"]


def test_user_errors_stay_exit_2(data: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["--debug", "simulate", str(tmp_path / "missing"), "-n", "1"])
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_console_script_exit_3(data: Path, tmp_path: Path) -> None:
    """Through a real process: ``python -m rlreco.cli`` with a config that breaks a step."""
    import subprocess

    config = tmp_path / "c.toml"
    config.write_text('[data]\ndate_format = "%m/%d/%Y %H:%M"\n')
    script = (
        "import rlreco.io.transactions as t, rlreco.cli as c\n"
        "def boom(*a, **k): raise RuntimeError('kaput')\n"
        "t._derived = boom\n"
        "c.main()\n"
    )
    args = ["prepare", "--config", str(config), "--data", str(data), "--out", str(tmp_path / "r")]
    proc = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: rlreco prepare failed unexpectedly (RuntimeError: kaput); rerun with --debug "
        "for the traceback"
    ]


def test_error_lines_are_one_printable_line_cut_short() -> None:
    from rlreco.errors import MAX_ERROR_CHARS, one_line

    assert one_line(" a\n  b\tc\x0bd\r\n") == "a b c\\x0bd"  # breaks joined, \x0b shown
    long = one_line("x" * 5_000)
    assert len(long) == MAX_ERROR_CHARS and long.endswith("...")
    assert one_line("y" * 300, 240) == "y" * 237 + "..."


def test_json_outputs_carry_visits_beside_episodes() -> None:
    from rlreco.app.report import with_visits

    doc = {"episodes": 3, "episodes_total": 5, "cells": [{"episodes": 1}], "note": "episodes"}
    assert with_visits(doc) == {
        "episodes": 3, "visits": 3, "episodes_total": 5, "visits_total": 5,
        "cells": [{"episodes": 1, "visits": 1}], "note": "episodes",
    }  # fmt: skip
    # a document that already says visits keeps its own value
    assert with_visits({"episodes": 3, "visits": 9}) == {"episodes": 3, "visits": 9}
