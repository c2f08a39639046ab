"""Batch invariance of llama.cpp's CPU backend: one item's logits alone and beside others.

The question (issue 16, section 3): does a sequence's output depend on what else is in the
``llama_decode`` batch? This module answers it with llama.cpp's C API only (as
``bench/raw_llama.py`` does), with nothing of prometheus-lite's engine in between:

- :func:`compare` decodes one *item* (a prompt, then teacher-forced tokens, so that every run
  computes the same positions) alone, and again beside ``k`` other sequences whose prompts are
  prefilled in chunks while the item decodes (prefill chunks mixed with one-token decodes, in a
  shuffled sequence order), and reports the largest absolute logit difference and whether the
  argmax agrees, step by step.
- :func:`op_diff` taps every graph node of one step with the context's eval callback
  (``cparams.cb_eval``), keeps the item's rows of each F32 tensor, and lists the ops in graph
  order with the largest difference between the two runs: the first op that differs is where
  the batch shape entered.

``python -m bench.invariance MODEL.gguf [--others 1,2,3,4,7,8] [--ops]`` prints both tables;
``--invariant`` runs them under :data:`INVARIANT` (see ``prometheus_lite.llama``'s
``batch_invariant``) to check the remedy.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["Config", "Raw", "Step", "compare", "op_diff", "time_step", "INVARIANT"]


@dataclass(frozen=True)
class Config:
    """How the context is made; the defaults are llama.cpp's (and the unified-pool engine's)."""

    unified: bool = True  # one KV pool for all sequences (kv_unified)
    flash_attn: int = -1  # llama_flash_attn_type: -1 auto (on for the CPU), 0 off, 1 on
    extra_bufts: bool = True  # CPU_REPACK and friends (use_extra_bufts)
    n_batch: int = 64  # n_batch = n_ubatch
    n_threads: int = 2
    kv_f32: bool = False  # K and V cache in F32 instead of F16
    pad_to: int = 0  # invariant mode: pad every decode to >= this many tokens AND outputs
    n_ctx: int = 1024  # whole pool (unified) or per sequence (not unified)


# The batch-invariant configuration measured by this module (prometheus_lite.llama mirrors it).
INVARIANT = Config(extra_bufts=False, n_batch=63, pad_to=2)

_NO_COMPUTE = {"VIEW", "RESHAPE", "PERMUTE", "TRANSPOSE", "CPY", "SET_ROWS"}
_TILED_ENV = "GGML_CPU_TILED_MM"  # ggml-cpu/tiled/tiled.cpp: "0" turns the K-quant tiles off


class _Tensor(ctypes.Structure):  # struct ggml_tensor (ggml/include/ggml.h), read-only use
    _fields_ = [
        ("type", ctypes.c_int),
        ("buffer", ctypes.c_void_p),
        ("ne", ctypes.c_int64 * 4),
        ("nb", ctypes.c_size_t * 4),
        ("op", ctypes.c_int),
        ("op_params", ctypes.c_int32 * 16),
        ("flags", ctypes.c_int32),
        ("src", ctypes.c_void_p * 10),
        ("view_src", ctypes.c_void_p),
        ("view_offs", ctypes.c_size_t),
        ("data", ctypes.c_void_p),
        ("name", ctypes.c_char * 64),
        ("extra", ctypes.c_void_p),
        ("padding", ctypes.c_char * 8),
    ]


@dataclass
class Step:
    """One ``llama_decode``: rows (token, pos, seq, wants_logits); ``item``: the item's rows."""

    rows: list[tuple[int, int, int, bool]]
    item: list[int] = field(default_factory=list)
    remove: list[int] = field(default_factory=list)  # sequences removed from the pool first


