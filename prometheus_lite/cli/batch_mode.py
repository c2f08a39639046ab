"""Batch mode of ``grade`` and ``compare``: a JSONL file here, or any input on a Ray cluster.

Exit codes: 1 when every item of the run failed, 75 (``EX_TEMPFAIL``) when items were left
behind by a transient llama.cpp failure (rerun to retry them), 130 on Ctrl-C.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from ..batch import BatchSummary, run_batch
from ..options import ModelOptions
from ..rubrics import load_rubric

__all__ = ["file_batch", "ray_batch", "format_summary", "EXIT_TRANSIENT"]

EXIT_TRANSIENT = 75  # sysexits.h EX_TEMPFAIL: "temporary failure, the user is invited to retry"


def file_batch(
    mode: str,
    opts: ModelOptions,
    input_path: Path,
    output_path: Path | None,
    rubric: str | None,
    progress: bool,
) -> None:
    """Judge a JSONL file here (resumable, one run at a time per output)."""
    default_rubric = load_rubric(rubric) if rubric is not None else None

    def make_judge() -> Any:
        judge = opts.make_judge()
        n = getattr(judge, "n_parallel", None)
        if n is not None:
            rt = getattr(judge, "runtime", None)  # the reason already describes the KV pool
            k, v = getattr(rt, "cache_type_k", None), getattr(rt, "cache_type_v", None)
            pool = f"; KV cache K {k}, V {v}" if k and v else ""
            engine = getattr(judge, "engine", None)
            if getattr(engine, "schedule", None):
                pool += f"; schedule {engine.schedule}"
            click.echo(
                f"{judge.model_name}: {n} parallel slot{'s' if n != 1 else ''} "
                f"({getattr(judge, 'parallel_reason', '')}){pool}",
                err=True,
            )
        return judge

    try:
        summary = run_batch(
            make_judge,
            input_path,
            output_path,
            mode,  # type: ignore[arg-type]
            default_rubric=default_rubric,
            progress=progress,
            dry_run_render=opts.renderer() if opts.dry_run else None,
        )
    except KeyboardInterrupt:
        click.echo(
            "\nInterrupted; rerun the same command to resume (finished items are kept).", err=True
        )
        sys.exit(130)
    click.echo(format_summary(summary, dry_run=opts.dry_run), err=True)
    if summary.transient:
        click.echo(
            f"{summary.transient} item{'s' if summary.transient != 1 else ''} hit a transient "
            "llama.cpp failure; rerun the same command to retry them",
            err=True,
        )
        sys.exit(EXIT_TRANSIENT)
    if summary.errors and not summary.done:
        sys.exit(1)


def ray_batch(
    mode: str,
    opts: ModelOptions,
    input_path: str,
    output_path: str,
    rubric: str | None,
    progress: bool,
    address: str,
    workers: int,
    threads: int,
    batch_size: int,
    gpus: float,
) -> None:
    """Judge any input on a Ray cluster (see ``prometheus_lite.integrations.ray``)."""
    from ..integrations.ray import run_ray_batch

    kwargs = opts.judge_kwargs()
    kwargs.pop("n_threads")  # --threads-per-worker
    try:
        summary = run_ray_batch(
            input_path,
            output_path,
            mode,  # type: ignore[arg-type]
            address=address,
            model=opts.model,
            workers=workers,
            threads_per_worker=threads,
            batch_size=batch_size,
            gpus_per_worker=gpus,
            default_rubric=load_rubric(rubric) if rubric is not None else None,
            progress=progress,
            **kwargs,
        )
    except KeyboardInterrupt:
        click.echo(
            "\nInterrupted; rerun the same command to resume (finished items are kept).", err=True
        )
        sys.exit(130)
    click.echo(format_summary(summary), err=True)
    if summary.errors and not summary.done:
        sys.exit(1)


def format_summary(s: BatchSummary, *, dry_run: bool = False) -> str:
    """The one line printed to stderr after a batch."""
    verb = "rendered" if dry_run else "judged"
    where = f"; output in {s.output}" if s.output is not None else ""
    retry = f", {s.transient} to retry" if s.transient else ""
    return (
        f"{s.total} items: {s.done} {verb}, {s.errors} errors{retry}, {s.skipped} already done"
        f"{where}"
    )
