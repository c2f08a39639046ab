"""Measure one GGUF file in its own process: ``python -m prometheus_lite.bench.worker SPEC OUT``.

A child process per model makes load time, peak resident memory and the page cache state
per model, and gives every byte back to the system before the next model loads. SPEC is a
JSON file (written by ``report.py``); the results go to the JSON file OUT. Progress goes to
stdout as ``PROGRESS <done> <total>`` lines for the parent's progress bar.

Phases:

1. load: ``Judge(model, greedy=True, ...)`` construction, timed.
2. warm-up: one short request (not measured), so one-off allocations are not in item 1,
   and every measured prompt finds the same shared template prefix in the KV cache.
3. grading: every benchmark item through ``Judge.judge`` (constraint on, greedy); the
   runtime's ``Generation`` of each call gives the prefill / decode split.
4. overhead: the same prompts again, each through the Judge and through the raw
   low-level loop (``raw_llama.py``) with the same prompt tokens, the same number of
   generated tokens, the same decode calls and the same KV prefix reuse; interleaved so
   machine noise hits both, with the order swapped every other round.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any


def _progress(done: int, total: int) -> None:
    print(f"PROGRESS {done} {total}", flush=True)


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    import llama_cpp  # noqa: F401  - loaded before the baseline, so it is part of it

    from prometheus_lite import Judge
    from prometheus_lite.constraint import SCORE_LABELS
    from prometheus_lite.results import GradeRequest

    from .data import load_items
    from .raw_llama import RawLlama
    from .system import rss_bytes

    items = load_items(
        spec["prompts"],
        spec.get("data_dir"),
        files=tuple(spec.get("files") or ("vicuna_eval.jsonl",)),
        lengths=spec.get("lengths", "spread"),
        max_chars=spec.get("max_chars"),
    )
    k = min(spec.get("overhead_prompts", 4), len(items))
    rounds = spec.get("overhead_rounds", 2)
    total = 1 + len(items) + k * rounds
    baseline_rss, _ = rss_bytes()

    t0 = time.perf_counter()
    judge = Judge(
        spec["model"],
        n_ctx=spec.get("n_ctx"),
        n_threads=spec["threads"],
        n_gpu_layers=0,
        greedy=True,
        max_new_tokens=spec["max_new_tokens"],
        seed=spec.get("seed", 0),
        n_parallel=1,  # one grade at a time: latency, and the overhead against the raw loop
    )
    load_s = time.perf_counter() - t0
    _progress(1, total)
    rt = judge.runtime
    warm_up = GradeRequest("Say hello.", "Hello!", items[0].request.rubric)
    judge.judge(warm_up)  # not measured

    reserve = judge.constraint(SCORE_LABELS).reserve

    def closing_tokens(grade: Any) -> list[int]:
        """The closing tokens the Judge wrote in one batch when the feedback budget ran out."""
        if grade.usage.finish != "budget":
            return []
        budget = min(judge.max_new_tokens, rt.n_ctx - grade.usage.prompt_tokens) - reserve
        return list(grade.output_tokens[budget:-1])

    results = []
    for i, item in enumerate(items):
        grade = judge.judge(item.request)
        u = grade.usage
        forced = closing_tokens(grade)
        results.append(
            {
                "id": item.id,
                "chars": item.chars,
                "gpt4": item.gpt4,
                "score": grade.score,
                "expected_score": grade.expected_score,
                "probabilities": grade.probabilities,
                "latency_s": u.latency_s,
                "prefill_s": u.prefill_s,
                "decode_s": u.decode_s,
                "ttft_s": u.latency_s - u.decode_s,
                "prompt_tokens": u.prompt_tokens,
                "cached_prompt_tokens": u.cached_prompt_tokens,
                "completion_tokens": u.completion_tokens,
                "finish": u.finish,
                # llama_decode calls while generating: one per sampled token but the last,
                # the closing tokens in one batch. Each reads every weight once.
                "decode_passes": len(grade.output_tokens) - 1 - max(0, len(forced) - 1),
                "raw_output": grade.raw_output,
            }
        )
        _progress(2 + i, total)
    _, peak_self = rss_bytes()

    # -- overhead: Judge vs the raw low-level loop, interleaved ---------------------------
    overhead: list[dict[str, Any]] = []
    prompts = [rt.tokenize_prompt(judge.render(it.request)) for it in items[:k]]
    last = rt.tokenize_prompt(judge.render(items[-1].request))  # what the Judge's cache holds
    with RawLlama(
        spec["model"], n_ctx=rt.n_ctx, n_threads=spec["threads"], n_batch=rt.n_batch
    ) as raw:
        # Put the raw context in the Judge's cache state as far as the next prompt can tell:
        # the prefix the last graded prompt shares with the first one, plus one differing
        # token, so both reuse exactly the same number of tokens.
        shared = next(
            (i for i, (a, b) in enumerate(zip(last, prompts[0], strict=False)) if a != b),
            min(len(last), len(prompts[0])) - 1,
        )
        raw.run(last[: shared + 1], 1)
        step = 1 + len(items)
        shape: dict[str, tuple[int, list[int]]] = {}  # id -> (tokens, closing) of its grade

        def judge_call(it: Any) -> Any:
            grade = judge.judge(it.request)
            shape[it.id] = (len(grade.output_tokens), closing_tokens(grade))
            return grade

        def raw_call(it: Any, tokens: list[int]) -> Any:
            n, forced = shape[it.id]
            return raw.run(
                tokens, n, forced=forced, repetition_penalty=judge.sampling.repetition_penalty
            )

        for rnd in range(rounds):
            for it, tokens in zip(items[:k], prompts, strict=True):
                # Odd rounds run the raw side first (greedy decoding repeats the Judge's
                # answer of round 0, so its length is known), so order effects cancel out.
                if rnd % 2 == 1:
                    r = raw_call(it, tokens)
                    grade = judge_call(it)
                else:
                    grade = judge_call(it)
                    r = raw_call(it, tokens)
                u, out = grade.usage, list(grade.output_tokens)
                overhead.append(
                    {
                        "id": it.id,
                        "round": rnd,
                        "tokens": len(out),
                        "judge_s": u.latency_s,
                        "judge_decode_s": u.decode_s,
                        "judge_prefill_s": u.prefill_s,
                        "judge_cached": u.cached_prompt_tokens,
                        "raw_s": r.total_s,
                        "raw_decode_s": r.gen_s,
                        "raw_prefill_s": r.prefill_s,
                        "raw_cached": r.reused,
                        "same_length": len(r.tokens) == len(out),
                        "same_feedback_tokens": r.tokens[:-1] == out[:-1],
                    }
                )
                step += 1
                _progress(step, total)
    judge.close()
    return {
        "model": str(spec["model"]),
        "label": spec.get("label"),
        "load_s": load_s,
        "baseline_rss_bytes": baseline_rss,
        "peak_rss_grading_bytes": peak_self,
        "n_ctx": rt.n_ctx,
        "n_batch": rt.n_batch,
        "threads": spec["threads"],
        "max_new_tokens": spec["max_new_tokens"],
        "items": results,
        "overhead": overhead,
    }


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m prometheus_lite.bench.worker SPEC.json OUT.json", file=sys.stderr)
        return 2
    spec = json.loads(Path(args[0]).read_text(encoding="utf-8"))
    result = measure(spec)
    Path(args[1]).write_text(json.dumps(result, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
