"""Every module of the installed package imports on its own, in a fresh interpreter.

An import cycle shows only for some entry points (``import prometheus_lite.server.cli``
failed while ``import prometheus_lite.cli`` worked), so each module is imported first
thing in its own child process. The modules are found on disk, without importing
anything here: the package as installed, including ``prometheus_lite.convert`` and
``prometheus_lite.bench`` (pyproject's ``wheel.packages`` installs the tree's convert/
and bench/ there).
"""

from __future__ import annotations

import importlib.util
import os
import pkgutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

PACKAGE = "prometheus_lite"


def _installed_modules() -> list[str]:
    spec = importlib.util.find_spec(PACKAGE)  # finds, does not run, the package
    assert spec is not None and spec.submodule_search_locations, f"{PACKAGE} is not installed"
    names = [PACKAGE]
    todo = [(PACKAGE, list(spec.submodule_search_locations))]
    while todo:
        prefix, paths = todo.pop()
        for mod in pkgutil.iter_modules(paths):
            name = f"{prefix}.{mod.name}"
            if not mod.ispkg and not any(os.path.isfile(os.path.join(p, mod.name + ".py"))
                                         for p in paths):
                continue  # a native library loaded by ctypes (libpl_quants.so), not a module
            names.append(name)
            if mod.ispkg:
                todo.append((name, [os.path.join(p, mod.name) for p in paths]))
    return sorted(names)


MODULES = _installed_modules()


def _import_alone(name: str) -> tuple[str, int, str]:
    # -I: isolated (no current directory or user site on sys.path), so the installed
    # package is what gets imported, never the source tree.
    proc = subprocess.run(
        [sys.executable, "-I", "-c", f"import {name}"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    return name, proc.returncode, proc.stderr


def test_the_walk_finds_the_whole_package() -> None:
    # The walk itself could miss what matters: check it reaches the modules named in
    # the import-cycle report and the subpackages installed from convert/ and bench/.
    for name in (
        "prometheus_lite.cli",
        "prometheus_lite.options",
        "prometheus_lite.server.cli",
        "prometheus_lite.server.app",
        "prometheus_lite.convert.cli",
        "prometheus_lite.bench.cli",
    ):
        assert name in MODULES
    tree = Path(__file__).resolve().parents[1]
    for sub in ("convert", "bench"):
        wanted = {p.stem for p in (tree / sub).glob("*.py")}
        wanted -= {"conftest"} | {s for s in wanted if s.startswith("test_")}
        installed = {m.rsplit(".", 1)[1] for m in MODULES if m.startswith(f"{PACKAGE}.{sub}.")}
        assert wanted - {"__init__"} <= installed, f"{sub}/ is not installed in full"


def test_every_module_imports_on_its_own() -> None:
    # Two at a time: each child pays the interpreter's start and llama.cpp's load.
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(_import_alone, MODULES))
    failed = [f"{name}:\n{err.strip().splitlines()[-1] if err.strip() else rc}"
              for name, rc, err in results if rc != 0]
    assert not failed, "modules that fail to import on their own:\n" + "\n".join(failed)


@pytest.mark.parametrize(
    "argv",
    [
        [str(Path(sys.executable).with_name("prometheus-lite")), "--help"],
        [sys.executable, "-I", "-m", PACKAGE, "--help"],
    ],
    ids=["console-script", "python-m"],
)
def test_the_command_line_starts(argv: list[str]) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    for command in ("grade", "compare", "rubrics", "info", "eval", "convert", "quantize",
                    "bench", "serve"):
        assert f"  {command} " in proc.stdout, proc.stdout
