"""The parallel engine against one slot and against the engine before it, side by side.

Every configuration runs in its own child process (``prometheus_lite.bench.parallel``), one
after the other in one run, so its peak RSS is its own and the ratios compare like with
like on this machine at this moment.

    pytest bench/test_parallel.py --benchmark-enable -s          # the figures (~30 min, 2 cores)
    PL_BENCH_PARALLEL_ITEMS=16 PL_BENCH_RUBRIC_RESPONSES=8 PL_BENCH_DETERMINISM_ITEMS=100 ...

Scenarios (see bench/parallel.py): official sampling on vicuna items at N = 1 and 8;
8 responses x 5 rubrics, shuffled and consecutive, greedy 64 tokens, against the legacy
single-sequence engine; KV bytes per slot and peak RSS at N = 1, 4, 8; greedy scores at
N = 8 against N = 1.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from prometheus_lite.bench.system import run_child

ITEMS = int(os.environ.get("PL_BENCH_PARALLEL_ITEMS", "16"))
RESPONSES = int(os.environ.get("PL_BENCH_RUBRIC_RESPONSES", "8"))
DET_ITEMS = int(os.environ.get("PL_BENCH_DETERMINISM_ITEMS", "100"))
THREADS = int(os.environ.get("PL_BENCH_THREADS", "0")) or None
MODEL = os.environ.get("PL_BENCH_MODEL") or None


def _child(tmp: Path, spec: dict) -> dict:
    path = tmp / f"spec{len(list(tmp.iterdir()))}.json"
    path.write_text(json.dumps(spec))
    lines: list[str] = []
    rc, peak, err = run_child(
        [sys.executable, "-P", "-m", "prometheus_lite.bench.parallel", str(path)], lines.append
    )
    assert rc == 0, err[-3000:]
    out = json.loads(lines[-1])
    out["peak_rss_upper_bound"] = peak  # ru_maxrss includes this process's RSS at fork
    shown = {k: out.get(k) for k in ("n_parallel", "items", "wall_s", "grades_per_min",
                                     "cached_prompt_tokens", "prompt_tokens", "peak_rss_self")}
    print(f"  {spec['scenario']} {spec.get('order', '')} legacy={spec.get('legacy', False)}: "
          f"{shown}", flush=True)
    return out


def test_parallel_engine(benchmark, shared_dir, tmp_path):
    smoke = benchmark.disabled
    data = str(shared_dir / "data" / "prometheus-benchmarks")
    base = {"data": data, "model": MODEL, "threads": THREADS, "n_ctx": 4096}
    if smoke:  # the pipeline once, tiny
        official = dict(base, scenario="official", items=2, lengths="shortest", max_new_tokens=12)
        rubrics = dict(base, scenario="rubrics", responses=1, lengths="shortest", max_new_tokens=8)
        det = dict(base, scenario="determinism", items=2, max_new_tokens=8)
        sizes = [1, 2]
    else:
        # Issue 16 section 4: (a) short items, official sampling, 128 new tokens.
        official = dict(base, scenario="official", items=ITEMS, lengths="shortest",
                        max_new_tokens=128)
        rubrics = dict(base, scenario="rubrics", responses=RESPONSES, max_new_tokens=64)
        det = dict(base, scenario="determinism", items=DET_ITEMS, max_new_tokens=16)
        sizes = [1, 4, 8]
    runs: dict[str, dict] = {}
    top = sizes[-1]
    # (order, slot counts besides the legacy engine): N = 1, 4, 8 on the shuffled file
    # gives KV bytes per slot and peak RSS at each size.
    rubric_runs = [("shuffled", [top])] if smoke else [("shuffled", sizes), ("consecutive", [top])]

    def run_all() -> None:
        for n in (1, top):
            runs[f"official N={n}"] = _child(tmp_path, dict(official, n_parallel=n))
        if not smoke:  # (b) 8 short items, greedy, 160 new tokens: time and peak RSS
            for n in (1, top):
                runs[f"greedy160 N={n}"] = _child(tmp_path, dict(
                    official, items=8, greedy=True, max_new_tokens=160, n_parallel=n))
        for order, ns in rubric_runs:
            runs[f"rubrics {order} legacy"] = _child(
                tmp_path, dict(rubrics, order=order, n_parallel=1, legacy=True)
            )
            for n in ns:
                runs[f"rubrics {order} N={n}"] = _child(
                    tmp_path, dict(rubrics, order=order, n_parallel=n)
                )
        runs["determinism"] = _child(tmp_path, dict(det, n_parallel=top))

    benchmark.pedantic(run_all, rounds=1, iterations=1)
    ratios = {
        f"official N={top} / N=1": runs[f"official N={top}"]["grades_per_min"]
        / runs["official N=1"]["grades_per_min"],
    }
    if not smoke:
        ratios[f"greedy160 N={top} / N=1"] = (
            runs[f"greedy160 N={top}"]["grades_per_min"] / runs["greedy160 N=1"]["grades_per_min"]
        )
        ratios[f"greedy160 peak RSS N={top} - N=1 (GiB)"] = (
            runs[f"greedy160 N={top}"]["peak_rss_self"] - runs["greedy160 N=1"]["peak_rss_self"]
        ) / 2**30
    for order, ns in rubric_runs:
        legacy = runs[f"rubrics {order} legacy"]["grades_per_min"]
        for n in ns:
            ratios[f"rubrics {order} N={n} / legacy"] = (
                runs[f"rubrics {order} N={n}"]["grades_per_min"] / legacy
            )
    det_run = runs["determinism"]
    benchmark.extra_info.update(runs=runs, ratios=ratios)
    print("\nconfiguration                     grades/min  cached/prompt tok  peak RSS MiB  "
          "KV/slot MiB  slots+cache")
    for name, r in runs.items():
        if name == "determinism":
            continue
        print(
            f"{name:32s} {r['grades_per_min']:10.2f}  "
            f"{r['cached_prompt_tokens']:7d}/{r['prompt_tokens']:<7d}  "
            f"{r['peak_rss_self'] / 2**20:12.0f}  {r['kv_bytes_per_slot'] / 2**20:11.0f}  "
            f"{r['n_parallel']}+{r['n_seq'] - r['n_parallel']}"
        )
    for name, ratio in ratios.items():
        print(f"{name}: {ratio:.2f}x")
    print(
        f"determinism over {det_run['compared']} items, greedy, N={top} vs N=1: same score "
        f"{det_run['same_score']:.1%}, same text {det_run['same_text']:.1%}, max probability "
        f"difference {det_run['max_prob_diff']:.2e} (same text: "
        f"{det_run['max_prob_diff_same_text'] or 0:.2e})"
    )
    assert all(r["failures"] == 0 for r in runs.values())
