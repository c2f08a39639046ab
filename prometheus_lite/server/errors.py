"""HTTP errors of the service: one exception type, one JSON shape (OpenAI's)."""

from __future__ import annotations

import json
import math
from typing import Any

from starlette.responses import JSONResponse

__all__ = ["ApiError", "SafeJSONResponse", "error_body", "error_type_for"]

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "timeout_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
    503: "service_unavailable",
    504: "timeout_error",
}


def error_type_for(status: int) -> str:
    return _TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")


def error_body(
    status: int, message: str, *, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {
        "error": {"message": message, "type": error_type_for(status), "param": param, "code": code}
    }


class ApiError(Exception):
    """Raised by handlers; answered as ``{"error": {...}}`` with ``status``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers or {}

    def response(self) -> SafeJSONResponse:
        return SafeJSONResponse(
            error_body(self.status, self.message, param=self.param, code=self.code),
            status_code=self.status,
            headers=self.headers,
        )


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def dumps(content: Any) -> bytes:
    """Strict JSON (NaN/inf as null); text that cannot be UTF-8 (a lone surrogate echoed
    from the input) is escaped instead of failing the response."""
    content = _finite(content)
    try:
        return json.dumps(content, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(content, ensure_ascii=True, allow_nan=False).encode("ascii")


class SafeJSONResponse(JSONResponse):
    """A JSON response that never fails to encode what the judge returned."""

    def render(self, content: Any) -> bytes:
        return dumps(content)
