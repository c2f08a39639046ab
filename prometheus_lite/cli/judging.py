"""``grade`` and ``compare``: one item from the options, or a batch file (``--input``)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ..batch import result_record
from ..options import ModelOptions, model_options
from ..results import CompareRequest, Comparison, Grade, GradeRequest, Request
from ..rubrics import load_rubric
from .batch_mode import file_batch, ray_batch

__all__ = ["grade", "compare", "format_result", "DEFAULT_RUBRIC"]

DEFAULT_RUBRIC = "helpfulness"  # single items only; batch lines must name theirs or use --rubric


def _item_options(*responses: Callable[[Any], Any]) -> Callable[[Callable[..., Any]], Any]:
    """Options shared by grade and compare besides the model ones; ``responses`` are the
    command's own response options, listed after --instruction."""
    options = [
        click.option("--instruction", "-i", default=None, help="The instruction (single item)."),
        *responses,
        click.option(
            "--reference",
            default=None,
            help="A reference answer that would get a score of 5 (optional).",
        ),
        click.option(
            "--rubric",
            default=None,
            metavar="NAME|FILE",
            help=f"Preset name (see 'prometheus-lite rubrics') or a JSON rubric file. "
            f"Single item default: {DEFAULT_RUBRIC}. Batch: used for lines "
            "without their own rubric.",
        ),
        click.option(
            "--input",
            "input_path",
            default=None,
            metavar="PATH",
            help="Batch mode: a JSONL file, one item per line (with --ray also Parquet, "
            "a folder of Parquet files, or an s3:// gs:// hdfs:// URI).",
        ),
        click.option(
            "--output",
            "output_path",
            default=None,
            metavar="PATH",
            help="Batch mode: the JSONL results file (appended to; a rerun resumes). "
            "With --ray, a path not ending in .jsonl is a folder of Parquet shards.",
        ),
        click.option(
            "--ray",
            "ray_address",
            default=None,
            is_flag=False,
            flag_value="auto",
            metavar="auto|ADDRESS|local",
            help="Batch mode on a Ray cluster: auto (the running one; the default for a "
            "bare --ray), HOST:PORT, ray://HOST:10001, or local (start one here).",
        ),
        click.option(
            "--workers",
            type=click.IntRange(min=1),
            default=1,
            show_default=True,
            help="With --ray: actors, each holding one copy of the model.",
        ),
        click.option(
            "--threads-per-worker",
            type=click.IntRange(min=1),
            default=None,
            help="With --ray: CPU threads (and reserved CPUs) per actor [default: --threads, "
            "else 1].",
        ),
        click.option(
            "--batch-size",
            type=click.IntRange(min=1),
            default=8,
            show_default=True,
            help="With --ray: items per actor task (a killed actor costs one batch).",
        ),
        click.option(
            "--gpus-per-worker",
            type=click.FloatRange(min=0),
            default=0,
            show_default=True,
            help="With --ray: GPUs reserved per actor (fractions share a GPU).",
        ),
        click.option(
            "--json",
            "as_json",
            is_flag=True,
            help="Single item: print the result as one JSON object.",
        ),
        click.option(
            "--progress/--no-progress",
            default=True,
            show_default=True,
            help="Batch mode: progress bar on stderr.",
        ),
    ]

    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options):
            f = option(f)
        return f

    return decorate



@click.command()
@_item_options(
    click.option("--response", "-r", default=None, help="The response to grade (single item)."),
)
@model_options
def grade(opts: ModelOptions, response: str | None, **item: Any) -> None:
    """Score a response 1-5 against a rubric (absolute grading).

    \b
    Single item:  --instruction TEXT --response TEXT [--reference TEXT] [--rubric NAME|FILE]
    Batch:        --input items.jsonl --output results.jsonl
    Batch lines: {"id", "instruction", "response", "reference_answer"?, "rubric"?}; the
    Feedback Collection's orig_* field names work as they are. A rerun with the same
    --output skips the ids already there (delete error lines to retry them); one run
    at a time per --output. Exit code 1 if every item of the run failed, 75 if some
    hit a transient llama.cpp failure (not recorded: rerun to retry them).
    """
    _judge_command("grade", opts, {"response": response}, **item)


@click.command()
@_item_options(
    click.option("--response-a", "-a", default=None, help="The first response (single item)."),
    click.option("--response-b", "-b", default=None, help="The second response (single item)."),
)
@model_options
def compare(
    opts: ModelOptions, response_a: str | None, response_b: str | None, **item: Any
) -> None:
    """Say which of two responses is better, A or B (relative grading).

    \b
    Single item:  --instruction TEXT --response-a TEXT --response-b TEXT [--rubric ...]
    Batch:        --input pairs.jsonl --output results.jsonl
    Batch lines: {"id", "instruction", "response_a", "response_b", "reference_answer"?,
    "rubric"?}. Resumes like grade. Exit code 1 if every item of the run failed, 75
    if some hit a transient llama.cpp failure (rerun to retry them).
    """
    _judge_command("compare", opts, {"response_a": response_a, "response_b": response_b}, **item)


