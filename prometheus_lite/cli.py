"""The ``prometheus-lite`` command line: grade, compare, rubrics, info (+ convert, quantize).

Only this module prints and picks exit codes: 0 success, 1 a prometheus-lite error
(``Error: ...`` on stderr; ``PROMETHEUS_LITE_DEBUG=1`` shows the traceback instead)
or a batch in which every item of the run failed, 2 a usage error, 75 (``EX_TEMPFAIL``)
a batch that left items behind after a transient llama.cpp failure (rerun to retry
them). Machine-readable output goes to stdout or the ``--output`` file; progress and
logs go to stderr.
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
EXIT_TRANSIENT = 75  # sysexits.h EX_TEMPFAIL: "temporary failure, the user is invited to retry"
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
    parallel: int | str = "auto"

    def make_judge(self, *, n_parallel: int | str | None = None) -> Any:
        from .judge import Judge  # loads llama.cpp: only when judging

        return Judge(self.model, **self.judge_kwargs(n_parallel=n_parallel))

    def judge_kwargs(self, *, n_parallel: int | str | None = None) -> dict[str, Any]:
        """``Judge``'s keyword arguments besides the model (also sent to Ray actors)."""
        from .llama import Sampling

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
        return dict(
            n_ctx=self.n_ctx,
            n_threads=self.threads,
            n_gpu_layers=self.n_gpu_layers,
            seed=self.seed,
            sampling=sampling,
            greedy=self.greedy,
            max_new_tokens=self.max_tokens,
            prompt_format=self.prompt_format,
            truncate_response=self.truncate_response,
            n_parallel=self.parallel if n_parallel is None else n_parallel,
        )

    def renderer(self) -> Callable[[Request], Prompt]:
        """Renders prompts for --dry-run, reading the GGUF metadata once."""
        from .judge import prompt_renderer

        return prompt_renderer(self.model, self.prompt_format)


class _Parallel(click.ParamType):
    name = "N|auto"

    def convert(self, value: Any, param: Any, ctx: Any) -> int | str:
        if value == "auto" or isinstance(value, int):
            return value
        try:
            n = int(value)
        except ValueError:
            n = 0
        if n < 1:
            self.fail(f"{value!r} is not 'auto' or a positive integer", param, ctx)
        return n


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
        "--parallel",
        type=_Parallel(),
        default="auto",
        show_default=True,
        help="Items judged at once in one context (batch mode). auto: 16 with GPU offload, "
        "8 on a CPU, fewer if their KV cache would take over a quarter of memory. 1 makes "
        "every result bit-identical to a fresh run of that item.",
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
        "parallel",
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
    --output skips the ids already there (delete error lines to retry them); one run
    at a time per --output. Exit code 1 if every item of the run failed, 75 if some
    hit a transient llama.cpp failure (not recorded: rerun to retry them).
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
            _ray_batch(mode, opts, input_path, output_path, rubric, progress, ray_address,
                       workers, threads_per_worker or opts.threads or 1, batch_size,
                       gpus_per_worker)
            return
        if not Path(input_path).is_file():
            raise click.BadParameter(
                f"File '{input_path}' does not exist (Parquet and remote inputs need --ray).",
                param_hint="'--input'",
            )
        _batch(mode, opts, Path(input_path), output_path and Path(output_path), rubric,
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


def _batch(
    mode: str,
    opts: ModelOptions,
    input_path: Path,
    output_path: Path | None,
    rubric: str | None,
    progress: bool,
) -> None:
    default_rubric = load_rubric(rubric) if rubric is not None else None

    def make_judge() -> Any:
        judge = opts.make_judge()
        n = getattr(judge, "n_parallel", None)
        if n is not None:
            click.echo(
                f"{judge.model_name}: {n} parallel slot{'s' if n != 1 else ''} "
                f"({getattr(judge, 'parallel_reason', '')})",
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


def _ray_batch(
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
    from .integrations.ray import run_ray_batch

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
    retry = f", {s.transient} to retry" if s.transient else ""
    return (
        f"{s.total} items: {s.done} {verb}, {s.errors} errors{retry}, {s.skipped} already done"
        f"{where}"
    )


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
    """Show a GGUF model's metadata (default: the embedded model); reads no weights.

    Also shows how llama.cpp's CPU backend will load models on this machine (found by a
    probe in a child process, once per llama.cpp build and CPU; see README "CPUs with AMX").
    """
    from .hub import resolve_model
    from .models import format_info, read_model_info
    from .native import cpu_backend

    model_info = read_model_info(resolve_model(model))
    backend_error: PrometheusLiteError | None = None
    try:
        backend = cpu_backend()
        backend_json: dict[str, Any] = backend.as_dict()
        summary = backend.summary()
    except PrometheusLiteError as e:  # reported after the metadata, then exit 1
        backend_error, backend_json = e, {"error": str(e)}
        summary = "this llama.cpp build cannot run on this CPU (see the error below)"
    if as_json:
        data = _jsonable(model_info)
        if not tensors and isinstance(data, dict):
            data.pop("tensors", None)
        data["cpu_backend"] = backend_json
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        click.echo(format_info(model_info, tensors=tensors, cpu_backend=summary))
    if backend_error is not None:
        raise backend_error


# --------------------------------------------------------------------------- eval


@main.command("eval")
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

    from .evaluate import EvalConfig, load_sets, run_eval
    from .hub import is_embedded_model, resolve_model
    from .models import read_model_info

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
    from .llama import Sampling

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
    from .evaluate import format_table

    click.echo(format_table(results), nl=False)
    click.echo(f"wrote {output_dir / 'results.json'} and results.md", err=True)


# --------------------------------------------------------------------------- external commands

from prometheus_lite.bench.cli import bench_command  # noqa: E402
from prometheus_lite.convert.cli import convert_command, quantize_command  # noqa: E402
from prometheus_lite.server.cli import serve_command  # noqa: E402

main.add_command(convert_command)
main.add_command(quantize_command)
main.add_command(bench_command)
main.add_command(serve_command)
