"""``LlamaRuntime(batch_invariant=True)``: the same logits alone and beside other sequences.

The model is a tiny random Llama at Q4_K_M (hidden 256, so its weights take llama.cpp's
repacked Q4_K kernels and its Q6_K output head the tiled K-quant kernel when allowed). The
item (a prompt, then teacher-forced tokens) is decoded alone and beside 3 and 8 other
sequences that prefill in chunks while it decodes, in shuffled order; a 600-token prompt
makes single-row decodes take flash attention's split-KV path (>= 512 cells). Without the
option these differ (measured: up to 3e-8 from the kernels, 0.86 from split KV on the
embedded model; bench/invariance.py).

The check runs in a child process: llama.cpp reads GGML_CPU_TILED_MM once per process, at its
first matmul, so a model decoded earlier in the test session would have fixed it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import convert_fixtures as fx
import pytest
from click.testing import CliRunner

pytest.importorskip("sentencepiece")

CHILD = r'''
import json, random, sys
import numpy as np
from prometheus_lite.llama import BatchEntry, LlamaRuntime

rt = LlamaRuntime(sys.argv[1], n_ctx=1024, n_threads=2, n_seq=9, n_batch=64,
                  batch_invariant=sys.argv[2] == "1")
step_max = rt.max_batch


def run(prompt, forced, others, item_seq):
    """The item's last-row logits after each decode (others fill each step's room)."""
    rng = random.Random(0)
    for s in range(rt.n_seq):
        rt.seq_truncate(s, 0)
    seqs = [s for s in range(len(others) + 1) if s != item_seq]
    done = [0] * len(others)
    chunks = [prompt[i:i + step_max - 1] for i in range(0, len(prompt), step_max - 1)]
    out, pos = [], 0
    for chunk in chunks + [[t] for t in forced]:
        blocks = [[BatchEntry(t, pos + i, item_seq, i == len(chunk) - 1)
                   for i, t in enumerate(chunk)]]
        pos += len(chunk)
        room = step_max - len(chunk)
        for j in rng.sample(range(len(others)), len(others)):
            if room <= 0:
                break
            o = others[j]
            toks = o[done[j]:done[j] + room] if done[j] < len(o) else [rng.randrange(3, 300)]
            blocks.append([BatchEntry(t, done[j] + i, seqs[j], i == len(toks) - 1)
                           for i, t in enumerate(toks)])
            done[j] += len(toks)
            room -= len(toks)
        rng.shuffle(blocks)
        rows = [e for b in blocks for e in b]
        assert rt.decode(rows) == 0
        last = max(i for i, e in enumerate(rows) if e.seq == item_seq)
        out.append(rt.logits(last).copy())
    return out


rng = random.Random(1)
result = {}
for n_prompt, n_others in ((24, 3), (24, 8), (600, 1)):
    prompt = [rng.randrange(3, 300) for _ in range(n_prompt)]
    forced = [rng.randrange(3, 300) for _ in range(6)]
    others = [[rng.randrange(3, 300) for _ in range(5 + 9 * j)] for j in range(n_others)]
    alone = run(prompt, forced, [], 0)
    beside = run(prompt, forced, others, n_others // 2)
    result[f"{n_prompt}/{n_others}"] = max(
        float(np.max(np.abs(a - b))) for a, b in zip(alone, beside))
print(json.dumps(result))
'''


@pytest.fixture(scope="module")
def tiny_q4_k_m(tmp_path_factory) -> Path:
    from prometheus_lite.convert.cli import convert_command

    d = tmp_path_factory.mktemp("invariance")
    spm = fx.train_sentencepiece(d / "spm")
    ckpt = fx.numpy_checkpoint(d / "tiny-llama", spm, layers=2, hidden=256, ff=768, heads=4,
                               kv_heads=2, seed=1)
    res = CliRunner().invoke(convert_command, [str(ckpt), "-o", str(d), "--quant", "Q4_K_M",
                                               "-q"])
    assert res.exit_code == 0, res.output
    return next(d.glob("*.Q4_K_M.gguf"))


def _max_diffs(model: Path, invariant: bool) -> dict[str, float]:
    proc = subprocess.run([sys.executable, "-c", CHILD, str(model), "1" if invariant else "0"],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_same_logits_alone_and_beside_others(tiny_q4_k_m):
    assert _max_diffs(tiny_q4_k_m, invariant=True) == {"24/3": 0.0, "24/8": 0.0, "600/1": 0.0}


ENGINE_CHILD = r'''
import json, sys
from prometheus_lite import Judge
from prometheus_lite.results import GradeRequest

items = [GradeRequest(f"Question {i}?", " ".join(["word"] * (5 + 20 * (i % 5))),
                      "helpfulness", id=str(i)) for i in range(10)]
kw = dict(n_ctx=2048, max_new_tokens=24, greedy=True, n_threads=2, batch_invariant=True)
with Judge(sys.argv[1], n_parallel=1, **kw) as one:
    alone = [(r.raw_output, r.probabilities) for r in one.batch(items)]
with Judge(sys.argv[1], n_parallel=4, kv_cells=6144, **kw) as four:
    beside = [(r.raw_output, r.probabilities) for r in four.batch(items)]
    engine, rt = four.engine, four.runtime
    in_line = all(rt.seq_pos_max(s.seq) + 1 == len(s.tokens) for s in engine._slots)
    result = {"same": [a == b for a, b in zip(alone, beside)],
              "resets": engine.pool_resets_total, "ordered": engine._ordered,
              "record_matches_cache": in_line,
              "used": engine.kv_cells_used, "total": engine.kv_cells_total}
# The fallback: reservations that undercount (as a bug would) overfill the pool while jobs
# run; the engine leaves ordered mode and every item still finishes.
from prometheus_lite.engine import Engine
Engine._still_to_write = lambda self, slot: 0
with Judge(sys.argv[1], n_parallel=4, kv_cells=4096, **kw) as four:
    grades = list(four.batch(items))
    result["fallback_ordered"] = four.engine._ordered
    result["fallback_finished"] = [getattr(r, "score", None) in (1, 2, 3, 4, 5) for r in grades]
print(json.dumps(result))
'''


def test_same_grades_at_four_slots_as_alone_through_pool_resets(tiny_q4_k_m):
    """The engine's ordered pool: no cell is freed while a job runs, so each sequence's
    cells follow its positions and flash attention sums in the order a lone run does; the
    pool (three contexts for four slots) fills and is emptied between jobs. Every grade,
    probabilities included, is the same bits as at --parallel 1."""
    proc = subprocess.run([sys.executable, "-c", ENGINE_CHILD, str(tiny_q4_k_m)],
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["same"] == [True] * 10, out
    assert out["resets"] >= 1 and out["ordered"] and out["record_matches_cache"], out
    assert 0 < out["used"] <= out["total"]
    assert out["fallback_ordered"] is False and out["fallback_finished"] == [True] * 10, out
