"""The cost of ``use_extra_bufts = False`` (the AMX fallback of prometheus_lite.native):
prompt and generation tok/s with llama.cpp's extra CPU buffer types on and off, side by
side in one run, on the embedded SmolLM2 (Q4_1) and variants of it (Q4_0, Q8_0, Q4_K_M,
F16; made once by bench/variants.py). See bench/cpu_backend.py for the method.

    pytest bench/test_cpu_backend.py --benchmark-enable -s
    PL_BENCH_THREADS=1 PL_BENCH_ROUNDS=7 PL_BENCH_LEVELS=Q4_1,Q4_0 \\
        pytest bench/test_cpu_backend.py --benchmark-enable -s

The normal test run smoke-tests it once on the embedded model with a few tokens.
"""

from __future__ import annotations

import os

import numpy as np
from prometheus_lite.bench.cpu_backend import (
    DEFAULT_LEVELS,
    SOURCE_LEVEL,
    format_table,
    measure_file,
    measure_levels,
)
from prometheus_lite.bench.raw_llama import RawLlama

from prometheus_lite import native
from prometheus_lite.hub import embedded_model_path

LEVELS = [lv for lv in os.environ.get("PL_BENCH_LEVELS", ",".join(DEFAULT_LEVELS)).split(",") if lv]
PROMPT = int(os.environ.get("PL_BENCH_PROMPT_TOKENS", "512"))
GEN = int(os.environ.get("PL_BENCH_TOKENS", "128"))
ROUNDS = int(os.environ.get("PL_BENCH_ROUNDS", "5"))
THREADS = int(os.environ.get("PL_BENCH_THREADS", "0")) or None
VARIANTS = os.environ.get("PL_BENCH_VARIANTS_DIR", ".benchmarks/variants")
NOT_EXTRA = ("CPU", "CPU_Mapped")  # llama.cpp's plain CPU buffers


def test_cpu_backend_cost(benchmark) -> None:
    smoke = benchmark.disabled
    if smoke:
        rows = [
            measure_file(
                embedded_model_path(),
                SOURCE_LEVEL,
                prompt_tokens=64,
                gen_tokens=4,
                rounds=1,
                threads=1,
            )
        ]
    else:
        rows = measure_levels(
            LEVELS,
            VARIANTS,
            progress=print,
            prompt_tokens=PROMPT,
            gen_tokens=GEN,
            rounds=ROUNDS,
            threads=THREADS,
        )
    tag = "[smoke] " if smoke else ""
    print(f"\n{tag}{format_table(rows, 'wall')}\n\n{tag}{format_table(rows, 'cpu')}")
    for r in rows:
        # The fallback was measured everywhere, and it really loaded without extra types.
        assert r.tps("prompt", "wall", "off") and r.tps("gen", "wall", "off"), r
        assert set(r.buffers["off"]) <= set(NOT_EXTRA), r.buffers
        if not r.note:  # the defaults run here: both settings measured
            assert r.tps("prompt", "wall", "on") and r.tps("gen", "wall", "on"), r
        benchmark.extra_info[r.level] = {
            f"{phase}_{clock}_{setting}": round(r.tps(phase, clock, setting) or 0.0, 1)
            for phase in ("prompt", "gen")
            for clock in ("wall", "cpu")
            for setting in ("on", "off")
        } | {"extra_buffers_on": r.buffers.get("on", {}), "note": r.note}

    # The timed call: one fresh prompt + generation with the setting the Judge would use.
    with RawLlama(
        embedded_model_path(),
        n_ctx=PROMPT + GEN + 8,
        n_threads=1 if smoke else THREADS or os.cpu_count() or 1,
        use_extra_bufts=native.extra_buffer_types_ok(),
    ) as raw:
        rng = np.random.default_rng(1)
        n_prompt, n_gen = (64, 4) if smoke else (PROMPT, GEN)

        def fresh_prompt():
            return (rng.integers(0, raw.n_vocab, n_prompt).tolist(), n_gen), {}

        benchmark.pedantic(raw.run, setup=fresh_prompt, rounds=1 if smoke else ROUNDS, iterations=1)
