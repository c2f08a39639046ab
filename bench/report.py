"""``prometheus-lite bench``: measure GGUF files and write report.md, report.json, report.png.

Orchestration only. Each file is measured in a child process (``worker.py``), then
teacher-forced in another (``forced.py``: the reference first, then every other file over
the reference's answers); the statistics are in ``metrics.py``, the machine in
``system.py``, the variants in ``variants.py``. Nothing here imports ``llama_cpp``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from prometheus_lite.errors import PrometheusLiteError
from prometheus_lite.gguf_reader import HeaderReader
from prometheus_lite.hub import EMBEDDED_MODEL_FILE, is_embedded_model, resolve_model
from prometheus_lite.models import read_model_info

from . import metrics
from .data import DEFAULT_FILES, find_data_dir
from .forced import LOGPROBS, MAX_ITEMS, split_counts
from .system import machine_info, memory_bandwidth, run_child

__all__ = ["OVERHEAD_MIN_RATIO", "BenchConfig", "BenchError", "run_bench"]

SCHEMA = "prometheus-lite-bench/1"
OVERHEAD_MIN_RATIO = 0.95  # the requirement: Judge speed >= 95 % of raw llama.cpp
KV_BYTES = 2  # llama.cpp's default KV cache type is F16 (cparams type_k / type_v)


class BenchError(PrometheusLiteError):
    """A benchmark could not run."""


@dataclass
class BenchConfig:
    models: list[str] = field(default_factory=list)  # empty: the embedded model
    report_dir: Path = Path("reports/bench")
    quants: list[str] = field(default_factory=list)  # with one model: levels to make
    prompts: int = 20
    max_new_tokens: int = 128
    threads: int | None = None  # default: all usable cores
    n_ctx: int | None = None
    data_dir: str | None = None
    files: tuple[str, ...] = DEFAULT_FILES
    lengths: str = "spread"
    max_chars: int | None = None
    overhead_prompts: int = 4
    overhead_rounds: int = 2
    bandwidth_mb: float = 1024
    reference: str | None = None
    engine: str = "native"
    include_source: bool = True
    seed: int = 0
    teacher_forced: int = 100  # items for the teacher-forced fidelity; 0: off


# -- per-file static facts -----------------------------------------------------------------


def _kv_bytes_per_position(path: Path) -> int | None:
    """KV-cache bytes one token position adds (and every later token reads): layers x
    (K + V widths) x 2 bytes (F16 cache)."""
    r = HeaderReader(path)

    def f(key: str) -> Any:
        fld = r.get_field(key)
        return fld.contents() if fld is not None else None

    arch = f("general.architecture")
    n_layer, n_embd = f(f"{arch}.block_count"), f(f"{arch}.embedding_length")
    n_head = f(f"{arch}.attention.head_count")
    if not (n_layer and n_embd and n_head):
        return None
    n_head_kv = f(f"{arch}.attention.head_count_kv") or n_head
    k_len = f(f"{arch}.attention.key_length") or n_embd // n_head
    v_len = f(f"{arch}.attention.value_length") or n_embd // n_head
    return int(n_layer) * int(n_head_kv) * (int(k_len) + int(v_len)) * KV_BYTES


def _static(path: Path) -> dict[str, Any]:
    info = read_model_info(path)
    total_bytes = sum(t.n_bytes for t in info.tensors)
    total_elems = sum(t.n_elements for t in info.tensors)
    names = {t.name for t in info.tensors}
    tied = "output.weight" not in names
    # Generating a token reads every matrix once; token_embd is a row lookup, unless the
    # output projection is tied to it (then it is read in full as the output matrix).
    weight_read = sum(t.n_bytes for t in info.tensors if t.name != "token_embd.weight" or tied)
    return {
        "path": str(path),
        "file": path.name,
        "name": info.name,
        "quantization": info.quantization,
        "tensor_types": info.tensor_type_counts,
        "file_size_bytes": info.file_size,
        "parameters": info.parameter_count,
        "bits_per_weight": 8.0 * total_bytes / total_elems if total_elems else None,
        "weight_bytes_read_per_token": weight_read,
        "kv_bytes_per_position": _kv_bytes_per_position(path),
        "embedded": is_embedded_model(path),
        "synthetic": info.synthetic,  # random weights (convert --synthetic): timings only
    }


# -- summarising one worker's results -------------------------------------------------------


def _summary(static: dict[str, Any], res: dict[str, Any], peak_child: int, bw: float) -> dict:
    items = res["items"]
    lat = [i["latency_s"] for i in items]
    ttft = [i["ttft_s"] for i in items]
    new_prompt = sum(i["prompt_tokens"] - i["cached_prompt_tokens"] for i in items)
    prefill = sum(i["prefill_s"] for i in items)
    gen_tokens = sum(i["completion_tokens"] for i in items)
    decode = sum(i["decode_s"] for i in items)
    gen_tps = gen_tokens / decode if decode else None
    passes = sum(i.get("decode_passes", i["completion_tokens"]) for i in items)
    pass_rate = passes / decode if decode else None  # weight reads per second
    # mean context while generating: prompt plus half the answer
    ctx = sum(i["prompt_tokens"] + i["completion_tokens"] / 2 for i in items) / len(items)
    kv_read = (static["kv_bytes_per_position"] or 0) * ctx
    bytes_per_token = static["weight_bytes_read_per_token"] + kv_read
    ceiling = bw * 1e9 / bytes_per_token if bw else None
    ov = res["overhead"]
    raw_s, judge_s = sum(o["raw_s"] for o in ov), sum(o["judge_s"] for o in ov)
    raw_d, judge_d = sum(o["raw_decode_s"] for o in ov), sum(o["judge_decode_s"] for o in ov)
    return {
        **static,
        "load_s": res["load_s"],
        "n_ctx": res["n_ctx"],
        "threads": res["threads"],
        "prompt_tokens_per_s": new_prompt / prefill if prefill else None,
        "generation_tokens_per_s": gen_tps,
        "ttft_s_p50": metrics.percentile(ttft, 50),
        "ttft_s_p95": metrics.percentile(ttft, 95),
        "latency_s_p50": metrics.percentile(lat, 50),
        "latency_s_p95": metrics.percentile(lat, 95),
        "latency_s_mean": sum(lat) / len(lat),
        "peak_rss_bytes": res.get("peak_rss_grading_bytes") or peak_child,
        "peak_rss_child_bytes": peak_child,
        "baseline_rss_bytes": res.get("baseline_rss_bytes"),
        "mean_prompt_tokens": sum(i["prompt_tokens"] for i in items) / len(items),
        "mean_cached_prompt_tokens": sum(i["cached_prompt_tokens"] for i in items) / len(items),
        "mean_completion_tokens": gen_tokens / len(items),
        "finish_budget": sum(i["finish"] == "budget" for i in items),
        "bandwidth": {
            "bytes_read_per_token": bytes_per_token,
            "kv_bytes_read_per_token": kv_read,
            "mean_context_tokens": ctx,
            "ceiling_tokens_per_s": ceiling,
            "decode_passes_per_s": pass_rate,
            "percent_of_ceiling": 100.0 * pass_rate / ceiling if ceiling and pass_rate else None,
        },
        "overhead": {
            "ratio": raw_s / judge_s if judge_s else None,
            "ratio_generation": raw_d / judge_d if judge_d else None,
            "raw_s": raw_s,
            "judge_s": judge_s,
            "raw_decode_s": raw_d,
            "judge_decode_s": judge_d,
            "calls": len(ov),
            "generated_tokens": sum(o["tokens"] for o in ov),
            "same_feedback_tokens": sum(o["same_feedback_tokens"] for o in ov),
            "runs": ov,
        },
        "items": items,
    }


def _choose_reference(rows: list[dict], explicit: str | None) -> int:
    if explicit:
        want = Path(explicit).resolve()
        for i, r in enumerate(rows):
            if Path(r["path"]).resolve() == want or r["label"] == explicit:
                return i
        raise BenchError(f"--reference {explicit} is not one of the measured files")
    return max(
        range(len(rows)),
        key=lambda i: (rows[i]["bits_per_weight"] or 0, rows[i]["file_size_bytes"]),
    )


def _run_forced(
    files: list[Path],
    ref: int,
    cfg: BenchConfig,
    data_dir: Path,
    threads: int,
    tmp: Path,
    bar: _Progress,
    first_step: int,
) -> tuple[list[dict], int]:
    """Teacher-force every file over the reference's answers (see ``forced.py``): the
    reference first, one child process per file. Returns each file's worker result in
    ``files`` order and the size of the reference's log-probability file."""
    store = tmp / "forced"
    store.mkdir()
    results: list[dict] = [{} for _ in files]
    order = [ref] + [i for i in range(len(files)) if i != ref]
    for n, i in enumerate(order):
        bar.describe(f"teacher-forced {i + 1}/{len(files)}")
        bar.base = first_step + n * (1 + cfg.teacher_forced)
        spec = {
            "model": str(files[i]),
            "role": "reference" if i == ref else "level",
            "n_items": cfg.teacher_forced,
            "data_dir": str(data_dir),
            "store": str(store),
            "threads": threads,
            "n_ctx": cfg.n_ctx,
            "max_new_tokens": cfg.max_new_tokens,
            "seed": cfg.seed,
            "lengths": cfg.lengths,
        }
        spec_path, res_path = tmp / f"forced-spec{i}.json", tmp / f"forced-res{i}.json"
        spec_path.write_text(json.dumps(spec), encoding="utf-8")
        argv = [sys.executable, "-P", "-m", "prometheus_lite.bench.forced"]
        code, _, stderr = run_child(
            [*argv, str(spec_path), str(res_path)], on_line=bar.worker_line, env=dict(os.environ)
        )
        if code != 0 or not res_path.is_file():
            tail = "\n".join(stderr.strip().splitlines()[-15:])
            raise BenchError(f"teacher-forcing {files[i]} failed (exit code {code}):\n{tail}")
        results[i] = json.loads(res_path.read_text(encoding="utf-8"))
    return results, (store / LOGPROBS).stat().st_size


