"""Shared fixtures. Tests that need the real data set skip cleanly when ../shared/data is absent."""

from __future__ import annotations

from pathlib import Path

import pytest
from fuzz_support import CASES, CPU_SECONDS, PROFILE, SECONDS, register_profiles

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
EMBEDDED_PARQUET = REPO / "data" / "online_retail.parquet"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Directory with the real UCI Online Retail files (online_retail.parquet, .csv.gz)."""
    if not (SHARED_DATA / "online_retail.csv.gz").is_file():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="module")
def base_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small prepared run with 500 simulated visits (two snapshots and metrics), one per
    test module (the fuzz tests copy it before changing anything)."""
    from helpers import write_transactions  # imported here: most tests never need a run
    from typer.testing import CliRunner

    from rlreco.app.prepare import prepare
    from rlreco.cli import app
    from rlreco.config import RunConfig

    root = tmp_path_factory.mktemp("fuzz-run")
    write_transactions(root / "tx.csv")
    prepare(RunConfig(), out=root / "run", data=root / "tx.csv")
    result = CliRunner().invoke(app, ["simulate", str(root / "run"), "-n", "500", "--json"])
    assert result.exit_code == 0, result.output
    return root / "run"


@pytest.fixture(scope="session")
def embedded_parquet() -> Path:
    """The embedded default data set shipped in data/."""
    if not EMBEDDED_PARQUET.is_file():
        pytest.skip(f"embedded data not found at {EMBEDDED_PARQUET}")
    return EMBEDDED_PARQUET


register_profiles()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Cases and seconds per input surface of the fuzz tests that ran."""
    if not CASES:
        return
    terminalreporter.section(f"fuzz cases per surface (profile {PROFILE})")
    for surface in sorted(CASES):
        terminalreporter.write_line(
            f"{surface:<22} {CASES[surface]:>8,} cases {SECONDS[surface]:>8.1f} s "
            f"{CPU_SECONDS[surface]:>8.1f} s CPU"
        )
    terminalreporter.write_line(
        f"{'total':<22} {sum(CASES.values()):>8,} cases {sum(SECONDS.values()):>8.1f} s "
        f"{sum(CPU_SECONDS.values()):>8.1f} s CPU"
    )
