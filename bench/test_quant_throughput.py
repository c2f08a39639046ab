"""Quantization throughput: MB/s of float32 input, native kernels vs llama.cpp vs gguf numpy.

The same matrix goes through
- ours:      prometheus_lite.convert.kernels.quantize (C, AVX2 where the CPU has it, pthreads);
- llama.cpp: ggml_quantize_chunk from llama-cpp-python's libggml-base, the function
             llama_model_quantize calls per chunk, with the rows split over the same number of
             threads (Python threads; ctypes releases the GIL);
- gguf:      gguf-py's numpy quantizers (legacy types only: gguf has no K-quant quantizer).
Engines are interleaved round by round and the figure is the median. The outputs are
compared byte for byte on the way. Targets (issue): ours >= llama.cpp at the same thread
count, and >= 10x gguf numpy.

    pytest bench/test_quant_throughput.py --benchmark-enable -s            # 64 MB, all CPUs
    PL_BENCH_MB=256 PL_BENCH_THREADS=1 pytest bench/test_quant_throughput.py --benchmark-enable -s
"""

from __future__ import annotations

import os
import statistics
import time

import gguf
import numpy as np
import pytest
from prometheus_lite.convert import kernels
from prometheus_lite.convert.quant_types import NATIVE_TYPES
from quant_ref import ggml_quantize

T = gguf.GGMLQuantizationType
MB = float(os.environ.get("PL_BENCH_MB", "64"))
THREADS = int(os.environ.get("PL_BENCH_THREADS", "0")) or kernels.default_threads()
ROUNDS = int(os.environ.get("PL_BENCH_ROUNDS", "3"))
ROW = 4096
NUMPY_TYPES = {T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0}


def _matrix(mb: float) -> np.ndarray:
    rows = max(1, int(mb * 1e6 / 4 / ROW))
    return (np.random.default_rng(0).standard_normal((rows, ROW)) * 0.02).astype(np.float32)


def _median_mb_s(fns: dict[str, object], a: np.ndarray, rounds: int) -> dict[str, float]:
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()  # type: ignore[operator]
            times[k].append(time.perf_counter() - t0)
    return {k: a.nbytes / 1e6 / statistics.median(v) for k, v in times.items()}


@pytest.mark.parametrize("qtype", NATIVE_TYPES, ids=lambda t: t.name)
def test_quant_throughput(benchmark, qtype: T) -> None:
    smoke = benchmark.disabled
    a = _matrix(0.25 if smoke else MB)
    rounds = 1 if smoke else ROUNDS

    ours = kernels.quantize(a, qtype, n_threads=THREADS)
    assert np.array_equal(ours, ggml_quantize(a, qtype, THREADS)), (
        "native output differs from llama.cpp"
    )
    fns = {
        "ours_1t": lambda: kernels.quantize(a, qtype, n_threads=1),
        "llama_1t": lambda: ggml_quantize(a, qtype, 1),
    }
    if THREADS > 1:
        fns["ours_nt"] = lambda: kernels.quantize(a, qtype, n_threads=THREADS)
        fns["llama_nt"] = lambda: ggml_quantize(a, qtype, THREADS)
    # numpy is single-threaded; give it a slice so slow types don't dominate the run
    a_np = a[: max(1, min(len(a), int(16e6 / 4 / ROW)))] if not smoke else a
    res = _median_mb_s(fns, a, rounds)
    if qtype in NUMPY_TYPES:
        assert np.array_equal(gguf.quants.quantize(a_np, qtype), kernels.quantize(a_np, qtype))
        res.update(_median_mb_s({"numpy": lambda: gguf.quants.quantize(a_np, qtype)}, a_np, rounds))

    best_ours = res.get("ours_nt", res["ours_1t"])
    line = (
        f"{qtype.name:5s} ours {res['ours_1t']:8.0f} MB/s (1t)  "
        f"llama.cpp {res['llama_1t']:8.0f} MB/s (1t)  "
        f"ratio {res['ours_1t'] / res['llama_1t']:5.2f}"
    )
    if THREADS > 1:
        line += (
            f" | {THREADS}t: ours {res['ours_nt']:8.0f}  llama.cpp {res['llama_nt']:8.0f}  "
            f"ratio {res['ours_nt'] / res['llama_nt']:5.2f}"
        )
    if "numpy" in res:
        line += (
            f" | gguf numpy {res['numpy']:7.0f} MB/s  ours/numpy {best_ours / res['numpy']:6.1f}x"
        )
    print(("[smoke] " if smoke else "") + line)
    benchmark.extra_info.update(
        {k: round(v, 1) for k, v in res.items()} | {"threads": THREADS, "mb": a.nbytes / 1e6}
    )
    benchmark.pedantic(
        kernels.quantize,
        args=(a, qtype),
        kwargs={"n_threads": THREADS},
        rounds=rounds,
        iterations=1,
    )
