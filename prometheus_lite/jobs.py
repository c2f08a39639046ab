"""What the engine is handed and hands back: a :class:`Job`, its :class:`JudgeFuture` and the
:class:`Generation` it produced (plain data; the decode loop is :mod:`prometheus_lite.engine`),
and a :class:`Feed`, the jobs of a batch the engine takes itself.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .constraint import ConstraintState, OutputConstraint
from .llama import Sampling

__all__ = ["Feed", "Generation", "Job", "JudgeFuture"]


@dataclass
class Generation:
    """What one job produced."""

    tokens: list[int]
    text: bytes
    label: str | None  # the constrained label, None for unconstrained runs
    label_probs: dict[str, float] = field(default_factory=dict)
    finish: str = "model"  # "model" | "budget" | "eos" (unconstrained) | "length" (unconstrained)
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    prefill_s: float = 0.0  # from taking a slot to the first sampled token
    decode_s: float = 0.0  # from then to the end
    queue_s: float = 0.0  # waiting for a slot
    logits: np.ndarray | None = None  # teacher forcing: (len(forced) + 1, n_vocab) float32


class JudgeFuture(Future):
    """A ``concurrent.futures.Future`` whose ``cancel()`` also stops a running job.

    Exactly Future's state machine, plus one transition: ``cancel()`` on a RUNNING future
    cancels it at once (``cancelled()`` is True, waiters of ``wait``/``as_completed`` and
    done-callbacks are notified, ``result()`` raises CancelledError) and asks the engine to
    free the slot at its next step; whatever the engine produces afterwards is dropped.
    So ``cancel()`` returning True always means the future ends cancelled.
    """

    def __init__(self) -> None:
        super().__init__()
        self.cancel_requested = False

    def cancel(self) -> bool:
        # concurrent.futures' state names are stable since Python 3.2 (Lib/concurrent/
        # futures/_base.py); this is Future.cancel with RUNNING allowed.
        from concurrent.futures import _base

        with self._condition:
            if self._state == _base.FINISHED:
                return False
            if self._state in (_base.CANCELLED, _base.CANCELLED_AND_NOTIFIED):
                return True
            if self._state == _base.RUNNING:
                self.cancel_requested = True
                self._state = _base.CANCELLED_AND_NOTIFIED
                for waiter in self._waiters:
                    waiter.add_cancelled(self)
            else:
                self._state = _base.CANCELLED
            self._condition.notify_all()
        self._invoke_callbacks()
        return True

    def set_result(self, result: Any) -> None:
        try:
            super().set_result(result)
        except InvalidStateError:
            if not self.cancelled():
                raise

    def set_exception(self, exception: BaseException | None) -> None:
        try:
            super().set_exception(exception)
        except InvalidStateError:
            if not self.cancelled():
                raise


@dataclass(eq=False)
class Job:
    """One request for the engine: a prompt and how to answer it.

    ``forced`` (teacher forcing) reads the prompt plus these tokens and returns every
    position's logits instead of sampling. ``finish`` turns the Generation into the
    future's result (in the engine thread; it must be quick).
    """

    tokens: list[int]
    constraint: OutputConstraint | None
    sampling: Sampling
    seed: int
    max_new_tokens: int
    stop_at_eog: bool = True
    forced: list[int] | None = None
    finish: Callable[[Generation], Any] | None = None
    # Called (in the engine thread; it must be quick) with the bytes of each new token.
    on_token: Callable[[bytes], None] | None = None
    future: JudgeFuture = field(default_factory=JudgeFuture)
    # -- state while running (the engine's) --
    want: list[int] = field(default_factory=list)  # what prefill brings into the cache
    n_past: int = 0  # tokens of this job in its sequence's cache
    feed: list[int] = field(default_factory=list)  # decoded next step; the last needs logits
    out: list[int] = field(default_factory=list)
    state: ConstraintState = field(default_factory=ConstraintState)
    chain: Any = None
    budget: int = 0
    gen: Generation | None = None
    order: int = 0  # when it took its slot: the newest running job yields first
    tried: int = -1  # the engine's epoch at its last failed start
    passed: int = 0  # times a later job was started before it
    keys: list[int] | None = None  # the engine's chunk keys of all_tokens
    emitted: int = 0  # tokens of ``out`` given to on_token (a restarted job repeats none)
    t_submit: float = 0.0
    t_start: float = 0.0
    t_first: float = 0.0

    @property
    def all_tokens(self) -> list[int]:
        return self.tokens + self.forced if self.forced is not None else self.tokens

    @property
    def prefilling(self) -> bool:
        return self.n_past < len(self.want)


class Feed:
    """A batch's jobs, taken by the engine itself (``Engine.attach``) and handed to one
    reader in input order.

    Why the engine takes them: jobs submitted from the reader's thread reach the queue
    whenever that thread gets to run, so which jobs wait at each engine step, and with them
    the passes each sequence shares and where its cells land, would follow thread timing;
    llama.cpp's CPU kernels round differently for other batch shapes and cell placements,
    so two runs of one input could grade differently (under load, they did). The engine
    takes a feed's jobs at the top of its loop, up to ``ahead`` unfinished at a time, a
    count only the engine changes: a batch's schedule is a function of its input, and the
    same input, settings, build and machine give the same bits whatever the load.

    ``make`` turns an item into a Job, or into a future that already holds the item's
    error (bad input). It and the items' iterator run in the engine thread (outside its
    lock). An exception from the iterator (or a bug in ``make``) ends the feed: the reader
    gets every result before it, then the exception. When ``hold`` finished results wait
    for a slow reader, the engine pauses (it does not choose differently), so memory stays
    bounded for any input length.
    """

    def __init__(self, items: Iterable[Any], make: Callable[[Any], Job | JudgeFuture],
                 ahead: int, hold: int) -> None:
        if ahead < 1 or hold < 1:
            raise ValueError(f"ahead ({ahead}) and hold ({hold}) must be at least 1")
        self._items = iter(items)
        self._make = make
        self.ahead = ahead
        self.hold = hold
        self._cond = threading.Condition()
        self._out: deque[tuple[Any, JudgeFuture]] = deque()  # taken, not yet read
        self._live: list[JudgeFuture] = []  # taken, not finished
        self._error: BaseException | None = None
        self.ended = False  # no more items: exhausted, failed or aborted
        self.closed = False  # the reader stopped

    # -- the engine's side ----------------------------------------------------------
    def wanted(self) -> int:
        """How many jobs to take now: ``ahead`` minus the taken jobs not finished."""
        self._live = [f for f in self._live if not f.done()]
        return 0 if self.ended or self.closed else self.ahead - len(self._live)

    def take(self, n: int) -> list[Job]:
        """Read up to ``n`` items; their jobs, for the queue (failed items go to the
        reader only)."""
        jobs: list[Job] = []
        for _ in range(n):
            try:
                item = next(self._items)
            except StopIteration:
                self.end(None)
                break
            except BaseException as exc:  # the caller's iterator broke: the reader gets it
                self.end(exc)
                break
            try:
                made = self._make(item)
            except BaseException as exc:
                self.end(exc)
                break
            if isinstance(made, Job):
                jobs.append(made)
                future = made.future
                self._live.append(future)
            else:  # its input error, for the reader
                future = made
            with self._cond:
                self._out.append((item, future))
                self._cond.notify_all()
        return jobs

    def backlog(self) -> bool:
        """Whether ``hold`` finished results wait for the reader (the engine pauses)."""
        with self._cond:
            n = 0
            for _, future in self._out:
                if not future.done():
                    break
                n += 1
            return n >= self.hold and not self.closed

    def wait_for_reader(self, timeout: float) -> None:
        with self._cond:
            self._cond.wait(timeout)

    def end(self, error: BaseException | None) -> None:
        """No more items; ``error``, if any, reaches the reader after the results."""
        with self._cond:
            if not self.ended:
                self.ended = True
                self._error = error
            self._cond.notify_all()

    # -- the reader's side ----------------------------------------------------------
    def next(self) -> tuple[Any, JudgeFuture] | None:
        """The next item and its future, in input order; None at the end. Raises the
        iterator's exception once every result before it has been read."""
        with self._cond:
            while not self._out and not self.ended:
                self._cond.wait()
            if self._out:
                entry = self._out.popleft()
                self._cond.notify_all()  # an engine paused on the backlog goes on
                return entry
            error, self._error = self._error, None
        if error is not None:
            raise error
        return None

    def close(self) -> None:
        """The reader stops: unread results are dropped, unfinished jobs cancelled."""
        with self._cond:
            self.closed = True
            unread = [f for _, f in self._out]
            self._out.clear()
            self._cond.notify_all()
        for future in unread:
            future.cancel()
