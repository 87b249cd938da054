"""Fixtures of the fault suite. Nothing here skips a test: a cluster test that cannot
start its nodes fails and says why."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """Where a run keeps its history, schedule, report and node logs (pytest keeps the
    last few tmp_path trees, so a failure's files are still there afterwards)."""
    directory = tmp_path / "run"
    directory.mkdir()
    return directory
