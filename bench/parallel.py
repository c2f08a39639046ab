"""The parallel engine's benchmark: one configuration per child process.

Each configuration runs in its own process (``python -P -m prometheus_lite.bench.parallel
SPEC.json``) so that its peak RSS is its own; the suite ``bench/test_parallel.py`` runs
them side by side and reports ratios. Scenarios:

- ``official``: benchmark items, one rubric each, official sampling (temperature 1.0,
  top_p 0.9, repetition penalty 1.03; ``max_new_tokens``, default 1,024; ``greedy`` for
  issue 16's 7B configuration): grades/min at ``n_parallel``.
- ``rubrics``: ``responses`` benchmark items x the five preset rubrics, greedy, short
  answers (prefill-dominated, like a 7B judge on a laptop), in ``order`` shuffled or
  consecutive. ``legacy`` runs the engine as it was before parallel slots: one sequence,
  in arrival order, reusing only the previous prompt's prefix.
- ``short``: ``items`` one-sentence items (instruction and response of a sentence each,
  the preset rubrics in turn), official sampling or greedy (``greedy``), ``max_new_tokens``
  new tokens: the decode-bound case, where slots share every forward pass.
- ``determinism``: the same items greedy at ``n_parallel`` and at 1 in one process:
  same-score share, same-text share, largest probability difference.
"""

from __future__ import annotations

import json
import random
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from prometheus_lite import Judge
from prometheus_lite.engine import Engine
from prometheus_lite.native import llama_cpp_version
from prometheus_lite.results import Failure
from prometheus_lite.rubrics import PRESETS

from .data import load_items
from .system import rss_bytes

# One-sentence items (issue 16's "short items"): instruction, response.
SHORT_ITEMS = [
    ("What is the capital of Australia?", "The capital of Australia is Sydney."),
    ("Translate 'good morning' into French.", "Bonjour."),
    ("Name a prime number greater than 10.", "Eleven is a prime number greater than ten."),
    ("What does a thermometer measure?", "A thermometer measures temperature."),
    ("Give a synonym for 'happy'.", "A synonym for happy is joyful."),
    ("How many legs does a spider have?", "A spider has six legs."),
    ("What is the boiling point of water at sea level?", "Water boils at 100 degrees Celsius."),
    ("Who wrote 'Romeo and Juliet'?", "William Shakespeare wrote Romeo and Juliet."),
]


def short_requests(n: int) -> list[Any]:
    from prometheus_lite.results import GradeRequest

    names = list(PRESETS)
    return [
        GradeRequest(*SHORT_ITEMS[i % len(SHORT_ITEMS)], PRESETS[names[i % len(names)]],
                     id=f"short{i}")
        for i in range(n)
    ]


def _judge(spec: dict[str, Any], *, n_parallel: int, greedy: bool, max_new: int) -> Judge:
    judge = Judge(
        spec.get("model"),
        n_ctx=spec.get("n_ctx", 4096),
        n_threads=spec.get("threads"),
        n_gpu_layers=spec.get("n_gpu_layers"),
        greedy=greedy,
        max_new_tokens=max_new,
        seed=spec.get("seed", 0),
        n_parallel=n_parallel,
        kv_cells=spec.get("kv_cells"),
        cache_type_k=spec.get("cache_type_k", "f16"),
        cache_type_v=spec.get("cache_type_v", "f16"),
        batch_invariant=spec.get("batch_invariant", False),
    )
    if spec.get("legacy"):
        judge.engine.close()
        judge.engine = Engine(judge.runtime, 1, n_seq=1, schedule="fcfs")
    return judge


def _timed(judge: Judge, requests: list[Any]) -> tuple[float, list[Any]]:
    t0 = time.perf_counter()
    results = list(judge.batch(requests))
    return time.perf_counter() - t0, results