def _forced_summary(ref: dict, res: dict) -> dict:
    """One file's ``teacher_forced`` object: the statistics, the determinism check and a
    short record per item (the per-position KLs stay out of the report)."""
    out = metrics.forced_fidelity(ref["items"], res["items"])
    out["repeat_bit_identical"] = res["repeat_bit_identical"]
    out["seconds"] = res["seconds"]
    out["items"] = [
        {
            "id": r["id"],
            "mode": r["mode"],
            "probabilities": r["label_probs"],
            "expected_score": (
                sum(int(k) * v for k, v in r["label_probs"].items())
                if r["mode"] == "absolute"
                else None
            ),
            "gpt4": r["gpt4"],
            "chosen": r["chosen"],
            "n_positions": r["n_positions"],
            "token_kl_mean": sum(r["token_kl"]) / r["n_positions"] if r["n_positions"] else None,
            "token_top1_same": r["token_top1_same"],
        }
        for r in res["items"]
    ]
    return out


def _fidelity(rows: list[dict], ref: int) -> None:
    r = rows[ref]["items"]
    for row in rows:
        it = row["items"]
        if [x["id"] for x in it] != [x["id"] for x in r]:
            raise BenchError("models were measured on different prompts")
        row["fidelity"] = metrics.fidelity(
            [x["score"] for x in r],
            [x["expected_score"] for x in r],
            [x["probabilities"] for x in r],
            [x["score"] for x in it],
            [x["expected_score"] for x in it],
            [x["probabilities"] for x in it],
        )
        row["fidelity"]["same_feedback_pct"] = (
            100.0
            * sum(a.get("raw_output") == b.get("raw_output") for a, b in zip(r, it, strict=True))
            / len(it)
        )
        labelled = [x for x in it if x["gpt4"] is not None]
        row["gpt4_correlation"] = metrics.correlations(
            [x["expected_score"] for x in labelled], [x["gpt4"] for x in labelled]
        )