def _judge_command(
    mode: str,
    opts: ModelOptions,
    responses: dict[str, str | None],
    *,
    instruction: str | None,
    reference: str | None,
    rubric: str | None,
    input_path: str | None,
    output_path: str | None,
    as_json: bool,
    progress: bool,
    ray_address: str | None,
    workers: int,
    threads_per_worker: int | None,
    batch_size: int,
    gpus_per_worker: float,
) -> None:
    given = {"--instruction": instruction, "--reference": reference}
    given.update({"--" + k.replace("_", "-"): v for k, v in responses.items()})
    if input_path is not None:
        clash = [name for name, value in given.items() if value is not None]
        if clash:
            raise click.UsageError(
                f"{', '.join(clash)} cannot be used with --input; put the items in the JSONL file"
            )
        if as_json:
            raise click.UsageError("--json is for single items; batch output is always JSONL")
        if output_path is None and not opts.dry_run:
            raise click.UsageError("batch mode needs --output FILE.jsonl (rerun it to resume)")
        if ray_address is not None:
            if opts.dry_run:
                raise click.UsageError("--dry-run renders prompts here; leave out --ray")
            ray_batch(mode, opts, input_path, output_path, rubric, progress, ray_address,
                       workers, threads_per_worker or opts.threads or 1, batch_size,
                       gpus_per_worker)
            return
        if not Path(input_path).is_file():
            raise click.BadParameter(
                f"File '{input_path}' does not exist (Parquet and remote inputs need --ray).",
                param_hint="'--input'",
            )
        file_batch(mode, opts, Path(input_path), output_path and Path(output_path), rubric,
               progress)
        return
    ray_only = {"--ray": ray_address is not None, "--workers": workers != 1,
                "--threads-per-worker": threads_per_worker is not None,
                "--batch-size": batch_size != 8,
                "--gpus-per-worker": gpus_per_worker != 0}
    if any(ray_only.values()):
        used = ", ".join(name for name, on in ray_only.items() if on)
        raise click.UsageError(f"{used}: batch mode only (with --input and --output)")
    if output_path is not None:
        raise click.UsageError(
            "--output is for batch mode (with --input); single items print to stdout"
        )
    missing = [name for name, value in given.items() if value is None and name != "--reference"]
    if missing:
        raise click.UsageError(f"missing {', '.join(missing)} (or use --input FILE.jsonl)")
    rub = load_rubric(rubric if rubric is not None else DEFAULT_RUBRIC)
    request: Request
    if mode == "grade":
        request = GradeRequest(instruction, responses["response"], rub, reference)  # type: ignore[arg-type]
    else:
        request = CompareRequest(
            instruction,
            responses["response_a"],  # type: ignore[arg-type]
            responses["response_b"],
            rub,
            reference,
        )  # type: ignore[arg-type]
    if opts.dry_run:
        text = opts.renderer()(request).text
        if as_json:
            click.echo(json.dumps({"prompt": text}, ensure_ascii=False))
            return
        # The exact prompt bytes; a newline is added only to keep a terminal tidy.
        sys.stdout.write(text)
        if sys.stdout.isatty() and not text.endswith("\n"):
            sys.stdout.write("\n")
        sys.stdout.flush()
        return
    judge = opts.make_judge(n_parallel=1)  # one item: one slot
    try:
        result = judge.judge(request)
    finally:
        judge.close()
    if as_json:
        click.echo(json.dumps(result_record(result, mode), ensure_ascii=False))  # type: ignore[arg-type]
    else:
        click.echo(format_result(result))


def format_result(result: Grade | Comparison) -> str:
    """A readable block: feedback, result, probabilities, tokens, latency."""
    u = result.usage
    lines = [f"Feedback: {result.feedback}", ""]
    if isinstance(result, Grade):
        lines.append(f"Score: {result.score}   (expected {result.expected_score:.2f})")
    else:
        lines.append(f"Winner: {result.winner}")
    probs = "  ".join(f"{k}: {v:.3f}" for k, v in result.probabilities.items())
    lines.append(f"Probabilities: {probs}")
    lines.append(f"Model: {result.model}  (prompt format {result.prompt_format})")
    lines.append(
        f"Tokens: {u.prompt_tokens} prompt ({u.cached_prompt_tokens} cached), "
        f"{u.completion_tokens} completion; {u.latency_s:.2f} s"
    )
    if u.finish == "budget":
        lines.append("Note: the feedback reached --max-tokens and was closed early.")
    if u.truncated_response_tokens:
        lines.append(
            f"Note: the response was truncated by {u.truncated_response_tokens} "
            "tokens to fit the context."
        )
    return "\n".join(lines)
