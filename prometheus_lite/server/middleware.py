"""The service's own ASGI layer (:class:`Guard`): request id, API key, draining, body size
limit, metrics and one access-log line per request.

Only CORS (when enabled) sits outside it, so that a browser's preflight ``OPTIONS``
(which never carries ``Authorization``) gets the CORS answer, and the Guard's own
401 / 413 / 503 answers carry the CORS headers a browser needs to read them.
"""

from __future__ import annotations

import hmac
import logging
import time
import uuid
from typing import Any

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import ApiError, dumps
from .state import State

__all__ = ["ENDPOINTS", "Guard", "too_large"]

access_log = logging.getLogger("prometheus_lite.server.access")

# Paths that get their own metrics label (anything else is "other": bounded cardinality).
ENDPOINTS = (
    "/health", "/ready", "/metrics", "/openapi.json", "/docs", "/v1/grade", "/v1/compare",
    "/v1/batch", "/v1/rubrics", "/v1/model", "/v1/models", "/v1/chat/completions",
    "/v1/completions",
)
_OPEN_PATHS = ("/health",)  # answered without the API key

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
    """Request id, API key, draining, body size limit, metrics and one structured
    access-log line per request (never any header, so never the key)."""

    def __init__(self, app: ASGIApp, state: State) -> None:
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
                    raise HTTPException(413, too_large(limit))
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
                await self._refuse(scope, send_wrapper, 413, too_large(limit))
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


def too_large(limit: int) -> str:
    return (f"the request body is larger than this server accepts ({limit} bytes); send "
            "fewer items per request, or start the server with a larger --max-body-bytes")