# -- the run --------------------------------------------------------------------------------


class _Progress:
    """A tqdm bar on stderr over every worker step of every file."""

    def __init__(self, total: int, stream: TextIO | None, enabled: bool) -> None:
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, file=stream or sys.stderr, unit="step", dynamic_ncols=True)
        self.base = 0

    def describe(self, text: str) -> None:
        if self.bar is not None:
            self.bar.set_description_str(text)

    def worker_line(self, line: str) -> None:
        if line.startswith("PROGRESS ") and self.bar is not None:
            done = int(line.split()[1])
            self.bar.n = self.base + done
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _resolve_files(cfg: BenchConfig, say) -> tuple[list[Path], dict[str, str], list[str]]:
    models = [resolve_model(m) for m in cfg.models] or [resolve_model(None)]
    notes: dict[str, str] = {}
    labels: list[str] = []
    if cfg.quants:
        if len(models) != 1:
            raise BenchError("--quant makes variants of ONE model; pass exactly one GGUF with it")
        from .variants import build_variants

        src = models[0]
        files, notes = build_variants(
            src,
            cfg.quants,
            cfg.report_dir / "variants",
            engine=cfg.engine,
            n_threads=cfg.threads,
            progress=say,
        )
        labels = [q.upper() for q in cfg.quants]
        if cfg.include_source and src not in files:
            q = read_model_info(src).quantization
            files.insert(0, src)
            labels.insert(0, f"{q} (source)")
            notes[labels[0]] = f"the file given: {src.name}"
        return files, notes, labels
    for m in models:
        q = read_model_info(m).quantization
        labels.append(q if q not in labels else f"{q} ({m.name})")
    return models, notes, labels


