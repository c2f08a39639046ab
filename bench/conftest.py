"""Fixtures for the benchmark suites (run once as smoke tests by `make test`)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DIR = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The shared/ folder beside the repository (evaluation data).

    Missing: the benchmarks that need it are skipped, except under ``CI=true`` (set by
    ``.ci/run``), where they fail.
    """
    if not SHARED_DIR.is_dir():
        message = f"shared folder not found at {SHARED_DIR}"
        if os.environ.get("CI", "").strip().lower() in ("true", "1", "yes"):
            pytest.fail(
                f"{message}; CI=true, so the benchmarks that need it fail instead of "
                "skipping: put the project's shared/ folder beside the repository",
                pytrace=False,
            )
        pytest.skip(message)
    return SHARED_DIR
