"""The judge endpoints: ``/v1/grade``, ``/v1/compare``, ``/v1/batch``, ``/v1/rubrics``,
``/v1/model`` (thin handlers: validate, submit, await)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Literal

from fastapi import FastAPI, Request
from starlette.responses import Response, StreamingResponse

from ..batch import parse_line, result_record
from ..errors import BatchInputError
from ..results import jsonable
from ..rubrics import ALL_PRESETS
from .batch_stream import batch_items, batch_lines
from .errors import ApiError
from .schemas import CompareItem, GradeItem, openapi_batch_body
from .service import Service, info

__all__ = ["add_judge_routes"]

Mode = Literal["grade", "compare"]


def _unline(message: str, lineno: int) -> str:
    """A batch-line message for a single-item request: without 'line 1'."""
    for prefix in (f"line {lineno}, ", f"line {lineno}: "):
        if message.startswith(prefix):
            return message[len(prefix):]
    return message


def add_judge_routes(app: FastAPI, service: Service) -> None:
    state = service.state
    settings = state.settings

    @app.get("/v1/rubrics", tags=["judge"], summary="The preset rubrics.")
    async def rubrics() -> dict[str, dict[str, str]]:
        return {name: r.to_dict() for name, r in ALL_PRESETS.items()}

    @app.get("/v1/model", tags=["judge"], summary="The loaded model (what `info` prints).")
    async def model_info() -> dict[str, Any]:
        judge = state.ready_judge()

        data = jsonable(judge.info)  # the same JSON as `prometheus-lite info --json`
        if isinstance(data, dict):
            data.pop("tensors", None)
        adm = state.admission
        assert adm is not None
        data["serving"] = {
            "served_model_name": state.model_name(),
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

    async def one(request: Request, obj: dict[str, Any], mode: Mode) -> dict[str, Any]:
        state.ready_judge()
        explicit_id = obj.get("id") is not None
        try:
            # Through parse_line, so an item means exactly what the same batch line means.
            job = parse_line(obj, 1, mode)
        except BatchInputError as exc:
            raise ApiError(400, _unline(str(exc), 1)) from None
        result = (await service.judge_many(request, [(job, {})]))[0]
        info(request).update(prompt_tokens=result.usage.prompt_tokens,
                             completion_tokens=result.usage.completion_tokens)
        record = result_record(result, mode)
        if not explicit_id:
            record["id"] = None  # parse_line numbered it "1"; a single item has no number
        return record

    @app.post("/v1/grade", tags=["judge"], summary="Grade one response 1-5.")
    async def grade(item: GradeItem, request: Request) -> dict[str, Any]:
        return await one(request, item.model_dump(exclude_unset=True), "grade")

    @app.post("/v1/compare", tags=["judge"], summary="Compare two responses (A or B).")
    async def compare(item: CompareItem, request: Request) -> dict[str, Any]:
        return await one(request, item.model_dump(exclude_unset=True), "compare")

    @app.post(
        "/v1/batch", tags=["judge"],
        summary="Judge many items; results stream back as NDJSON as they complete.",
        description="The body is a JSON array of items or JSON lines (the batch input format;"
        " grade and compare items may be mixed, or force one with ?mode=). Each output line"
        " is a batch output record with the item's id and its 1-based position as 'line';"
        " a malformed item gets an error record and the others go on. On shutdown, items"
        " not yet admitted get an error record of type ServerShuttingDown (rerun them).",
        openapi_extra=openapi_batch_body(),
        response_class=StreamingResponse,
        responses={200: {"content": {"application/x-ndjson": {"schema": {"type": "string"}}}}},
    )
    async def batch(request: Request, mode: Literal["auto", "grade", "compare"] = "auto"
                    ) -> Response:
        state.ready_judge()
        adm = state.admission
        assert adm is not None
        items = batch_items(await request.body())
        # Each open batch waits for room item by item: at most `capacity` of them.
        if adm.inflight >= adm.capacity or service.open_batches >= adm.capacity:
            raise ApiError(429, "the server is busy; retry after the Retry-After seconds",
                           code="queue_full", headers={"Retry-After": state.retry_after()})
        lines = batch_lines(service, request, items, None if mode == "auto" else mode)
        return StreamingResponse(lines, media_type="application/x-ndjson")
