"""THE decode loop: many judge sequences in one llama.cpp context.

One engine owns the context (:class:`~prometheus_lite.llama.LlamaRuntime`) and is the
only caller of ``llama_decode``. Requests are plain data (:class:`Job`) handed to
:meth:`Engine.submit` from any thread; each gets a :class:`JudgeFuture`. One thread runs
the loop, as llama.cpp's server does with its slots:

- **Slots.** The context holds ``n_seq`` sequences (KV streams). Up to ``n_parallel``
  of them run a job at once; the rest, and every finished slot, keep their last
  prompt as a prefix cache (least recently used first out).
- **Shared prefixes.** A new job starts from the longest prefix it shares with any
  slot's tokens: in place if that slot is idle, else by copying that sequence
  (``llama_memory_seq_cp``) into a free slot and cutting it. Reuse is in whole
  ``n_batch`` chunks from position 0 and prompts are prefilled in the same aligned
  chunks, so with one slot a grade is bit-identical to a fresh run.
- **Continuous batching.** Each step packs every decoding slot's next token, then
  fills the batch with prompt chunks of slots still prefilling, in one
  ``llama_decode``. A finished slot takes the next job at once.
- **Per sequence**, exactly as a single run: its own sampler chain and seed, the
  output constraint checked on each sampled token (resampling from the allowed
  tokens only when it is rejected), the closing ``[RESULT]`` written when the feedback
  budget runs out, and the label distribution where the label is written.

Determinism: with ``n_parallel = 1`` results are bit-identical to a fresh run of the
same request. With more slots, a sequence's tokens share matrix multiplications with
other sequences', and llama.cpp's kernels round differently for different batch
shapes: on the embedded 4-bit model label probabilities move by up to ~0.05, and a
near-tie token (and the text after it) can change; ``bench/test_parallel.py`` measures
how often.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .constraint import ConstraintState, OutputConstraint
from .errors import DecodeError
from .llama import BatchEntry, LlamaRuntime, Sampling, label_distribution

__all__ = ["Engine", "Generation", "Job", "JudgeFuture"]

log = logging.getLogger(__name__)


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
    """A Future whose ``cancel()`` also stops a running job (at its next step).

    A running job that is cancelled ends up in the cancelled state, exactly like one
    withdrawn from the queue (``cancelled()`` is True, ``result()`` raises
    CancelledError, done-callbacks such as asyncio's run).
    """

    def __init__(self) -> None:
        super().__init__()
        self.cancel_requested = False

    def cancel(self) -> bool:
        if super().cancel():
            return True
        if self.done():
            return False
        self.cancel_requested = True  # the engine frees the slot, then _cancelled_running()
        return True

    def _cancelled_running(self) -> None:
        # concurrent.futures has no public way to cancel a RUNNING future; its state
        # machine is stable since Python 3.2.
        from concurrent.futures import _base

        with self._condition:
            if self._state == _base.FINISHED or self._state in (
                _base.CANCELLED,
                _base.CANCELLED_AND_NOTIFIED,
            ):
                return
            self._state = _base.CANCELLED_AND_NOTIFIED
            self._condition.notify_all()
        self._invoke_callbacks()


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
    seq: int = -1
    n_past: int = 0  # tokens of this job in its sequence's cache
    feed: list[int] = field(default_factory=list)  # decoded next step; the last needs logits
    out: list[int] = field(default_factory=list)
    state: ConstraintState = field(default_factory=ConstraintState)
    chain: Any = None
    budget: int = 0
    gen: Generation | None = None
    emitted: int = 0  # tokens of ``out`` given to on_token (a restarted job repeats none)
    t_submit: float = 0.0
    t_start: float = 0.0
    t_first: float = 0.0

    @property
    def all_tokens(self) -> list[int]:  # what prefill brings into the cache
        return self.tokens + self.forced if self.forced is not None else self.tokens

    @property
    def prefilling(self) -> bool:
        return self.n_past < len(self.all_tokens)


@dataclass(eq=False)
class _Slot:
    seq: int
    tokens: list[int] = field(default_factory=list)  # exactly what the cache holds, in order
    job: Job | None = None
    last_used: int = 0


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    if n == 0:
        return 0
    x, y = np.asarray(a[:n]), np.asarray(b[:n])
    diff = np.flatnonzero(x != y)
    return int(diff[0]) if diff.size else n


class Engine:
    """Runs jobs on ``runtime``'s sequences, up to ``n_parallel`` at once.

    ``n_seq`` limits the sequences used (default all of the runtime's; the slots beyond
    ``n_parallel`` are prefix cache). Thread-safe ``submit``; one background thread
    (started on the first job) does
    all the llama.cpp work. Counters for monitoring: ``queue_depth``, ``busy``,
    ``prompt_tokens_total`` (prefilled), ``cached_tokens_total``, ``generated_tokens_total``.
    """

    def __init__(
        self, runtime: LlamaRuntime, n_parallel: int = 1, *, n_seq: int | None = None
    ) -> None:
        n_seq = runtime.n_seq if n_seq is None else n_seq
        if not 1 <= n_parallel <= n_seq <= runtime.n_seq:
            raise ValueError(
                f"need 1 <= n_parallel ({n_parallel}) <= n_seq ({n_seq}) <= {runtime.n_seq}"
            )
        self.rt = runtime
        self.n_parallel = n_parallel
        self._slots = [_Slot(i) for i in range(n_seq)]
        self._queue: deque[Job] = deque()
        self._waiting: list[Job] = []  # admitted, waiting for another slot to prefill their prefix
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._clock = 0
        self._eog = np.asarray(runtime.eog, dtype=np.int64)
        self._eog_set = frozenset(runtime.eog)
        self.prompt_tokens_total = 0
        self.cached_tokens_total = 0
        self.generated_tokens_total = 0

    # -- public ---------------------------------------------------------------------
    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    @property
    def busy(self) -> int:
        return sum(1 for s in self._slots if s.job is not None)

    def submit(self, job: Job) -> JudgeFuture:
        """Queue ``job``; its future gives ``job.finish(generation)`` (or the Generation)."""
        n = len(job.all_tokens) + (0 if job.forced is not None else 1)
        if n > self.rt.n_ctx:  # callers check this with a better message; never overflow
            job.future.set_exception(
                DecodeError(f"{n} tokens do not fit a sequence of n_ctx={self.rt.n_ctx}")
            )
            return job.future
        job.t_submit = time.perf_counter()
        with self._cv:
            if self._closed:
                raise RuntimeError("the engine is closed")
            self._queue.append(job)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="prometheus-lite-engine", daemon=True
                )
                self._thread.start()
            self._cv.notify()
        return job.future

    def run(self, job: Job) -> Any:
        """Submit ``job`` and wait for its result."""
        return self.submit(job).result()

    def close(self) -> None:
        """Cancel queued jobs, stop running ones, and stop the loop."""
        with self._cv:
            self._closed = True
            queued = list(self._queue)
            self._queue.clear()
            self._cv.notify()
        for job in queued:
            job.future.cancel()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    # -- the loop -------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._closed and not self._queue and not self.busy and not self._waiting:
                    self._cv.wait()
                if self._closed:
                    break
                admitted = []
                free = self.n_parallel - self.busy - len(self._waiting)
                while self._queue and len(admitted) < free:
                    job = self._queue.popleft()
                    if job.future.set_running_or_notify_cancel():
                        admitted.append(job)
            try:
                waiting, self._waiting = self._waiting + admitted, []
                for job in waiting:
                    try:
                        if job.future.cancel_requested:
                            job.future._cancelled_running()
                        elif not self._start(job):
                            self._waiting.append(job)
                    except Exception as exc:  # e.g. llama.cpp refused a sequence operation
                        log.exception("starting a job failed")
                        for slot in self._slots:
                            if slot.job is job:
                                slot.job = None
                        if not job.future.done():
                            job.future.set_exception(exc)
                self._step()
            except Exception as exc:  # a bug: fail what is running, keep serving
                log.exception("engine step failed")
                for slot in self._slots:
                    if slot.job is not None:
                        self._fail(slot, exc)
        for slot in self._slots:
            if slot.job is not None:
                self._fail(slot, CancelledError("the judge was closed"))
        for job in self._waiting:
            job.future.set_exception(CancelledError("the judge was closed"))
        self._waiting.clear()

    def _start(self, job: Job) -> bool:
        """Put ``job`` in a slot, starting from the longest cached prefix it can use.

        Returns False (the job waits) while another running job is still prefilling a
        longer prefix of it: computing it twice would cost more than waiting (the
        rubrics of one response arrive together).
        """
        rt = self.rt
        self._clock += 1
        want = job.all_tokens
        # The slot sharing the longest prefix; on a tie an idle one (reused in place, no copy).
        common, _, best = max(
            ((_common_prefix(s.tokens, want), s.job is None, s) for s in self._slots),
            key=lambda x: (x[0], x[1]),
        )
        # Whole chunks only, and never the chunk holding the last token: we need its logits.
        keep = min(common, len(want) - 1) // rt.n_batch * rt.n_batch
        for s in self._slots:
            if s.job is not None and s.job.prefilling:
                coming = min(_common_prefix(s.job.all_tokens, want), len(want) - 1)
                if coming // rt.n_batch * rt.n_batch > keep:
                    return False
        idle = [s for s in self._slots if s.job is None]
        if keep and best.job is None:
            slot = best
        else:
            slot = min(idle, key=lambda s: (len(s.tokens) > 0, s.last_used))
            if keep:
                rt.seq_copy(best.seq, slot.seq)
                slot.tokens = list(best.tokens)
        if len(slot.tokens) > keep:
            rt.seq_truncate(slot.seq, keep)
            del slot.tokens[keep:]
        slot.job, slot.last_used = job, self._clock
        job.seq, job.n_past = slot.seq, keep
        job.t_start = time.perf_counter()
        job.gen = Generation(
            tokens=job.out,
            text=b"",
            label=None,
            prompt_tokens=len(job.tokens),
            cached_prompt_tokens=min(keep, len(job.tokens)),
            queue_s=job.t_start - job.t_submit,
        )
        if job.forced is not None:
            job.gen.logits = np.empty((len(job.forced) + 1, rt.n_vocab), dtype=np.float32)
        else:
            job.max_new_tokens = min(job.max_new_tokens, rt.n_ctx - len(job.tokens))
            job.budget = job.max_new_tokens - (job.constraint.reserve if job.constraint else 0)
            job.chain = rt.sampler(job.sampling, job.seed, job.tokens)
        self.cached_tokens_total += job.gen.cached_prompt_tokens
        return True

    def _step(self) -> None:
        """One llama_decode: every decoding slot's next token, then prompt chunks."""
        rt = self.rt
        for slot in self._slots:
            if slot.job is not None and slot.job.future.cancel_requested:
                self._release(slot).future._cancelled_running()
        active = sorted((s for s in self._slots if s.job is not None), key=lambda s: s.last_used)
        if not active:
            return
        entries: list[BatchEntry] = []
        rows: list[tuple[_Slot, int, int]] = []  # (slot, batch row, position it predicts after)
        parts: list[tuple[_Slot, int]] = []  # (slot, tokens added) in this batch
        for slot in active:
            job = slot.job
            assert job is not None
            if job.prefilling or not job.feed or len(entries) + len(job.feed) > rt.max_batch:
                continue
            for i, t in enumerate(job.feed):
                last = i == len(job.feed) - 1
                if last:
                    rows.append((slot, len(entries), job.n_past + i))
                entries.append(BatchEntry(t, job.n_past + i, slot.seq, last))
            parts.append((slot, len(job.feed)))
        for slot in active:
            job = slot.job
            assert job is not None
            room = rt.max_batch - len(entries)
            if room <= 0:
                break
            if not job.prefilling:
                continue
            want = job.all_tokens
            # Aligned chunks: one slot alone prefills exactly as a fresh run does.
            end = min(len(want), (job.n_past // rt.n_batch + 1) * rt.n_batch)
            end = min(end, job.n_past + room)
            first_row = len(job.tokens) - 1  # logits from the last prompt token on
            for p in range(job.n_past, end):
                want_logits = p >= first_row if job.forced is not None else p == first_row
                if want_logits:
                    rows.append((slot, len(entries), p))
                entries.append(BatchEntry(want[p], p, slot.seq, want_logits))
            parts.append((slot, end - job.n_past))
        if not entries:
            return
        rc = rt.decode(entries)
        if rc != 0:
            self._decode_failed(rc, parts)
            return
        for slot, n in parts:
            job = slot.job
            assert job is not None
            added = job.all_tokens[job.n_past : job.n_past + n] if job.prefilling else job.feed
            slot.tokens += added
            if job.prefilling:
                self.prompt_tokens_total += n
            job.n_past += n
        for slot, row, pos in rows:
            job = slot.job
            assert job is not None and job.gen is not None
            if job.forced is not None:
                assert job.gen.logits is not None
                job.gen.logits[pos - (len(job.tokens) - 1)] = rt.logits(row)
                continue
            if not job.t_first:
                job.t_first = time.perf_counter()
            self._advance(slot, rt.logits(row))
        for slot, _ in parts:
            job = slot.job
            if job is not None and job.forced is not None and not job.prefilling:
                self._done(slot)

    def _decode_failed(self, rc: int, parts: list[tuple[_Slot, int]]) -> None:
        """llama.cpp kept nothing of the batch. Retry each slot alone; fail the ones that fail."""
        if len(parts) == 1:
            self._fail(
                parts[0][0],
                DecodeError(
                    f"llama_decode failed with code {rc} (out of memory or no room in the KV "
                    "cache); rerun to retry the item, or lower --parallel or --n-ctx"
                ),
            )
            return
        log.warning("llama_decode failed with code %d for %d sequences; retrying each", rc,
                    len(parts))
        for slot, _ in parts:  # the next steps retry them; isolate by running one at a time
            job = slot.job
            assert job is not None
            self._isolated(slot)

    def _isolated(self, slot: _Slot) -> None:
        others = [s for s in self._slots if s.job is not None and s is not slot]
        held = [(s, s.job) for s in others]
        for s in others:
            s.job = None
        try:
            self._step()
        finally:
            for s, job in held:
                s.job = job

    def _advance(self, slot: _Slot, logits: np.ndarray) -> None:
        """Choose the job's next token from ``logits``: constraint, budget close, label."""
        rt, job = self.rt, slot.job
        assert job is not None
        c, out = job.constraint, job.out
        if not job.stop_at_eog and self._eog.size:
            logits = logits.copy()
            logits[self._eog] = -np.inf
        if c is not None and job.state.phase == 0 and len(out) >= job.budget:
            # Budget spent inside the feedback: close it and open the label.
            last = rt.pieces[out[-1]][-1:] if out and rt.pieces[out[-1]] else b""
            closing, job.state = c.closing(job.state, last[0] if last else None)
            for t in closing:
                rt.accept(job.chain, t)
            out += closing
            self._emit(job)
            job.feed = closing
            job.gen.finish = "budget"  # type: ignore[union-attr]
            return
        token = rt.sample(job.chain, logits, None)
        if c is not None:
            nxt = c.advance(job.state, token)
            if nxt is None:
                token = rt.sample(job.chain, logits, c.allowed_mask(job.state))
                nxt = c.advance(job.state, token)
                assert nxt is not None, "the sampler chose a masked token"
            if nxt.done:
                # The label: report the model's own distribution over the tokens that
                # write each label here; under greedy decoding the label is its argmax.
                labels = c.label_tokens(job.state)
                probs = label_distribution(logits, labels)
                if job.sampling.greedy or job.sampling.temperature == 0:
                    best = max(probs, key=lambda k: probs[k])
                    if best != nxt.label:
                        token = max(labels[best], key=lambda t: float(logits[t]))
                        nxt = c.advance(job.state, token)
                        assert nxt is not None and nxt.label == best
                out.append(token)
                self._emit(job)
                job.gen.label, job.gen.label_probs = nxt.label, probs  # type: ignore[union-attr]
                self._done(slot)
                return
            job.state = nxt
        rt.accept(job.chain, token)
        out.append(token)
        self._emit(job)
        if c is None and (
            (job.stop_at_eog and token in self._eog_set) or len(out) >= job.max_new_tokens
        ):
            job.gen.finish = "eos" if token in self._eog_set else "length"  # type: ignore[union-attr]
            self._done(slot)
            return
        job.feed = [token]

    def _emit(self, job: Job) -> None:
        """Hand ``on_token`` the tokens of ``job.out`` it has not had yet."""
        if job.on_token is None or len(job.out) <= job.emitted:
            return
        new, job.emitted = job.out[job.emitted :], len(job.out)
        try:
            job.on_token(b"".join(self.rt.pieces[t] for t in new))
        except Exception:  # a listener's bug must not stop the engine
            log.exception("on_token callback failed")

    # -- ending a job ---------------------------------------------------------------
    def _release(self, slot: _Slot) -> Job:
        job = slot.job
        assert job is not None
        slot.job = None
        if job.chain is not None:
            self.rt.free_sampler(job.chain)
            job.chain = None
        # Keep the prompt as a prefix cache; generated tokens are rarely shared.
        n = min(len(job.tokens), len(slot.tokens))
        if len(slot.tokens) > n:
            self.rt.seq_truncate(slot.seq, n)
            del slot.tokens[n:]
        return job

    def _done(self, slot: _Slot) -> None:
        job = self._release(slot)
        gen = job.gen
        assert gen is not None
        now = time.perf_counter()
        first = job.t_first or now
        gen.text = self.rt.detokenize(job.out)
        gen.prefill_s = first - job.t_start
        gen.decode_s = now - first
        self.generated_tokens_total += len(job.out)
        if job.future.cancel_requested:  # cancel() said yes: keep its word
            job.future._cancelled_running()
            return
        try:
            result = job.finish(gen) if job.finish is not None else gen
        except Exception as exc:
            job.future.set_exception(exc)
        else:
            job.future.set_result(result)

    def _fail(self, slot: _Slot, exc: BaseException) -> None:
        job = self._release(slot)
        # The cache may hold a partial prompt: it is still a valid prefix.
        if not job.future.done():
            job.future.set_exception(exc)


# -- how many slots ----------------------------------------------------------------------

# Default slots: a GPU runs many sequences for little more than the price of one; on a
# CPU the gain is smaller, and the prefix cache (slots beyond these) does most of the work.
AUTO_PARALLEL_GPU = 16
AUTO_PARALLEL_CPU = 8
# Share of the machine's memory the KV cache may take when the slot count is chosen.
KV_MEMORY_SHARE = 0.25


def choose_parallel(
    requested: int | str, *, kv_bytes_per_seq: int, gpu: bool, memory_bytes: int
) -> tuple[int, int, str]:
    """(running slots, sequences in the context incl. the prefix cache, why).

    ``auto`` takes 16 slots with GPU offload and 8 on a CPU, fewer when the KV cache of
    twice that many sequences (half of them as prefix cache) would take more than a
    quarter of the memory. An explicit count above what fits that share is reduced,
    and the reason says so.
    """
    fit = max(1, int(memory_bytes * KV_MEMORY_SHARE) // max(1, kv_bytes_per_seq))
    per_seq = f"{kv_bytes_per_seq / 2**20:.0f} MiB of KV cache per sequence"
    if requested == "auto":
        target = AUTO_PARALLEL_GPU if gpu else AUTO_PARALLEL_CPU
        n = max(1, min(target, fit // 2))
        why = f"auto: {'GPU' if gpu else 'CPU'} default {target}"
        if n < target:
            why += f", reduced to fit a quarter of memory ({per_seq})"
    else:
        try:
            n = int(requested)
        except (TypeError, ValueError):
            n = 0
        if n < 1:
            raise ValueError(f"parallel must be 'auto' or a positive integer, got {requested!r}")
        why = "chosen with --parallel"
        if n > fit:
            why += f"; {n} reduced to {fit}, what fits a quarter of memory ({per_seq})"
            n = fit
    n_seq = max(n, min(2 * n, fit))
    return n, n_seq, why
