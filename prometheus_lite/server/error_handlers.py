"""How the app answers a request it cannot serve: validation errors, 404/405/413, ApiError."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from .errors import ApiError, SafeJSONResponse, error_body
from .middleware import too_large

__all__ = ["install_error_handlers"]


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


def install_error_handlers(app: FastAPI, max_body_bytes: int) -> None:
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
            message = too_large(max_body_bytes)
        elif exc.status_code == 404:
            message = f"no endpoint {request.url.path}; see /openapi.json for the endpoints"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        headers = dict(exc.headers or {})
        return SafeJSONResponse(error_body(exc.status_code, message),
                                status_code=exc.status_code, headers=headers)