class Raw:
    """One model and one context of ``n_seq`` sequences, through the C API; optional node tap."""

    def __init__(self, path: str | os.PathLike[str], cfg: Config, n_seq: int) -> None:
        import logging

        import llama_cpp as L

        logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
        self.L, self.cfg, self.n_seq = L, cfg, n_seq
        self.tap: dict[str, np.ndarray] | None = None  # filled during a tapped decode
        self._tap_rows: tuple[list[int], list[int]] = ([], [])
        self._op_name = L.llama_cpp.ctypes.CDLL(
            str(Path(L.__file__).parent / "lib" / "libggml-base.so")
        ).ggml_op_desc
        self._op_name.restype = ctypes.c_char_p
        self._op_name.argtypes = [ctypes.c_void_p]
        self.ops: dict[str, str] = {}
        mp = L.llama_model_default_params()
        mp.n_gpu_layers = 0
        mp.use_extra_bufts = cfg.extra_bufts
        self.model = L.llama_model_load_from_file(str(path).encode(), mp)
        if not self.model:
            raise RuntimeError(f"llama.cpp could not load {path}")
        self.n_vocab = int(L.llama_vocab_n_tokens(L.llama_model_get_vocab(self.model)))
        cp = L.llama_context_default_params()
        cp.n_ctx = cfg.n_ctx * (1 if cfg.unified else n_seq)
        cp.n_batch = cp.n_ubatch = cfg.n_batch
        cp.n_seq_max = n_seq
        cp.kv_unified = cfg.unified
        cp.flash_attn_type = cfg.flash_attn
        cp.n_threads = cp.n_threads_batch = cfg.n_threads
        cp.no_perf = True
        if cfg.kv_f32:
            cp.type_k = cp.type_v = 0  # GGML_TYPE_F32
        self._cb = L.ggml_backend_sched_eval_callback(self._eval)  # kept alive with self
        cp.cb_eval = self._cb
        self.ctx = L.llama_init_from_model(self.model, cp)
        if not self.ctx:
            raise RuntimeError("llama.cpp could not create the context")
        self.mem = L.llama_get_memory(self.ctx)
        self.batch = L.llama_batch_init(cfg.n_batch, 0, 1)

    def _eval(self, t, ask, _ud) -> bool:
        if self.tap is None:
            return False
        if ask:
            return True
        x = ctypes.cast(t, ctypes.POINTER(_Tensor)).contents
        op = self._op_name(t).decode()
        if x.type != 0 or not x.data or op in _NO_COMPUTE:  # F32 results only: activations
            return True
        name = x.name.decode()
        k = 1
        while name in self.tap:  # llama.cpp reuses names ("norm-0": attention's and FFN's norm)
            k += 1
            name = f"{x.name.decode()}#{k}"
        ne, nb = list(x.ne), list(x.nb)
        span = sum((n - 1) * s for n, s in zip(ne, nb, strict=True)) + 4
        base = np.ctypeslib.as_array(ctypes.cast(x.data, ctypes.POINTER(ctypes.c_uint8)), (span,))
        a = np.lib.stride_tricks.as_strided(base.view(np.float32) if span % 4 == 0 else
                                            np.frombuffer(base.tobytes() + b"\0" * (-span % 4),
                                                          np.float32),
                                            shape=ne[::-1], strides=nb[::-1])
        tokens, outputs = self._tap_rows
        # The token axis is the outermost one whose size is the number of tokens (or outputs).
        for axis, n in enumerate(ne[::-1]):
            if n in (len(self._rows), self._n_out) and n > 1 or n == len(self._rows) == 1:
                idx = tokens if n == len(self._rows) else outputs
                a = np.take(a, idx, axis=axis)
                break
        self.tap[name] = np.array(a, dtype=np.float32)
        self.ops[name] = op
        return True

    def clear(self) -> None:
        self.L.llama_memory_clear(self.mem, True)

    def seq_rm(self, seq: int) -> None:
        self.L.llama_memory_seq_rm(self.mem, seq, -1, -1)

    def decode(self, step: Step, *, tap: bool = False) -> dict[int, np.ndarray]:
        """Decode ``step``; returns {row: logits copy} for the rows that asked for logits."""
        rows = list(step.rows)
        pad = self.cfg.pad_to - len(rows)
        if pad > 0 or self.cfg.pad_to and sum(r[3] for r in rows) < self.cfg.pad_to:
            rows += self._padding(max(pad, self.cfg.pad_to - sum(r[3] for r in rows)))
        b = self.batch
        for i, (tok, pos, seq, want) in enumerate(rows):
            b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = tok, pos, 1, want
            b.seq_id[i][0] = seq
        b.n_tokens = len(rows)
        self._rows = rows
        out_rows = [i for i, r in enumerate(rows) if r[3]]
        self._n_out = len(out_rows)
        self._tap_rows = (step.item, [out_rows.index(i) for i in step.item if i in out_rows])
        self.tap = {} if tap else None
        try:
            if self.L.llama_decode(self.ctx, b) != 0:
                raise RuntimeError("llama_decode failed")
        finally:
            if self.cfg.pad_to:
                self.seq_rm(self.n_seq - 1)  # padding never stays in the pool
        return {
            i: np.ctypeslib.as_array(self.L.llama_get_logits_ith(self.ctx, i),
                                     shape=(self.n_vocab,)).copy()
            for i in out_rows
        }

    def _padding(self, n: int) -> list[tuple[int, int, int, bool]]:
        # The last sequence id is reserved for padding: token 0 at positions 0.., with logits.
        return [(0, p, self.n_seq - 1, True) for p in range(n)]

    def close(self) -> None:
        L = self.L
        L.llama_batch_free(self.batch)
        L.llama_free(self.ctx)
        L.llama_model_free(self.model)


