"""The Judge: grade one response or compare two, always with a well-formed answer."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .capacity import Capacity, choose_parallel
from .constraint import SCORE_LABELS, WINNER_LABELS, ConstraintState, OutputConstraint
from .engine import LOOKAHEAD, SCHEDULES, Engine
from .errors import DecodeError, PrometheusLiteError, PromptError, PromptTooLongError
from .families import FAMILIES, SCALES
from .hub import resolve_model
from .jobs import Feed, Generation, Job, JudgeFuture
from .llama import (
    MIXED_MAX_TOKENS,
    LlamaRuntime,
    Sampling,
    device_memory,
    label_distribution,
    supports_gpu_offload,
)
from .models import (
    SYNTHETIC_MODEL_NOTE,
    ModelInfo,
    judge_family,
    read_model_info,
    resolve_prompt_format,
)
from .prompts import Prompt, build_prompt
from .results import (
    CompareRequest,
    Comparison,
    Failure,
    Grade,
    GradeRequest,
    Request,
    Result,
    Usage,
)
from .rubrics import load_rubric

__all__ = [
    "Judge",
    "Sampling",
    "TeacherForced",
    "render_prompt",
    "prompt_renderer",
    "choose_prompt_format",
]

log = logging.getLogger(__name__)

# The least room left for the answer before a prompt counts as too long: enough for
# a short feedback sentence plus the closing "[RESULT] N".
MIN_FEEDBACK_TOKENS = 32


def choose_prompt_format(requested: str, info: ModelInfo) -> tuple[str, str]:
    """The prompt format to use and why: an explicit choice, or what the GGUF says."""
    return resolve_prompt_format(requested, info)


def _build(request: Request, fmt: str, info: ModelInfo) -> Prompt:
    common: dict[str, Any] = dict(
        instruction=request.instruction,
        rubric=load_rubric(request.rubric),
        reference_answer=request.reference_answer,
        format=fmt,
        chat_template=info.chat_template,
        bos_token=info.bos_token or "",
        eos_token=info.eos_token or "",
    )
    if isinstance(request, GradeRequest):
        return build_prompt("absolute", response=request.response, **common)
    if isinstance(request, CompareRequest):
        return build_prompt(
            "relative", response_a=request.response_a, response_b=request.response_b, **common
        )
    raise PromptError(f"expected a GradeRequest or CompareRequest, got {type(request).__name__}")


def prompt_renderer(
    model: str | os.PathLike[str] | None = None, prompt_format: str = "auto"
) -> Callable[[Request], Prompt]:
    """A function giving the exact prompt the judge would see for a request.

    Reads the GGUF metadata once (never loads the model): the dry run of a batch of
    thousands of items pays for it once.
    """
    info = read_model_info(resolve_model(model))
    fmt, _ = choose_prompt_format(prompt_format, info)
    return lambda request: _build(request, fmt, info)


def render_prompt(
    request: Request, model: str | os.PathLike[str] | None = None, prompt_format: str = "auto"
) -> Prompt:
    """The exact prompt the judge would see for ``request``; reads GGUF metadata only."""
    return prompt_renderer(model, prompt_format)(request)


@dataclass(frozen=True)
class TeacherForced:
    """The model read a prompt plus a given answer (prefill only, nothing sampled).

    ``logits[i]`` are the raw next-token logits after the prompt and the first ``i``
    answer tokens (shape ``(len(answer_tokens) + 1, n_vocab)``, float32);
    ``label_probs`` is the label distribution at the end of the answer, computed
    exactly as a grade's ``probabilities`` (the answer must end right before the
    label, e.g. a grade's ``output_tokens[:-1]``).
    """

    prompt_tokens: int
    answer_tokens: tuple[int, ...]
    logits: np.ndarray
    label_probs: dict[str, float]


def _memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX: assume a small laptop
        return 8 << 30


class Judge:
    """A Prometheus judge over one GGUF model.

    Args:
        model: a GGUF path, a Hugging Face reference or a known release name; None for
            the embedded smoke-test model (SmolLM2-135M, not a real judge).
        n_ctx: context size (default: min(4096, the model's training context)).
        n_threads: CPU threads (default: all cores).
        n_gpu_layers: layers to offload (default: all, when llama.cpp was built with GPU support).
        seed: sampling seed; each item is sampled from this seed, so a grade does not
            depend on its position in a batch.
        sampling: temperature, top_p and repetition penalty (default: the official settings).
        greedy: deterministic decoding (argmax) instead of sampling.
        max_new_tokens: the answer's budget (feedback + result), as in the official library.
        prompt_format: "auto" (from GGUF metadata), "v1", "v2", "chat", "selene" or
            "flow-judge".
        truncate_response: shorten over-long responses to fit the context instead of failing.
        n_parallel: sequences judged at once ("auto": see :func:`engine.choose_parallel`);
            1 makes every result bit-identical to a fresh run of the same request.
        kv_cells: cells of the shared KV pool (default: see :mod:`capacity`).
        cache_type_k, cache_type_v: KV cache types as llama.cpp names them: ``f16``,
            ``q8_0`` or ``q4_0`` (a quantized V cache needs flash attention).
        batch_invariant: every result is the same bits whatever else is in the batch
            (see ``llama.LlamaRuntime``; costs speed on CPUs with repacked kernels).
        schedule: which queued item runs next: ``lpm`` (the longest cached prompt prefix
            first: the rubrics of one response run together) or ``fcfs`` (arrival order).
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        n_ctx: int | None = None,
        n_threads: int | None = None,
        n_gpu_layers: int | None = None,
        seed: int = 0,
        sampling: Sampling | None = None,
        greedy: bool = False,
        max_new_tokens: int = 1024,
        prompt_format: str = "auto",
        truncate_response: bool = False,
        n_parallel: int | str = "auto",
        kv_cells: int | None = None,
        cache_type_k: str = "f16",
        cache_type_v: str = "f16",
        batch_invariant: bool = False,
        schedule: str = "lpm",
    ) -> None:
        if schedule not in SCHEDULES:  # before the model loads
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
        path = resolve_model(model)
        self.info = read_model_info(path)  # validates the file before llama.cpp sees it
        if self.info.synthetic:
            log.warning("%s: %s", path, SYNTHETIC_MODEL_NOTE)
        self.prompt_format, self.prompt_format_reason = choose_prompt_format(
            prompt_format, self.info
        )
        sampling = sampling or Sampling()
        if greedy and not sampling.greedy:
            sampling = replace(sampling, greedy=True)
        if max_new_tokens < 8:
            raise PromptError("max_new_tokens must be at least 8 (feedback plus '[RESULT] N')")
        self.sampling = sampling
        self.seed = seed
        self.max_new_tokens = max_new_tokens
        self.truncate_response = truncate_response
        self.model_name = self.info.name or path.stem
        on_gpu = n_gpu_layers != 0 and supports_gpu_offload()
        decided: list[Capacity] = []

        def plan(rt: LlamaRuntime) -> tuple[int, int]:  # after the weights are loaded
            memory = device_memory() if on_gpu else None
            cap = choose_parallel(
                n_parallel, n_ctx=rt.n_ctx, kv_bytes_per_token=rt.kv_bytes_per_token(),
                gpu=on_gpu, memory_bytes=_memory_bytes(),
                device_free_bytes=memory[0] if memory else None, kv_cells=kv_cells,
            )
            decided.append(cap)
            return cap.n_seq, cap.kv_cells

        if n_parallel != "auto":  # a bad value fails before the model loads
            choose_parallel(n_parallel, n_ctx=1, kv_bytes_per_token=1, gpu=False,
                            memory_bytes=1 << 40)
        # Prefill chunks (and prefix-reuse granularity): small on a CPU, where a chunk
        # costs its length; a GPU wants wide batches. On a CPU a pass mixing sequences stays
        # under flash attention's tile (llama.py). Wider CPU passes for a lone prompt chunk
        # (512), alone or after a decode-only pass, gained nothing consistent on the rubric
        # run (README, "The tiled kernel, patched").
        n_batch, max_batch = (256, 512) if on_gpu else (64, 64)
        self.runtime = LlamaRuntime(
            path, n_ctx=n_ctx, n_threads=n_threads, n_gpu_layers=n_gpu_layers, plan=plan,
            n_batch=n_batch, max_batch=max_batch, mixed_batch=None if on_gpu else MIXED_MAX_TOKENS,
            cache_type_k=cache_type_k,
            cache_type_v=cache_type_v, batch_invariant=batch_invariant,
        )
        self.n_parallel: int = decided[0].n_parallel
        self.parallel_reason: str = decided[0].why
        self.engine = Engine(self.runtime, self.n_parallel, schedule=schedule)
        self._constraints: dict[tuple[str, ...], OutputConstraint] = {}
        log.info(
            "loaded %s (prompt format %s: %s; %d parallel slots, %s)", path, self.prompt_format,
            self.prompt_format_reason, self.n_parallel, self.parallel_reason,
        )

    @property
    def kv_cells_total(self) -> int:
        """Cells (tokens) of the shared KV pool."""
        return self.engine.kv_cells_total

    @property
    def kv_cells_used(self) -> int:
        """Cells holding tokens now: running sequences and cached prompts."""
        return self.engine.kv_cells_used

    # -- public API -------------------------------------------------------------------
    def grade(
        self,
        instruction: str,
        response: str,
        rubric: Any,
        reference_answer: str | None = None,
    ) -> Grade:
        """Score ``response`` 1-5 against ``rubric`` (a Rubric, preset name, dict or JSON file)."""
        result = self.judge(GradeRequest(instruction, response, rubric, reference_answer))
        assert isinstance(result, Grade)
        return result

    def compare(
        self,
        instruction: str,
        response_a: str,
        response_b: str,
        rubric: Any,
        reference_answer: str | None = None,
    ) -> Comparison:
        """Say which of two responses is better under ``rubric`` (its criteria line)."""
        result = self.judge(
            CompareRequest(instruction, response_a, response_b, rubric, reference_answer)
        )
        assert isinstance(result, Comparison)
        return result

    def render(self, request: Request) -> Prompt:
        """The exact prompt the model sees for ``request``."""
        return _build(request, self.prompt_format, self.info)

    def submit(
        self,
        request: Request | Prompt,
        *,
        sampling: Sampling | None = None,
        seed: int | None = None,
        max_new_tokens: int | None = None,
        on_token: Callable[[bytes], None] | None = None,
    ) -> Future[Grade | Comparison]:
        """Queue one request; the future gives its Grade or Comparison when done.

        ``request`` is a GradeRequest/CompareRequest, or an already rendered
        :class:`Prompt` (its ``mode`` says absolute or relative). Sampling, seed and
        budget default to the judge's. Bad input sets a PrometheusLiteError on the
        future; ``future.cancel()`` withdraws a request (a running one stops at its
        next token). ``on_token`` gets the bytes of each generated token as it comes
        (called in the engine thread: keep it quick). Safe to call from any thread.
        """
        job = self._job_or_error(request, sampling=sampling, seed=seed,
                                 max_new_tokens=max_new_tokens)
        if isinstance(job, JudgeFuture):
            return job
        job.on_token = on_token
        return self.engine.submit(job)

    def _job_or_error(self, request: Request | Prompt, **options: Any) -> Job | JudgeFuture:
        """The engine job for a request, or a future already holding its input error."""
        try:
            return self._job(request, **options)
        except PrometheusLiteError as exc:
            future = JudgeFuture()
            future.set_exception(exc)
            return future

    def _job(
        self,
        request: Request | Prompt,
        *,
        sampling: Sampling | None = None,
        seed: int | None = None,
        max_new_tokens: int | None = None,
    ) -> Job:
        """The engine job for a request: its prompt tokens (checked to fit) and settings."""
        started = time.perf_counter()
        tokens, truncated, request_id = self._prompt(request)
        if max_new_tokens is not None and max_new_tokens < 8:
            raise PromptError("max_new_tokens must be at least 8 (feedback plus '[RESULT] N')")
        labels = self._labels(request)

        def finish(gen: Generation) -> Grade | Comparison:
            return self._result(gen, labels, request_id, truncated, started)

        return Job(
            tokens=tokens,
            constraint=self.constraint(labels),
            sampling=sampling or self.sampling,
            seed=self.seed if seed is None else seed,
            max_new_tokens=max_new_tokens or self.max_new_tokens,
            finish=finish,
        )

    def grade_rubrics(
        self,
        instruction: str,
        response: str,
        rubrics: Sequence[Any],
        reference_answer: str | None = None,
    ) -> list[Grade]:
        """Grade one response under several rubrics: one Grade per rubric, in order.

        The prompts differ only in their rubric, which comes last, so everything
        before it is computed once and shared.
        """
        requests = [
            GradeRequest(instruction, response, load_rubric(r), reference_answer, id=str(i))
            for i, r in enumerate(rubrics)
        ]
        futures = [self.submit(r) for r in requests]
        return [f.result() for f in futures]  # type: ignore[misc]

    def teacher_force(
        self, request: Request | Prompt, answer_tokens: Sequence[int]
    ) -> TeacherForced:
        """Read ``request``'s prompt plus ``answer_tokens`` and return every position's logits.

        For comparing quantization levels on the same text (no sampling). The
        answer usually comes from another file of the same model: a grade's
        ``output_tokens[:-1]`` (everything up to the label), when ``label_probs`` is
        the label distribution there; it is empty when the answer does not end right
        before the label (a whole answer, label included, scores all its tokens).
        """
        tokens, _, _ = self._prompt(request)
        constraint = self.constraint(self._labels(request))
        answer = [int(t) for t in answer_tokens]
        state = ConstraintState()
        for t in answer:
            nxt = constraint.advance(state, t)
            if nxt is None:
                raise PromptError(f"the answer tokens leave the {self.family} output format")
            state = nxt
        if len(tokens) + len(answer) > self.runtime.n_ctx:
            raise PromptTooLongError(
                f"prompt plus answer ({len(tokens)} + {len(answer)} tokens) do not fit the "
                f"context of {self.runtime.n_ctx}; raise --n-ctx",
                prompt_tokens=len(tokens), n_ctx=self.runtime.n_ctx,
                needed=len(tokens) + len(answer),
            )
        job = Job(tokens, None, self.sampling, self.seed, 0, forced=answer)
        logits = self.engine.run(job).logits
        labels = constraint.label_tokens(state)
        probs = label_distribution(logits[-1], labels) if labels else {}
        return TeacherForced(len(tokens), tuple(answer), logits, probs)

    def judge(
        self,
        request: Request | Prompt,
        *,
        sampling: Sampling | None = None,
        seed: int | None = None,
        max_new_tokens: int | None = None,
    ) -> Grade | Comparison:
        """Judge one request; raises a PrometheusLiteError on bad input."""
        job = self._job(request, sampling=sampling, seed=seed, max_new_tokens=max_new_tokens)
        return self.engine.run(job)

    def _result(
        self, gen: Generation, labels: tuple[str, ...], request_id: str | None, truncated: int,
        started: float,
    ) -> Grade | Comparison:
        fmt = FAMILIES[self.family].output
        written = gen.text.decode("utf-8", errors="replace")
        body = written[len(fmt.opener) :] if written.startswith(fmt.opener.decode()) else written
        end = (fmt.closer or fmt.marker).decode()
        feedback = body[: body.rindex(end)].strip()
        if self.family in ("prometheus", "m-prometheus") and feedback.startswith("Feedback:"):
            feedback = feedback[len("Feedback:") :].lstrip()
        probs = {label: gen.label_probs.get(label, 0.0) for label in labels}
        usage = Usage(
            prompt_tokens=gen.prompt_tokens,
            completion_tokens=len(gen.tokens),
            cached_prompt_tokens=gen.cached_prompt_tokens,
            latency_s=time.perf_counter() - started,
            finish="budget" if gen.finish == "budget" else "model",
            truncated_response_tokens=truncated,
            queue_s=gen.queue_s,
            prefill_s=gen.prefill_s,
            decode_s=gen.decode_s,
        )
        common = dict(
            feedback=feedback,
            probabilities=probs,
            usage=usage,
            model=self.model_name,
            prompt_format=self.prompt_format,
            id=request_id,
            raw_output=written,
            output_tokens=tuple(gen.tokens),
            raw=written + fmt.suffix,
            family=self.family,
        )
        assert gen.label is not None
        if labels == WINNER_LABELS:
            return Comparison(winner=gen.label, **common)  # type: ignore[arg-type]
        scale = next(sc for sc in SCALES.values() if sc.labels == labels)
        values = dict(zip(scale.labels, scale.values or map(float, scale.labels), strict=True))
        expected = sum(values[label] * p for label, p in probs.items())
        return Grade(
            score=int(values[gen.label]), expected_score=expected, label=gen.label,
            scale=scale.name, **common,  # type: ignore[arg-type]
        )

    def batch(self, requests: Iterable[Request | Prompt], *,
              seeds: Iterable[int] | None = None, sampling: Sampling | None = None,
              max_new_tokens: int | None = None) -> Iterator[Result]:
        """Judge many requests, up to ``n_parallel`` at once, yielding results in input order.

        An item with bad input yields a :class:`Failure` naming the problem; the
        others are unaffected. Requests are read from the iterable a bounded number ahead
        (enough for the engine to run items that share a prompt prefix together), so a
        generator of millions of lines is fine. The engine thread reads them itself
        (:class:`~prometheus_lite.jobs.Feed`), so the schedule, and with it every result,
        depends on the input only: two runs of the same input give the same bits. An
        exception raised by the iterable reaches the caller after the results before it.
        ``seeds``, if given, is each request's sampling seed, in step with ``requests``
        (several samples of one item: the item repeated, one seed each); ``sampling`` and
        ``max_new_tokens`` apply to every request (default: the judge's).
        """
        # Far enough for the engine to choose jobs by shared prefix (engine.LOOKAHEAD).
        ahead = max(2 * self.n_parallel + 2, LOOKAHEAD)
        if seeds is None:
            items: Iterable[tuple[Request | Prompt, int | None]] = ((r, None) for r in requests)
        else:
            items = zip(requests, seeds, strict=True)

        def make(item: tuple[Request | Prompt, int | None]) -> Job | JudgeFuture:
            return self._job_or_error(item[0], sampling=sampling, seed=item[1],
                                      max_new_tokens=max_new_tokens)

        feed = Feed(items, make, ahead=ahead, hold=4 * ahead)
        self.engine.attach(feed)
        future: Future[Any] | None = None
        try:
            while (entry := feed.next()) is not None:
                (request, _), future = entry
                try:
                    yield future.result()
                except PrometheusLiteError as exc:
                    yield Failure(
                        error=str(exc),
                        error_type=type(exc).__name__,
                        id=getattr(request, "id", None),
                        transient=isinstance(exc, DecodeError),
                    )
        finally:  # the caller stopped early (or Ctrl-C while waiting): withdraw the rest
            if future is not None:
                future.cancel()  # the one waited on; a finished one ignores it
            feed.close()

    # -- internals --------------------------------------------------------------------
    @property
    def family(self) -> str:
        """The judge family whose output format this judge writes (families.FAMILIES)."""
        return judge_family(self.prompt_format, self.info.family)

    def _labels(self, request: Request | Prompt) -> tuple[str, ...]:
        """The labels an answer to ``request`` ends with: A/B, or the rubric's scale."""
        if isinstance(request, Prompt):
            return request.labels
        if isinstance(request, CompareRequest):
            return WINNER_LABELS
        return load_rubric(request.rubric).labels

    def _prompt(self, request: Request | Prompt) -> tuple[list[int], int, str | None]:
        """(prompt tokens checked to fit, response tokens cut, request id)."""
        if isinstance(request, Prompt):
            if request.mode not in ("absolute", "relative"):
                raise PromptError(f"prompt mode must be absolute or relative, not {request.mode!r}")
            tokens = self.runtime.tokenize_prompt(request)
            self._check_fits(tokens)
            return tokens, 0, None
        fitted, tokens, truncated = self._fit(request)
        return tokens, truncated, fitted.id

    def constraint(self, labels: tuple[str, ...]) -> OutputConstraint:
        """The output constraint for this model, its family's format and a label set
        (built once, then cached)."""
        fmt = FAMILIES[self.family].output
        c = self._constraints.get((fmt.name, *labels))
        if c is None:
            try:
                c = OutputConstraint(self.runtime.pieces, self.runtime.banned, labels, fmt)
            except ValueError as e:
                raise PromptError(str(e)) from None
            self._constraints[(fmt.name, *labels)] = c
        return c

    def _check_fits(self, tokens: list[int], *, hint: str = "shorten the inputs") -> None:
        rt = self.runtime
        reserve = self.constraint(SCORE_LABELS).reserve + MIN_FEEDBACK_TOKENS
        if len(tokens) + reserve > rt.n_ctx:
            need = len(tokens) + reserve
            raise PromptTooLongError(
                f"the prompt is {len(tokens)} tokens; with room for at least {reserve} answer "
                f"tokens it needs {need}, but the context holds {rt.n_ctx}. Raise --n-ctx (this "
                f"model was trained on {rt.n_ctx_train}), or {hint}.",
                prompt_tokens=len(tokens),
                n_ctx=rt.n_ctx,
                needed=need,
            )

    def _fit(self, request: Request) -> tuple[Request, list[int], int]:
        """The request's prompt tokens, checked (or, if asked, cut) to fit the context."""
        rt = self.runtime
        reserve = self.constraint(SCORE_LABELS).reserve + MIN_FEEDBACK_TOKENS
        tokens = rt.tokenize_prompt(self.render(request))
        if len(tokens) + reserve <= rt.n_ctx:
            return request, tokens, 0
        if not self.truncate_response:
            self._check_fits(
                tokens,
                hint="shorten the inputs, or pass --truncate-response to cut the response to fit",
            )
        return self._truncate(request, len(tokens) + reserve - rt.n_ctx, reserve)

    def _truncate(
        self, request: Request, overflow: int, reserve: int
    ) -> tuple[Request, list[int], int]:
        """Cut the (longest) response from its end until the prompt fits."""
        rt = self.runtime
        fields = ["response"] if isinstance(request, GradeRequest) else ["response_a", "response_b"]
        cut_total, tokens = 0, []
        for _ in range(8):
            name = max(fields, key=lambda f: len(getattr(request, f)))
            toks = rt.tokenize(getattr(request, name), add_special=False, parse_special=False)
            keep = max(0, len(toks) - overflow - 4)
            if keep == len(toks) == 0:
                break
            text = rt.detokenize(toks[:keep]).decode("utf-8", errors="ignore")
            cut_total += len(toks) - keep
            request = replace(request, **{name: text})
            tokens = rt.tokenize_prompt(self.render(request))
            overflow = len(tokens) + reserve - rt.n_ctx
            if overflow <= 0:
                log.info("truncated %s by %d tokens to fit n_ctx=%d", name, cut_total, rt.n_ctx)
                return request, tokens, cut_total
        raise PromptTooLongError(
            f"even with the response cut away the prompt does not fit the context of {rt.n_ctx} "
            "tokens (instruction, reference or rubric too long); raise --n-ctx.",
            prompt_tokens=len(tokens),
            n_ctx=rt.n_ctx,
            needed=len(tokens) + reserve,
        )

    def close(self) -> None:
        self.engine.close()
        self.runtime.close()

    def __enter__(self) -> Judge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
