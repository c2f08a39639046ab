"""What batch invariance costs: one decode step at 1 and 8 sequences, llama.cpp's defaults
against the batch-invariant configuration (``bench.invariance.INVARIANT``, mirrored by
``LlamaRuntime(batch_invariant=True)``), and whether the item's logits agree alone and beside
others under each.

Each configuration runs in its own child process (llama.cpp reads GGML_CPU_TILED_MM once per
process), one after the other, raw llama.cpp (no engine), unified KV pool, flash attention as
llama.cpp picks it, 2 threads.

    pytest bench/test_invariance.py --benchmark-enable -s
    PL_BENCH_INVARIANCE_MODEL=path.gguf PL_BENCH_INVARIANCE_PROMPT=600 pytest ... -s

PL_BENCH_INVARIANCE_PROMPT=600 makes the item's prompt long enough (>= 512 KV cells) for the
single-row flash-attention split that differs most (0.86 logits on the embedded model).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from prometheus_lite.bench.system import run_child

MODEL = os.environ.get("PL_BENCH_INVARIANCE_MODEL")
PROMPT = os.environ.get("PL_BENCH_INVARIANCE_PROMPT", "24")


def _run(model: str, invariant: bool, smoke: bool) -> dict:
    argv = [sys.executable, str(Path(__file__).with_name("invariance.py")), model,
            "--time", "1" if smoke else "1,8", "--reps", "1" if smoke else "9",
            "--others", "1" if smoke else "1,2,3,4,7,8", "--n-prompt", "8" if smoke else PROMPT,
            "--n-forced", "2" if smoke else "8"]
    if invariant:
        argv.append("--invariant")
    lines: list[str] = []
    code, _, err = run_child(argv, lines.append)
    assert code == 0, err[-3000:]
    timing = json.loads(next(x for x in lines if x.startswith("{\"config\"")))
    agree = [eval(x, {}) for x in lines if x.startswith("{'others'")]  # noqa: S307 (our dicts)
    return {"step_s": timing["step_s"], "agreement": agree}


def test_invariance_cost(benchmark):
    from prometheus_lite.hub import resolve_model

    smoke = benchmark.disabled
    model = MODEL or str(resolve_model(None))
    runs: dict[str, dict] = {}

    def run_all() -> None:
        for name, inv in (("default", False), ("invariant", True)):
            runs[name] = _run(model, inv, smoke)

    benchmark.pedantic(run_all, rounds=1, iterations=1)
    for name, r in runs.items():
        print(f"\n{name}: step seconds {r['step_s']}")
        for a in r["agreement"]:
            print(f"  beside {a['others']}: max |diff| {a['max_abs']:.3g}, "
                  f"argmax {a['argmax_agree']}/{a['steps']}")
    cost = {n: runs["invariant"]["step_s"][n] / runs["default"]["step_s"][n]
            for n in runs["default"]["step_s"]}
    print(f"invariant / default step time: {cost} (model {model})")
    benchmark.extra_info.update(model=model, runs=runs, cost=cost)
    assert all(a["max_abs"] == 0.0 for a in runs["invariant"]["agreement"])