def schedule(prompt: list[int], forced: list[int], others: list[list[int]], n_batch: int,
             *, item_seq: int, seed: int = 0, finish_one: bool = False) -> list[Step]:
    """The steps of the item beside ``others`` (none: alone), as a unified-pool engine makes them.

    The first steps prefill the item's prompt in chunks of ``n_batch - 1`` tokens (one row is
    kept for padding); every later step decodes one forced token of the item. The others fill
    each step's remaining room: prefill chunks until their prompt is
    in, then one token a step. The sequences' order in the batch is shuffled every step.
    ``finish_one`` stops the first other sequence half-way (``run_item`` removes it from the
    pool, leaving a hole, as a finished slot does).
    """
    rng = random.Random(seed)
    seqs = [s for s in range(len(others) + 1) if s != item_seq]
    done = [0] * len(others)
    steps: list[Step] = []
    item_pos = 0
    chunks = [prompt[i : i + n_batch - 1] for i in range(0, len(prompt), n_batch - 1)]
    n_pre = len(chunks) - 1
    for n, chunk in enumerate(chunks + [[t] for t in forced[:-1]]):
        blocks = [[(t, item_pos + i, item_seq, i == len(chunk) - 1) for i, t in enumerate(chunk)]]
        item_pos += len(chunk)
        room = n_batch - len(chunk) - 1  # one row kept for padding
        order = list(range(len(others)))
        rng.shuffle(order)
        for j in order:
            o = others[j]
            if room <= 0 or finish_one and j == 0 and n - n_pre >= len(forced) // 2:
                continue
            toks = (o[done[j] : done[j] + room] if done[j] < len(o)
                    else [rng.randrange(1, 200)])
            blocks.append([(t, done[j] + i, seqs[j], i == len(toks) - 1)
                           for i, t in enumerate(toks)])
            done[j] += len(toks)
            room -= len(toks)
        rng.shuffle(blocks)
        rows = [r for b in blocks for r in b]
        gone = [seqs[0]] if finish_one and others and n - n_pre == len(forced) // 2 else []
        steps.append(Step(rows, [i for i, r in enumerate(rows) if r[2] == item_seq], gone))
    return steps


def run_item(raw: Raw, steps: list[Step], *, tap_step: int | None = None) -> list[np.ndarray]:
    """The item's logits (its last row's) after every step; taps ``tap_step`` if given."""
    raw.clear()
    out, taps = [], None
    for n, s in enumerate(steps):
        for seq in s.remove:
            raw.seq_rm(seq)
        logits = raw.decode(s, tap=n == tap_step)
        if n == tap_step:
            taps = raw.tap
        last = s.item[-1]
        out.append(logits[last])
    raw.tap = None
    raw.last_taps = taps
    return out


def _item(raw: Raw, seed: int, n_prompt: int, n_forced: int) -> tuple[list[int], list[int]]:
    rng = random.Random(seed)
    hi = min(raw.n_vocab, 30000)
    return ([rng.randrange(1, hi) for _ in range(n_prompt)],
            [rng.randrange(1, hi) for _ in range(n_forced)])


def compare(raw: Raw, n_others: int, *, n_prompt: int = 24, n_forced: int = 8, seed: int = 0,
            finish_one: bool = False) -> dict[str, float]:
    """Max |logit difference| and argmax agreement of the item alone vs beside ``n_others``."""
    prompt, forced = _item(raw, seed, n_prompt, n_forced)
    rng = random.Random(seed + 1)
    others = [[rng.randrange(1, min(raw.n_vocab, 30000)) for _ in range(5 + 9 * j)]
              for j in range(n_others)]
    item_seq = n_others // 2
    nb = raw.cfg.n_batch
    alone = run_item(raw, schedule(prompt, forced, [], nb, item_seq=0))
    mixed = run_item(raw, schedule(prompt, forced, others, nb, item_seq=item_seq, seed=seed,
                                   finish_one=finish_one))
    diffs = [float(np.max(np.abs(a - b))) for a, b in zip(alone, mixed, strict=True)]
    agree = sum(int(np.argmax(a) == np.argmax(b)) for a, b in zip(alone, mixed, strict=True))
    first = next((i for i, d in enumerate(diffs) if d > 0), -1)
    return {"others": n_others, "max_abs": max(diffs), "first_step": first,
            "argmax_agree": agree, "steps": len(diffs)}


