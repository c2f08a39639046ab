"""Grading latency: one whole ``Judge.judge`` call (render, tokenize, prefill, constrained
greedy decode) on real Prometheus benchmark prompts of varied lengths.

The judge is loaded outside the timed call; each round grades the same prompts in the same
order, so the KV prefix reuse between consecutive prompts is the same in every round. The
figure is the time per round; per-prompt percentiles go to extra_info.

    make bench                                      # or, for this file alone:
    pytest bench/test_grading_latency.py --benchmark-enable -s
    PL_BENCH_MODEL=prometheus-7b-v2.0:Q4_K_M PL_BENCH_PROMPTS=8 PL_BENCH_TOKENS=256 \\
        pytest bench/test_grading_latency.py --benchmark-enable -s
"""

from __future__ import annotations

import os
import statistics

from prometheus_lite.bench.data import load_items

from prometheus_lite import Judge

MODEL = os.environ.get("PL_BENCH_MODEL") or None  # None: the embedded smoke-test model
PROMPTS = int(os.environ.get("PL_BENCH_PROMPTS", "5"))
TOKENS = int(os.environ.get("PL_BENCH_TOKENS", "128"))
ROUNDS = int(os.environ.get("PL_BENCH_ROUNDS", "3"))
THREADS = int(os.environ.get("PL_BENCH_THREADS", "0")) or None


def test_grading_latency(benchmark, shared_dir):
    smoke = benchmark.disabled
    data = shared_dir / "data" / "prometheus-benchmarks"
    items = load_items(1, data, lengths="shortest") if smoke else load_items(PROMPTS, data)
    latencies: list[float] = []
    with Judge(MODEL, greedy=True, max_new_tokens=8 if smoke else TOKENS, n_threads=THREADS) as j:

        def grade_all() -> list[int]:
            scores = []
            for item in items:
                g = j.judge(item.request)
                latencies.append(g.usage.latency_s)
                scores.append(g.score)
            return scores

        scores = benchmark.pedantic(
            grade_all, rounds=1 if smoke else ROUNDS, iterations=1, warmup_rounds=0 if smoke else 1
        )
    assert all(1 <= s <= 5 for s in scores)
    q = statistics.quantiles(latencies, n=20) if len(latencies) > 1 else latencies * 19
    benchmark.extra_info.update(
        model=MODEL or "embedded SmolLM2-135M (smoke-test model)",
        prompts=len(items),
        max_new_tokens=j.max_new_tokens,
        latency_s_p50=statistics.median(latencies),
        latency_s_p95=q[18],
    )
    print(
        f"\n{'[smoke] ' if smoke else ''}grading latency over {len(latencies)} calls: "
        f"p50 {statistics.median(latencies):.2f}s p95 {q[18]:.2f}s"
    )
