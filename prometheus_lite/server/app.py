"""The HTTP service: a FastAPI app over one Judge, assembled from its parts.

``create_app(judge_factory, settings)`` builds the app; the model loads in the background
when the app starts (``/health`` answers at once, ``/ready`` once the model is loaded).
Where things are:

- ``middleware.py``: the Guard (request id, API key, draining, body limit, metrics,
  access log); CORS, when enabled, wraps it from outside.
- ``service.py``: admission places, job preparation off the event loop, accounting.
- ``judge_routes.py`` and ``batch_stream.py``: ``/v1/grade``, ``/v1/compare``,
  ``/v1/batch``, ``/v1/rubrics``, ``/v1/model``.
- ``openai_routes.py`` and ``openai_compat.py``: the OpenAI-compatible endpoints,
  token streaming included.
- ``error_handlers.py``, ``errors.py``: one JSON error shape.

Every judgement goes through ``judge.submit`` (the engine's queue); admission is bounded
by ``judge.n_parallel`` slots + ``max_queue`` (429 + Retry-After past it), each one has a
timeout, and a client that disconnects cancels its futures.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response

from .admission import Admission
from .error_handlers import install_error_handlers
from .errors import SafeJSONResponse
from .judge_routes import add_judge_routes
from .middleware import ENDPOINTS, Guard
from .openai_routes import add_openai_routes
from .schemas import ErrorBody
from .service import Service
from .state import ServerSettings, State

if TYPE_CHECKING:
    from ..judge import Judge

__all__ = ["ENDPOINTS", "ServerSettings", "create_app"]

log = logging.getLogger("prometheus_lite.server")

# Headers a browser script may read on a CORS answer (besides the always-safe ones).
CORS_EXPOSED = ["Retry-After", "X-Request-Id", "WWW-Authenticate"]


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
    state = State(settings)
    service = Service(state)
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
            m = state.metrics
            m.slots.set(state.admission.slots)
            m.queue_capacity.set(state.admission.capacity)
            m.watch(judge.engine)  # busy slots and queue depth as the engine counts them
            state.judge = judge
            m.ready.set(1)
            log.info("model %s loaded (%d slots, queue %d)", judge.model_name,
                     state.admission.slots, settings.max_queue)
        finally:
            loaded.set()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loader = threading.Thread(target=load, name="prometheus-lite-load", daemon=True)
        loader.start()
        yield
        state.draining = True
        await asyncio.to_thread(loaded.wait)
        service.close()
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
    install_error_handlers(app, settings.max_body_bytes)
    app.add_middleware(Guard, state=state)
    if settings.cors_origins:  # added last, so outermost: preflights never meet the Guard
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins),
                           allow_methods=["GET", "POST"], allow_headers=["*"],
                           expose_headers=CORS_EXPOSED)

    @app.get("/health", tags=["operations"], summary="The process is alive.")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready", tags=["operations"], summary="The model is loaded and the engine runs.",
             responses={503: {"model": ErrorBody}})
    async def ready() -> Response:
        if state.judge is not None and not state.draining:
            return SafeJSONResponse({"ready": True, "model": state.model_name()})
        reason = ("draining" if state.draining else
                  f"failed: {state.load_error}" if state.load_error else "loading")
        return SafeJSONResponse({"ready": False, "reason": reason}, status_code=503)

    @app.get("/metrics", tags=["operations"], summary="Prometheus exposition format.",
             response_class=Response)
    async def metrics() -> Response:
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    add_judge_routes(app, service)
    add_openai_routes(app, service)
    return app


def _version() -> str:
    from .. import __version__

    return __version__
