"""Ray Data batch grading: items/min with 1 and 2 actors (1 llama.cpp thread each), and
how busy one actor keeps its engine's slots.

Both configurations run side by side in one process on one local Ray cluster (2 CPUs,
127.0.0.1), alternating every round, on the same real Prometheus benchmark prompts
(greedy, so both do the same work). Two figures per configuration:

- end to end: from ``judge_dataset`` to the last record, actor start-up (loading the
  model) included, as a user's run of that size sees it;
- steady state: from the first record to the last, (items - first batch) / time.

The slots benchmark runs one actor with ``PL_BENCH_SLOTS`` slots (n_parallel) on the same
items, once with one block in flight per actor (``tasks_per_worker=1``: the actor drains
its engine at the end of every block, as before) and once with the default (several
blocks at once, all queued in the one engine), and reports the mean of
``judge.engine.busy`` sampled every 5 ms inside the actor, from its first block to its
last. (The smoke pass of ``make test`` runs the second configuration of each, once.)

    pytest bench/test_ray.py --benchmark-enable -s
    PL_BENCH_ITEMS=32 PL_BENCH_TOKENS=64 pytest bench/test_ray.py --benchmark-enable -s
"""

from __future__ import annotations

import json
import os
import statistics
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray")

from prometheus_lite.bench.data import load_items  # noqa: E402

from prometheus_lite.integrations.ray import (  # noqa: E402
    JudgeActor,
    judge_dataset,
    tasks_in_flight,
)

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
SLOTS = int(os.environ.get("PL_BENCH_SLOTS", "4"))
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
    workers = WORKERS[-1:] if smoke else WORKERS  # the smoke pass: the code path, once
    e2e: dict[int, list[float]] = {w: [] for w in workers}
    steady: dict[int, list[float]] = {w: [] for w in workers}
    rounds = 1 if smoke else ROUNDS

    def one_round() -> None:
        order = workers if len(e2e[workers[0]]) % 2 == 0 else tuple(reversed(workers))
        for w in order:
            seconds, rate, count = _run(rows, w, tokens)
            assert count == len(rows)
            e2e[w].append(len(rows) / seconds * 60)
            steady[w].append(rate * 60)

    load_before = os.getloadavg()[0]
    benchmark.pedantic(one_round, rounds=rounds, iterations=1, warmup_rounds=0)
    load = (load_before, os.getloadavg()[0])  # other work on the machine skews both figures
    med = {w: (statistics.median(e2e[w]), statistics.median(steady[w])) for w in workers}
    benchmark.extra_info.update(
        model=MODEL or "embedded SmolLM2-135M (smoke-test model)", items=len(rows),
        max_new_tokens=tokens, batch_size=BATCH, rounds=rounds, cpus=os.cpu_count(),
        load_average_before_after=load,
        **{f"items_per_min_e2e_{w}_actors": med[w][0] for w in workers},
        **{f"items_per_min_steady_{w}_actors": med[w][1] for w in workers},
    )
    if len(workers) == 2:
        benchmark.extra_info.update(
            speedup_e2e=med[2][0] / med[1][0],
            speedup_steady=(med[2][1] / med[1][1]) if med[1][1] else None)
    print(f"\n{'[smoke] ' if smoke else ''}Ray, {len(rows)} items, {tokens} new tokens, "
          f"batch {BATCH}, median of {rounds} rounds; {os.cpu_count()} CPUs, load average "
          f"{load[0]:.1f} before, {load[1]:.1f} after")
    for w in workers:
        print(f"  {w} actor(s) x 1 thread: {med[w][0]:7.1f} items/min end to end, "
              f"{med[w][1]:7.1f} items/min steady")
    if len(workers) == 2:
        print(f"  2 vs 1 actors: x{med[2][0] / med[1][0]:.2f} end to end"
              + (f", x{med[2][1] / med[1][1]:.2f} steady" if med[1][1] else ""))


# --------------------------------------------------------------------------- busy slots


