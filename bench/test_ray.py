"""Ray Data batch grading: items/min with 1 and 2 actors (1 llama.cpp thread each).

Both configurations run side by side in one process on one local Ray cluster (2 CPUs,
127.0.0.1), alternating every round, on the same real Prometheus benchmark prompts
(greedy, so both do the same work). Two figures per configuration:

- end to end: from ``judge_dataset`` to the last record, actor start-up (loading the
  model) included, as a user's run of that size sees it;
- steady state: from the first record to the last, (items - first batch) / time.

    pytest bench/test_ray.py --benchmark-enable -s
    PL_BENCH_ITEMS=32 PL_BENCH_TOKENS=64 pytest bench/test_ray.py --benchmark-enable -s
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

import pytest

ray = pytest.importorskip("ray")

from prometheus_lite.bench.data import load_items  # noqa: E402

from prometheus_lite.integrations.ray import judge_dataset  # noqa: E402

pytestmark = [
    pytest.mark.timeout(1800),
    pytest.mark.filterwarnings("ignore::ResourceWarning"),  # Ray Data's own log files
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

MODEL = os.environ.get("PL_BENCH_MODEL") or None  # None: the embedded smoke-test model
ITEMS = int(os.environ.get("PL_BENCH_ITEMS", "24"))
TOKENS = int(os.environ.get("PL_BENCH_TOKENS", "48"))
ROUNDS = int(os.environ.get("PL_BENCH_ROUNDS", "2"))
BATCH = int(os.environ.get("PL_BENCH_BATCH", "2"))
WORKERS = (1, 2)


@pytest.fixture(scope="module")
def cluster() -> Any:
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
             log_to_driver=False, configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        yield
    finally:
        ray.shutdown()


def _run(rows: list[dict[str, Any]], workers: int, tokens: int) -> tuple[float, float, int]:
    """(end-to-end s, steady-state items/s, records) of one run."""
    t0 = time.perf_counter()
    ds = judge_dataset(ray.data.from_items(rows), "grade", model=MODEL, workers=workers,
                       threads_per_worker=1, batch_size=BATCH, greedy=True,
                       max_new_tokens=tokens)
    first: float | None = None
    first_n = n = 0
    for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        assert batch.column("error").null_count == batch.num_rows, "an item failed"
        n += batch.num_rows
        if first is None:
            first, first_n = time.perf_counter(), batch.num_rows
    end = time.perf_counter()
    steady = (n - first_n) / (end - first) if first is not None and end > first else 0.0
    return end - t0, steady, n


def test_ray_items_per_minute(benchmark: Any, cluster: None, shared_dir: Any) -> None:
    smoke = benchmark.disabled
    data = shared_dir / "data" / "prometheus-benchmarks"
    n, tokens = (2, 8) if smoke else (ITEMS, TOKENS)
    items = load_items(n, data, lengths="shortest" if smoke else "spread")
    rows = [{"id": str(i), "instruction": it.request.instruction,
             "response": it.request.response, "reference_answer": it.request.reference_answer,
             "rubric": it.request.rubric.to_dict()} for i, it in enumerate(items)]
    e2e: dict[int, list[float]] = {w: [] for w in WORKERS}
    steady: dict[int, list[float]] = {w: [] for w in WORKERS}
    rounds = 1 if smoke else ROUNDS

    def one_round() -> None:
        order = WORKERS if len(e2e[1]) % 2 == 0 else tuple(reversed(WORKERS))
        for w in order:
            seconds, rate, count = _run(rows, w, tokens)
            assert count == len(rows)
            e2e[w].append(len(rows) / seconds * 60)
            steady[w].append(rate * 60)

    load_before = os.getloadavg()[0]
    benchmark.pedantic(one_round, rounds=rounds, iterations=1, warmup_rounds=0)
    load = (load_before, os.getloadavg()[0])  # other work on the machine skews both figures
    med = {w: (statistics.median(e2e[w]), statistics.median(steady[w])) for w in WORKERS}
    benchmark.extra_info.update(
        model=MODEL or "embedded SmolLM2-135M (smoke-test model)", items=len(rows),
        max_new_tokens=tokens, batch_size=BATCH, rounds=rounds, cpus=os.cpu_count(),
        load_average_before_after=load,
        **{f"items_per_min_e2e_{w}_actors": med[w][0] for w in WORKERS},
        **{f"items_per_min_steady_{w}_actors": med[w][1] for w in WORKERS},
        speedup_e2e=med[2][0] / med[1][0],
        speedup_steady=(med[2][1] / med[1][1]) if med[1][1] else None,
    )
    print(f"\n{'[smoke] ' if smoke else ''}Ray, {len(rows)} items, {tokens} new tokens, "
          f"batch {BATCH}, median of {rounds} rounds; {os.cpu_count()} CPUs, load average "
          f"{load[0]:.1f} before, {load[1]:.1f} after")
    for w in WORKERS:
        print(f"  {w} actor(s) x 1 thread: {med[w][0]:7.1f} items/min end to end, "
              f"{med[w][1]:7.1f} items/min steady")
    print(f"  2 vs 1 actors: x{med[2][0] / med[1][0]:.2f} end to end"
          + (f", x{med[2][1] / med[1][1]:.2f} steady" if med[1][1] else ""))
