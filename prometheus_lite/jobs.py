"""What the engine is handed and hands back: a :class:`Job`, its :class:`JudgeFuture` and the
:class:`Generation` it produced (plain data; the decode loop is :mod:`prometheus_lite.engine`).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .constraint import ConstraintState, OutputConstraint
from .llama import Sampling

__all__ = ["Generation", "Job", "JudgeFuture"]


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
