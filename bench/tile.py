"""Flash attention's tile threshold with raw ``llama_decode``: the per-token cost of one
pass of 63, 64 and 448 rows, for one sequence's prompt chunk and for a chunk mixed with 7
other sequences' decode rows (each of those sequences ``--context`` tokens long).

    python -P -m prometheus_lite.bench.tile [--model GGUF] [--threads N] [--context 900]

ggml-cpu runs >= 64 query rows through a tiled kernel that skips a 64-cell KV tile only when
all 64 rows mask it, so mixed sequences attend over each other's cells; below 64 rows each
row computes only its own but still steps over every other cell (masked) below the pool's
highest used one, which the last figure (the 63-row chunk with the pool otherwise empty)
shows. The engine keeps passes of several sequences under the tile
(``llama.MIXED_MAX_TOKENS``); the 448-row figures show what a wider lone prompt pass costs,
and the patched build's tiled kernel jumps over the other sequences' tiles. It also times the
engine's decode step: one token of each of the 8 sequences in one pass, against one
sequence's token beside the others and alone, the ceiling of what eight slots gain per
decoded token; and, by depth (:data:`DEPTHS`), one sequence's 63- and 64-row chunks and a
decode step with the pool otherwise empty: what a prompt's own attention costs as it grows,
in the one-row kernel and the tiled one. Prints one JSON line: ms per token and
ms per decode step, medians of ``--repeats``, and the llama-cpp-python build (prometheus-lite's
patched one jumps over masked cells: kernels/llama_cpp/).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from prometheus_lite.hub import resolve_model
from prometheus_lite.llama import BatchEntry, LlamaRuntime
from prometheus_lite.native import llama_cpp_version

# Positions at which one sequence's passes are timed (measure's by_depth).
DEPTHS = (64, 512, 1024, 2048)


def measure(model: str | None, threads: int | None, context: int, repeats: int,
            depths: tuple[int, ...] | None = None) -> dict:
    rt = LlamaRuntime(resolve_model(model), n_ctx=max(4096, context + 64), n_threads=threads,
                      n_seq=9, kv_cells=9 * (context + 520), n_batch=64, max_batch=512)
    rng = np.random.default_rng(0)

    def toks(k: int) -> list[int]:
        return [int(t) for t in rng.integers(100, min(20000, rt.n_vocab), k)]

    def fill(seq: int, n: int, start: int = 0) -> None:
        for p in range(start, start + n, 64):
            k = min(64, start + n - p)
            rc = rt.decode([BatchEntry(t, p + i, seq, i == k - 1) for i, t in enumerate(toks(k))])
            assert rc == 0, rc

    times: dict[str, list[float]] = {}

    def chunk(key: str, rows: int, mixed: bool) -> None:
        """Time one pass: sequence 8's prompt chunk at position 256, beside one decode row
        of each of sequences 0-6 when ``mixed``."""
        rt.seq_truncate(8, 0)
        fill(8, 256)
        n_prompt = rows - (7 if mixed else 0)
        es = [BatchEntry(t, 256 + i, 8, i == n_prompt - 1) for i, t in enumerate(toks(n_prompt))]
        if mixed:
            es += [BatchEntry(toks(1)[0], context, s, True) for s in range(7)]
        t0 = time.perf_counter()
        assert rt.decode(es) == 0
        times.setdefault(key, []).append(1000 * (time.perf_counter() - t0) / rows)
        for s in range(7):
            rt.seq_truncate(s, context)

    steps: dict[str, list[float]] = {}

    def step(key: str, seqs: list[int]) -> None:
        """Time one decode step: one token of each of ``seqs`` at position ``context``."""
        es = [BatchEntry(toks(1)[0], context, s, True) for s in seqs]
        t0 = time.perf_counter()
        assert rt.decode(es) == 0
        steps.setdefault(key, []).append(1000 * (time.perf_counter() - t0))
        for s in seqs:
            rt.seq_truncate(s, context)

    def by_depth(depths: list[int]) -> dict[str, dict]:
        """Sequence 0 alone (the pool otherwise empty) at each depth: ms per token of a
        63-row prompt chunk (flash attention's one-row kernel) and a 64-row one (the tiled
        kernel), and ms of a one-token decode step: what a prompt's own attention costs as
        it grows, per kernel."""
        out: dict[str, dict] = {}
        pos = 0
        for d in depths:
            fill(0, d - pos, pos)
            pos = d
            ms: dict[str, list[float]] = {}
            for _ in range(repeats):
                for key, rows in (("63 rows", 63), ("64 rows", 64), ("decode step", 1)):
                    es = [BatchEntry(t, pos + i, 0, i == rows - 1)
                          for i, t in enumerate(toks(rows))]
                    t0 = time.perf_counter()
                    assert rt.decode(es) == 0
                    ms.setdefault(key, []).append(1000 * (time.perf_counter() - t0) / rows)
                    rt.seq_truncate(0, pos)
            out[str(d)] = {k: float(np.median(v)) for k, v in ms.items()}
        rt.seq_truncate(0, 0)
        return out

    for s in range(8):
        fill(s, context)
    try:
        for _ in range(repeats):
            for rows in (63, 64, 448):
                for mixed in (False, True):
                    chunk(f"{rows} rows, {'8 sequences' if mixed else '1 sequence'}", rows, mixed)
            step("8 sequences", list(range(8)))
            step("1 sequence beside 7", [0])
        # The other sequences' cells gone: what visiting their masked cells cost (every row
        # steps over every cell below the highest used one).
        for s in range(1, 9):  # 8: the chunks' sequence
            rt.seq_truncate(s, 0)
        for _ in range(repeats):
            step("1 sequence, pool otherwise empty", [0])
        rt.seq_truncate(0, 0)
        for _ in range(repeats):
            chunk("63 rows, 1 sequence, pool otherwise empty", 63, False)
        rt.seq_truncate(8, 0)
        depth = by_depth([d for d in depths or DEPTHS if d + 64 <= rt.n_ctx])
    finally:
        rt.close()
    return {"ms_per_token": {k: float(np.median(v)) for k, v in times.items()},
            "decode_step_ms": {k: float(np.median(v)) for k, v in steps.items()},
            "by_depth": depth, "context": context, "threads": threads, "repeats": repeats,
            "llama_cpp_python": llama_cpp_version()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--context", type=int, default=900)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--depths", type=int, nargs="+", default=list(DEPTHS))
    a = ap.parse_args(argv)
    print(json.dumps(measure(a.model, a.threads, a.context, a.repeats, tuple(a.depths))),
          flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
