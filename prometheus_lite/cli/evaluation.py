"""``eval``: a judge on the Prometheus papers' benchmark sets, beside the published figures."""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path

import click

from ..options import ModelOptions, model_options

__all__ = ["eval_command"]


@click.command("eval")
@click.argument("sets", nargs=-1, required=True, metavar="SET...")
@click.option(
    "--output",
    "-o",
    "output_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for samples.jsonl (resumable), results.json and results.md.",
)
@click.option(
    "--samples",
    type=click.IntRange(min=1),
    default=None,
    help="Sampled grades per item, averaged [default: 3, as the paper; 1 with --score expected].",
)
@click.option(
    "--score",
    "score_mode",
    type=click.Choice(["sampled", "expected"]),
    default="sampled",
    show_default=True,
    help="sampled: the mean of --samples sampled scores; expected: the expected score "
    "of one greedy run.",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=None,
    help="Only the first N items of each set (hhh: N pairs).",
)
@click.option(
    "--label-field",
    default=None,
    help="The label of a JSONL set's lines [default: the first of label, orig_score, "
    "gpt4_score, score]. A list of numbers is averaged.",
)
@click.option(
    "--data",
    "data_dir",
    default=None,
    type=click.Path(file_okay=False),
    help="The prometheus-benchmarks folder [default: $PROMETHEUS_LITE_BENCH_DATA, else "
    "shared/data/prometheus-benchmarks beside or above the current directory].",
)
@click.option(
    "--resamples",
    type=click.IntRange(min=100),
    default=9999,
    show_default=True,
    help="Bootstrap resamples for the 95 % confidence intervals.",
)
@click.option(
    "--progress/--no-progress", default=True, show_default=True, help="Progress bar on stderr."
)
@model_options
def eval_command(
    opts: ModelOptions,
    sets: tuple[str, ...],
    output_dir: Path,
    samples: int | None,
    score_mode: str,
    limit: int | None,
    label_field: str | None,
    data_dir: str | None,
    resamples: int,
    progress: bool,
) -> None:
    """Evaluate a judge as the Prometheus papers do; print the table with the published figures.

    \b
    SET: vicuna (correlation with GPT-4 scores), mt_bench (graded, no labels in the
    shared copy), hhh (pairwise accuracy from absolute scores), or a JSONL file of grade
    items with a numeric label (--label-field).
    \b
    Example:
      prometheus-lite eval vicuna hhh --model prometheus-7b-v2.0:Q4_K_M -o runs/p7b
    Rerun the same command to resume after an interruption.
    """
    from dataclasses import replace

    from ..evaluate import EvalConfig, load_sets, run_eval
    from ..hub import is_embedded_model, resolve_model
    from ..models import read_model_info

    if score_mode == "expected":
        if samples not in (None, 1):
            raise click.UsageError("--score expected takes one greedy run per item; drop --samples")
        opts = replace(opts, greedy=True)
    elif opts.greedy and (samples or 3) > 1:
        raise click.UsageError(
            "--greedy repeats the same sample; use --samples 1, or --score expected"
        )
    if opts.dry_run:
        for s in load_sets(sets, data_dir, limit=limit, label_field=label_field):
            click.echo(f"{s.name}: {len(s.items)} items ({s.kind}) from {s.path}")
        return
    from ..llama import Sampling

    path = resolve_model(opts.model)
    official = Sampling()
    settings = {
        **asdict(opts),
        # the effective values, so that a default and the same value given explicitly match
        "temperature": official.temperature if opts.temperature is None else opts.temperature,
        "top_p": official.top_p if opts.top_p is None else opts.top_p,
        "repetition_penalty": (
            official.repetition_penalty
            if opts.repetition_penalty is None
            else opts.repetition_penalty
        ),
        "model_path": str(path.resolve()),
        "model_bytes": path.stat().st_size,
        "model_name": read_model_info(path).name or path.stem,
        "embedded": is_embedded_model(path),
    }
    cfg = EvalConfig(
        sets=sets,
        output_dir=output_dir,
        samples=samples or (1 if score_mode == "expected" else 3),
        score=score_mode,
        limit=limit,
        label_field=label_field,
        data_dir=data_dir,
        seed=opts.seed,
        resamples=resamples,
        settings=settings,
    )
    try:
        results = run_eval(cfg, opts.make_judge, progress=progress)
    except KeyboardInterrupt:
        click.echo("\nInterrupted; rerun the same command to resume (samples are kept).", err=True)
        sys.exit(130)
    from ..evaluate import format_table

    click.echo(format_table(results), nl=False)
    click.echo(f"wrote {output_dir / 'results.json'} and results.md", err=True)
