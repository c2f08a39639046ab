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


@pytest.fixture(scope="session", autouse=True)
def _own_prometheus_lite_cache(tmp_path_factory: pytest.TempPathFactory):
    """The CPU-backend probe (prometheus_lite.native) caches its decision in the user's
    cache dir; a test run uses its own (and probes once)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PROMETHEUS_LITE_CACHE_DIR", str(tmp_path_factory.mktemp("pl-cache")))
        yield
