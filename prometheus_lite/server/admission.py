"""Admission control: a bounded number of judgements in the engine at once.

Capacity is the engine's slots (``judge.n_parallel``) plus ``max_queue`` waiting ones. A
single request that finds no room is refused at once (429 + Retry-After, as TGI and
vLLM do); a batch request instead waits for room item by item, so one long batch never
gets refused halfway. A place is released when the judge's future is *done* (finished or
cancelled before it started), not when the HTTP handler gives up on it: a judgement that
keeps running after its client left still holds its slot, so the accounting stays true.
(What the engine is doing, busy slots and queue depth, the engine itself reports.)
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque

__all__ = ["Admission"]


class Admission:
    """Counts admitted judgements; thread-safe release (futures finish on engine threads)."""

    def __init__(self, slots: int, max_queue: int) -> None:
        if slots < 1 or max_queue < 0:
            raise ValueError(f"need slots >= 1 and max_queue >= 0, got {slots}, {max_queue}")
        self.slots = slots
        self.capacity = slots + max_queue
        self._lock = threading.Lock()
        self._inflight = 0
        self._waiters: deque[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = deque()

    @property
    def inflight(self) -> int:
        return self._inflight

    @property
    def waiting(self) -> int:
        """Batch requests waiting for a place."""
        return len(self._waiters)

    def try_acquire(self, n: int = 1) -> bool:
        """Admit ``n`` judgements at once, or none."""
        with self._lock:
            if self._inflight + n > self.capacity or self._waiters:
                return False
            self._inflight += n
            return True

    async def acquire(self) -> None:
        """Wait for room for one judgement (first come, first served among waiters)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._inflight < self.capacity and not self._waiters:
                self._inflight += 1
                return
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.append((loop, waiter))
        try:
            await waiter
        except asyncio.CancelledError:
            with self._lock:
                if (loop, waiter) in self._waiters:
                    self._waiters.remove((loop, waiter))
                    raise
            # Granted just as we were cancelled: give the place back.
            self.release()
            raise

    def release(self) -> None:
        """Free one place; hands it straight to the oldest waiter, if any. Any thread."""
        with self._lock:
            while self._waiters:
                loop, waiter = self._waiters.popleft()
                if not loop.is_closed():
                    # The place passes to the waiter: inflight stays the same.
                    loop.call_soon_threadsafe(_grant, waiter)
                    return
            self._inflight -= 1


def _grant(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
    # A waiter cancelled in the meantime: its acquire() sees the grant and releases.
