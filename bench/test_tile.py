"""Flash attention's tile threshold (``bench/tile.py``): per-token cost of a pass of 63, 64
and 448 rows, one sequence against eight mixed, raw ``llama_decode`` on the embedded model
(or PL_BENCH_MODEL).

    pytest bench/test_tile.py --benchmark-enable -s
"""

from __future__ import annotations

import json
import os

from prometheus_lite.bench.tile import measure

MODEL = os.environ.get("PL_BENCH_MODEL") or None
KEYS = {f"{rows} rows, {what}" for rows in (63, 64, 448)
        for what in ("1 sequence", "8 sequences")}
KEYS.add("63 rows, 1 sequence, pool otherwise empty")
STEPS = {"8 sequences", "1 sequence beside 7", "1 sequence, pool otherwise empty"}


def test_tile_threshold(benchmark):
    smoke = benchmark.disabled
    out: dict = {}

    def run() -> None:
        out.update(measure(MODEL, 1 if smoke else None, 200 if smoke else 900,
                           1 if smoke else 7, (64, 128) if smoke else None))

    benchmark.pedantic(run, rounds=1, iterations=1)
    assert set(out["ms_per_token"]) == KEYS and all(v > 0 for v in out["ms_per_token"].values())
    ms = out["ms_per_token"]
    print("\n" + json.dumps(out), flush=True)
    mixed = ms["64 rows, 8 sequences"] / ms["63 rows, 8 sequences"]
    alone = ms["64 rows, 1 sequence"] / ms["63 rows, 1 sequence"]
    print(f"per token, 64 rows against 63: {mixed:.2f}x mixed, {alone:.2f}x one sequence")
    wide = ms["63 rows, 1 sequence"] / ms["448 rows, 1 sequence"]
    print(f"one sequence's prompt, 448 rows against 63: {wide:.2f}x faster per token")
    masked = ms["63 rows, 1 sequence"] / ms["63 rows, 1 sequence, pool otherwise empty"]
    print(f"63 rows beside the others' cells against alone: {masked:.2f}x")
    step = out["decode_step_ms"]
    assert set(step) == STEPS and all(v > 0 for v in step.values())
    gain = 8 * step["1 sequence, pool otherwise empty"] / step["8 sequences"]
    print(f"decode: 8 tokens in one step against 8 one-token steps alone: {gain:.2f}x per token")
    depth = out["by_depth"]
    assert depth and all(set(v) == {"63 rows", "64 rows", "decode step"} and min(v.values()) > 0
                         for v in depth.values())
    for d, v in depth.items():
        print(f"depth {d}: 63 rows {v['63 rows']:.2f} ms/token, 64 rows {v['64 rows']:.2f}, "
              f"decode step {v['decode step']:.2f} ms")
    benchmark.extra_info.update(out)
