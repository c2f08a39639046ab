"""Constraint cost: time per generated token with and without the output constraint.

Same model, same prompt (a real Prometheus benchmark item), same sampler chain and
seed, the same decode loop; the only difference is the constraint. The two modes are
interleaved round by round so machine noise hits both alike, and the figure is the
ratio of their medians.

    make bench                                  # or, for this file alone:
    pytest bench/test_constraint_cost.py --benchmark-enable -s
    PL_BENCH_TOKENS=512 PL_BENCH_ROUNDS=9 pytest bench/test_constraint_cost.py --benchmark-enable -s
"""

from __future__ import annotations

import json
import os
import statistics

import pytest

from prometheus_lite import GradeRequest, Judge
from prometheus_lite.constraint import SCORE_LABELS
from prometheus_lite.engine import Job
from prometheus_lite.prompts import parse_rendered_absolute

TOKENS = int(os.environ.get("PL_BENCH_TOKENS", "256"))
ROUNDS = int(os.environ.get("PL_BENCH_ROUNDS", "7"))


@pytest.fixture(scope="module")
def judge():
    # official sampling: temperature 1.0, top_p 0.9, rep 1.03
    with Judge(n_ctx=4096, seed=1, n_parallel=1) as j:
        yield j


def benchmark_request(shared_dir) -> GradeRequest:
    with open(shared_dir / "data/prometheus-benchmarks/vicuna_eval.jsonl", encoding="utf-8") as f:
        row = json.loads(f.readline())
    text = row["instruction"]
    parts = parse_rendered_absolute(text[: text.rindex("###Feedback: ") + len("###Feedback: ")])
    return GradeRequest(
        parts["instruction"], parts["response"], parts["rubric"], parts["reference_answer"]
    )


def test_constraint_cost(benchmark, judge, shared_dir):
    n = 16 if benchmark.disabled else TOKENS
    rounds = 1 if benchmark.disabled else ROUNDS
    rt = judge.runtime
    tokens = rt.tokenize_prompt(judge.render(benchmark_request(shared_dir)))
    constraint = judge.constraint(SCORE_LABELS)

    def per_token(c):
        g = judge.engine.run(
            Job(tokens, c, judge.sampling, judge.seed, max_new_tokens=n, stop_at_eog=False)
        )
        return g.decode_s / len(g.tokens), len(g.tokens)

    free, constrained, counts = [], [], []
    for _ in range(rounds):
        f, nf = per_token(None)
        c, nc = per_token(constraint)
        free.append(f)
        constrained.append(c)
        counts.append((nf, nc))
    ratio = statistics.median(constrained) / statistics.median(free)
    benchmark.extra_info.update(
        prompt_tokens=len(tokens),
        rounds=rounds,
        tokens_per_round=counts,
        ms_per_token_unconstrained=1e3 * statistics.median(free),
        ms_per_token_constrained=1e3 * statistics.median(constrained),
        constrained_over_unconstrained=ratio,
    )
    print(
        f"\nconstraint cost over {rounds} interleaved rounds of {n} tokens "
        f"(prompt {len(tokens)} tokens): unconstrained {1e3 * statistics.median(free):.2f} "
        f"ms/token, constrained {1e3 * statistics.median(constrained):.2f} ms/token, "
        f"ratio {ratio:.3f}; tokens per round (unconstrained, constrained): {counts}"
    )
    benchmark.pedantic(per_token, args=(constraint,), rounds=1, iterations=1)
    assert all(nc <= n for _, nc in counts)
