"""The HTTP service against the same judge in-process: grades/min and p50/p95 latency at 1, 4
and 16 concurrent clients, and the HTTP layer's overhead (1 - HTTP / in-process throughput).

Side by side in one run: for each client count, the in-process judge (``judge.submit`` from
N threads) and a real ``prometheus-lite serve`` process (N threads of ``httpx`` clients,
POST /v1/grade) grade the same real benchmark prompts, greedy, with the same threads, token
budget and n_ctx, in short alternating rounds (one job per client; A B, B A, ...) so that
a change in background load hits both sides alike. The token counts of both sides are
checked equal (same work). Besides throughput, each request's wall time minus the judge's
own ``latency_s`` (same request, so background load cancels) gives the time spent outside
the judge: queueing, the executor hand-off and, for HTTP, the whole HTTP layer. With
``--benchmark-enable`` it also writes a plot, ``$PL_BENCH_REPORT/server.png`` (default
reports/bench).

    pytest bench/test_server.py --benchmark-enable -s
    PL_BENCH_MODEL=prometheus-7b-v2.0:Q4_K_M PL_BENCH_THREADS=8 PL_BENCH_SERVER_REQUESTS=64 \\
        pytest bench/test_server.py --benchmark-enable -s
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from live_server import LiveServer
from prometheus_lite.bench.data import load_items

from prometheus_lite import Judge
from prometheus_lite.results import GradeRequest
from prometheus_lite.rubrics import PRESETS

MODEL = os.environ.get("PL_BENCH_MODEL") or None  # None: the embedded smoke-test model
TOKENS = int(os.environ.get("PL_BENCH_TOKENS", "24"))
THREADS = int(os.environ.get("PL_BENCH_THREADS", "1"))
REQUESTS = int(os.environ.get("PL_BENCH_SERVER_REQUESTS", "32"))  # per level and side
MAX_CHARS = int(os.environ.get("PL_BENCH_SERVER_MAX_CHARS", "4000"))  # prompt length cap
LEVELS = (1, 4, 16)
N_CTX = 4096


def _item(request: GradeRequest) -> dict[str, Any]:
    assert not isinstance(request.rubric, str)
    return {"instruction": request.instruction, "response": request.response,
            "reference_answer": request.reference_answer, "rubric": request.rubric.to_dict()}


def _drive(clients: int, jobs: list[Any],
           call: Callable[[Any, Any], tuple[int, int, float]]) -> dict[str, Any]:
    """Run every job from ``clients`` threads (each takes the next job): wall time,
    per-request latencies and (prompt, completion) tokens per job."""
    latencies: list[float] = []
    extra: list[float] = []  # request wall time minus the judge's own latency_s
    tokens: dict[int, tuple[int, int]] = {}
    lock = threading.Lock()
    queue = list(enumerate(jobs))

    def worker(state: Any) -> None:
        while True:
            with lock:
                if not queue:
                    return
                i, job = queue.pop(0)
            t0 = time.perf_counter()
            prompt, completion, judged = call(state, job)
            dt = time.perf_counter() - t0
            with lock:
                latencies.append(dt)
                extra.append(dt - judged)
                tokens[i] = (prompt, completion)

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(worker, [None] * clients))
    wall = time.perf_counter() - started
    return {"latencies": latencies, "extra": extra, "wall_s": wall,
            "tokens": [tokens[i] for i in range(len(jobs))]}


def _merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One side's rounds of a level together: total grades over total wall time."""
    latencies = [x for p in parts for x in p["latencies"]]
    extra = [x for p in parts for x in p["extra"]]
    wall = sum(p["wall_s"] for p in parts)
    q = statistics.quantiles(latencies, n=20) if len(latencies) > 1 else latencies * 19
    return {"grades_per_min": 60 * len(latencies) / wall, "p50_s": statistics.median(latencies),
            "p95_s": q[18], "wall_s": wall, "extra_ms_p50": 1000 * statistics.median(extra),
            "tokens": [t for p in parts for t in p["tokens"]]}