def run_bench(cfg: BenchConfig, *, progress: bool = True, stream: TextIO | None = None) -> dict:
    """Measure every file of ``cfg`` and write the three report files; returns the report."""
    missing = [m for m in ("matplotlib", "scipy") if importlib.util.find_spec(m) is None]
    if missing:
        raise BenchError(
            f"the report needs {' and '.join(missing)} (plot and statistics): "
            "pip install 'prometheus-lite[bench]'"
        )
    out_dir = Path(cfg.report_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    err = stream or sys.stderr

    def say(msg: str) -> None:
        if progress:
            print(msg, file=err, flush=True)

    data_dir = find_data_dir(cfg.data_dir)
    files, notes, labels = _resolve_files(cfg, say)
    machine = machine_info()
    threads = cfg.threads or int(machine["usable_cores"])  # type: ignore[arg-type]
    say(f"measuring memory bandwidth ({cfg.bandwidth_mb:.0f} MiB, {threads} threads)")
    bw = memory_bandwidth(cfg.bandwidth_mb, threads=threads)
    if not 0 <= cfg.teacher_forced <= MAX_ITEMS:
        raise BenchError(
            f"--teacher-forced {cfg.teacher_forced}: give 0 (off) to {MAX_ITEMS} items (the "
            "shared vicuna, mt_bench and hhh sets hold no more in the proportions used)"
        )
    statics = [_static(p) for p in files]
    ref = _choose_reference(
        [{**st, "label": lab} for st, lab in zip(statics, labels, strict=True)], cfg.reference
    )
    steps = 1 + cfg.prompts + min(cfg.overhead_prompts, cfg.prompts) * cfg.overhead_rounds
    forced_steps = (1 + cfg.teacher_forced) * len(files) if cfg.teacher_forced else 0
    bar = _Progress(steps * len(files) + forced_steps, err, progress)
    forced: list[dict] | None = None
    logprob_bytes = 0
    rows: list[dict] = []
    measured: list[tuple[Path, str, dict, int]] = []
    started = time.time()
    try:
        with tempfile.TemporaryDirectory(prefix="pl-bench-") as tmp:
            for n, (path, label) in enumerate(zip(files, labels, strict=True)):
                bar.describe(f"{label} ({n + 1}/{len(files)})")
                bar.base = n * steps
                spec = {
                    "model": str(path),
                    "label": label,
                    "prompts": cfg.prompts,
                    "data_dir": str(data_dir),
                    "files": list(cfg.files),
                    "lengths": cfg.lengths,
                    "max_chars": cfg.max_chars,
                    "threads": threads,
                    "n_ctx": cfg.n_ctx,
                    "max_new_tokens": cfg.max_new_tokens,
                    "seed": cfg.seed,
                    "overhead_prompts": cfg.overhead_prompts,
                    "overhead_rounds": cfg.overhead_rounds,
                }
                spec_path, res_path = Path(tmp) / f"spec{n}.json", Path(tmp) / f"res{n}.json"
                spec_path.write_text(json.dumps(spec), encoding="utf-8")
                env = dict(os.environ)
                code, peak, stderr = run_child(
                    [
                        sys.executable,
                        "-P",  # never import a source tree from the working directory
                        "-m",
                        "prometheus_lite.bench.worker",
                        str(spec_path),
                        str(res_path),
                    ],
                    on_line=bar.worker_line,
                    env=env,
                )
                if code != 0 or not res_path.is_file():
                    tail = "\n".join(stderr.strip().splitlines()[-15:])
                    raise BenchError(f"measuring {path} failed (exit code {code}):\n{tail}")
                res = json.loads(res_path.read_text(encoding="utf-8"))
                measured.append((path, label, res, peak))
            if cfg.teacher_forced:
                forced, logprob_bytes = _run_forced(
                    files, ref, cfg, data_dir, threads, Path(tmp), bar, steps * len(files)
                )
    finally:
        bar.close()
    # Measured again after the models: on a shared machine either pass can be slowed by
    # other work, and a slowed pass only underestimates the bandwidth; keep the best.
    say("measuring memory bandwidth again")
    after = memory_bandwidth(cfg.bandwidth_mb, threads=threads)
    bw["gb_per_s_before"], bw["gb_per_s_after"] = bw["gb_per_s"], after["gb_per_s"]
    bw["gb_per_s"] = max(bw["gb_per_s"], after["gb_per_s"])
    bw["gb_per_s_one_thread"] = max(bw["gb_per_s_one_thread"], after["gb_per_s_one_thread"])
    for n, (_, label, res, peak) in enumerate(measured):
        row = _summary(statics[n], res, peak, bw["gb_per_s"])
        row["label"] = f"{label} (synthetic)" if row["synthetic"] else label
        row["how_made"] = notes.get(label)
        row["teacher_forced"] = _forced_summary(forced[ref], forced[n]) if forced else None
        rows.append(row)
    _fidelity(rows, ref)
    ov_raw = sum(r["overhead"]["raw_s"] for r in rows)
    ov_judge = sum(r["overhead"]["judge_s"] for r in rows)
    ratio = ov_raw / ov_judge if ov_judge else None
    embedded_src = any(r["embedded"] for r in rows) or any(
        EMBEDDED_MODEL_FILE.split(".")[0] in r["file"] for r in rows
    )
    source_quantized = bool(cfg.quants) and any("dequantized" in (v or "") for v in notes.values())
    warnings = []
    if len({(r["parameters"], r["name"]) for r in rows}) > 1:
        warnings.append(
            "the files are not all the same model (parameter counts or names differ): "
            "fidelity against the reference compares different models"
        )
    if any(r["synthetic"] for r in rows):
        warnings.append(
            "SYNTHETIC files (prometheus.synthetic: random weights): their timings and memory "
            "are the release's, their grades and fidelity figures mean nothing"
        )
    forced_info = None
    if forced:
        n_vicuna, n_mt, n_rel = split_counts(cfg.teacher_forced)
        skipped = forced[ref]["skipped"]
        forced_info = {
            "items_requested": cfg.teacher_forced,
            "items": len(forced[ref]["items"]),
            "vicuna": n_vicuna,
            "mt_bench": n_mt,
            "hhh_pairs": n_rel,
            "skipped": skipped,
            "reference_logprobs_bytes": logprob_bytes,
            "storage": (
                "the reference's float32 log-probabilities (positions x vocabulary) streamed to "
                "a temporary file, memory-mapped by each level one item at a time, deleted "
                "after the run"
            ),
            "deterministic": all(f["repeat_bit_identical"] is not False for f in forced),
            "determinism": (
                "prefill only, in n_batch-aligned chunks with whole-chunk prefix reuse "
                "(bit-identical to a fresh run); the reference's answers are greedy. Same "
                "files, threads and settings give identical figures (checked by the test "
                "suite with two runs; each worker also repeats its first item and compares "
                "the logits bit for bit)"
            ),
        }
    report = {
        "schema": SCHEMA,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "duration_s": round(time.time() - started, 1),
        "machine": {**machine, "threads_used": threads, "memory_bandwidth": bw},
        "settings": {
            "prompts": cfg.prompts,
            "prompt_files": list(cfg.files),
            "lengths": cfg.lengths,
            "data_dir": str(data_dir),
            "max_new_tokens": cfg.max_new_tokens,
            "n_ctx": rows[0].get("n_ctx") or cfg.n_ctx,
            "device": "CPU (n_gpu_layers=0)",
            "decoding": "greedy, constraint on",
            "repetition_penalty": 1.03,
            "overhead_prompts": min(cfg.overhead_prompts, cfg.prompts),
            "overhead_rounds": cfg.overhead_rounds,
            "quantizer_engine": cfg.engine if cfg.quants else None,
            "teacher_forced_items": cfg.teacher_forced,
        },
        "teacher_forced": forced_info,
        "reference": {
            "label": rows[ref]["label"],
            "file": rows[ref]["file"],
            "bits_per_weight": rows[ref]["bits_per_weight"],
            "dequantized_source": source_quantized,
            "note": rows[ref]["how_made"] or "the highest-precision file in the set",
        },
        "overhead": {
            "ratio": ratio,
            "min_required": OVERHEAD_MIN_RATIO,
            "passes": ratio is not None and ratio >= OVERHEAD_MIN_RATIO,
            "raw_s": ov_raw,
            "judge_s": ov_judge,
            "ratio_generation": (
                sum(r["overhead"]["raw_decode_s"] for r in rows)
                / sum(r["overhead"]["judge_decode_s"] for r in rows)
            ),
        },
        "embedded_model": embedded_src,
        "warnings": warnings,
        "models": rows,
    }
    (out_dir / "report.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    from .render import write_markdown, write_plot

    write_markdown(report, out_dir / "report.md")
    write_plot(report, out_dir / "report.png")
    return report


def config_dict(cfg: BenchConfig) -> dict[str, Any]:
    d = asdict(cfg)
    d["report_dir"] = str(cfg.report_dir)
    return d
