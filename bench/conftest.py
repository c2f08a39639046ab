"""Fixtures for the benchmark suites (run once as smoke tests by `make test`)."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DIR = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The shared/ folder beside the repository (evaluation data)."""
    if not SHARED_DIR.is_dir():
        pytest.skip(f"shared folder not found at {SHARED_DIR}")
    return SHARED_DIR


@pytest.fixture(scope="session", autouse=True)
def _own_prometheus_lite_cache(tmp_path_factory: pytest.TempPathFactory):
    """The CPU-backend probe (prometheus_lite.native) caches its decision in the user's
    cache dir; a test run uses its own (and probes once)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PROMETHEUS_LITE_CACHE_DIR", str(tmp_path_factory.mktemp("pl-cache")))
        yield
