"""The ggml-cpu patch modules of ``kernels/llama_cpp/`` (not a package), loaded by path."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

PATCH_DIR = Path(__file__).resolve().parents[1] / "kernels" / "llama_cpp"


def load(name: str) -> ModuleType:
    """``kernels/llama_cpp/<name>.py`` as module ``name``."""
    spec = importlib.util.spec_from_file_location(name, PATCH_DIR / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod
