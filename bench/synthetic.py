"""``prometheus-lite bench --synthetic RELEASE``: what a judge release costs on this machine,
per quantization level, before downloading it.

Each level's synthetic file (``convert --synthetic``: the release's shape and tokenizer, random
weights; kernel costs do not depend on the values) is made once and cached (the files are
deterministic, so a rerun reuses them), then measured in its own child process
(``python -m prometheus_lite.bench.synthetic SPEC OUT``), so load time and peak RSS are that
level's alone:

- load: ``Judge(...)`` construction as ``grade`` does it (one slot, the default context);
- typical lengths: the median prompt of ``--prompts`` benchmark items (vicuna and mt_bench,
  spread over lengths) rendered in the model's own prompt format and tokenized by its
  tokenizer; the median of vicuna's GPT-4 feedbacks plus ``[RESULT] N``, tokenized;
- prefill: the first ``prefill_tokens`` tokens of a benchmark prompt, in the Judge's chunks;
- generation: ``gen_tokens`` one-token decode steps after that prompt (greedy);
- peak RSS (``VmHWM`` of the child) and KV-cache bytes per token.

A typical grade's latency is DERIVED, not timed: median prompt tokens / prefill rate + median
feedback tokens / generation rate (a first grade: no prefix reuse). Generation is set against
the memory-bandwidth ceiling: every generated token reads the weights (token_embd is a row
lookup) and the KV cache of its context once, so rate <= bandwidth / bytes read per token.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_lite.errors import PrometheusLiteError

__all__ = ["SYNTHETIC_LEVELS", "SyntheticConfig", "cache_dir", "ensure_files", "run_synthetic"]

SCHEMA = "prometheus-lite-bench-synthetic/1"
# --quant all: the native quantizer's usual levels. F16 is left out (two bytes a weight: 14.5
# GB at 7B, 26 GB at 13B, more than many machines' RAM); ask for it with --quant F16.
SYNTHETIC_LEVELS = ("Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_0")
DIRECT_TYPES = ("F32", "F16", "BF16")  # written directly (--outtype), not by the quantizer
CACHE_ENV = "PROMETHEUS_LITE_SYNTHETIC_DIR"
PROMPT_FILES = ("vicuna_eval.jsonl", "mt_bench_eval.jsonl")
FEEDBACK_FILE = "vicuna_eval.jsonl"  # GPT-4's feedback, three per item (mt_bench has none)
CLOSING = " [RESULT] 5"  # what follows the feedback in a v2 answer


class SyntheticBenchError(PrometheusLiteError):
    """The synthetic benchmark could not run."""


@dataclass
class SyntheticConfig:
    release: str
    levels: list[str] = field(default_factory=lambda: list(SYNTHETIC_LEVELS))
    report_dir: Path = Path("reports/bench-synthetic")
    seed: int = 0
    overrides: dict[str, Any] = field(default_factory=dict)
    prompts: int = 20  # benchmark items for the typical lengths
    prefill_tokens: int = 128
    gen_tokens: int = 16
    threads: int | None = None
    n_ctx: int | None = None
    data_dir: str | None = None
    bandwidth_mb: float = 512
    cache: Path | None = None  # default: cache_dir()
    n_gpu_layers: int = 0  # -1: all layers on the GPU (a CUDA/Metal build of llama.cpp)


def cache_dir() -> Path:
    """Where synthetic files are kept: $PROMETHEUS_LITE_SYNTHETIC_DIR, else ``synthetic/`` in
    prometheus-lite's cache folder ($PROMETHEUS_LITE_CACHE_DIR, else ~/.cache/prometheus-lite;
    ``prometheus_lite.native.cache_dir``)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    from prometheus_lite.native import cache_dir as own_cache

    return own_cache() / "synthetic"


def ensure_files(cfg: SyntheticConfig, *, threads: int = 0, progress: bool = False,
                 say: Any = None) -> dict[str, Path]:
    """The synthetic file of every level, made (all missing levels in one run) or reused."""
    from prometheus_lite.convert.convert import output_name
    from prometheus_lite.convert.synthetic import convert_synthetic, synthetic_name

    from prometheus_lite.models import read_model_info

    folder = (cfg.cache or cache_dir()) / f"seed{cfg.seed}"
    name = synthetic_name(cfg.release.lower(), cfg.overrides)
    paths = {lv: folder / output_name(name, lv) for lv in cfg.levels}
    missing = []
    for lv, p in paths.items():
        try:
            if p.is_file() and read_model_info(p).synthetic:
                continue
        except PrometheusLiteError:
            pass  # unreadable: made again
        missing.append(lv)
    if say:
        reused = [lv for lv in cfg.levels if lv not in missing]
        say(f"synthetic files in {folder}: reusing {', '.join(reused) or 'none'}; making "
            f"{', '.join(missing) or 'none'}")
    direct = [lv for lv in missing if lv in DIRECT_TYPES]
    quants = [lv for lv in missing if lv not in DIRECT_TYPES]
    for outtype in direct or [None]:
        if outtype is None and not quants:
            break
        convert_synthetic(
            cfg.release, folder, quants=quants, outtype=outtype.lower() if outtype else None,
            seed=cfg.seed, overrides=cfg.overrides, progress=progress, nthread=threads,
        )
        quants = []
    return paths


# -- the child: one level --------------------------------------------------------------------


def _typical_lengths(judge: Any, spec: dict[str, Any]) -> dict[str, Any]:
    from .data import find_data_dir, load_items

    folder = find_data_dir(spec.get("data_dir"))
    items = load_items(spec["prompts"], folder, files=PROMPT_FILES, lengths="spread")
    rt = judge.runtime
    prompt = [len(rt.tokenize_prompt(judge.render(it.request))) for it in items]
    closing = len(rt.tokenize(CLOSING, add_special=False, parse_special=False))
    feedback = []
    for line in (folder / FEEDBACK_FILE).read_text(encoding="utf-8").splitlines():
        texts = json.loads(line).get("gpt4_feedback") or [] if line.strip() else []
        for text in texts if isinstance(texts, list) else [texts]:
            feedback.append(len(rt.tokenize(str(text), add_special=False,
                                             parse_special=False)) + closing)
    return {
        "items": len(items),
        "files": list(PROMPT_FILES),
        "feedback_file": FEEDBACK_FILE,
        "prompt_tokens_median": statistics.median(prompt),
        "prompt_tokens_range": [min(prompt), max(prompt)],
        "feedback_tokens_median": statistics.median(feedback) if feedback else None,
        "feedback_texts": len(feedback),
        "first_prompt": rt.tokenize_prompt(judge.render(items[0].request)),
    }


def _check_gpu_build() -> None:
    from prometheus_lite.llama import supports_gpu_offload

    if not supports_gpu_offload():
        raise SyntheticBenchError(
            "--n-gpu-layers asks for GPU offload, but this llama-cpp-python build has no GPU "
            "backend: build it with CMAKE_ARGS=\"-DGGML_CUDA=on\" (or Metal on macOS), or drop "
            "--n-gpu-layers")


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    import llama_cpp  # noqa: F401  - part of the baseline
    import numpy as np

    from prometheus_lite import Judge
    from prometheus_lite.llama import BatchEntry, gpu_devices

    from .system import rss_bytes

    n_gpu_layers = spec.get("n_gpu_layers", 0)
    if n_gpu_layers:
        _check_gpu_build()
    gpus_before = gpu_devices() if n_gpu_layers else []
    baseline, _ = rss_bytes()
    t0 = time.perf_counter()
    judge = Judge(spec["model"], n_ctx=spec.get("n_ctx"), n_threads=spec["threads"],
                  n_gpu_layers=n_gpu_layers, greedy=True, n_parallel=1)
    load_s = time.perf_counter() - t0
    rt = judge.runtime
    lengths = _typical_lengths(judge, spec)
    prompt = lengths.pop("first_prompt")
    while len(prompt) < spec["prefill_tokens"]:  # a short prompt repeated, never past n_ctx
        prompt = prompt + prompt
    n_pre = min(spec["prefill_tokens"], rt.n_ctx - spec["gen_tokens"] - 1)
    prompt = prompt[:n_pre]

    def prefill(tokens: list[int]) -> None:
        for a in range(0, len(tokens), rt.n_batch):
            chunk = tokens[a:a + rt.n_batch]
            last = a + len(chunk) == len(tokens)
            entries = [BatchEntry(t, a + i, 0, last and i == len(chunk) - 1)
                       for i, t in enumerate(chunk)]
            if rt.decode(entries) != 0:
                raise SyntheticBenchError(f"llama_decode failed at position {a}")

    prefill(prompt[:8])  # warm-up (not measured): first-call allocations
    rt.seq_truncate(0, 0)
    t0 = time.perf_counter()
    prefill(prompt)
    prefill_s = time.perf_counter() - t0
    token, pos = int(np.argmax(rt.logits(-1))), len(prompt)
    t0 = time.perf_counter()
    for _ in range(spec["gen_tokens"]):
        if rt.decode([BatchEntry(token, pos, 0, True)]) != 0:
            raise SyntheticBenchError(f"llama_decode failed at position {pos}")
        token, pos = int(np.argmax(rt.logits(-1))), pos + 1
    gen_s = time.perf_counter() - t0
    _, peak = rss_bytes()
    gpus_after = gpu_devices() if n_gpu_layers else []
    out = {
        "model": spec["model"],
        "load_s": load_s,
        "n_ctx": rt.n_ctx,
        "n_batch": rt.n_batch,
        "threads": spec["threads"],
        "prefill_tokens": len(prompt),
        "prefill_s": prefill_s,
        "gen_tokens": spec["gen_tokens"],
        "gen_s": gen_s,
        "kv_bytes_per_token": rt.kv_bytes_per_token(),
        "baseline_rss_bytes": baseline,
        "peak_rss_bytes": peak,
        "n_gpu_layers": rt.n_gpu_layers,
        # what this process holds on the GPUs once loaded and run: weights, KV pool, buffers
        "gpu_bytes_used": (sum(d["free"] for d in gpus_before)
                           - sum(d["free"] for d in gpus_after)) if gpus_before else None,
        "gpus": [f"{d['description'] or d['name']} ({d['total'] / 2**30:.0f} GiB)"
                 for d in gpus_before],
        "lengths": lengths,
    }
    judge.close()
    return out


# -- the parent ------------------------------------------------------------------------------


def _row(level: str, static: dict[str, Any], res: dict[str, Any], bw: float) -> dict[str, Any]:
    pp = res["prefill_tokens"] / res["prefill_s"]
    tg = res["gen_tokens"] / res["gen_s"]
    lengths = res["lengths"]
    ctx = res["prefill_tokens"] + res["gen_tokens"] / 2
    read = static["weight_bytes_read_per_token"] + res["kv_bytes_per_token"] * ctx
    ceiling = bw * 1e9 / read if bw else None
    fb = lengths["feedback_tokens_median"] or 0
    return {
        "label": f"{level} (synthetic)",
        "level": level,
        "synthetic": True,
        "file": static["file"],
        "file_size_bytes": static["file_size_bytes"],
        "bits_per_weight": static["bits_per_weight"],
        "parameters": static["parameters"],
        "load_s": res["load_s"],
        "prompt_tokens_per_s": pp,
        "generation_tokens_per_s": tg,
        "typical_grade_s": lengths["prompt_tokens_median"] / pp + fb / tg,
        "typical_grade": "derived: median prompt tokens / prefill rate + median feedback "
                         "tokens / generation rate",
        "peak_rss_bytes": res["peak_rss_bytes"],
        "gpu_bytes_used": res.get("gpu_bytes_used"),
        "kv_bytes_per_token": res["kv_bytes_per_token"],
        "bytes_read_per_generated_token": read,
        "bandwidth_ceiling_tokens_per_s": ceiling,
        "percent_of_bandwidth_ceiling": 100 * tg / ceiling if ceiling else None,
        "measured": {k: res.get(k) for k in ("prefill_tokens", "prefill_s", "gen_tokens",
                                             "gen_s", "n_ctx", "n_batch", "threads",
                                             "n_gpu_layers", "gpus")},
        "lengths": lengths,
    }


