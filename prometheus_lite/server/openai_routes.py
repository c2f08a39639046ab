"""The OpenAI-compatible endpoints: ``/v1/chat/completions``, ``/v1/completions``,
``/v1/models``.

A request carries a finished Prometheus prompt; :func:`~prometheus_lite.recognize.recognize`
recovers its parts and the judge renders them in the loaded model's own format, with
that format's own system prompt. So a caller's system message is never passed to the
model: one of the official Prometheus system prompts (what prometheus-eval sends) is
accepted as such, and any other system message is refused with a 400 saying so, rather
than silently dropped.

``stream: true`` streams the feedback token by token as the engine writes it; the
label's event carries the ``logprobs``, then each choice's last event its
``finish_reason`` and ``prometheus`` record, then (if asked) the usage, then
``[DONE]``. A client that goes away mid-stream cancels the judgement.
"""

from __future__ import annotations

import asyncio
import codecs
from collections.abc import AsyncIterator, Iterable, Sequence
from concurrent.futures import Future
from typing import Any

from fastapi import FastAPI, Request
from starlette.responses import Response, StreamingResponse

from .. import templates as T
from ..errors import PrometheusLiteError
from ..recognize import recognize
from ..results import Comparison, Grade
from . import openai_compat as oa
from .errors import ApiError, SafeJSONResponse
from .schemas import ChatCompletionRequest, CompletionRequest, ModelCard, ModelList
from .service import Job, Service, info, judge_error

__all__ = ["KNOWN_SYSTEM_PROMPTS", "add_openai_routes"]

# The system prompts of the official Prometheus templates (templates.py cites them).
KNOWN_SYSTEM_PROMPTS = (
    T.V1_SYSTEM_PROMPT, T.V2_ABSOLUTE_SYSTEM_PROMPT, T.V2_RELATIVE_SYSTEM_PROMPT,
)


def _check_system(system: str | None, param: str) -> None:
    if system is None or system.strip() in KNOWN_SYSTEM_PROMPTS:
        return
    raise ApiError(
        400,
        f"the system message ({system.strip()[:60]!r}) is not a Prometheus system prompt; the "
        "judge always uses its model's own system prompt, so this one would be ignored. "
        "Leave the system message out, or send the official one (prometheus-eval's "
        "ABS_SYSTEM_PROMPT / REL_SYSTEM_PROMPT)",
        param=param, code="unsupported_system_message",
    )


def _account_tokens(request: Request, results: Sequence[Grade | Comparison]) -> None:
    info(request).update(
        prompt_tokens=sum(r.usage.prompt_tokens for r in results),
        completion_tokens=sum(r.usage.completion_tokens for r in results),
    )


def add_openai_routes(app: FastAPI, service: Service) -> None:
    state = service.state
    settings = state.settings

    @app.get("/v1/models", tags=["openai"], summary="The one model this server judges with.")
    async def models() -> ModelList:
        return ModelList(data=[ModelCard(id=state.model_name(), created=int(state.started))])

    def jobs_for(prompts: Iterable[Any], body: Any, max_tokens: int | None
                 ) -> list[tuple[Job, dict[str, Any]]]:
        judge = state.ready_judge()
        try:
            sampling, seed, budget = oa.judge_options(
                body, judge.sampling, judge.seed, judge.max_new_tokens,
                settings.max_tokens_cap, max_tokens,
            )
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        jobs: list[tuple[Job, dict[str, Any]]] = []
        for prompt in prompts:
            param = "prompt" if isinstance(prompt, str) else "messages"
            try:
                recognized = recognize(prompt)
            except PrometheusLiteError as exc:
                raise ApiError(400, str(exc), param=param,
                               code="not_a_prometheus_prompt") from None
            _check_system(recognized.system, param)
            for i in range(body.n or 1):
                jobs.append((recognized.request, {"sampling": sampling,
                                                  "seed": (seed + i) % 2**32,
                                                  "max_new_tokens": budget}))
        return jobs

    @app.post("/v1/chat/completions", tags=["openai"],
              summary="OpenAI chat completions for Prometheus grading prompts.")
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        messages = oa.chat_messages(body.messages)
        jobs = jobs_for([messages], body, body.max_completion_tokens)
        if body.stream:
            top = (body.top_logprobs or 0) if body.logprobs else None
            return await _stream(service, request, jobs, "chat", top, _usage_asked(body))
        results = await service.judge_many(request, jobs)
        _account_tokens(request, results)
        return SafeJSONResponse(oa.chat_response(body, results, state.model_name()))

    @app.post("/v1/completions", tags=["openai"],
              summary="OpenAI (legacy) completions for rendered Prometheus prompts.")
    async def completions(body: CompletionRequest, request: Request) -> Response:
        if body.echo:
            raise ApiError(400, "echo is not supported; leave it out", param="echo")
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if not prompts:
            raise ApiError(400, "prompt is an empty list; give at least one prompt",
                           param="prompt")
        jobs = jobs_for(prompts, body, None)
        if body.stream:
            return await _stream(service, request, jobs, "text", body.logprobs,
                                 _usage_asked(body))
        results = await service.judge_many(request, jobs)
        _account_tokens(request, results)
        return SafeJSONResponse(oa.completion_response(body, results, state.model_name()))


