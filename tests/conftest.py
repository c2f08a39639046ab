"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from prometheus_lite.llama import ENV_THREADS, usable_cores

SHARED_DIR = Path(__file__).resolve().parents[1].parent / "shared"


def on_ci() -> bool:
    """``CI=true`` (set by ``.ci/run`` and by CI services): nothing may be skipped for want
    of the shared/ folder."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist, each worker's llama.cpp takes its share of the cores.

    ggml's threads spin at every barrier, so workers that each take every core slow each
    other far beyond sharing (measured on 2 cores, two test files side by side: 273 s and
    222 s at 2 threads each, 142 s and 157 s at 1). Tests that pass ``n_threads`` keep it;
    an explicit ``PROMETHEUS_LITE_THREADS`` wins. Child processes inherit the setting.
    """
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers and not os.environ.get(ENV_THREADS):
        os.environ[ENV_THREADS] = str(max(1, usable_cores() // int(workers)))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The project's shared/ folder (reference texts and data), beside the repo.

    Missing: the tests that need it are skipped, except under ``CI=true``, where they fail.
    """
    if not SHARED_DIR.is_dir():
        message = f"shared reference folder not found at {SHARED_DIR}"
        if on_ci():
            pytest.fail(
                f"{message}; CI=true, so the tests that need it fail instead of skipping: "
                "put the project's shared/ folder beside the repository",
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
