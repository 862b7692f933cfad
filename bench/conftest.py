"""Benchmarks read the real data from ../shared/data when present (skipped otherwise)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Directory with the real UCI Online Retail files."""
    if not (SHARED_DATA / "online_retail.csv.gz").is_file():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA
