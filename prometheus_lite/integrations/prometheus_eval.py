"""A local GGUF judge for the official ``prometheus-eval`` library (0.1.20), unchanged.

    from prometheus_eval import PrometheusEval
    from prometheus_eval.prompts import ABSOLUTE_PROMPT
    from prometheus_lite.integrations.prometheus_eval import GGUF

    judge = PrometheusEval(model=GGUF("prometheus-7b-v2.0.Q4_K_M.gguf"),
                           absolute_grade_template=ABSOLUTE_PROMPT)
    feedback, score = judge.single_absolute_grade(instruction=..., response=..., rubric=...)

``PrometheusEval`` picks the model kind by ``hasattr(model, "validate_vllm")``; on that
path it renders every input itself (its template, then FastChat's ``mistral``
conversation) and calls ``model.completions(inputs, use_tqdm=True, **params)`` with
vLLM ``SamplingParams`` keywords, parses ``[RESULT]`` out of each string and regenerates
the ones it cannot parse. :class:`GGUF` is that model: every input is recognised as an
absolute or relative Prometheus prompt (``prometheus_lite.recognize``; anything else is a
clear error), judged through ``Judge.submit`` (all of a call's inputs queued at once, so
the parallel engine runs them together where it exists) with constrained decoding, so
every string parses and the library's retry loop never runs.

What the model reads (``prompt=``):

- ``"as-sent"`` (default): the string prometheus-eval built, byte for byte, after the
  ``strip()`` its vLLM wrapper applies, with the model's BOS, as vLLM would feed it.
  The one difference: graded text (instruction, responses, reference, rubric) is never
  parsed for control tokens, so a response containing ``</s>`` stays text.
- ``"native"``: the recognised parts (instruction, responses, reference, rubric)
  re-rendered by the judge for the loaded model's own prompt format (v1, v2 or chat,
  from the GGUF), for models whose training format is not FastChat's ``mistral``
  wrapping (Prometheus v1, non-Prometheus chat models). The parts round-trip: the
  recogniser checks that filling the template with them gives the library's text back.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import sys
import types
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import numpy as np

from ..errors import PromptError
from ..llama import Sampling
from ..prompts import Prompt, PromptFormat
from ..recognize import FOOTER, HEADER, recognize_text
from ..results import Comparison, Failure, Grade

__all__ = ["GGUF", "VLLM_DEFAULTS"]

logger = logging.getLogger(__name__)


def _vllm_path_without_vllm() -> None:
    """Let prometheus-eval take its vLLM path when vllm is not installed.

    ``PrometheusEval.__init__`` runs ``from .vllm import VLLM`` when the model has
    ``validate_vllm`` (only to pick the path; the class is never used with another
    model), and ``prometheus_eval/vllm.py`` imports vllm at once, which fails without
    it. Where vllm is missing, that module is stood in for by one whose ``VLLM`` says
    how to get the real one; with vllm installed nothing is changed.
    """
    name = "prometheus_eval.vllm"
    if name in sys.modules or importlib.util.find_spec("vllm") is not None:
        return
    module = types.ModuleType(name, "Stand-in for prometheus_eval.vllm (vllm is not installed).")

    class VLLM:  # noqa: D401 - mirrors prometheus_eval.vllm.VLLM's name only
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            raise ImportError(
                "prometheus_eval.vllm.VLLM needs the 'vllm' package (pip install vllm); "
                "for a local GGUF use prometheus_lite.integrations.prometheus_eval.GGUF"
            )

    module.VLLM = VLLM  # type: ignore[attr-defined]
    sys.modules[name] = module


_vllm_path_without_vllm()

# vLLM's SamplingParams defaults for the keywords GGUF honours (what vLLM uses for a
# keyword the caller leaves out). prometheus-eval itself passes max_tokens=1024,
# temperature=1.0, top_p=0.9, repetition_penalty=1.03, best_of=1 when given no params.
VLLM_DEFAULTS: dict[str, Any] = {
    "max_tokens": 16,
    "temperature": 1.0,
    "top_p": 1.0,
    "repetition_penalty": 1.0,
    "best_of": None,
    "n": 1,
    "seed": None,
}


class GGUF:
    """A prometheus-eval model over a local GGUF file (vLLM interface).

    Args:
        model: a GGUF path, Hugging Face reference or release name, as for ``Judge``;
            None (or no argument) for the embedded smoke-test model.
        prompt: ``"as-sent"`` (the library's prompt byte for byte) or ``"native"``
            (re-rendered for the model's own format); see the module docstring.
        **judge_options: everything else ``Judge`` takes: ``n_ctx``, ``n_threads``,
            ``n_gpu_layers``, ``n_parallel``, ``seed`` (used when the library passes
            no ``seed``), ``prompt_format``, ``truncate_response``.

    After each ``completions`` call, ``last_results`` holds its Grades/Comparisons in
    input order (score distributions in ``.probabilities``, token counts, latency) and
    ``last_prompts`` the exact prompts the model read.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        prompt: Literal["as-sent", "native"] = "as-sent",
        **judge_options: Any,
    ) -> None:
        if prompt not in ("as-sent", "native"):
            raise PromptError(f"prompt must be 'as-sent' or 'native', got {prompt!r}")
        for key in ("sampling", "greedy", "max_new_tokens"):
            if key in judge_options:
                raise PromptError(
                    f"GGUF takes no {key!r}: prometheus-eval passes the sampling parameters "
                    "with every call (params={'temperature': ..., 'max_tokens': ...})"
                )
        from ..judge import Judge  # loads llama.cpp

        self.prompt = prompt
        self.judge = Judge(model, **judge_options)
        self.last_results: list[Grade | Comparison] = []
        self.last_prompts: list[Prompt | Any] = []

    # -- the interface prometheus-eval looks for --------------------------------------
    def validate_vllm(self) -> bool:
        """Marks this model for prometheus-eval's vLLM path (rendered prompt strings)."""
        return True

    def completions(
        self, prompts: Sequence[str], use_tqdm: bool = True, **params: Any
    ) -> list[str]:
        """Judge each rendered prompt; returns ``"feedback [RESULT] N"`` strings in order.

        ``params`` are vLLM ``SamplingParams`` keywords: ``max_tokens``, ``temperature``
        (0 is greedy), ``top_p``, ``repetition_penalty``, ``best_of`` (that many samples,
        the most likely kept), ``seed``, ``n`` (1 only); missing ones take vLLM's
        defaults (:data:`VLLM_DEFAULTS`).
        """
        sampling, max_tokens, seed, best_of = _sampling(params)
        if isinstance(prompts, str):
            raise PromptError("completions takes a list of prompt strings, got one string")
        inputs = [self._prepare(i, p) for i, p in enumerate(prompts)]  # all checked first
        base = self.judge.seed if seed is None else seed
        # Judge.batch: its schedule follows the input only (the same call, the same bits);
        # Ctrl-C (or any error) while waiting closes it, which withdraws what is queued and
        # stops what is running, so the engine does not go on grading in the background.
        samples = self.judge.batch(
            (inp for inp in inputs for _ in range(best_of)),
            seeds=(base + k for _ in inputs for k in range(best_of)),
            sampling=sampling, max_new_tokens=max_tokens)
        try:
            results = self._collect(samples, inputs, best_of, use_tqdm)
        finally:
            samples.close()
        self.last_results = results
        self.last_prompts = inputs
        return [r.raw_output for r in results]

    def close(self) -> None:
        self.judge.close()

    def __enter__(self) -> GGUF:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals --------------------------------------------------------------------
    def _prepare(self, index: int, text: Any) -> Prompt | Any:
        """The prompt the model reads for one input (or a clear error naming it)."""
        if not isinstance(text, str):
            raise PromptError(f"prompt {index}: expected a string, got {type(text).__name__}")
        text = text.strip()  # as prometheus-eval's vLLM wrapper does
        try:
            rec = recognize_text(text)
        except PromptError as e:
            raise PromptError(f"prompt {index}: {e}") from None
        if self.prompt == "native":
            return rec.request
        start, end = text.find(HEADER), text.rfind(FOOTER) + len(FOOTER)
        # Control tokens are parsed in the wrapping only, never inside the filled template.
        segments = tuple(
            (piece, special)
            for piece, special in ((text[:start], True), (text[start:end], False),
                                   (text[end:], True))
            if piece
        )
        return Prompt(text, segments, PromptFormat(self.judge.prompt_format), rec.mode)

    def _collect(
        self,
        samples: Iterator[Grade | Comparison | Failure],
        inputs: list[Any],
        best_of: int,
        use_tqdm: bool,
    ) -> list[Grade | Comparison]:
        from tqdm import tqdm

        errors: list[str] = []
        results: list[Grade | Comparison] = []
        with tqdm(total=len(inputs), desc="Judging", unit="prompt",
                  disable=not use_tqdm) as bar:
            for i, inp in enumerate(inputs):
                group = [next(samples) for _ in range(best_of)]
                bar.update(1)
                failed = next((r for r in group if isinstance(r, Failure)), None)
                if failed is not None:
                    errors.append(f"prompt {i}: {failed.error}")
                else:
                    results.append(group[0] if best_of == 1 else self._most_likely(inp, group))
        if errors:
            self.last_results = results
            raise PromptError(
                f"{len(errors)} of {len(inputs)} prompts could not be judged (the others "
                "were, and are not returned: fix these and call again): " + "; ".join(errors)
            )
        return results

    def _most_likely(
        self, inp: Any, candidates: list[Grade | Comparison]
    ) -> Grade | Comparison:
        """vLLM's best_of: the candidate with the highest cumulative log-probability of
        its output tokens under the model (raw logits, teacher-forced)."""
        judge = self.judge
        prompt = inp if isinstance(inp, Prompt) else judge.render(inp)

        def logprob(c: Grade | Comparison) -> float:
            answer = list(c.output_tokens)
            logits = judge.teacher_force(prompt, answer).logits[: len(answer)].astype(np.float64)
            top = logits.max(axis=1, keepdims=True)
            lse = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
            return float((logits[np.arange(len(answer)), answer] - lse).sum())

        scores = [logprob(c) for c in candidates]
        best = int(np.argmax(scores))
        logger.debug("best_of=%d: cumulative logprobs %s, kept %d", len(candidates),
                     [round(s, 3) for s in scores], best)
        return candidates[best]


def _sampling(params: dict[str, Any]) -> tuple[Sampling, int, int | None, int]:
    """(Sampling, max_tokens, seed, best_of) from vLLM keywords, with vLLM's defaults."""
    unknown = sorted(set(params) - set(VLLM_DEFAULTS))
    if unknown:
        raise PromptError(
            f"unsupported sampling parameter(s) {', '.join(unknown)}; GGUF honours "
            f"{', '.join(VLLM_DEFAULTS)} (the output format is fixed by constrained decoding)"
        )
    p = {**VLLM_DEFAULTS, **{k: v for k, v in params.items() if v is not None}}
    if p["n"] != 1:
        raise PromptError(f"n must be 1 (prometheus-eval reads one output per prompt), "
                          f"got {p['n']}")
    max_tokens = p["max_tokens"]
    if not isinstance(max_tokens, int) or max_tokens < 8:
        raise PromptError(f"max_tokens must be an integer of at least 8 (feedback plus "
                          f"'[RESULT] N'), got {max_tokens!r}")
    best_of = 1 if p["best_of"] is None else p["best_of"]
    if not isinstance(best_of, int) or best_of < 1:
        raise PromptError(f"best_of must be a positive integer, got {best_of!r}")
    temperature = float(p["temperature"])
    if best_of > 1 and temperature < 1e-5:
        raise PromptError("best_of must be 1 with greedy sampling (temperature 0), as in vLLM")
    if not math.isfinite(temperature):
        raise PromptError(f"temperature must be finite, got {p['temperature']!r}")
    try:
        sampling = Sampling(
            temperature=temperature,
            top_p=float(p["top_p"]),
            repetition_penalty=float(p["repetition_penalty"]),
            greedy=temperature < 1e-5,  # vLLM: below 1e-5 is greedy
        )
    except ValueError as e:
        raise PromptError(str(e)) from None
    seed = p["seed"]
    if seed is not None and not isinstance(seed, int):
        raise PromptError(f"seed must be an integer, got {seed!r}")
    return sampling, max_tokens, seed, best_of
