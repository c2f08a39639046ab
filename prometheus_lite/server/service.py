"""Submitting judgements: admission places, preparation off the event loop, accounting.

Every judgement holds one admission :class:`Place` from admission to the end of its
future (finished, failed or cancelled); a place that never reached a future (the client
left, the engine refused) is given back by whoever held it. Preparing a job (rendering,
tokenising, truncating, the first build of the output constraint) can take seconds for
a long prompt, so it runs on a small thread pool, never on the event-loop thread that
answers ``/health``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from fastapi import Request

from ..errors import DecodeError, PrometheusLiteError, PromptTooLongError
from ..prompts import Prompt
from ..results import Comparison, Grade, GradeRequest
from ..results import Request as JudgeRequest
from .admission import Admission
from .errors import ApiError
from .state import State

if TYPE_CHECKING:
    from ..judge import Judge

__all__ = ["Job", "Place", "Service", "disconnected", "info", "judge_error"]

Job = JudgeRequest | Prompt
PREPARE_THREADS = 2  # jobs tokenised at once (each holds a core while it runs)


class Place:
    """One admitted judgement's place; given back exactly once."""

    __slots__ = ("_adm", "_lock", "_released", "handed")

    def __init__(self, adm: Admission) -> None:
        self._adm = adm
        self._lock = threading.Lock()
        self._released = False
        self.handed = False  # its future gives it back when done

    def release(self, *_: Any) -> None:
        with self._lock:
            if self._released:
                return
            self._released = True
        self._adm.release()

    def release_unhanded(self, *_: Any) -> None:
        """For a holder that ends: give the place back unless a future now owns it."""
        if not self.handed:
            self.release()


def info(request: Request) -> dict[str, Any]:
    """The access-log fields of this request (the Guard writes them out)."""
    return request.scope.setdefault("prometheus_lite", {})


async def disconnected(request: Request) -> None:
    """Returns when the client disconnects (the body has been read by then)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def judge_error(exc: PrometheusLiteError) -> ApiError:
    if isinstance(exc, PromptTooLongError):
        return ApiError(400, str(exc), code="context_length_exceeded")
    if isinstance(exc, DecodeError):
        return ApiError(503, f"the engine failed to decode ({exc}); retry",
                        code="decode_error", headers={"Retry-After": "1"})
    return ApiError(400, str(exc), code=type(exc).__name__)


def _job_mode(job: Job) -> str:
    if isinstance(job, Prompt):
        return "compare" if job.mode == "relative" else "grade"
    return "grade" if isinstance(job, GradeRequest) else "compare"


class Service:
    """The handlers' shared logic over the app state."""

    def __init__(self, state: State) -> None:
        self.state = state
        self.open_batches = 0
        self._executor = ThreadPoolExecutor(PREPARE_THREADS, "prometheus-lite-prepare")

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    # -- admission ----------------------------------------------------------------
    def admit(self, n: int) -> list[Place]:
        """Places for ``n`` judgements at once, or an ApiError (400 too many, 429 busy)."""
        self.state.ready_judge()
        adm = self.state.admission
        assert adm is not None
        if n > adm.capacity:
            raise ApiError(400, f"this request asks for {n} judgements, more than the "
                           f"server admits at once ({adm.capacity}); split it", param="n")
        if not adm.try_acquire(n):
            raise ApiError(
                429, f"the server is busy ({adm.inflight} judgements admitted, capacity "
                f"{adm.capacity}); retry after the Retry-After seconds",
                code="queue_full", headers={"Retry-After": self.state.retry_after()},
            )
        return [Place(adm) for _ in range(n)]

    # -- submission ---------------------------------------------------------------
    async def submit(
        self, jobs: Sequence[tuple[Job, dict[str, Any]]], places: Sequence[Place]
    ) -> list[Future[Any]]:
        """Prepare and submit ``jobs`` off the event loop; each place then belongs to its
        job's future. If this is cancelled (the client left), every future is cancelled
        as soon as it exists and the places not handed over are given back. An engine
        that refuses work is a 503."""
        judge = self.state.ready_judge()
        handed: list[Future[Any]] = []
        abandoned = threading.Event()

        def prepare() -> None:  # on a preparation thread
            try:
                for (job, options), place in zip(jobs, places, strict=True):
                    if abandoned.is_set():
                        return
                    handed.append(self._submit_one(judge, job, options, place))
            except BaseException:
                abandoned.set()
                raise

        def settle(_: Any) -> None:  # once prepare() has returned (or never ran)
            if abandoned.is_set():
                for f in handed:
                    f.cancel()
            for place in places:
                place.release_unhanded()

        try:
            work = asyncio.get_running_loop().run_in_executor(self._executor, prepare)
        except RuntimeError as exc:  # shut down: the server is stopping
            settle(None)
            raise ApiError(503, "the server is shutting down; retry against a running one",
                           headers={"Retry-After": "5"}) from exc
        work.add_done_callback(settle)
        try:
            await asyncio.shield(work)
        except asyncio.CancelledError:
            abandoned.set()
            if work.done():  # settle() may have run already
                for f in handed:
                    f.cancel()
            raise
        except RuntimeError as exc:  # the engine is closed (shutting down)
            raise ApiError(503, f"the engine is not accepting work ({exc})",
                           headers={"Retry-After": "5"}) from exc
        return handed

    def _submit_one(
        self, judge: Judge, job: Job, options: dict[str, Any], place: Place
    ) -> Future[Any]:
        future = judge.submit(job, **options)  # tokenises; bad input sets the future's error
        place.handed = True
        submitted = time.perf_counter()
        mode = _job_mode(job)

        def done(f: Future[Any]) -> None:
            place.release()
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

    # -- one request's judgements ---------------------------------------------------
    async def judge_many(
        self, request: Request, jobs: Sequence[tuple[Job, dict[str, Any]]]
    ) -> list[Grade | Comparison]:
        """Admit all jobs or none (429), submit them, await them all; a timeout or a
        disconnect cancels every one still pending."""
        places = self.admit(len(jobs))
        futures = await self.submit(jobs, places)
        waiting = [asyncio.wrap_future(f) for f in futures]
        gathered = asyncio.ensure_future(asyncio.gather(*waiting))
        gone = asyncio.ensure_future(disconnected(request))
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
                raise judge_error(exc) from None
        if gone in done:
            info(request)["outcome"] = "client_closed"
            raise ApiError(499, "the client closed the connection; the judgement was cancelled")
        raise self.timeout_error()

    def timeout_error(self) -> ApiError:
        return ApiError(
            504,
            f"the judgement did not finish within {self.state.settings.request_timeout:g} s "
            "(queueing included); retry later, ask for fewer max_tokens, or raise the "
            "server's --request-timeout",
            code="timeout",
        )