def _plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for side, marker, color in (("in_process", "o", "tab:blue"), ("http", "s", "tab:orange")):
        xs = [r["clients"] for r in rows]
        ax1.plot(xs, [r[side]["grades_per_min"] for r in rows], marker=marker, color=color,
                 label=side)
        ax2.plot(xs, [r[side]["p50_s"] for r in rows], marker=marker, color=color,
                 label=f"{side} p50")
        ax2.plot(xs, [r[side]["p95_s"] for r in rows], marker=marker, color=color,
                 linestyle="--", label=f"{side} p95")
    for ax, title, unit in ((ax1, "throughput", "grades/min"), (ax2, "latency", "seconds")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(LEVELS), [str(n) for n in LEVELS])
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.legend()
    fig.suptitle("prometheus-lite serve vs the same judge in-process")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def test_server_vs_in_process(benchmark, shared_dir):
    smoke = benchmark.disabled
    levels = (1, 2) if smoke else LEVELS
    per_level = 2 if smoke else REQUESTS
    budget = 8 if smoke else TOKENS
    if smoke:  # a short synthetic item: the smoke run checks the code path, not the numbers
        pool = [GradeRequest("What is 2 + 2?", "4", PRESETS["reasoning"], "4")]
    else:
        data = shared_dir / "data" / "prometheus-benchmarks"
        pool = [it.request for it in load_items(8, data, max_chars=MAX_CHARS)]
    model_args = ("--model", MODEL) if MODEL else ()
    server = LiveServer(*model_args, "--n-ctx", str(N_CTX), "--max-tokens", str(budget),
                        "--greedy", "--max-queue", "64", "--no-access-log",
                        "--threads", str(THREADS))
    rows: list[dict[str, Any]] = []
    try:
        with Judge(MODEL, n_ctx=N_CTX, n_threads=THREADS, greedy=True,
                   max_new_tokens=budget) as judge:
            if server.proc.poll() is not None:
                raise RuntimeError("\n".join(server.lines[-20:]))

            def in_process(_: Any, request: GradeRequest) -> tuple[int, int, float]:
                g = judge.submit(request).result()
                return g.usage.prompt_tokens, g.usage.completion_tokens, g.usage.latency_s

            local = threading.local()
            clients: list[Any] = []  # one keep-alive connection per client thread

            def http(_: Any, request: GradeRequest) -> tuple[int, int, float]:
                if not hasattr(local, "client"):
                    local.client = server.client(timeout=600)
                    clients.append(local.client)
                r = local.client.post("/v1/grade", json=_item(request))
                r.raise_for_status()
                rec = r.json()
                return rec["prompt_tokens"], rec["completion_tokens"], rec["latency_s"]

            def sweep() -> list[dict[str, Any]]:
                # Short alternating rounds (A B B A ...), so a change in background load
                # hits both sides alike; each round is one job per client.
                out = []
                for clients in levels:
                    n = -(-max(per_level, clients) // clients) * clients  # whole rounds
                    jobs_all = [pool[i % len(pool)] for i in range(n)]
                    rounds = [jobs_all[i:i + clients] for i in range(0, n, clients)]
                    runs: dict[str, list[dict[str, Any]]] = {"in_process": [], "http": []}
                    for k, jobs in enumerate(rounds):
                        sides = [("in_process", in_process), ("http", http)]
                        if k % 2:
                            sides.reverse()
                        for name, call in sides:
                            runs[name].append(_drive(clients, jobs, call))
                    row: dict[str, Any] = {"clients": clients, "rounds": len(rounds)}
                    for name, parts in runs.items():
                        row[name] = _merge(parts)
                    out.append(row)
                return out

            try:
                rows = benchmark.pedantic(sweep, rounds=1, iterations=1, warmup_rounds=0)
            finally:
                for c in clients:
                    c.close()
    finally:
        assert server.stop() == 0
    for row in rows:  # the same work on both sides: same prompts, same tokens generated
        assert row["in_process"].pop("tokens") == row["http"].pop("tokens")
        row["http_overhead"] = 1 - row["http"]["grades_per_min"] / row["in_process"][
            "grades_per_min"]
    benchmark.extra_info.update(
        model=MODEL or "embedded SmolLM2-135M (smoke-test model)", threads=THREADS,
        max_new_tokens=budget, requests_per_level=per_level, levels=rows,
    )
    print(f"\n{'[smoke] ' if smoke else ''}server vs in-process, {per_level} grades per level, "
          f"{budget} new tokens, {THREADS} thread(s):")
    print("clients | in-process g/min p50 p95 | http g/min p50 p95 | 1-http/in-process |"
          " per-request time outside the judge, p50 (ms): in-process / http")
    for r in rows:
        a, b = r["in_process"], r["http"]
        print(f"{r['clients']:>7} | {a['grades_per_min']:10.1f} {a['p50_s']:5.2f} "
              f"{a['p95_s']:5.2f} | {b['grades_per_min']:6.1f} {b['p50_s']:5.2f} "
              f"{b['p95_s']:5.2f} | {100 * r['http_overhead']:+16.1f} % | "
              f"{a['extra_ms_p50']:.1f} / {b['extra_ms_p50']:.1f}")
    if not smoke:
        path = Path(os.environ.get("PL_BENCH_REPORT", "reports/bench")) / "server.png"
        _plot(rows, path)
        print(f"plot: {path}")