def _markdown(report: dict[str, Any]) -> str:
    s, m = report["settings"], report["machine"]
    lengths = report["models"][0]["lengths"] if report["models"] else {}
    bw = m["memory_bandwidth"]
    on_gpu = bool(s.get("n_gpu_layers"))
    if on_gpu:
        where = (f"{s['device']}; CPU {m.get('cpu')}. GPU memory bandwidth "
                 + (f"{bw['gb_per_s']} GB/s ({bw['method']})" if bw else
                    "not measured (no PyTorch with CUDA here), so no ceiling"))
    else:
        where = (f"{m.get('cpu')}, {s['threads']} threads, memory bandwidth {bw['gb_per_s']} "
                 "GB/s (np.dot read test, best of runs)")
    lines = [
        f"# Synthetic {report['release']}: cost per quantization level",
        "",
        f"SYNTHETIC files (random weights, the release's shape and tokenizer; "
        f"`prometheus.synthetic = true`): timings and memory only. Source: {report['source']}.",
        "",
        f"Machine: {where}. Measured: prefill of {s['prefill_tokens']} tokens in "
        f"{s['n_batch']}-token chunks, "
        f"{s['gen_tokens']} generated tokens, n_ctx {s['n_ctx']}.",
        f"Typical grade (derived): median prompt {lengths.get('prompt_tokens_median')} tokens "
        f"and median feedback {lengths.get('feedback_tokens_median')} tokens (incl. "
        f"`[RESULT] N`): prompts of {lengths.get('items')} items of {', '.join(PROMPT_FILES)} "
        f"(spread over lengths) in the model's prompt format, the "
        f"{lengths.get('feedback_texts')} GPT-4 feedbacks of {FEEDBACK_FILE}; no prefix reuse.",
        "",
        "| level | file | load | prompt tok/s | gen tok/s | typical grade | peak RSS | "
        + ("GPU memory | " if on_gpu else "") + "KV/token | gen / bandwidth ceiling |",
        "|---|---|---|---|---|---|---|---|---|" + ("---|" if on_gpu else ""),
    ]
    for r in report["models"]:
        pct, pub = r["percent_of_bandwidth_ceiling"], r.get("published_size")
        size = f"{r['file_size_bytes'] / 1e9:.2f} GB" + (
            f" (published {pub['bytes'] / 1e9:.2f}, {pub['difference_pct']:+.2f} %)" if pub else "")
        lines.append(
            f"| {r['label']} | {size} | {r['load_s']:.1f} s | "
            f"{r['prompt_tokens_per_s']:.1f} | {r['generation_tokens_per_s']:.2f} | "
            f"{_seconds(r['typical_grade_s'])} | {r['peak_rss_bytes'] / 2**30:.2f} GiB | "
            + (f"{_gib(r.get('gpu_bytes_used'))} | " if on_gpu else "")
            + f"{r['kv_bytes_per_token'] / 1024:.0f} KiB | "
            f"{'-' if pct is None else f'{pct:.0f} %'} |"
        )
    lines += ["", f"Command: `{report['command']}`", ""]
    return "\n".join(lines)


def _seconds(s: float) -> str:
    return f"{s:.0f} s" if s >= 10 else f"{s:.2f} s"


def _gib(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**30:.2f} GiB"