def _busy_actor(log_dir: Path) -> type[JudgeActor]:
    """A JudgeActor that samples ``judge.engine.busy`` every 5 ms from its first block on
    and, after each block, writes (samples, sum, max) to ``log_dir``. Defined in a
    function so that Ray ships the class by value to the actor's process."""

    class BusyActor(JudgeActor):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._samples: list[int] = []
            self._started = threading.Event()
            self._lock = threading.Lock()
            self._file = log_dir / f"{uuid.uuid4().hex}.json"
            threading.Thread(target=self._sample, daemon=True).start()

        def _sample(self) -> None:
            self._started.wait()
            engine = self.judge.engine
            while True:
                self._samples.append(engine.busy)
                time.sleep(0.005)

        def __call__(self, batch: Any) -> Any:
            self._started.set()
            out = super().__call__(batch)
            samples = list(self._samples)
            with self._lock:  # blocks end in several threads: one writer at a time
                tmp = self._file.with_suffix(".tmp")
                tmp.write_text(json.dumps({"n": len(samples), "sum": sum(samples),
                                           "max": max(samples, default=0),
                                           "slots": self.judge.engine.n_parallel}))
                tmp.replace(self._file)
            return out

    return BusyActor


def _busy_run(rows: list[dict[str, Any]], tokens: int, in_flight: int,
              log_dir: Path) -> tuple[float, float, int, float]:
    """(mean busy slots, max busy, slots, items/min end to end) of one single-actor run."""
    run_dir = log_dir / uuid.uuid4().hex
    run_dir.mkdir()
    t0 = time.perf_counter()
    ds = judge_dataset(ray.data.from_items(rows), "grade", model=MODEL, workers=1,
                       threads_per_worker=1, batch_size=BATCH, tasks_per_worker=in_flight,
                       actor=_busy_actor(run_dir), greedy=True, max_new_tokens=tokens,
                       n_parallel=SLOTS)
    n = 0
    for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        assert batch.column("error").null_count == batch.num_rows, "an item failed"
        n += batch.num_rows
    seconds = time.perf_counter() - t0
    assert n == len(rows)
    (stats,) = [json.loads(f.read_text()) for f in run_dir.glob("*.json")]
    return stats["sum"] / max(stats["n"], 1), stats["max"], stats["slots"], n / seconds * 60


def test_ray_actor_busy_slots(benchmark: Any, cluster: None, shared_dir: Any,
                              tmp_path: Path) -> None:
    smoke = benchmark.disabled
    data = shared_dir / "data" / "prometheus-benchmarks"
    n, tokens = (2, 8) if smoke else (ITEMS, TOKENS)
    items = load_items(n, data, lengths="shortest" if smoke else "spread")
    rows = [{"id": str(i), "instruction": it.request.instruction,
             "response": it.request.response, "reference_answer": it.request.reference_answer,
             "rubric": it.request.rubric.to_dict()} for i, it in enumerate(items)]
    after = tasks_in_flight(BATCH, SLOTS, gpu=False)
    configs = {"one block in flight (before)": 1, f"{after} blocks in flight (after)": after}
    if smoke:  # the code path, once
        configs = {f"{after} blocks in flight (after)": after}
    results: dict[str, list[tuple[float, float, int, float]]] = {c: [] for c in configs}
    rounds = 1 if smoke else ROUNDS

    def one_round() -> None:
        names = list(configs) if len(results[next(iter(configs))]) % 2 == 0 \
            else list(reversed(configs))
        for name in names:
            results[name].append(_busy_run(rows, tokens, configs[name], tmp_path))

    load_before = os.getloadavg()[0]
    benchmark.pedantic(one_round, rounds=rounds, iterations=1, warmup_rounds=0)
    load = (load_before, os.getloadavg()[0])
    med = {c: (statistics.median(r[0] for r in rs), max(r[1] for r in rs), rs[0][2],
               statistics.median(r[3] for r in rs)) for c, rs in results.items()}
    benchmark.extra_info.update(
        model=MODEL or "embedded SmolLM2-135M (smoke-test model)", items=len(rows),
        max_new_tokens=tokens, batch_size=BATCH, slots=SLOTS, rounds=rounds,
        load_average_before_after=load,
        **{f"mean_busy_slots[{c}]": m[0] for c, m in med.items()},
        **{f"items_per_min[{c}]": m[3] for c, m in med.items()},
    )
    print(f"\n{'[smoke] ' if smoke else ''}Ray, 1 actor x 1 thread, {SLOTS} slots, "
          f"{len(rows)} items, {tokens} new tokens, batch {BATCH}, median of {rounds} rounds; "
          f"load average {load[0]:.1f} before, {load[1]:.1f} after")
    for c, (mean, top, slots, rate) in med.items():
        print(f"  {c}: mean busy slots {mean:.2f} of {slots} (max {top}), "
              f"{rate:.1f} items/min end to end")
