"""Shared fixtures: paths to ../shared/data (skipped with a reason when absent); a guard on the
test process's scheduling policy."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "clips").is_dir():
        pytest.skip(f"../shared/data not found at {SHARED_DATA} (only CI and developers have it)")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _scheduling_policy_unchanged() -> Iterator[None]:
    """Fail the test that changes the test process's scheduling policy. SVT-AV1 run as root once left
    it SCHED_FIFO 99; every process started later (the page test's Chromium) inherited that, and two
    spinning real-time renderers hung the suite on a 2-core machine."""
    if not hasattr(os, "sched_getscheduler"):
        yield
        return
    before = os.sched_getscheduler(0), os.sched_getparam(0)
    yield
    after = os.sched_getscheduler(0), os.sched_getparam(0)
    if after != before:
        os.sched_setscheduler(0, *before)  # the tests after this one run as before
        pytest.fail(f"this test changed the process's scheduling policy {before} -> {after}", pytrace=False)