def _usage_asked(body: Any) -> bool:
    return bool(body.stream_options and body.stream_options.include_usage)


async def _stream(service: Service, request: Request, jobs: list[tuple[Job, dict[str, Any]]],
                  kind: str, top: int | None, include_usage: bool) -> Response:
    """Admit and submit ``jobs`` with a token listener each, then stream their events.
    Bad input (a prompt too long) is still a plain 400: it shows at submission."""
    places = service.admit(len(jobs))
    loop = asyncio.get_running_loop()
    tokens: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue()

    def listener(index: int) -> Any:
        def on_token(data: bytes) -> None:  # engine thread
            loop.call_soon_threadsafe(tokens.put_nowait, (index, data))
        return on_token

    jobs = [(job, {**options, "on_token": listener(i)}) for i, (job, options) in enumerate(jobs)]
    futures = await service.submit(jobs, places)
    for f in futures:
        if f.done() and not f.cancelled() and isinstance(f.exception(), PrometheusLiteError):
            for g in futures:
                g.cancel()
            raise judge_error(f.exception())  # type: ignore[arg-type]
    base = oa.stream_base(kind, service.state.model_name())
    events = _events(service, request, futures, tokens, base, top, include_usage)
    return StreamingResponse(events, media_type="text/event-stream")


async def _events(
    service: Service, request: Request, futures: list[Future[Any]],
    tokens: asyncio.Queue[tuple[int, bytes]], base: dict[str, Any], top: int | None,
    include_usage: bool,
) -> AsyncIterator[bytes]:
    """Each choice's text as it comes, holding back its newest token: when the judgement
    ends, that token (the label) goes out with the logprobs, then the final event."""
    n = len(futures)
    decoders = [codecs.getincrementaldecoder("utf-8")("replace") for _ in range(n)]
    sent = [""] * n  # text sent per choice
    held = [""] * n  # its newest token's text, not sent yet
    results: list[Grade | Comparison | None] = [None] * n
    waiting = {asyncio.wrap_future(f): i for i, f in enumerate(futures)}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + service.state.settings.request_timeout
    getter: asyncio.Future[tuple[int, bytes]] | None = None
    client_left = True  # unless the stream ends otherwise

    def take(i: int, data: bytes) -> bytes | None:
        if results[i] is not None:
            return None
        out, held[i] = held[i], decoders[i].decode(data)
        sent[i] += out
        return oa.text_event(base, i, out) if out else None

    try:
        if base["object"] == "chat.completion.chunk":
            for i in range(n):
                yield oa.role_event(base, i)
        pending = set(waiting)
        while pending:
            getter = getter or asyncio.ensure_future(tokens.get())
            done, _ = await asyncio.wait({*pending, getter}, timeout=deadline - loop.time(),
                                         return_when=asyncio.FIRST_COMPLETED)
            if not done:
                client_left = False
                info(request)["outcome"] = "timeout"
                error = service.timeout_error()
                yield oa.error_event(error.status, error.message, error.code)
                return
            if getter in done:
                event = take(*getter.result())
                getter = None
                if event:
                    yield event
            ended = [w for w in done if w in pending]
            if not ended:
                continue
            while not tokens.empty():  # every token of an ended job is queued by now
                event = take(*tokens.get_nowait())
                if event:
                    yield event
            for w in ended:
                pending.discard(w)
                i = waiting[w]
                try:
                    result = w.result()
                except Exception as exc:  # noqa: BLE001 - told to the client
                    client_left = False
                    error = (judge_error(exc) if isinstance(exc, PrometheusLiteError) else
                             ApiError(503, f"the judgement stopped ({exc!r}); retry"))
                    info(request)["outcome"] = "error"
                    yield oa.error_event(error.status, error.message, error.code)
                    return
                results[i] = result
                raw = result.raw or result.raw_output  # the family parser's text
                label = raw[len(sent[i]):] if raw.startswith(sent[i]) else held[i]
                yield oa.text_event(base, i, label, oa.label_logprobs(base, result, top))
                yield oa.final_event(base, i, result)
        done_results = [r for r in results if r is not None]
        _account_tokens(request, done_results)
        if include_usage:
            yield oa.usage_event(base, done_results)
        client_left = False
        yield oa.DONE
    finally:
        if getter is not None:
            getter.cancel()
        for f in futures:  # the ones still queued or running: nobody reads them
            f.cancel()
        if client_left:
            info(request)["outcome"] = "client_closed"
