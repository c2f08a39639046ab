"""Under CI=true a missing ../shared fails the tests that need it; elsewhere they skip.

Each conftest (tests/ and bench/) is copied into a folder with no shared/ beside it and
run by a real pytest in a subprocess, with and without CI=true.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
USES_SHARED = "def test_needs_shared(shared_dir):\n    assert shared_dir.is_dir()\n"


def run_pytest(folder: Path, ci: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
         "-p", "no:benchmark", "--rootdir", str(folder), str(folder)],
        cwd=folder, env=env, capture_output=True, text=True, timeout=120, check=False,
    )


@pytest.mark.parametrize("suite", ["tests", "bench"])
@pytest.mark.parametrize(
    "ci, rc, outcome",
    [(None, 0, "1 skipped"), ("", 0, "1 skipped"), ("true", 1, "1 error"), ("1", 1, "1 error")],
)
def test_missing_shared_folder(tmp_path: Path, suite: str, ci: str | None, rc: int,
                               outcome: str) -> None:
    folder = tmp_path / "repo" / suite  # shared_dir looks for tmp_path / "shared": absent
    folder.mkdir(parents=True)
    shutil.copy(REPO / suite / "conftest.py", folder / "conftest.py")
    (folder / "test_uses_shared.py").write_text(USES_SHARED)
    result = run_pytest(folder, ci)
    assert result.returncode == rc, result.stdout + result.stderr
    assert outcome in result.stdout, result.stdout
    assert f"not found at {tmp_path / 'shared'}" in result.stdout
    if rc:
        assert "CI=true" in result.stdout


def test_present_shared_folder_runs_under_ci(tmp_path: Path) -> None:
    (tmp_path / "shared").mkdir()
    folder = tmp_path / "repo" / "tests"
    folder.mkdir(parents=True)
    shutil.copy(REPO / "tests" / "conftest.py", folder / "conftest.py")
    (folder / "test_uses_shared.py").write_text(USES_SHARED)
    result = run_pytest(folder, "true")
    assert result.returncode == 0 and "1 passed" in result.stdout, result.stdout
