"""The ``bench`` command (registered into the main CLI as ``prometheus-lite bench``)."""

from __future__ import annotations

import os
from pathlib import Path

import click

from prometheus_lite.errors import PrometheusLiteError

from .data import DATA_ENV, KNOWN_FILES
from .report import OVERHEAD_MIN_RATIO, BenchConfig, run_bench
from .synthetic import SYNTHETIC_LEVELS, SyntheticConfig, run_synthetic

__all__ = ["bench_command"]

EMBEDDED_LEVELS = ("F16", "Q8_0", "Q5_K_M", "Q4_K_M", "Q4_0")


@click.command("bench")
@click.argument("models", nargs=-1)
@click.option(
    "--report",
    "report_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("reports/bench"),
    show_default=True,
    help="Folder for report.md, report.json and report.png (variants go to DIR/variants).",
)
@click.option(
    "--quant",
    "quants",
    multiple=True,
    metavar="LEVEL",
    help="With one model: make this level with prometheus-lite's quantizer and "
    "measure it (repeatable; e.g. --quant F16 --quant Q8_0 --quant Q4_K_M). "
    f"--quant all means {', '.join(EMBEDDED_LEVELS)}.",
)
@click.option(
    "--prompts",
    "-n",
    type=click.IntRange(1),
    default=20,
    show_default=True,
    help="Benchmark prompts per file (spread over prompt lengths).",
)
@click.option(
    "--teacher-forced",
    "teacher_forced",
    type=click.IntRange(0),
    default=100,
    show_default=True,
    help="Items for the teacher-forced fidelity (the reference writes each answer once, every "
    "file reads it: prefill only, deterministic); a quarter are A/B pairs. 0 turns it off.",
)
@click.option(
    "--max-tokens",
    type=click.IntRange(8),
    default=128,
    show_default=True,
    help="Answer budget per grade (feedback + [RESULT] N).",
)
@click.option(
    "--threads",
    type=click.IntRange(1),
    default=None,
    help="CPU threads for llama.cpp and the bandwidth test [default: all cores].",
)
@click.option(
    "--n-ctx",
    type=click.IntRange(256),
    default=None,
    help="Context size [default: min(4096, the model's)].",
)
@click.option(
    "--data",
    "data_dir",
    type=click.Path(file_okay=False),
    default=None,
    help=f"The prometheus-benchmarks folder [default: ${DATA_ENV}, else "
    "shared/data/prometheus-benchmarks beside or above the current directory].",
)
@click.option(
    "--prompt-file",
    "prompt_files",
    multiple=True,
    type=click.Choice(KNOWN_FILES),
    help="Which evaluation set(s) to draw from [default: vicuna_eval.jsonl, the one "
    "with GPT-4 labels].",
)
@click.option(
    "--shortest",
    is_flag=True,
    help="Use the shortest prompts instead of a spread of lengths (quick runs).",
)
@click.option(
    "--overhead-prompts",
    type=click.IntRange(1),
    default=4,
    show_default=True,
    help="Prompts for the Judge-vs-raw-llama.cpp overhead comparison.",
)
@click.option(
    "--overhead-rounds",
    type=click.IntRange(1),
    default=2,
    show_default=True,
    help="Interleaved rounds of the overhead comparison.",
)
@click.option(
    "--bandwidth-mb",
    type=click.FloatRange(16),
    default=1024,
    show_default=True,
    help="Buffer size of the memory-bandwidth test (MiB); keep it far above the CPU caches.",
)
@click.option(
    "--reference",
    default=None,
    help="The file (path or level label) fidelity is measured against [default: the "
    "highest-precision file].",
)
@click.option(
    "--engine",
    type=click.Choice(["native", "llama.cpp"]),
    default="native",
    show_default=True,
    help="Quantizer for --quant.",
)
@click.option(
    "--no-source", is_flag=True, help="With --quant: do not measure the given file itself."
)
@click.option(
    "--synthetic",
    metavar="RELEASE",
    help="Measure a release's cost per level before downloading it: synthetic files (its "
    "shape and tokenizer, random weights; made once and cached) measured for file size, "
    "load, prompt and generation speed, a typical grade's latency, peak RSS, KV bytes per "
    "token and the bandwidth ceiling. --quant all means " + ", ".join(SYNTHETIC_LEVELS) + ".",
)
@click.option("--seed", type=int, default=0, show_default=True, help="With --synthetic.")
@click.option(
    "--override",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="With --synthetic: change a config.json value (a smaller test shape).",
)
@click.option(
    "--prefill-tokens",
    type=click.IntRange(8),
    default=128,
    show_default=True,
    help="With --synthetic: prompt tokens timed per level.",
)
@click.option(
    "--gen-tokens",
    type=click.IntRange(1),
    default=16,
    show_default=True,
    help="With --synthetic: generated tokens timed per level.",
)
@click.option(
    "--n-gpu-layers",
    type=int,
    default=0,
    show_default=True,
    help="With --synthetic: layers offloaded to the GPU (-1: all; needs a CUDA or Metal "
    "build of llama-cpp-python). The report then gives GPU memory and the GPU's bandwidth "
    "ceiling.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def bench_command(
    models: tuple[str, ...],
    report_dir: Path,
    quants: tuple[str, ...],
    prompts: int,
    teacher_forced: int,
    max_tokens: int,
    threads: int | None,
    n_ctx: int | None,
    data_dir: str | None,
    prompt_files: tuple[str, ...],
    shortest: bool,
    overhead_prompts: int,
    overhead_rounds: int,
    bandwidth_mb: float,
    reference: str | None,
    engine: str,
    no_source: bool,
    synthetic: str | None,
    seed: int,
    overrides: tuple[str, ...],
    prefill_tokens: int,
    gen_tokens: int,
    n_gpu_layers: int,
    quiet: bool,
) -> None:
    """Benchmark GGUF judges: size, speed, memory and grade fidelity across quantization levels.

    Measures each MODEL (a GGUF path, hub reference or release name; none: the embedded
    SmolLM2 smoke-test model) on real Prometheus benchmark prompts, each in its own process,
    and compares every file with the highest-precision one: teacher-forced (every file
    reads the reference's answers; KL of the score distribution and per token) and under
    free greedy decoding. Writes DIR/report.md, DIR/report.json and DIR/report.png.

    \b
    Examples:
      prometheus-lite bench --quant all --report reports/smollm2      # embedded model, 5 levels
      prometheus-lite bench a.Q8_0.gguf a.Q4_K_M.gguf --report reports/a
    """
    if synthetic is not None:
        if models:
            raise click.UsageError("--synthetic measures its own files; pass no MODEL")
        _synthetic(synthetic, quants, report_dir, seed, overrides, prompts, prefill_tokens,
                   gen_tokens, threads, n_ctx, data_dir, bandwidth_mb, n_gpu_layers, quiet)
        return
    if n_gpu_layers:
        raise click.UsageError("--n-gpu-layers goes with --synthetic (the fidelity bench runs "
                               "on the CPU)")
    levels = [q for q in quants if q.lower() != "all"]
    if any(q.lower() == "all" for q in quants):
        levels = list(EMBEDDED_LEVELS) + [q for q in levels if q.upper() not in EMBEDDED_LEVELS]
    if levels and len(models) > 1:
        raise click.UsageError("--quant makes variants of one model; pass exactly one MODEL")
    cfg = BenchConfig(
        models=list(models),
        report_dir=report_dir,
        quants=levels,
        prompts=prompts,
        max_new_tokens=max_tokens,
        threads=threads,
        n_ctx=n_ctx,
        data_dir=data_dir,
        files=tuple(prompt_files) or BenchConfig.files,
        lengths="shortest" if shortest else "spread",
        overhead_prompts=overhead_prompts,
        overhead_rounds=overhead_rounds,
        bandwidth_mb=bandwidth_mb,
        reference=reference,
        engine=engine,
        include_source=not no_source,
        teacher_forced=teacher_forced,
    )
    if len(models) + len(levels) + (0 if no_source or not levels else 1) < 1:
        raise click.UsageError("nothing to measure")
    try:
        report = run_bench(cfg, progress=not quiet)
    except PrometheusLiteError as e:
        if os.environ.get("PROMETHEUS_LITE_DEBUG", "") not in ("", "0"):
            raise
        raise click.ClickException(str(e)) from e
    ov = report["overhead"]
    verdict = "ok" if ov["passes"] else f"BELOW {OVERHEAD_MIN_RATIO}"
    click.echo(f"wrote {report_dir / 'report.md'}, report.json, report.png")
    for r in report["models"]:
        f, t = r["fidelity"], r["teacher_forced"]
        forced = (
            f"  forced KL {t['kl_mean'] or 0:.2e} token KL {t['token_kl_mean'] or 0:.2e}"
            if t
            else ""
        )
        click.echo(
            f"  {r['label']:<16} {r['file_size_bytes'] / 1e6:7.1f} MB  "
            f"gen {r['generation_tokens_per_s'] or 0:6.1f} tok/s  "
            f"p50 {r['latency_s_p50']:.2f}s{forced}  free-decoding agree "
            f"{f['agreement_pct']:.0f}% MAD {f['mad_expected']:.3f}"
        )
    click.echo(f"overhead ratio (raw llama.cpp / Judge): {ov['ratio']:.3f} ({verdict})")