def run_synthetic(cfg: SyntheticConfig, *, progress: bool = True, command: str = "") -> dict:
    """Make or reuse the files, measure every level in a child, write synthetic.{json,md}."""
    from prometheus_lite.convert.base_configs import PUBLISHED_SIZES, base_config

    from .data import find_data_dir
    from .report import _static
    from .system import gpu_bandwidth, machine_info, memory_bandwidth, run_child

    base = base_config(cfg.release)
    cfg.release = base.release

    def say(msg: str) -> None:
        if progress:
            print(msg, file=sys.stderr, flush=True)

    if cfg.n_gpu_layers:
        _check_gpu_build()  # before making files that can take minutes
    data_dir = find_data_dir(cfg.data_dir)
    machine = machine_info()
    threads = cfg.threads or int(machine["usable_cores"])  # type: ignore[arg-type]
    paths = ensure_files(cfg, threads=threads, progress=progress, say=say)

    def bandwidth() -> dict[str, Any] | None:
        if cfg.n_gpu_layers:
            say("measuring GPU memory bandwidth")
            return gpu_bandwidth()
        say(f"measuring memory bandwidth ({cfg.bandwidth_mb:.0f} MiB, {threads} threads)")
        return memory_bandwidth(cfg.bandwidth_mb, threads=threads, passes=4)

    bw = bandwidth()
    rows, started = [], time.time()
    with tempfile.TemporaryDirectory(prefix="pl-synth-") as tmp:
        for n, (level, path) in enumerate(paths.items()):
            say(f"{level} ({n + 1}/{len(paths)}): {path.name}")
            spec = {"model": str(path), "prompts": cfg.prompts, "data_dir": str(data_dir),
                    "threads": threads, "n_ctx": cfg.n_ctx, "prefill_tokens": cfg.prefill_tokens,
                    "gen_tokens": cfg.gen_tokens, "n_gpu_layers": cfg.n_gpu_layers}
            spec_path, res_path = Path(tmp) / f"spec{n}.json", Path(tmp) / f"res{n}.json"
            spec_path.write_text(json.dumps(spec), encoding="utf-8")
            code, _, stderr = run_child([sys.executable, "-P", "-m",
                                         "prometheus_lite.bench.synthetic", str(spec_path),
                                         str(res_path)])
            if code != 0 or not res_path.is_file():
                tail = "\n".join(stderr.strip().splitlines()[-15:])
                raise SyntheticBenchError(f"measuring {path} failed (exit code {code}):\n{tail}")
            res = json.loads(res_path.read_text(encoding="utf-8"))
            row = _row(level, _static(path), res, 0.0)
            published = PUBLISHED_SIZES.get((cfg.release, level)) if not cfg.overrides else None
            row["published_size"] = (
                {"bytes": published[0], "source": published[1],
                 "difference_pct": 100 * (row["file_size_bytes"] / published[0] - 1)}
                if published else None)
            rows.append(row)
    after = bandwidth()
    if bw and after:  # a slowed pass only underestimates
        bw["gb_per_s"] = max(bw["gb_per_s"], after["gb_per_s"])
    for r in rows:
        ceiling = bw["gb_per_s"] * 1e9 / r["bytes_read_per_generated_token"] if bw else None
        r["bandwidth_ceiling_tokens_per_s"] = ceiling
        r["percent_of_bandwidth_ceiling"] = (100 * r["generation_tokens_per_s"] / ceiling
                                             if ceiling else None)
    first = rows[0]["measured"] if rows else {}
    report = {
        "schema": SCHEMA,
        "synthetic": True,
        "release": cfg.release,
        "source": f"config.json of {base.source}; vocabulary: {base.vocab_note}",
        "overrides": cfg.overrides,
        "seed": cfg.seed,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "duration_s": round(time.time() - started, 1),
        "command": command,
        "machine": {**machine, "memory_bandwidth": bw},
        "settings": {"threads": threads, "prefill_tokens": cfg.prefill_tokens,
                     "gen_tokens": cfg.gen_tokens, "n_ctx": first.get("n_ctx"),
                     "n_batch": first.get("n_batch"), "prompts": cfg.prompts,
                     "data_dir": str(data_dir), "n_gpu_layers": cfg.n_gpu_layers,
                     "device": (f"GPU: {', '.join(first.get('gpus') or ['?'])}, n_gpu_layers="
                                f"{cfg.n_gpu_layers}" if cfg.n_gpu_layers
                                else "CPU (n_gpu_layers=0)")},
        "models": rows,
    }
    out = Path(cfg.report_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "synthetic.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    (out / "synthetic.md").write_text(_markdown(report), encoding="utf-8")
    return report


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m prometheus_lite.bench.synthetic SPEC.json OUT.json",
              file=sys.stderr)
        return 2
    spec = json.loads(Path(args[0]).read_text(encoding="utf-8"))
    Path(args[1]).write_text(json.dumps(measure(spec), indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
