"""What every command line shares: the judging options and the stderr log handler.

``model_options`` adds the options of every command that loads a judge (grade, compare,
eval, serve) and hands them to the command as one ``ModelOptions``; ``StderrHandler``
is the log handler of the CLI and the service. Nothing here loads llama.cpp.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click

from .gguf_keys import PROMPT_FORMAT_VALUES
from .prompts import Prompt
from .results import Request

# llama.cpp's KV cache type names (prometheus_lite.llama.KV_CACHE_TYPES; a test checks they agree).
KV_CACHE_TYPE_NAMES = ("f16", "q8_0", "q4_0")

__all__ = ["ModelOptions", "model_options", "Parallel", "StderrHandler"]


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time (CliRunner swaps it per run)."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


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
    cache_type_k: str = "f16"
    cache_type_v: str = "f16"
    batch_invariant: bool = False
    schedule: str = "lpm"

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
            cache_type_k=self.cache_type_k,
            cache_type_v=self.cache_type_v,
            batch_invariant=self.batch_invariant,
            schedule=self.schedule,
        )

    def renderer(self) -> Callable[[Request], Prompt]:
        """Renders prompts for --dry-run, reading the GGUF metadata once."""
        from .judge import prompt_renderer

        return prompt_renderer(self.model, self.prompt_format)


class Parallel(click.ParamType):
    """``--parallel``: 'auto' or a positive integer."""

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
        type=click.Choice(["auto", *PROMPT_FORMAT_VALUES]),
        default="auto",
        show_default=True,
        help="Prompt and output format: v1/v2 (Prometheus wrappers), chat (the v2 text in "
        "the model's own chat template, as M-Prometheus), selene, flow-judge; auto decides "
        "from the GGUF (family, metadata, name).",
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
        type=Parallel(),
        default="auto",
        show_default=True,
        help="Items judged at once in one context (batch mode). auto: 16 with GPU offload, "
        "8 on a CPU, fewer if their KV cache would take over a quarter of memory. 1 makes "
        "every result bit-identical to a fresh run of that item.",
    ),
    click.option(
        "--cache-type-k",
        type=click.Choice(KV_CACHE_TYPE_NAMES),
        default="f16",
        show_default=True,
        help="KV cache type for K, as llama.cpp names it (q8_0 halves its memory).",
    ),
    click.option(
        "--cache-type-v",
        type=click.Choice(KV_CACHE_TYPE_NAMES),
        default="f16",
        show_default=True,
        help="KV cache type for V (a quantized V cache needs flash attention).",
    ),
    click.option(
        "--batch-invariant",
        is_flag=True,
        help="Grades independent of what else is in the batch (same bits as alone), at a "
        "measured speed cost; see the README.",
    ),
    click.option(
        "--schedule",
        type=click.Choice(["lpm", "fcfs"]),
        default="lpm",
        show_default=True,
        help="Which queued item runs next: lpm, the one sharing the longest cached prompt "
        "prefix (the rubrics of one response run together, in any input order); fcfs, "
        "arrival order.",
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
        "cache_type_k",
        "cache_type_v",
        "batch_invariant",
        "schedule",
    ]

    @functools.wraps(f)
    def wrapper(**kwargs: Any) -> Any:
        opts = ModelOptions(**{n: kwargs.pop(n) for n in names})
        return f(opts=opts, **kwargs)

    for option in reversed(_MODEL_OPTIONS):
        wrapper = option(wrapper)
    return wrapper