def _synthetic(release: str, quants: tuple[str, ...], report_dir: Path, seed: int,
               overrides: tuple[str, ...], prompts: int, prefill_tokens: int, gen_tokens: int,
               threads: int | None, n_ctx: int | None, data_dir: str | None,
               bandwidth_mb: float, n_gpu_layers: int, quiet: bool) -> None:
    from prometheus_lite.convert.synthetic import parse_overrides

    levels = [q.upper() for q in quants if q.lower() != "all"]
    if any(q.lower() == "all" for q in quants) or not quants:
        levels = list(SYNTHETIC_LEVELS) + [q for q in levels if q not in SYNTHETIC_LEVELS]
    if report_dir == Path("reports/bench"):
        report_dir = Path("reports/bench-synthetic")
    command = " ".join(
        ["prometheus-lite bench --synthetic", release, *(f"--quant {q}" for q in quants),
         *(f"--override {o}" for o in overrides), f"--prefill-tokens {prefill_tokens}",
         f"--gen-tokens {gen_tokens}", f"--prompts {prompts}"]
        + ([f"--seed {seed}"] if seed else []) + ([f"--threads {threads}"] if threads else [])
        + ([f"--n-ctx {n_ctx}"] if n_ctx else [])
        + ([f"--n-gpu-layers {n_gpu_layers}"] if n_gpu_layers else [])
    )
    try:
        cfg = SyntheticConfig(
            release, levels=levels, report_dir=report_dir, seed=seed,
            overrides=parse_overrides(overrides), prompts=prompts,
            prefill_tokens=prefill_tokens, gen_tokens=gen_tokens, threads=threads, n_ctx=n_ctx,
            data_dir=data_dir, bandwidth_mb=min(bandwidth_mb, 512), n_gpu_layers=n_gpu_layers,
        )
        report = run_synthetic(cfg, progress=not quiet, command=command)
    except PrometheusLiteError as e:
        if os.environ.get("PROMETHEUS_LITE_DEBUG", "") not in ("", "0"):
            raise
        raise click.ClickException(str(e)) from e
    click.echo(f"wrote {report_dir / 'synthetic.md'}, synthetic.json (SYNTHETIC {release}: "
               "timings and memory only)")
    for r in report["models"]:
        pct = r["percent_of_bandwidth_ceiling"]
        click.echo(
            f"  {r['label']:<20} {r['file_size_bytes'] / 1e9:6.2f} GB  load {r['load_s']:5.1f}s  "
            f"prompt {r['prompt_tokens_per_s']:7.1f} tok/s  gen {r['generation_tokens_per_s']:6.2f}"
            f" tok/s  grade ~{r['typical_grade_s']:.0f}s  RSS {r['peak_rss_bytes'] / 2**30:.2f} GiB"
            f"  KV {r['kv_bytes_per_token'] // 1024} KiB/token  "
            + ("no bandwidth ceiling" if pct is None else f"{pct:.0f}% of bandwidth ceiling")
        )
