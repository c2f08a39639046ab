"""GGUF -> GGUF quantization wall time: `quantize --engine native` vs `--engine llama.cpp`.

A generated llama-shaped F16 GGUF (the converter's intermediate format) is quantized to
Q4_K_M by convert.native_quantize.quantize_gguf and by llama_model_quantize, with the same
thread count; the outputs must hold identical tensors (types and bytes).

    pytest bench/test_quantize_file.py --benchmark-enable -s              # ~256 MB F16 input
    PL_BENCH_FILE_MB=1024 PL_BENCH_LEVEL=Q5_K_M \
        pytest bench/test_quantize_file.py --benchmark-enable -s
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
from prometheus_lite.convert import kernels
from prometheus_lite.convert.native_quantize import quantize_gguf
from prometheus_lite.convert.quant_types import mixture
from quant_ref import llama_quantize, read_tensors, write_llama_gguf

FILE_MB = float(os.environ.get("PL_BENCH_FILE_MB", "256"))
LEVEL = os.environ.get("PL_BENCH_LEVEL", "Q4_K_M")
THREADS = int(os.environ.get("PL_BENCH_THREADS", "0")) or kernels.default_threads()
N_EMBD, N_FF = 1024, 2816


def _model(mb: float, path: Path, n_embd: int = N_EMBD, n_ff: int = N_FF) -> None:
    per_layer = (4 * n_embd * n_embd + 3 * n_embd * n_ff) * 2  # F16 bytes
    n_layer = max(2, round(mb * 1e6 / per_layer))
    rng = np.random.default_rng(0)
    t = {
        "token_embd.weight": rng.standard_normal((512, n_embd), np.float32) * 0.02,
        "output_norm.weight": np.ones(n_embd, np.float32),
        "output.weight": rng.standard_normal((512, n_embd), np.float32) * 0.02,
    }
    for i in range(n_layer):
        p = f"blk.{i}."
        t[p + "attn_norm.weight"] = np.ones(n_embd, np.float32)
        t[p + "ffn_norm.weight"] = np.ones(n_embd, np.float32)
        for n in ("attn_q", "attn_k", "attn_v", "attn_output"):
            t[p + n + ".weight"] = rng.standard_normal((n_embd, n_embd), np.float32) * 0.02
        t[p + "ffn_gate.weight"] = rng.standard_normal((n_ff, n_embd), np.float32) * 0.02
        t[p + "ffn_up.weight"] = rng.standard_normal((n_ff, n_embd), np.float32) * 0.02
        t[p + "ffn_down.weight"] = rng.standard_normal((n_embd, n_ff), np.float32) * 0.02
    write_llama_gguf(path, t, n_layer=n_layer, n_embd=n_embd, n_ff=n_ff, dtype=np.float16)


def test_quantize_file(benchmark, tmp_path: Path) -> None:
    smoke = benchmark.disabled
    src = tmp_path / "in.F16.gguf"
    if smoke:
        _model(1, src, n_embd=256, n_ff=512)
    else:
        _model(FILE_MB, src)
    ref, ours = tmp_path / "llama.gguf", tmp_path / "native.gguf"

    t0 = time.perf_counter()
    llama_quantize(src, ref, mixture(LEVEL).ftype, nthread=THREADS)
    t_llama = time.perf_counter() - t0
    t0 = time.perf_counter()
    quantize_gguf(src, ours, LEVEL, n_threads=THREADS)
    t_ours = time.perf_counter() - t0

    a, b = read_tensors(ref), read_tensors(ours)
    assert a.keys() == b.keys()
    assert all(a[n][0] == b[n][0] and np.array_equal(a[n][1], b[n][1]) for n in a), "outputs differ"
    mb = src.stat().st_size / 1e6
    print(
        f"{'[smoke] ' if smoke else ''}quantize {mb:.0f} MB F16 -> {LEVEL}, {THREADS} threads: "
        f"native {t_ours:.2f}s  llama.cpp {t_llama:.2f}s  speed-up {t_llama / t_ours:.2f}x"
    )
    benchmark.extra_info.update(
        {
            "input_mb": round(mb, 1),
            "native_s": round(t_ours, 3),
            "llama_cpp_s": round(t_llama, 3),
            "threads": THREADS,
            "level": LEVEL,
        }
    )
    benchmark.pedantic(
        quantize_gguf,
        args=(src, ours, LEVEL),
        kwargs={"n_threads": THREADS},
        rounds=1,
        iterations=1,
    )
