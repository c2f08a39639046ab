"""One-pass conversion (`convert --quant Q4_K_M`, native engine) vs the two-step path
(`--engine llama.cpp`: F16 intermediate GGUF, then llama_model_quantize).

Same generated Llama-shaped checkpoint (bench/test_conversion.py's generator: fp32 safetensors
shards, 2 GB by default), same level and thread count. Reported: wall time of each and the
peak disk use of the output folder while it runs (sampled every 50 ms: the final file, the
partial file being written and, for the two-step path, the intermediate). The two outputs
must hold identical tensors (types and bytes).

    pytest bench/test_one_pass.py --benchmark-enable -s
    PL_BENCH_CONVERT_GB=4 PL_BENCH_ONEPASS_QUANT=Q5_K_M \
        pytest bench/test_one_pass.py --benchmark-enable -s
"""

from __future__ import annotations

import importlib.util
import os
import threading
import time
from pathlib import Path

import numpy as np
from prometheus_lite.convert.convert import convert_checkpoint
from quant_ref import read_tensors  # tests/quant_ref.py (pytest pythonpath)


def _generate_checkpoint(*args: object) -> dict:
    """bench/test_conversion.py's checkpoint generator (loaded by path: works in any
    pytest import mode)."""
    spec = importlib.util.spec_from_file_location(
        "_pl_conversion_bench", Path(__file__).with_name("test_conversion.py")
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.generate_checkpoint(*args)


GB = float(os.environ.get("PL_BENCH_CONVERT_GB", "2"))
QUANT = os.environ.get("PL_BENCH_ONEPASS_QUANT", "Q4_K_M")


class _DiskSampler:
    """Peak total size of the files under a folder, sampled in a background thread."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.peak, self._stop = folder, 0, threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _size(self) -> int:
        total = 0
        for p in self.folder.rglob("*"):
            try:
                total += p.stat().st_blocks * 512 if p.is_file() else 0
            except FileNotFoundError:  # renamed or removed while we looked
                pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._size())
            time.sleep(0.05)

    def __enter__(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._t.start()

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self._size())


def _run(ckpt: Path, out: Path, engine: str) -> tuple[Path, float, int]:
    disk = _DiskSampler(out)
    with disk:
        t0 = time.perf_counter()
        [path] = convert_checkpoint(ckpt, out, quants=[QUANT], engine=engine)
        seconds = time.perf_counter() - t0
    return path, seconds, disk.peak


def test_one_pass_vs_two_step(benchmark, tmp_path: Path) -> None:
    smoke = benchmark.disabled
    facts = _generate_checkpoint(tmp_path / "ckpt", GB * 1e9, "fp32", "safetensors", smoke)
    ckpt = tmp_path / "ckpt"

    two, t_two, disk_two = _run(ckpt, tmp_path / "two-step", "llama.cpp")
    result: dict = {}

    def one_pass() -> None:
        result["out"] = _run(ckpt, tmp_path / "one-pass", "native")

    benchmark.pedantic(one_pass, rounds=1, iterations=1)
    one, t_one, disk_one = result["out"]

    a, b = read_tensors(two), read_tensors(one)
    assert a.keys() == b.keys()
    differ = [n for n in a if a[n][0] != b[n][0] or not np.array_equal(a[n][1], b[n][1])]
    assert not differ, f"{len(differ)}/{len(a)} tensors differ between the engines: {differ[:5]}"

    report = {
        "checkpoint_gb": round(facts["checkpoint_bytes"] / 1e9, 2),
        "level": QUANT,
        "one_pass_s": round(t_one, 1),
        "two_step_s": round(t_two, 1),
        "speed_up": round(t_two / t_one, 2),
        "one_pass_peak_disk_gb": round(disk_one / 1e9, 3),
        "two_step_peak_disk_gb": round(disk_two / 1e9, 3),
        "output_gb": round(one.stat().st_size / 1e9, 3),
    }
    benchmark.extra_info.update(report)
    print(("\n[smoke] " if smoke else "\n") + "one-pass vs two-step: " + str(report))
