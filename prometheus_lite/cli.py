"""The ``prometheus-lite`` command line: grade, compare, rubrics, info (+ convert, quantize).

Only this module prints and picks exit codes: 0 success, 1 a prometheus-lite error
(``Error: ...`` on stderr; ``PROMETHEUS_LITE_DEBUG=1`` shows the traceback instead)
or a batch in which every item of the run failed, 2 a usage error. Machine-readable
output goes to stdout or the ``--output`` file; progress and logs go to stderr.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any

import click

from .batch import BatchSummary, result_record, run_batch
from .errors import PrometheusLiteError
from .prompts import Prompt
from .results import CompareRequest, Comparison, Grade, GradeRequest, Request
from .rubrics import PRESETS, load_rubric

__all__ = ["main"]

DEBUG_ENV = "PROMETHEUS_LITE_DEBUG"
DEFAULT_RUBRIC = "helpfulness"  # single items only; batch lines must name theirs or use --rubric


def _version() -> str:
    try:
        from importlib.metadata import PackageNotFoundError, version

        return version("prometheus-lite")
    except PackageNotFoundError:  # running from a source tree
        from . import __version__

        return __version__


class _Group(click.Group):
    """Turns PrometheusLiteError from any subcommand into ``Error: ...`` and exit 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PrometheusLiteError as e:
            if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
                raise
            click.echo(f"Error: {e}", err=True)
            ctx.exit(1)


@click.group(cls=_Group)
@click.version_option(_version(), prog_name="prometheus-lite")
@click.option("-v", "--verbose", count=True, help="Log to stderr: -v info, -vv debug.")
def main(verbose: int) -> None:
    """Prometheus LLM judges on llama.cpp, offline, with well-formed output.

    Every answer is 'feedback [RESULT] N': a grade 1-5 (grade) or A/B (compare),
    with the model's probabilities over the possible results.

    \b
    Quick start (the embedded SmolLM2-135M smoke-test model, not a real judge):
      prometheus-lite grade --instruction "2+2?" --response "4" --rubric helpfulness
      prometheus-lite grade --input items.jsonl --output results.jsonl --model PATH.gguf
    """
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    _setup_logging(level)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time (CliRunner swaps it per run)."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def _setup_logging(level: int) -> None:
    """Log prometheus_lite's messages to stderr (only the package logger: the root
    logger, and whatever the host application put there, is left alone)."""
    log = logging.getLogger("prometheus_lite")
    if not any(isinstance(h, _StderrHandler) for h in log.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        log.addHandler(handler)
    log.setLevel(level)


# --------------------------------------------------------------------------- model options


@dataclass(frozen=True)
class ModelOptions:
    """The options every judging command shares (see ``model_options``)."""

    model: str | None
    prompt_format: str
    n_ctx: int | None
    threads: int | None
    n_gpu_layers: int | None
    seed: int
    greedy: bool
    temperature: float | None
    top_p: float | None
    repetition_penalty: float | None
    max_tokens: int
    truncate_response: bool
    dry_run: bool

    def make_judge(self, **extra: Any) -> Any:
        """The Judge these options describe; ``extra`` goes to its constructor as is
        (e.g. ``n_parallel`` for ``serve``)."""
        from .judge import Judge, Sampling  # loads llama.cpp: only when judging

        base = Sampling()
        sampling = Sampling(
            temperature=base.temperature if self.temperature is None else self.temperature,
            top_p=base.top_p if self.top_p is None else self.top_p,
            repetition_penalty=(
                base.repetition_penalty
                if self.repetition_penalty is None
                else self.repetition_penalty
            ),
        )
        return Judge(
            self.model,
            n_ctx=self.n_ctx,
            n_threads=self.threads,
            n_gpu_layers=self.n_gpu_layers,
            seed=self.seed,
            sampling=sampling,
            greedy=self.greedy,
            max_new_tokens=self.max_tokens,
            prompt_format=self.prompt_format,
            truncate_response=self.truncate_response,
            **extra,
        )

    def renderer(self) -> Callable[[Request], Prompt]:
        """Renders prompts for --dry-run, reading the GGUF metadata once."""
        from .judge import prompt_renderer

        return prompt_renderer(self.model, self.prompt_format)


_MODEL_OPTIONS: list[Callable[[Any], Any]] = [
    click.option(
        "--model",
        "-m",
        default=None,
        metavar="PATH|HF_REF|NAME",
        help="GGUF file, Hugging Face reference or release name "
        "[default: the embedded SmolLM2-135M smoke-test model].",
    ),
    click.option(
        "--prompt-format",
        type=click.Choice(["auto", "v1", "v2", "chat"]),
        default="auto",
        show_default=True,
        help="Prompt wrapping; auto reads it from the GGUF metadata.",
    ),
    click.option(
        "--n-ctx",
        type=click.IntRange(min=64),
        default=None,
        help="Context size [default: min(4096, the model's)].",
    ),
    click.option(
        "--threads",
        type=click.IntRange(min=1),
        default=None,
        help="CPU threads [default: all cores].",
    ),
    click.option(
        "--n-gpu-layers",
        type=click.IntRange(min=-1),
        default=None,
        help="Layers to offload to the GPU [default: all, if built with GPU support].",
    ),
    click.option("--seed", type=int, default=0, show_default=True, help="Sampling seed."),
    click.option(
        "--greedy", is_flag=True, help="Deterministic decoding (argmax) instead of sampling."
    ),
    click.option(
        "--temperature",
        type=click.FloatRange(min=0),
        default=None,
        help="Sampling temperature [default: 1.0, as the official library].",
    ),
    click.option(
        "--top-p",
        type=click.FloatRange(min=0, max=1, min_open=True),
        default=None,
        help="Nucleus sampling mass [default: 0.9].",
    ),
    click.option(
        "--repetition-penalty",
        type=click.FloatRange(min=0, min_open=True),
        default=None,
        help="Repetition penalty [default: 1.03].",
    ),
    click.option(
        "--max-tokens",
        type=click.IntRange(min=8),
        default=1024,
        show_default=True,
        help="Budget for the answer (feedback + result); past it the feedback "
        "is closed and the result still written.",
    ),
    click.option(
        "--truncate-response",
        is_flag=True,
        help="Shorten over-long responses to fit the context instead of failing.",
    ),
    click.option(
        "--dry-run",
        is_flag=True,
        help="Print the exact prompt text without loading the model "
        "(batch: JSON lines with a 'prompt' field).",
    ),
]


def model_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Adds the shared model options; the command gets them as ``opts: ModelOptions``."""
    names = [
        "model",
        "prompt_format",
        "n_ctx",
        "threads",
        "n_gpu_layers",
        "seed",
        "greedy",
        "temperature",
        "top_p",
        "repetition_penalty",
        "max_tokens",
        "truncate_response",
        "dry_run",
    ]

    @functools.wraps(f)
    def wrapper(**kwargs: Any) -> Any:
        opts = ModelOptions(**{n: kwargs.pop(n) for n in names})
        return f(opts=opts, **kwargs)

    for option in reversed(_MODEL_OPTIONS):
        wrapper = option(wrapper)
    return wrapper


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
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            help="Batch mode: a JSONL file, one item per line.",
        ),
        click.option(
            "--output",
            "output_path",
            default=None,
            type=click.Path(dir_okay=False, path_type=Path),
            help="Batch mode: the JSONL results file (appended to; a rerun resumes).",
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


# --------------------------------------------------------------------------- grade / compare


@main.command()
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
    --output skips the ids already there (delete error lines to retry them). Exit code
    1 if every item of the run failed.
    """
    _judge_command("grade", opts, {"response": response}, **item)


@main.command()
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
    "rubric"?}. Resumes like grade. Exit code 1 if every item of the run failed.
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
    input_path: Path | None,
    output_path: Path | None,
    as_json: bool,
    progress: bool,
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
        _batch(mode, opts, input_path, output_path, rubric, progress)
        return
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
    judge = opts.make_judge()
    try:
        result = judge.judge(request)
    finally:
        judge.close()
    if as_json:
        click.echo(json.dumps(result_record(result, mode), ensure_ascii=False))  # type: ignore[arg-type]
    else:
        click.echo(format_result(result))


