"""Benchmarks read the real data from ../shared/data when present (skipped otherwise), and
share one run directory prepared from the embedded data."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlreco.config import DEFAULT_DATA, RunConfig

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Directory with the real UCI Online Retail files."""
    if not (SHARED_DATA / "online_retail.csv.gz").is_file():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def embedded_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory prepared from the embedded data (its cache of tables may be dropped
    and stored again by a benchmark, never its files)."""
    if not Path(DEFAULT_DATA).is_file():
        pytest.skip(f"embedded data not found at {DEFAULT_DATA}")
    from rlreco.app.prepare import prepare

    out = tmp_path_factory.mktemp("embedded") / "run"
    prepare(RunConfig(), out=out)
    return out
