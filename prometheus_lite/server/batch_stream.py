"""``POST /v1/batch``: many items in one request, NDJSON records back as they complete.

The body is parsed once. Items are admitted one by one (waiting for room, so a long
batch is never refused halfway), at most ``batch_window`` of them submitted at once.
Every place taken is given back, whatever happens: an item finishes, the client leaves
(even in the same instant a place is granted), or the stream is cancelled while it
waits. On SIGTERM a batch admits nothing more: what was admitted finishes, and every
item not yet admitted gets an error record saying to rerun it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Literal

from fastapi import Request

from ..batch import error_record, parse_line, result_record
from ..errors import BatchInputError, PrometheusLiteError
from ..results import Request as JudgeRequest
from .errors import ApiError, dumps
from .service import Place, Service, disconnected, info

if TYPE_CHECKING:
    from ..judge import Judge

__all__ = ["batch_items", "batch_lines", "is_compare"]

Mode = Literal["grade", "compare"]
Item = tuple[JudgeRequest, Mode, int]  # (request, mode, 1-based position)
SHUTTING_DOWN = (
    "the server is shutting down and admits no new work; this item was not judged: "
    "rerun it (against a running server)"
)


def is_compare(obj: dict[str, Any]) -> bool:
    keys = ("response_a", "response_b", "orig_response_A", "orig_response_B",
            "orig_response_a", "orig_response_b")
    return any(k in obj for k in keys)


def batch_items(body: bytes) -> list[tuple[int, Any]]:
    """(item number, parsed item) per item of a JSON array or JSON-lines body; an item
    that is not valid JSON stays its text (its error record says why)."""
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
        return list(enumerate(items, start=1))
    out: list[tuple[int, Any]] = []
    for i, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                out.append((i, json.loads(line)))
            except json.JSONDecodeError:
                out.append((i, line))  # parse_line words the error
    return out


def _parse(lineno: int, obj: Any, mode: str | None) -> tuple[dict[str, Any] | None, Item | None]:
    """(error record, None) for a malformed item, else (None, item)."""
    item_mode: Mode = "grade"
    if mode in ("grade", "compare"):
        item_mode = mode  # type: ignore[assignment]
    elif isinstance(obj, dict) and is_compare(obj):
        item_mode = "compare"
    try:
        line = obj if isinstance(obj, (dict, str)) else json.dumps(obj)
        request = parse_line(line, lineno, item_mode)
    except BatchInputError as exc:
        item_id = str(lineno)
        if isinstance(obj, dict) and isinstance(obj.get("id"), (str, int, float)):
            item_id = str(obj["id"])
        message = str(exc).replace(f"line {lineno}", f"item {lineno}", 1)
        return error_record(item_mode, item_id, lineno, message, type(exc).__name__), None
    return None, (request, item_mode, lineno)


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


async def batch_lines(
    service: Service, request: Request, items: list[tuple[int, Any]], mode: str | None
) -> AsyncIterator[bytes]:
    state = service.state
    judge = state.ready_judge()
    adm = state.admission
    assert adm is not None
    window = state.settings.batch_window or adm.slots + 1
    timeout = state.settings.request_timeout
    tasks: set[asyncio.Task[dict[str, Any]]] = set()
    gone = asyncio.ensure_future(disconnected(request))
    acquire: asyncio.Future[None] | None = None
    log = info(request)
    log["items"] = len(items)
    service.open_batches += 1
    try:
        for k, (lineno, obj) in enumerate(items):
            record, item = _parse(lineno, obj, mode)
            if record is not None:
                yield dumps(record) + b"\n"
                continue
            assert item is not None
            while len(tasks) >= window:
                finished = await _next_done(tasks, gone)
                if finished is None:
                    log["outcome"] = "client_closed"
                    return
                for out in finished:
                    yield out
            if not state.draining:
                acquire = asyncio.ensure_future(adm.acquire())
                done, _ = await asyncio.wait({acquire, gone},
                                             return_when=asyncio.FIRST_COMPLETED)
                if gone in done:  # a place granted in the same instant goes back (finally)
                    log["outcome"] = "client_closed"
                    return
                acquire = None
                place = Place(adm)
                if not state.draining:
                    task = asyncio.create_task(_item(service, judge, item, timeout, place))
                    task.add_done_callback(place.release_unhanded)  # even if it never ran
                    tasks.add(task)
                    continue
                place.release()
            # Draining: everything from this item on is refused, with a record each.
            log["refused_draining"] = len(items) - k
            for lineno2, obj2 in items[k:]:
                record, item = _parse(lineno2, obj2, mode)
                if item is not None:
                    request_, mode_, _ = item
                    record = error_record(mode_, request_.id or str(lineno2), lineno2,
                                          SHUTTING_DOWN, "ServerShuttingDown",
                                          model=judge.model_name,
                                          prompt_format=judge.prompt_format)
                yield dumps(record) + b"\n"
            break
        while tasks:
            finished = await _next_done(tasks, gone)
            if finished is None:
                log["outcome"] = "client_closed"
                return
            for out in finished:
                yield out
    finally:
        service.open_batches -= 1
        gone.cancel()
        if acquire is not None:
            if not acquire.done():
                acquire.cancel()  # Admission.acquire gives back a place granted meanwhile
            elif not acquire.cancelled() and acquire.exception() is None:
                adm.release()
        for t in tasks:
            t.cancel()


async def _item(
    service: Service, judge: Judge, item: Item, timeout: float, place: Place
) -> dict[str, Any]:
    request, mode, lineno = item
    item_id = request.id or str(lineno)
    try:
        future = (await service.submit([(request, {})], [place]))[0]
    except ApiError as exc:  # the engine stopped
        return error_record(mode, item_id, lineno, exc.message, "EngineClosed",
                            model=judge.model_name, prompt_format=judge.prompt_format)
    try:
        result = await asyncio.wait_for(asyncio.wrap_future(future), timeout)
    except TimeoutError:
        future.cancel()
        return error_record(
            mode, item_id, lineno,
            f"the judgement did not finish within {timeout:g} s; rerun this item",
            "Timeout", model=judge.model_name, prompt_format=judge.prompt_format,
        )
    except asyncio.CancelledError:
        future.cancel()
        raise
    except PrometheusLiteError as exc:
        return error_record(
            mode, item_id, lineno, str(exc), type(exc).__name__,
            model=judge.model_name, prompt_format=judge.prompt_format,
        )
    return result_record(result, mode, id=request.id, line=lineno)
