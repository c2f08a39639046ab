"""Build llama-cpp-python (the pinned version) with prometheus-lite's ggml-cpu patch.

    python kernels/llama_cpp/build_wheel.py --wheel-dir DIR [--sdist FILE]

The patches (``flash_attn_patch.py``, ``repack_patch.py``) make ggml-cpu's flash attention
jump over runs of masked KV cells instead of testing them one by one (in a unified KV pool
every query row of a step visits every cell below the pool's highest used one, the other
sequences' cells included), replace its one-row kernel's cell-by-cell loop by blocks of
cells with fp32 accumulation, GQA heads together, and let the repacked Q4_0/Q4_K GEMMs sweep
their weights once for the 4-12 rows left after whole 16s (a decode step of 8 sequences
swept them twice), Q4_0 with a direct VNNI dot product. The jumps and the GEMM edits change
no bits; the one-row kernel's sums are more exact than stock's and differ from them in the
last bits. ``python -P -m prometheus_lite.bench.tile`` measures the attention time.

The wheel's version carries a local label (``0.3.36+pl.fa3.rp1``): it still satisfies the pin
``llama-cpp-python==0.3.36`` (PEP 440 ignores local labels when the pin has none), pip's
wheel cache cannot mistake it for the stock build, and ``prometheus-lite info`` shows which
runtime is installed. Nothing is built when that version is already installed.

Steps: download the sdist from the package index (or take ``--sdist``), unpack it, apply
the edits (each replaced string must match exactly once, else it stops and says so), set the
version, ``pip wheel`` it (about 8 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import flash_attn_patch  # noqa: E402
import repack_patch  # noqa: E402

PINNED = "0.3.36"
LABEL = "pl.fa3.rp1"
VERSION = f"{PINNED}+{LABEL}"


def installed() -> str | None:
    try:
        return importlib.metadata.version("llama-cpp-python")
    except importlib.metadata.PackageNotFoundError:
        return None


def set_version(src: Path) -> None:
    init = src / "llama_cpp" / "__init__.py"
    text = init.read_text()
    old = f'__version__ = "{PINNED}"'
    if text.count(old) != 1:
        raise SystemExit(f"{init}: expected one line {old!r}; is this llama-cpp-python {PINNED}?")
    init.write_text(text.replace(old, f'__version__ = "{VERSION}"'))


def build(wheel_dir: Path, sdist: Path | None) -> Path:
    wheel_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pl-llama-cpp-") as tmp:
        work = Path(tmp)
        if sdist is None:
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary",
                 ":all:", f"llama-cpp-python=={PINNED}", "-d", str(work)],
                check=True,
            )
            sdist = next(work.glob("llama_cpp_python-*.tar.gz"))
        with tarfile.open(sdist) as tar:
            if hasattr(tarfile, "data_filter"):  # Python >= 3.10.12 / 3.11.4
                tar.extractall(work, filter="data")
            else:
                tar.extractall(work)  # noqa: S202 - the sdist from the package index
        src = work / f"llama_cpp_python-{PINNED}"
        if not src.is_dir():
            raise SystemExit(f"{sdist} does not hold llama_cpp_python-{PINNED}/")
        flash_attn_patch.apply(src / "vendor" / "llama.cpp")
        repack_patch.apply(src / "vendor" / "llama.cpp")
        set_version(src)
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheel_dir),
             str(src)],
            check=True,
        )
    wheels = sorted(wheel_dir.glob(f"llama_cpp_python-{VERSION}-*.whl"))
    if not wheels:
        raise SystemExit(f"pip wheel wrote no llama_cpp_python-{VERSION} wheel to {wheel_dir}")
    return wheels[-1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--wheel-dir", type=Path, required=True)
    ap.add_argument("--sdist", type=Path, help="a downloaded llama_cpp_python sdist")
    ap.add_argument("--install", action="store_true", help="pip install the wheel afterwards")
    a = ap.parse_args(argv)
    if installed() == VERSION:
        print(f"llama-cpp-python {VERSION} is installed; nothing to build")
        return 0
    wheels = sorted(a.wheel_dir.glob(f"llama_cpp_python-{VERSION}-*.whl"))
    wheel = wheels[-1] if wheels else build(a.wheel_dir, a.sdist)
    print(f"{'using' if wheels else 'built'} {wheel}")
    if a.install:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                        "--force-reinstall", str(wheel)], check=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
