"""What ``use_extra_bufts = False`` costs: prompt and generation speed, on vs off.

llama.cpp's CPU *extra buffer types* hold weights in layouts made for its fastest CPU
kernels: the repacked Q4_0/IQ4_NL/Q4_K/... layouts of the AVX2/AVX-512/NEON GEMMs
(``CPU_REPACK``) and, in builds for CPUs with AMX, the AMX tile layout. prometheus-lite
turns them off only where the default crashes (``prometheus_lite.native``); this
measures the price of doing so on a CPU where both settings run.

For each file, two models are loaded side by side in one process, one per setting, with
the Judge's context settings (``n_batch`` 64, all cores), and driven by the same
low-level loop as the overhead baseline (``bench/raw_llama.py``): a fresh prompt of
``prompt_tokens`` random tokens (no KV reuse), then ``gen_tokens`` greedy tokens. The
settings alternate within every round and the figures are medians over rounds. Before
a file is loaded with the defaults, a child-process probe checks that they run here
(``native.run_probe``); where they crash, only the fallback is measured.

    python -m prometheus_lite.bench.cpu_backend                       # table on stdout
    python -m prometheus_lite.bench.cpu_backend --levels Q4_1,Q4_0 --rounds 9 --threads 1
    pytest bench/test_cpu_backend.py --benchmark-enable -s            # the same, as a suite
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from prometheus_lite import native
from prometheus_lite.hub import embedded_model_path

from .raw_llama import RawLlama
from .variants import build_variants

__all__ = ["BackendRow", "DEFAULT_LEVELS", "format_table", "measure_file", "measure_levels"]

SOURCE_LEVEL = "Q4_1"  # the embedded model's own level: measured as shipped
DEFAULT_LEVELS = ("Q4_1", "Q4_0", "Q8_0", "Q4_K_M", "F16")

_BUFFER_RE = re.compile(r"(\S+) model buffer size\s*=\s*([\d.]+) MiB")


PHASES = ("prompt", "gen")
CLOCKS = ("wall", "cpu")  # perf_counter; process_time (CPU seconds of all threads)


@dataclass
class BackendRow:
    """One file: tok/s with extra buffer types on and off, per phase and clock.

    ``samples[phase][clock][setting]`` holds one tok/s figure per round. Wall-clock
    figures are what a user waits for; CPU-time figures are steadier on a busy machine
    (another process taking the core does not count), and equal the wall-clock ones on
    an idle machine with one thread.
    """

    level: str
    path: str
    prompt_tokens: int
    gen_tokens: int
    threads: int
    rounds: int
    n_batch: int
    samples: dict[str, dict[str, dict[str, list[float]]]] = field(default_factory=dict)
    buffers: dict[str, dict[str, float]] = field(default_factory=dict)  # setting -> MiB by type
    note: str = ""

    def tps(self, phase: str, clock: str, setting: str) -> float | None:
        xs = self.samples.get(phase, {}).get(clock, {}).get(setting)
        return statistics.median(xs) if xs else None

    def ratio(self, phase: str, clock: str = "wall") -> float | None:
        """off / on: 1.0 means the fallback costs nothing, 0.5 means half the speed."""
        on, off = self.tps(phase, clock, "on"), self.tps(phase, clock, "off")
        return off / on if on and off else None


def _buffers(log: list[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in log:
        m = _BUFFER_RE.search(line)
        if m:
            out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(2))
    return out


def measure_file(
    path: str | os.PathLike[str],
    level: str,
    *,
    prompt_tokens: int = 512,
    gen_tokens: int = 128,
    rounds: int = 5,
    threads: int | None = None,
    n_batch: int = 64,
) -> BackendRow:
    """Prompt and generation tok/s of ``path`` with extra buffer types on and off."""
    threads = threads or os.cpu_count() or 1
    row = BackendRow(level, str(path), prompt_tokens, gen_tokens, threads, rounds, n_batch)
    probe = native.run_probe(path, extra_bufts=True)
    settings = {"off": False}
    if probe.ok:
        settings = {"on": True, "off": False}
    else:
        row.note = f"defaults not measured: the probe was {probe.describe()}"
    models: dict[str, RawLlama] = {}
    try:
        for name, extra in settings.items():
            log: list[str] = []
            models[name] = RawLlama(
                path,
                n_ctx=prompt_tokens + gen_tokens + 8,
                n_threads=threads,
                n_batch=n_batch,
                use_extra_bufts=extra,
                load_log=log,
            )
            row.buffers[name] = _buffers(log)
        rng = np.random.default_rng(0)
        n_vocab = next(iter(models.values())).n_vocab
        row.samples = {p: {c: {k: [] for k in models} for c in CLOCKS} for p in PHASES}
        for r in range(rounds + 1):  # round 0 warms up (page cache, thread pool)
            # A fresh prompt per round, the same for both settings: its first token
            # differs from the last round's, so no KV cache is reused.
            prompt = rng.integers(0, n_vocab, prompt_tokens).tolist()
            prompt[0] = r % n_vocab
            order = list(models) if r % 2 == 0 else list(reversed(models))
            for name in order:
                run = models[name].run(prompt, gen_tokens)
                if r == 0:
                    continue
                s = row.samples
                s["prompt"]["wall"][name].append(prompt_tokens / run.prefill_s)
                s["prompt"]["cpu"][name].append(prompt_tokens / max(run.prefill_cpu_s, 1e-9))
                s["gen"]["wall"][name].append(gen_tokens / run.gen_s)
                s["gen"]["cpu"][name].append(gen_tokens / max(run.gen_cpu_s, 1e-9))
    finally:
        for m in models.values():
            m.close()
    return row


def level_files(
    levels: Sequence[str],
    variants_dir: str | os.PathLike[str],
    *,
    progress: Callable[[str], None] | None = None,
) -> list[tuple[str, Path]]:
    """The embedded model at each level: Q4_1 is the shipped file, the others are made
    with prometheus-lite's quantizer (``bench/variants.py``) and cached."""
    src = embedded_model_path()
    wanted = [lv.upper() for lv in levels]
    others = [lv for lv in wanted if lv != SOURCE_LEVEL]
    files = build_variants(src, others, variants_dir, progress=progress)[0]
    made = dict(zip(others, files, strict=True))
    return [(lv, src if lv == SOURCE_LEVEL else made[lv]) for lv in wanted]


