"""Shared fixtures: paths to ../shared/data (skipped with a reason when absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "clips").is_dir():
        pytest.skip(f"../shared/data not found at {SHARED_DATA} (only CI and developers have it)")
    return SHARED_DATA
