"""The HTTP service: a FastAPI app over one Judge (thin handlers: validate, submit, await).

``create_app(judge_factory, settings)`` builds the app; the model loads in the background
when the app starts (``/health`` answers at once, ``/ready`` once the model is loaded).
Every judgement goes through ``judge.submit`` (the engine's queue); admission is bounded
by ``judge.n_parallel`` slots + ``max_queue`` (429 + Retry-After past it), each one has a
timeout, and a client that disconnects cancels its futures.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import math
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from concurrent.futures import Future
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response, StreamingResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..batch import error_record, parse_line, result_record
from ..errors import BatchInputError, DecodeError, PrometheusLiteError, PromptTooLongError
from ..prompts import Prompt
from ..recognize import recognize
from ..results import Comparison, Grade, GradeRequest, jsonable
from ..results import Request as JudgeRequest
from ..rubrics import PRESETS
from . import openai_compat as oa
from .admission import Admission
from .errors import ApiError, SafeJSONResponse, dumps, error_body
from .metrics import Metrics
from .schemas import (
    ChatCompletionRequest,
    CompareItem,
    CompletionRequest,
    ErrorBody,
    GradeItem,
    ModelCard,
    ModelList,
    openapi_batch_body,
)

if TYPE_CHECKING:
    from ..judge import Judge
    from ..llama import Sampling

__all__ = ["ENDPOINTS", "ServerSettings", "create_app"]

log = logging.getLogger("prometheus_lite.server")
access_log = logging.getLogger("prometheus_lite.server.access")

Mode = Literal["grade", "compare"]
Job = JudgeRequest | Prompt

# Paths that get their own metrics label (anything else is "other": bounded cardinality).
ENDPOINTS = (
    "/health", "/ready", "/metrics", "/openapi.json", "/docs", "/v1/grade", "/v1/compare",
    "/v1/batch", "/v1/rubrics", "/v1/model", "/v1/models", "/v1/chat/completions",
    "/v1/completions",
)
_OPEN_PATHS = ("/health",)  # answered without the API key


@dataclass(frozen=True)
class ServerSettings:
    """How the service behaves (the model itself is fixed by the judge factory)."""

    api_key: str | None = None
    max_queue: int = 64  # judgements admitted beyond the engine's slots
    request_timeout: float = 600.0  # seconds from admission to result, per judgement
    max_body_bytes: int = 8 * 1024 * 1024
    max_tokens_cap: int | None = None  # a request asking for more gets a 400
    cors_origins: tuple[str, ...] = ()
    served_model_name: str | None = None  # default: the model's name
    batch_window: int | None = None  # items one batch keeps submitted (default slots + 1)


@dataclass
class _State:
    settings: ServerSettings
    metrics: Metrics = field(default_factory=Metrics)
    judge: Judge | None = None
    admission: Admission | None = None
    load_error: str | None = None
    draining: bool = False
    started: float = field(default_factory=time.time)
    mean_latency: float = 1.0  # EWMA of judgement latency (s), for Retry-After

    def ready_judge(self) -> Judge:
        """The loaded judge. (Draining is the Guard's business: a request it let in before
        the signal is finished, not refused halfway.)"""
        if self.judge is not None and self.admission is not None:
            return self.judge
        if self.load_error is not None:
            raise ApiError(503, f"the model failed to load: {self.load_error}",
                           code="model_not_loaded")
        raise ApiError(503, "the model is still loading; retry shortly (GET /ready says when)",
                       code="loading", headers={"Retry-After": "2"})

    def retry_after(self) -> str:
        adm = self.admission
        slots = adm.slots if adm else 1
        queued = adm.queued if adm else 0
        return str(max(1, min(60, math.ceil(self.mean_latency * (queued + 1) / slots))))


# --------------------------------------------------------------------------- middleware


def _endpoint(path: str) -> str:
    return path if path in ENDPOINTS else "other"


def _outcome(status: int) -> str:
    if status < 400:
        return "ok"
    return {401: "unauthorized", 404: "not_found", 405: "not_found", 413: "too_large",
            429: "rate_limited", 499: "client_closed", 503: "unavailable",
            504: "timeout"}.get(status, "bad_request" if status < 500 else "error")


def _bearer(scope: Scope) -> bytes | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            return token.strip() if scheme.lower() == b"bearer" else None
    return None


class Guard:
    """Our outermost layer: request id, API key, draining, body size limit, metrics and
    one structured access-log line per request (never any header, so never the key)."""

    def __init__(self, app: ASGIApp, state: _State) -> None:
        self.app = app
        self.state = state
        key = state.settings.api_key
        self.key = key.encode() if key else None

    async def _refuse(self, scope: Scope, send: Send, status: int, message: str,
                      headers: dict[str, str] | None = None) -> None:
        await ApiError(status, message, headers=headers).response()(scope, _no_receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        path = scope["path"]
        info: dict[str, Any] = {"request_id": uuid.uuid4().hex[:16]}
        scope["prometheus_lite"] = info
        status = 0

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"],
                                      (b"x-request-id", info["request_id"].encode())]
            await send(message)

        limit = self.state.settings.max_body_bytes
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:  # a chunked body (no Content-Length) that grew too large
                    raise HTTPException(413, _too_large(limit))
            return message

        try:
            if path not in _OPEN_PATHS and self.key is not None:
                token = _bearer(scope)
                if token is None or not hmac.compare_digest(token, self.key):
                    await self._refuse(
                        scope, send_wrapper, 401,
                        "missing or wrong API key; send the header 'Authorization: Bearer KEY' "
                        "with the key the server was started with",
                        {"WWW-Authenticate": "Bearer"},
                    )
                    return
            length = _content_length(scope)
            if length is not None and length > limit:
                await self._refuse(scope, send_wrapper, 413, _too_large(limit))
                return
            if self.state.draining and path not in ("/health", "/ready", "/metrics"):
                await self._refuse(scope, send_wrapper, 503, "the server is shutting down",
                                   {"Retry-After": "5"})
                return
            await self.app(scope, limited_receive, send_wrapper)
        finally:
            latency = time.perf_counter() - started
            endpoint = _endpoint(path)
            outcome = info.get("outcome") or _outcome(status or 500)
            m = self.state.metrics
            m.requests.labels(endpoint, outcome).inc()
            m.request_latency.labels(endpoint).observe(latency)
            client = scope.get("client")
            line = {
                "event": "request",
                "request_id": info["request_id"],
                "client": f"{client[0]}:{client[1]}" if client else None,
                "method": scope["method"],
                "path": path,
                "status": status or 500,
                "outcome": outcome,
                "latency_s": round(latency, 4),
                **{k: v for k, v in info.items() if k not in ("request_id", "outcome")},
            }
            access_log.info(dumps(line).decode())


async def _no_receive() -> Message:  # pragma: no cover - error responses read nothing
    return {"type": "http.disconnect"}


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _too_large(limit: int) -> str:
    return (f"the request body is larger than this server accepts ({limit} bytes); send "
            "fewer items per request, or start the server with a larger --max-body-bytes")


# --------------------------------------------------------------------------- error shapes


def _type_tag(part: Any) -> bool:
    """A union member's tag in a pydantic error location ('str', 'list[ContentPart]',
    'RubricObject'), as opposed to a field name (all lower case here) or an index."""
    if not isinstance(part, str):
        return False
    return part in ("str", "int", "float", "bool", "dict", "list", "none") or "[" in part or (
        part[:1].isupper()
    )


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    errors = exc.errors()
    if not errors:
        return "the request body is invalid (see /openapi.json for its schema)", None
    first = errors[0]
    loc = [str(p) for p in first.get("loc", ()) if p != "body" and not _type_tag(p)]
    kind = first.get("type", "")
    if kind == "json_invalid":
        ctx = first.get("ctx", {}).get("error", "")
        return (f"the request body is not valid JSON ({ctx}); send one JSON object"
                " (Content-Type: application/json)", None)
    if kind == "missing" and not loc:
        return "the request body is empty; send a JSON object (see /openapi.json)", None
    where = ".".join(loc) if loc else "the body"
    same = [e for e in errors if [str(p) for p in e.get("loc", ()) if p != "body"
                                  and not _type_tag(p)] == loc]
    more = ""
    if len(same) > 1:
        more = " (nor any other type this field accepts)"
    elif len(errors) > 1:
        more = f" (and {len(errors) - 1} more problem(s))"
    msg = first.get("msg", "invalid value")
    if kind == "missing":
        msg = "this field is required"
    return f"field '{where}': {msg}{more}; see /openapi.json for the request schema", (
        where if loc else None
    )


def _install_error_handlers(app: FastAPI, settings: ServerSettings) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> Response:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        message, param = _validation_message(exc)
        return ApiError(400, message, param=param, code="invalid_request").response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        message = str(exc.detail)
        if exc.status_code == 413:
            message = _too_large(settings.max_body_bytes)
        elif exc.status_code == 404:
            message = f"no endpoint {request.url.path}; see /openapi.json for the endpoints"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        headers = dict(exc.headers or {})
        return SafeJSONResponse(error_body(exc.status_code, message),
                                status_code=exc.status_code, headers=headers)


# --------------------------------------------------------------------------- judging


def _is_compare(obj: dict[str, Any]) -> bool:
    keys = ("response_a", "response_b", "orig_response_A", "orig_response_B",
            "orig_response_a", "orig_response_b")
    return any(k in obj for k in keys)


def _unline(message: str, lineno: int) -> str:
    """A batch-line message for a single-item request: without 'line 1'."""
    for prefix in (f"line {lineno}, ", f"line {lineno}: "):
        if message.startswith(prefix):
            return message[len(prefix):]
    return message


def _item(obj: dict[str, Any], mode: Mode, lineno: int) -> JudgeRequest:
    # Through parse_line, so an item means exactly what the same batch line means.
    return parse_line(json.dumps(obj, ensure_ascii=True), lineno, mode)


class _Service:
    """The handlers' shared logic over the app state."""

    def __init__(self, state: _State) -> None:
        self.state = state

    # -- submission ---------------------------------------------------------------
    def _submit(self, judge: Judge, job: Job, options: dict[str, Any]) -> Future[Any]:
        adm = self.state.admission
        assert adm is not None
        try:
            future = judge.submit(job, **options)
        except Exception:
            adm.release()
            raise
        submitted = time.perf_counter()
        mode = "compare" if _job_mode(job) == "relative" else "grade"

        def done(f: Future[Any]) -> None:
            adm.release()
            self._account(f, mode, time.perf_counter() - submitted)

        future.add_done_callback(done)
        return future

    def _account(self, f: Future[Any], mode: str, latency: float) -> None:
        m = self.state.metrics
        if f.cancelled():
            m.judgements.labels(mode, "cancelled").inc()
            return
        exc = f.exception()
        if exc is not None:
            outcome = "transient" if isinstance(exc, DecodeError) else "invalid"
            m.judgements.labels(mode, outcome).inc()
            return
        result = f.result()
        m.judgements.labels(mode, "ok").inc()
        m.judgement_latency.labels(mode).observe(latency)
        u = result.usage
        m.prompt_tokens.inc(u.prompt_tokens)
        m.cached_prompt_tokens.inc(u.cached_prompt_tokens)
        m.generated_tokens.inc(u.completion_tokens)
        self.state.mean_latency = 0.8 * self.state.mean_latency + 0.2 * latency

    async def judge_many(
        self, request: Request, jobs: Sequence[tuple[Job, dict[str, Any]]]
    ) -> list[Grade | Comparison]:
        """Admit all jobs or none (429), submit them, await them all; a timeout or a
        disconnect cancels every one still pending."""
        judge = self.state.ready_judge()
        adm = self.state.admission
        assert adm is not None
        if len(jobs) > adm.capacity:
            raise ApiError(400, f"this request asks for {len(jobs)} judgements, more than the "
                           f"server admits at once ({adm.capacity}); split it", param="n")
        if not adm.try_acquire(len(jobs)):
            raise ApiError(
                429, f"the server is busy ({adm.inflight} judgements admitted, capacity "
                f"{adm.capacity}); retry after the Retry-After seconds",
                code="queue_full", headers={"Retry-After": self.state.retry_after()},
            )
        futures: list[Future[Any]] = []
        try:
            for job, options in jobs:
                futures.append(self._submit(judge, job, options))
        except Exception as exc:  # the engine refused: give back what was not submitted
            for _ in range(len(jobs) - len(futures) - 1):
                adm.release()
            for f in futures:
                f.cancel()
            raise ApiError(503, f"the engine is not accepting work ({exc})",
                           headers={"Retry-After": "5"}) from exc
        waiting = [asyncio.wrap_future(f) for f in futures]
        gathered = asyncio.ensure_future(asyncio.gather(*waiting))
        gone = asyncio.ensure_future(_disconnected(request))
        try:
            done, _ = await asyncio.wait(
                {gathered, gone}, timeout=self.state.settings.request_timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            gone.cancel()
            if not gathered.done():
                gathered.cancel()
                for f in futures:
                    f.cancel()
        if gathered in done:
            try:
                return gathered.result()
            except PrometheusLiteError as exc:
                raise _judge_error(exc) from None
        if gone in done:
            _info(request)["outcome"] = "client_closed"
            raise ApiError(499, "the client closed the connection; the judgement was cancelled")
        raise ApiError(
            504,
            f"the judgement did not finish within {self.state.settings.request_timeout:g} s "
            "(queueing included); retry later, ask for fewer max_tokens, or raise the "
            "server's --request-timeout",
            code="timeout",
        )

    # -- batch --------------------------------------------------------------------
    async def batch_lines(
        self, request: Request, items: list[tuple[int, str | None]], mode: str | None
    ) -> AsyncIterator[bytes]:
        judge = self.state.ready_judge()
        adm = self.state.admission
        assert adm is not None
        window = self.state.settings.batch_window or adm.slots + 1
        timeout = self.state.settings.request_timeout
        tasks: set[asyncio.Task[dict[str, Any]]] = set()
        gone = asyncio.ensure_future(_disconnected(request))
        info = _info(request)
        info["items"] = len(items)
        try:
            for lineno, line in items:
                record, job = _batch_job(lineno, line, mode)
                if record is not None:
                    yield dumps(record) + b"\n"
                    continue
                assert job is not None
                while len(tasks) >= window:
                    finished = await _next_done(tasks, gone)
                    if finished is None:
                        info["outcome"] = "client_closed"
                        return
                    for out in finished:
                        yield out
                acquire = asyncio.ensure_future(adm.acquire())
                done, _ = await asyncio.wait({acquire, gone}, return_when=asyncio.FIRST_COMPLETED)
                if gone in done:
                    acquire.cancel()
                    info["outcome"] = "client_closed"
                    return
                tasks.add(asyncio.create_task(self._batch_item(judge, job, timeout)))
            while tasks:
                finished = await _next_done(tasks, gone)
                if finished is None:
                    info["outcome"] = "client_closed"
                    return
                for out in finished:
                    yield out
        finally:
            gone.cancel()
            for t in tasks:
                t.cancel()

    async def _batch_item(
        self, judge: Judge, job: tuple[JudgeRequest, Mode, int], timeout: float
    ) -> dict[str, Any]:
        request, mode, lineno = job
        future = self._submit(judge, request, {})
        try:
            result = await asyncio.wait_for(asyncio.wrap_future(future), timeout)
        except TimeoutError:
            future.cancel()
            return error_record(
                mode, request.id or str(lineno), lineno,
                f"the judgement did not finish within {timeout:g} s; rerun this item",
                "Timeout", model=judge.model_name, prompt_format=judge.prompt_format,
            )
        except asyncio.CancelledError:
            future.cancel()
            raise
        except PrometheusLiteError as exc:
            return error_record(
                mode, request.id or str(lineno), lineno, str(exc), type(exc).__name__,
                model=judge.model_name, prompt_format=judge.prompt_format,
            )
        return result_record(result, mode, id=request.id, line=lineno)


async def _next_done(
    tasks: set[asyncio.Task[dict[str, Any]]], gone: asyncio.Future[None]
) -> list[bytes] | None:
    """The lines of the items that finish next; None if the client left first."""
    done, _ = await asyncio.wait({*tasks, gone}, return_when=asyncio.FIRST_COMPLETED)
    if gone in done:
        return None
    finished = [t for t in tasks if t in done]
    tasks.difference_update(finished)
    return [dumps(t.result()) + b"\n" for t in finished]


def _job_mode(job: Job) -> str:
    if isinstance(job, Prompt):
        return job.mode
    return "absolute" if isinstance(job, GradeRequest) else "relative"


def _batch_job(
    lineno: int, line: str | None, mode: str | None
) -> tuple[dict[str, Any] | None, tuple[JudgeRequest, Mode, int] | None]:
    """(error record, None) for a malformed item, else (None, job)."""
    item_mode: Mode = "grade"
    if line is None:
        return error_record("grade", str(lineno), lineno,
                            f"item {lineno}: not valid UTF-8 text", "BatchInputError"), None
    try:
        obj = json.loads(line)
        if mode in ("grade", "compare"):
            item_mode = mode  # type: ignore[assignment]
        elif isinstance(obj, dict) and _is_compare(obj):
            item_mode = "compare"
    except json.JSONDecodeError:
        pass  # parse_line reports it
    try:
        request = parse_line(line, lineno, item_mode)
    except BatchInputError as exc:
        item_id = str(lineno)
        with contextlib.suppress(Exception):
            obj = json.loads(line)
            if isinstance(obj, dict) and isinstance(obj.get("id"), (str, int, float)):
                item_id = str(obj["id"])
        message = str(exc).replace(f"line {lineno}", f"item {lineno}", 1)
        return error_record(item_mode, item_id, lineno, message, type(exc).__name__), None
    return None, (request, item_mode, lineno)


def _judge_error(exc: PrometheusLiteError) -> ApiError:
    if isinstance(exc, PromptTooLongError):
        return ApiError(400, str(exc), code="context_length_exceeded")
    if isinstance(exc, DecodeError):
        return ApiError(503, f"the engine failed to decode ({exc}); retry",
                        code="decode_error", headers={"Retry-After": "1"})
    return ApiError(400, str(exc), code=type(exc).__name__)


async def _disconnected(request: Request) -> None:
    """Returns when the client disconnects (the body has been read by then)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def _info(request: Request) -> dict[str, Any]:
    return request.scope.setdefault("prometheus_lite", {})


def _batch_items(body: bytes) -> list[tuple[int, str | None]]:
    """(item number, JSON text) per item of a JSON array or JSON-lines body."""
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ApiError(
            400, f"the body is not UTF-8 text (byte {e.start}); send UTF-8 JSON"
        ) from None
    if not text.strip():
        raise ApiError(400, "the batch is empty; send a JSON array of items or JSON lines")
    if text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as e:
            raise ApiError(400, f"the body is not a valid JSON array ({e.msg} at line {e.lineno}"
                           f", column {e.colno}); send a JSON array of items or JSON lines"
                           ) from None
        if not items:
            raise ApiError(400, "the batch is empty; send at least one item")
        return [(i, json.dumps(obj, ensure_ascii=True)) for i, obj in enumerate(items, start=1)]
    lines = [(i, line) for i, line in enumerate(text.splitlines(), start=1) if line.strip()]
    return lines  # type: ignore[return-value]


# --------------------------------------------------------------------------- the app


def create_app(
    judge_factory: Callable[[], Judge],
    settings: ServerSettings | None = None,
    *,
    on_load_failure: Callable[[str], None] | None = None,
) -> FastAPI:
    """The service over the judge ``judge_factory`` makes (called once, at startup, in a
    background thread, so ``/health`` answers while the model loads; if it raises,
    ``on_load_failure`` gets the reason and ``/ready`` reports it)."""
    settings = settings or ServerSettings()
    state = _State(settings)
    service = _Service(state)
    loaded = threading.Event()

    def load() -> None:
        try:
            judge = judge_factory()
        except Exception as exc:  # reported by /ready; the CLI exits on it
            state.load_error = f"{type(exc).__name__}: {exc}"
            log.error("the model failed to load: %s", state.load_error)
            if on_load_failure is not None:
                on_load_failure(state.load_error)
        else:
            state.admission = Admission(max(1, int(judge.n_parallel)), settings.max_queue)
            state.metrics.slots.set(state.admission.slots)
            state.metrics.queue_capacity.set(state.admission.capacity)
            adm = state.admission
            state.metrics.watch(lambda: adm.busy, lambda: adm.queued)
            state.judge = judge
            state.metrics.ready.set(1)
            log.info("model %s loaded (%d slots, queue %d)", judge.model_name,
                     adm.slots, settings.max_queue)
        finally:
            loaded.set()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loader = threading.Thread(target=load, name="prometheus-lite-load", daemon=True)
        loader.start()
        yield
        state.draining = True
        await asyncio.to_thread(loaded.wait)
        if state.judge is not None:
            await asyncio.to_thread(state.judge.close)
            log.info("judge closed")

    app = FastAPI(
        title="prometheus-lite",
        summary="A Prometheus LLM judge over llama.cpp: grades with well-formed answers and "
        "score distributions, plus an OpenAI-compatible face.",
        version=_version(),
        lifespan=lifespan,
        default_response_class=SafeJSONResponse,
        responses={400: {"model": ErrorBody}, 401: {"model": ErrorBody},
                   429: {"model": ErrorBody}, 503: {"model": ErrorBody}},
        redoc_url=None,
        telemetry={"tracing": False, "metrics": False, "logs": False},  # /metrics is ours
    )
    app.state.service = state
    _install_error_handlers(app, settings)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins),
                           allow_methods=["GET", "POST"], allow_headers=["*"])
    app.add_middleware(Guard, state=state)  # outermost of ours: runs first

    def model_name() -> str:
        judge = state.judge
        return settings.served_model_name or (judge.model_name if judge else "prometheus-lite")

    # ------------------------------------------------------------------ operations
    @app.get("/health", tags=["operations"], summary="The process is alive.")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready", tags=["operations"], summary="The model is loaded and the engine runs.",
             responses={503: {"model": ErrorBody}})
    async def ready() -> Response:
        if state.judge is not None and not state.draining:
            return SafeJSONResponse({"ready": True, "model": model_name()})
        reason = ("draining" if state.draining else
                  f"failed: {state.load_error}" if state.load_error else "loading")
        return SafeJSONResponse({"ready": False, "reason": reason}, status_code=503)

    @app.get("/metrics", tags=["operations"], summary="Prometheus exposition format.",
             response_class=Response)
    async def metrics() -> Response:
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # ------------------------------------------------------------------ judge
    @app.get("/v1/rubrics", tags=["judge"], summary="The preset rubrics.")
    async def rubrics() -> dict[str, dict[str, str]]:
        return {name: r.to_dict() for name, r in PRESETS.items()}

    @app.get("/v1/model", tags=["judge"], summary="The loaded model (what `info` prints).")
    async def model_info() -> dict[str, Any]:
        judge = state.ready_judge()
        data = jsonable(judge.info)  # the same JSON as `prometheus-lite info --json`
        if isinstance(data, dict):
            data.pop("tensors", None)
        adm = state.admission
        assert adm is not None
        data["serving"] = {
            "served_model_name": model_name(),
            "prompt_format": judge.prompt_format,
            "prompt_format_reason": judge.prompt_format_reason,
            "n_ctx": judge.runtime.n_ctx,
            "n_parallel": adm.slots,
            "max_queue": settings.max_queue,
            "max_new_tokens": judge.max_new_tokens,
            "max_tokens_cap": settings.max_tokens_cap,
            "sampling": asdict(judge.sampling),
            "seed": judge.seed,
            "request_timeout_s": settings.request_timeout,
        }
        return data

    async def _one(request: Request, obj: dict[str, Any], mode: Mode) -> dict[str, Any]:
        state.ready_judge()
        explicit_id = obj.get("id") is not None
        try:
            job = _item(obj, mode, 1)
        except BatchInputError as exc:
            raise ApiError(400, _unline(str(exc), 1)) from None
        result = (await service.judge_many(request, [(job, {})]))[0]
        info = _info(request)
        info.update(prompt_tokens=result.usage.prompt_tokens,
                    completion_tokens=result.usage.completion_tokens)
        record = result_record(result, mode)
        if not explicit_id:
            record["id"] = None  # parse_line numbered it "1"; a single item has no number
        return record

    @app.post("/v1/grade", tags=["judge"], summary="Grade one response 1-5.")
    async def grade(item: GradeItem, request: Request) -> dict[str, Any]:
        return await _one(request, item.model_dump(exclude_unset=True), "grade")

    @app.post("/v1/compare", tags=["judge"], summary="Compare two responses (A or B).")
    async def compare(item: CompareItem, request: Request) -> dict[str, Any]:
        return await _one(request, item.model_dump(exclude_unset=True), "compare")

    @app.post(
        "/v1/batch", tags=["judge"],
        summary="Judge many items; results stream back as NDJSON as they complete.",
        description="The body is a JSON array of items or JSON lines (the batch input format;"
        " grade and compare items may be mixed, or force one with ?mode=). Each output line"
        " is a batch output record with the item's id and its 1-based position as 'line';"
        " a malformed item gets an error record and the others go on.",
        openapi_extra=openapi_batch_body(),
        response_class=StreamingResponse,
        responses={200: {"content": {"application/x-ndjson": {"schema": {"type": "string"}}}}},
    )
    async def batch(request: Request, mode: Literal["auto", "grade", "compare"] = "auto"
                    ) -> Response:
        state.ready_judge()
        adm = state.admission
        assert adm is not None
        items = _batch_items(await request.body())
        if adm.inflight >= adm.capacity:
            raise ApiError(429, "the server is busy; retry after the Retry-After seconds",
                           code="queue_full", headers={"Retry-After": state.retry_after()})
        lines = service.batch_lines(request, items, None if mode == "auto" else mode)
        return StreamingResponse(lines, media_type="application/x-ndjson")

    # ------------------------------------------------------------------ OpenAI
    @app.get("/v1/models", tags=["openai"], summary="The one model this server judges with.")
    async def models() -> ModelList:
        return ModelList(data=[ModelCard(id=model_name(), created=int(state.started))])

    def _openai_jobs(prompts: Iterable[Any], body: Any, max_tokens: int | None
                     ) -> list[tuple[Job, dict[str, Any]]]:
        judge = state.ready_judge()
        sampling: Sampling
        try:
            sampling, seed, budget = oa.judge_options(
                body, judge.sampling, judge.seed, judge.max_new_tokens,
                settings.max_tokens_cap, max_tokens,
            )
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        jobs = []
        for prompt in prompts:
            try:
                request = recognize(prompt).request
            except PrometheusLiteError as exc:
                raise ApiError(400, str(exc), param="messages" if not isinstance(prompt, str)
                               else "prompt", code="not_a_prometheus_prompt") from None
            for i in range(body.n or 1):
                jobs.append((request, {"sampling": sampling, "seed": (seed + i) % 2**32,
                                       "max_new_tokens": budget}))
        return jobs

    def _account_tokens(request: Request, results: Sequence[Grade | Comparison]) -> None:
        _info(request).update(
            prompt_tokens=sum(r.usage.prompt_tokens for r in results),
            completion_tokens=sum(r.usage.completion_tokens for r in results),
        )

    @app.post("/v1/chat/completions", tags=["openai"],
              summary="OpenAI chat completions for Prometheus grading prompts.")
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        messages = oa.chat_messages(body.messages)
        jobs = _openai_jobs([messages], body, body.max_completion_tokens)
        results = await service.judge_many(request, jobs)
        _account_tokens(request, results)
        response = oa.chat_response(body, results, model_name())
        if body.stream:
            usage = bool(body.stream_options and body.stream_options.include_usage)
            return StreamingResponse(iter(oa.chat_chunks(response, usage)),
                                     media_type="text/event-stream")
        return SafeJSONResponse(response)

    @app.post("/v1/completions", tags=["openai"],
              summary="OpenAI (legacy) completions for rendered Prometheus prompts.")
    async def completions(body: CompletionRequest, request: Request) -> Response:
        if body.echo:
            raise ApiError(400, "echo is not supported; leave it out", param="echo")
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if not prompts:
            raise ApiError(400, "prompt is an empty list; give at least one prompt",
                           param="prompt")
        jobs = _openai_jobs(prompts, body, None)
        results = await service.judge_many(request, jobs)
        _account_tokens(request, results)
        response = oa.completion_response(body, results, model_name())
        if body.stream:
            usage = bool(body.stream_options and body.stream_options.include_usage)
            return StreamingResponse(iter(oa.completion_chunks(response, usage)),
                                     media_type="text/event-stream")
        return SafeJSONResponse(response)

    return app


def _version() -> str:
    from .. import __version__

    return __version__