def measure_levels(
    levels: Sequence[str] = DEFAULT_LEVELS,
    variants_dir: str | os.PathLike[str] = ".benchmarks/variants",
    *,
    progress: Callable[[str], None] | None = None,
    **kwargs: int | None,
) -> list[BackendRow]:
    rows = []
    for level, path in level_files(levels, variants_dir, progress=progress):
        if progress:
            progress(f"measuring {level} ({path.name})")
        rows.append(measure_file(path, level, **kwargs))  # type: ignore[arg-type]
    return rows


def _fmt(x: float | None, spec: str = "8.1f") -> str:
    return format(x, spec) if x is not None else " " * (int(spec.split(".")[0]) - 1) + "-"


def format_table(rows: Sequence[BackendRow], clock: str = "wall") -> str:
    """A fixed-width table: tok/s with extra buffer types on and off, and off/on."""
    if not rows:
        return "(no rows)"
    r0 = rows[0]
    what = "wall clock" if clock == "wall" else "per CPU-second (process_time)"
    lines = [
        f"use_extra_bufts on vs off, tok/s {what}: prompt {r0.prompt_tokens} tokens "
        f"(n_batch {r0.n_batch}), generation {r0.gen_tokens} tokens, {r0.threads} "
        f"thread(s), median of {r0.rounds} rounds",
        f"{'level':<7} {'prompt on':>10} {'off':>8} {'off/on':>6}  "
        f"{'gen on':>8} {'off':>8} {'off/on':>6}  extra buffers (on)",
    ]
    for r in rows:
        on_bufs = r.buffers.get("on", {})
        extra = {k: v for k, v in on_bufs.items() if k not in ("CPU", "CPU_Mapped")}
        extra_s = ", ".join(f"{k} {v:.0f} MiB" for k, v in extra.items()) or "none"
        lines.append(
            f"{r.level:<7} {_fmt(r.tps('prompt', clock, 'on'), '10.1f')} "
            f"{_fmt(r.tps('prompt', clock, 'off'))} {_fmt(r.ratio('prompt', clock), '6.2f')}  "
            f"{_fmt(r.tps('gen', clock, 'on'))} {_fmt(r.tps('gen', clock, 'off'))} "
            f"{_fmt(r.ratio('gen', clock), '6.2f')}  {extra_s if 'on' in r.buffers else '-'}"
            + (f"  ({r.note})" if r.note else "")
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m prometheus_lite.bench.cpu_backend", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--levels", default=",".join(DEFAULT_LEVELS))
    parser.add_argument("--variants-dir", default=".benchmarks/variants")
    parser.add_argument("--prompt-tokens", type=int, default=512)
    parser.add_argument("--gen-tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--n-batch", type=int, default=64)
    a = parser.parse_args(argv)
    rows = measure_levels(
        [lv for lv in a.levels.split(",") if lv],
        a.variants_dir,
        progress=lambda msg: print(msg, flush=True, file=sys.stderr),
        prompt_tokens=a.prompt_tokens,
        gen_tokens=a.gen_tokens,
        rounds=a.rounds,
        threads=a.threads,
        n_batch=a.n_batch,
    )
    print(format_table(rows, "wall"))
    print()
    print(format_table(rows, "cpu"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