def op_diff(raw: Raw, n_others: int, step: int, *, n_prompt: int = 24, n_forced: int = 8,
            seed: int = 0, finish_one: bool = False) -> list[tuple[str, str, float]]:
    """(node name, op, max |diff| of the item's rows) for every F32 node of ``step``, in order."""
    prompt, forced = _item(raw, seed, n_prompt, n_forced)
    rng = random.Random(seed + 1)
    others = [[rng.randrange(1, min(raw.n_vocab, 30000)) for _ in range(5 + 9 * j)]
              for j in range(n_others)]
    item_seq = n_others // 2
    nb = raw.cfg.n_batch
    run_item(raw, schedule(prompt, forced, [], nb, item_seq=0), tap_step=step)
    a = raw.last_taps
    run_item(raw, schedule(prompt, forced, others, nb, item_seq=item_seq, seed=seed,
                           finish_one=finish_one), tap_step=step)
    b = raw.last_taps
    rows = []
    for name, x in a.items():
        y = b.get(name)
        if y is None or y.size != x.size:
            continue
        rows.append((name, raw.ops.get(name, "?"),
                     float(np.max(np.abs(x.reshape(-1) - y.reshape(-1))))))
    return rows


def time_step(raw: Raw, n_seq: int, *, reps: int = 5, n_ctx_used: int = 32) -> float:
    """Median seconds of one decode step of ``n_seq`` sequences, one token each."""
    raw.clear()
    for s in range(n_seq):
        raw.decode(Step([(1 + (s + i) % 100, i, s, i == n_ctx_used - 1)
                         for i in range(n_ctx_used)]))
    times = []
    for r in range(reps):
        step = Step([(5 + s, n_ctx_used + r, s, True) for s in range(n_seq)])
        t0 = time.perf_counter()
        raw.decode(step)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--others", default="1,2,3,4,7,8")
    ap.add_argument("--ops", action="store_true", help="op-by-op table at the first diff")
    ap.add_argument("--invariant", action="store_true")
    ap.add_argument("--not-unified", action="store_true")
    ap.add_argument("--no-repack", action="store_true")
    ap.add_argument("--fa", type=int, default=-1)
    ap.add_argument("--kv-f32", action="store_true")
    ap.add_argument("--n-batch", type=int, default=64)
    ap.add_argument("--pad-to", type=int, default=0)
    ap.add_argument("--finish-one", action="store_true")
    ap.add_argument("--n-prompt", type=int, default=24)
    ap.add_argument("--n-forced", type=int, default=8)
    ap.add_argument("--no-tiled", action="store_true", help=f"{_TILED_ENV}=0")
    ap.add_argument("--time", default="", metavar="N,N",
                    help="also print one JSON line: median step seconds at N sequences")
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args(argv)
    if args.no_tiled or args.invariant:
        os.environ[_TILED_ENV] = "0"
    if args.ops:  # a fused RMS_NORM+MUL leaves the norm's own tensor unwritten: tap them apart
        os.environ["GGML_CPU_DISABLE_FUSION"] = "1"
    cfg = INVARIANT if args.invariant else Config(
        unified=not args.not_unified, flash_attn=args.fa, extra_bufts=not args.no_repack,
        n_batch=args.n_batch, kv_f32=args.kv_f32, pad_to=args.pad_to)
    counts = [int(x) for x in args.others.split(",") if x]
    timed = [int(x) for x in args.time.split(",") if x]
    raw = Raw(args.model, cfg, n_seq=max(counts + timed) + 2)
    print(cfg)
    if timed:
        print(json.dumps({"config": asdict(cfg), "tiled_mm": os.environ.get(_TILED_ENV, "1"),
                          "step_s": {n: time_step(raw, n, reps=args.reps) for n in timed}}),
              flush=True)
    for k in counts:
        print(compare(raw, k, finish_one=args.finish_one, n_prompt=args.n_prompt,
                      n_forced=args.n_forced), flush=True)
    if args.ops and counts:
        k = max(counts)
        kw = {"n_prompt": args.n_prompt, "n_forced": args.n_forced,
              "finish_one": args.finish_one}
        r = compare(raw, k, **kw)
        if r["first_step"] >= 0:
            rows = op_diff(raw, k, r["first_step"], **kw)
            first = next((i for i, x in enumerate(rows) if x[2] > 0), None)
            print(f"step {r['first_step']}: {len(rows)} F32 nodes; first differing: "
                  f"{rows[first] if first is not None else None}")
            for name, op, d in rows[: (first or 0) + 12]:
                print(f"{name:24s} {op:16s} {d:.3g}")
    raw.close()


if __name__ == "__main__":
    main()
