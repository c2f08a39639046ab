"""Teacher-forced fidelity: every quantization level reads the reference's own answer.

Free greedy decoding measures chaos more than quantization: one near-tie token changes
the rest of the feedback and then the grade. Here, as llama.cpp's ``perplexity
--kl-divergence`` does, every file reads *the same text*:

1. The reference file (the highest precision) grades each item once (greedy, the
   output constraint on) and so writes its answer: feedback, ``[RESULT] `` and a label.
2. The reference then teacher-forces its own answer up to the label, and every other
   file does the same with the reference's tokens (``Judge.teacher_force``: prefill
   only, nothing sampled). Each gives its full next-token distribution at every answer
   position and its distribution over the labels at the label position.

Prefill is deterministic (the runtime processes the prompt in ``n_batch``-aligned chunks
and reuses only whole chunks, so the logits are bit-identical to a fresh run), and every
level, the reference included, is measured the same way: a rerun gives identical figures.
Each worker also forces its first item a second time at the end and records whether the
logits were bit-identical (``repeat_bit_identical``).

Memory: token-level KL needs the reference's whole distribution at every answer position
(49,152 floats per position for SmolLM2, 32,000 for Prometheus). One file is loaded at a
time (one child process per file, as the rest of the benchmark), so the reference's
log-probabilities are *streamed to a temporary file* (float32, ``positions x n_vocab``;
for 100 items of at most 128 answer tokens on SmolLM2 at most 2.5 GB, deleted after the
run) and each level memory-maps it and reads one item's rows at a time: a worker holds
one item's logits (and the matching reference rows) at once, whatever the number of items.

``python -m prometheus_lite.bench.forced SPEC OUT`` runs one file (SPEC and OUT are JSON
files written and read by :func:`run_forced`); progress goes to stdout as
``PROGRESS <done> <total>`` lines.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from prometheus_lite.results import CompareRequest, Request

from .data import load_items, load_pairs

__all__ = ["MAX_ITEMS", "ForcedItem", "forced_items", "measure_forced", "split_counts"]

VICUNA, MT_BENCH = "vicuna_eval.jsonl", "mt_bench_eval.jsonl"
LOGPROBS = "reference_logprobs.f32"
# The most items split_counts() can draw from the shared sets (320 vicuna, 320 mt_bench,
# 221 hhh pairs): at 640, 320 come from vicuna.
MAX_ITEMS = 640
ANSWERS = "reference_answers.json"


@dataclass(frozen=True)
class ForcedItem:
    """One teacher-forced item: an absolute grade or an A/B comparison."""

    id: str
    mode: str  # "absolute" or "relative"
    request: Request
    gpt4: float | None = None  # absolute: mean GPT-4 score (vicuna), else None
    chosen: str | None = None  # relative: "A" or "B", the response HHH Alignment prefers


def split_counts(n: int) -> tuple[int, int, int]:
    """(vicuna, mt_bench, hhh) items for ``n`` in all: a quarter A/B pairs (at least one
    from two items on), the rest absolute, two thirds of them from the labelled vicuna."""
    n_rel = max(1, n // 4) if n >= 2 else 0
    n_abs = n - n_rel
    n_vicuna = math.ceil(n_abs * 2 / 3)
    return n_vicuna, n_abs - n_vicuna, n_rel


def forced_items(n: int, data_dir: str | None, lengths: str = "spread") -> list[ForcedItem]:
    """``n`` items over the shared sets, spread over prompt lengths (deterministic;
    ``lengths="shortest"``: the shortest of each set, for smoke runs)."""
    n_vicuna, n_mt, n_rel = split_counts(n)
    out: list[ForcedItem] = []
    for name, k in ((VICUNA, n_vicuna), (MT_BENCH, n_mt)):
        if k:
            out += [
                ForcedItem(it.id, "absolute", it.request, gpt4=it.gpt4)
                for it in load_items(k, data_dir, files=(name,), lengths=lengths)
            ]
    if n_rel:
        for k, pair in enumerate(load_pairs(n_rel, data_dir, lengths=lengths)):
            c, r = pair.chosen, pair.rejected
            # Alternate the chosen response's position so a judge's A/B bias cancels out.
            a, b, chosen = (c, r, "A") if k % 2 == 0 else (r, c, "B")
            request = CompareRequest(
                c.instruction, a.response, b.response, c.rubric, None, id=pair.id
            )
            out.append(ForcedItem(pair.id, "relative", request, chosen=chosen))
    return out


# -- the worker -----------------------------------------------------------------------------


def _progress(done: int, total: int) -> None:
    print(f"PROGRESS {done} {total}", flush=True)


def _log_probs(logits: np.ndarray) -> np.ndarray:
    """Full-vocabulary log-softmax per row, computed in float64, stored as float32."""
    from scipy.special import log_softmax

    return log_softmax(logits.astype(np.float64), axis=-1).astype(np.float32)


def _token_stats(ref: np.ndarray, lp: np.ndarray) -> tuple[list[float], int]:
    """Per-position KL(reference || level) in nats, and the positions where both put
    their highest probability on the same token."""
    r, q = ref.astype(np.float64), lp.astype(np.float64)
    kl = np.sum(np.exp(r) * (r - q), axis=-1)
    same = int(np.sum(np.argmax(r, axis=-1) == np.argmax(q, axis=-1)))
    return [float(x) for x in kl], same


def measure_forced(spec: dict[str, Any], progress: Callable[[int, int], None] = _progress) -> dict:
    """Teacher-force one file over the items of ``spec`` (see :func:`run_forced`)."""
    from prometheus_lite import Judge
    from prometheus_lite.results import Failure

    items = forced_items(spec["n_items"], spec.get("data_dir"), spec.get("lengths", "spread"))
    by_id = {it.id: it for it in items}
    store = Path(spec["store"])
    reference = spec["role"] == "reference"
    total = 1 + len(items)
    judge = Judge(
        spec["model"],
        n_ctx=spec.get("n_ctx"),
        n_threads=spec["threads"],
        n_gpu_layers=0,
        greedy=True,
        max_new_tokens=spec["max_new_tokens"],
        seed=spec.get("seed", 0),
        # One slot: the reference's greedy answers, and so every figure, are then the same
        # in every run (with more slots they would depend on how items were batched).
        n_parallel=1,
        # KV cache types as llama.cpp names them (f16, q8_0, q4_0): their fidelity cost.
        cache_type_k=spec.get("cache_type_k", "f16"),
        cache_type_v=spec.get("cache_type_v", "f16"),
    )
    progress(1, total)
    started = time.perf_counter()
    records: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    first: tuple[ForcedItem, list[int], str] | None = None  # for the repeat check

    def force(it: ForcedItem, answer: list[int]) -> tuple[Any, np.ndarray]:
        nonlocal first
        tf = judge.teacher_force(it.request, answer)
        if first is None:
            first = (it, answer, hashlib.sha256(tf.logits.tobytes()).hexdigest())
        return tf, _log_probs(tf.logits[:-1])  # the rows that predict the answer tokens

    def record(it: ForcedItem, tf: Any, kl: list[float], same: int) -> None:
        records.append(
            {
                "id": it.id,
                "mode": it.mode,
                "gpt4": it.gpt4,
                "chosen": it.chosen,
                "label_probs": tf.label_probs,
                "n_positions": len(kl),
                "token_kl": kl,
                "token_top1_same": same,
            }
        )

    if reference:
        answers: list[dict[str, Any]] = []
        offset, n_vocab = 0, None
        with open(store / LOGPROBS, "wb") as f:
            # All answers first: teacher forcing must run alone in the engine (a forced
            # pass batched with other sequences' tokens would not be bit-identical).
            results = list(judge.batch(it.request for it in items))
            for done, (it, res) in enumerate(zip(items, results, strict=True)):
                if isinstance(res, Failure):
                    skipped.append({"id": it.id, "error": res.error})
                    progress(2 + done, total)
                    continue
                answer = list(res.output_tokens[:-1])  # everything up to the label
                tf, lp = force(it, answer)
                n_vocab = lp.shape[1]
                f.write(np.ascontiguousarray(lp).tobytes())
                answers.append({"id": it.id, "answer": answer, "offset": offset, "n": len(lp)})
                offset += len(lp)
                record(it, tf, *_token_stats(lp, lp))
                progress(2 + done, total)
        meta = {"n_vocab": n_vocab, "positions": offset, "answers": answers, "skipped": skipped}
        (store / ANSWERS).write_text(json.dumps(meta), encoding="utf-8")
    else:
        meta = json.loads((store / ANSWERS).read_text(encoding="utf-8"))
        skipped = meta["skipped"]
        shape = (meta["positions"], meta["n_vocab"])
        ref_lp = (
            np.memmap(store / LOGPROBS, dtype=np.float32, mode="r", shape=shape)
            if meta["positions"]
            else None
        )
        for done, a in enumerate(meta["answers"]):
            it = by_id.get(a["id"])
            if it is None:
                raise ValueError(f"the reference answered item {a['id']}, unknown to this run")
            tf, lp = force(it, a["answer"])
            if lp.shape[1] != meta["n_vocab"]:
                raise ValueError(
                    f"{spec['model']} has {lp.shape[1]} tokens in its vocabulary, the reference "
                    f"{meta['n_vocab']}: teacher forcing needs files of the same model"
                )
            assert ref_lp is not None
            ref = np.asarray(ref_lp[a["offset"] : a["offset"] + a["n"]])
            record(it, tf, *_token_stats(ref, lp))
            progress(2 + done, total)
    repeat = None
    if first is not None:
        it, answer, digest = first
        again = judge.teacher_force(it.request, answer)
        repeat = hashlib.sha256(again.logits.tobytes()).hexdigest() == digest
    rt = judge.runtime  # context and batch sizes, for the report
    out = {
        "model": str(spec["model"]),
        "role": spec["role"],
        "items": records,
        "skipped": skipped,
        "repeat_bit_identical": repeat,
        "seconds": time.perf_counter() - started,
        "n_ctx": rt.n_ctx,
        "n_batch": rt.n_batch,
        "threads": spec["threads"],
    }
    judge.close()
    return out


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m prometheus_lite.bench.forced SPEC.json OUT.json", file=sys.stderr)
        return 2
    spec = json.loads(Path(args[0]).read_text(encoding="utf-8"))
    result = measure_forced(spec)
    Path(args[1]).write_text(json.dumps(result), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