def _summary(judge: Judge, wall: float, results: list[Any]) -> dict[str, Any]:
    ok = [r for r in results if not isinstance(r, Failure)]
    rt = judge.runtime
    return {
        "n_parallel": judge.n_parallel,
        "n_seq": len(judge.engine._slots),
        "items": len(results),
        "failures": len(results) - len(ok),
        "wall_s": wall,
        "grades_per_min": 60 * len(results) / wall if wall else None,
        "prompt_tokens": sum(r.usage.prompt_tokens for r in ok),
        "cached_prompt_tokens": sum(r.usage.cached_prompt_tokens for r in ok),
        "completion_tokens": sum(r.usage.completion_tokens for r in ok),
        "kv_bytes_per_slot": rt.kv_bytes_per_token() * rt.n_ctx,
        "kv_cells_total": judge.kv_cells_total,
        "kv_cells_used_end": judge.kv_cells_used,
        "kv_bytes": rt.kv_bytes,
        "evictions": judge.engine.evictions_total,
        "preemptions": judge.engine.preemptions_total,
        "pool_resets": judge.engine.pool_resets_total,
        "n_ctx": rt.n_ctx,
        "llama_cpp_python": llama_cpp_version(),
    }


def run(spec: dict[str, Any]) -> dict[str, Any]:
    scenario = spec["scenario"]
    n = spec["n_parallel"]
    data = spec.get("data")
    if scenario == "official":
        items = load_items(spec["items"], data, lengths=spec.get("lengths", "spread"))
        judge = _judge(spec, n_parallel=n, greedy=spec.get("greedy", False),
                       max_new=spec.get("max_new_tokens", 1024))
        wall, results = _timed(judge, [replace(it.request, id=it.id) for it in items])
        out = _summary(judge, wall, results)
    elif scenario == "short":
        judge = _judge(spec, n_parallel=n, greedy=spec.get("greedy", False),
                       max_new=spec.get("max_new_tokens", 128))
        wall, results = _timed(judge, short_requests(spec["items"]))
        out = _summary(judge, wall, results)
        out["scores"] = [getattr(r, "score", None) for r in results]
    elif scenario == "rubrics":
        items = load_items(spec["responses"], data, lengths=spec.get("lengths", "spread"))
        requests = [
            replace(it.request, rubric=PRESETS[name], id=f"{it.id}/{name}")
            for it in items
            for name in PRESETS
        ]
        if spec.get("order", "shuffled") == "shuffled":
            random.Random(spec.get("seed", 0)).shuffle(requests)
        judge = _judge(spec, n_parallel=n, greedy=True, max_new=spec.get("max_new_tokens", 64))
        wall, results = _timed(judge, requests)
        out = _summary(judge, wall, results)
    elif scenario == "determinism":
        items = load_items(spec["items"], data, lengths=spec.get("lengths", "shortest"))
        requests = [replace(it.request, id=it.id) for it in items]
        max_new = spec.get("max_new_tokens", 32)
        with _judge(spec, n_parallel=1, greedy=True, max_new=max_new) as one:
            _, base = _timed(one, requests)
        judge = _judge(spec, n_parallel=n, greedy=True, max_new=max_new)
        wall, results = _timed(judge, requests)
        pairs = [
            (a, b)
            for a, b in zip(base, results, strict=True)
            if not isinstance(a, Failure) and not isinstance(b, Failure)
        ]
        out = _summary(judge, wall, results)
        out.update(
            compared=len(pairs),
            same_score=sum(a.score == b.score for a, b in pairs) / max(1, len(pairs)),
            same_text=sum(a.raw_output == b.raw_output for a, b in pairs) / max(1, len(pairs)),
            max_prob_diff_same_text=max(
                (
                    abs(a.probabilities[k] - b.probabilities[k])
                    for a, b in pairs
                    if a.raw_output == b.raw_output
                    for k in a.probabilities
                ),
                default=None,
            ),
            max_prob_diff=max(
                (abs(a.probabilities[k] - b.probabilities[k]) for a, b in pairs
                 for k in a.probabilities),
                default=None,
            ),
        )
    else:
        raise ValueError(f"unknown scenario {scenario!r}")
    judge.close()
    out["peak_rss_self"] = rss_bytes()[1]
    out["spec"] = spec
    return out


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    spec = json.loads(Path(args[0]).read_text())
    print(json.dumps(run(spec)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