def _batch(
    mode: str,
    opts: ModelOptions,
    input_path: Path,
    output_path: Path | None,
    rubric: str | None,
    progress: bool,
) -> None:
    default_rubric = load_rubric(rubric) if rubric is not None else None
    try:
        summary = run_batch(
            opts.make_judge,
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
    if summary.errors and not summary.done:
        sys.exit(1)


# --------------------------------------------------------------------------- formatting


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


def format_summary(s: BatchSummary, *, dry_run: bool = False) -> str:
    """The one line printed to stderr after a batch."""
    verb = "rendered" if dry_run else "judged"
    where = f"; output in {s.output}" if s.output is not None else ""
    return f"{s.total} items: {s.done} {verb}, {s.errors} errors, {s.skipped} already done{where}"


# --------------------------------------------------------------------------- rubrics / info


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the full rubrics as JSON.")
def rubrics(as_json: bool) -> None:
    """List the preset rubrics (use a name with --rubric, or write your own JSON file)."""
    if as_json:
        click.echo(
            json.dumps({n: r.to_dict() for n, r in PRESETS.items()}, indent=2, ensure_ascii=False)
        )
        return
    for name, rubric in PRESETS.items():
        click.echo(f"{name}\n    {rubric.criteria}")


def _jsonable(value: Any) -> Any:
    if hasattr(value, "as_dict"):
        return _jsonable(value.as_dict())
    if is_dataclass(value) and not isinstance(value, type):
        return _jsonable(asdict(value))
    if hasattr(value, "to_dict"):
        return _jsonable(value.to_dict())
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


@main.command()
@click.argument("model", required=False)
@click.option("--tensors", is_flag=True, help="Also list every tensor (name, type, shape).")
@click.option("--json", "as_json", is_flag=True, help="Print the model info as JSON.")
def info(model: str | None, tensors: bool, as_json: bool) -> None:
    """Show a GGUF model's metadata (default: the embedded model); reads no weights."""
    from .hub import resolve_model
    from .models import format_info, read_model_info

    model_info = read_model_info(resolve_model(model))
    if as_json:
        data = _jsonable(model_info)
        if not tensors and isinstance(data, dict):
            data.pop("tensors", None)
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))
        return
    click.echo(format_info(model_info, tensors=tensors))


# --------------------------------------------------------------------------- external commands

from prometheus_lite.bench.cli import bench_command  # noqa: E402
from prometheus_lite.convert.cli import convert_command, quantize_command  # noqa: E402
from prometheus_lite.server.cli import serve_command  # noqa: E402

main.add_command(convert_command)
main.add_command(quantize_command)
main.add_command(bench_command)
main.add_command(serve_command)
