"""THE decode loop: many judge sequences in one llama.cpp context.

One engine owns the context (:class:`~prometheus_lite.llama.LlamaRuntime`) and is the
only caller of ``llama_decode``. Requests are plain data (:class:`~prometheus_lite.jobs.Job`)
handed to :meth:`Engine.submit` from any thread; each gets a
:class:`~prometheus_lite.jobs.JudgeFuture`. One thread runs the loop, as llama.cpp's server
does with its slots:

- **One KV pool.** The context's cache is unified (llama-server's ``--kv-unified``): its
  cells are used by the tokens that exist, not reserved per sequence, and
  ``llama_memory_seq_cp`` shares cells instead of copying them. Up to ``n_parallel``
  sequences run a job at once; the others keep their last prompt as a prefix cache. When
  the pool is full, cached prompts are evicted (least recently used first), then new work
  waits; if running jobs outgrow the pool, the newest restarts later. A prompt that fits
  ``n_ctx`` alone always runs.
- **One forward pass per step.** With one KV stream llama.cpp splits a batch only by
  ``n_ubatch`` (``split_simple``), whatever the order of the sequences and however prefill
  chunks and one-token decodes are mixed; ``n_ubatch`` is the largest batch, so each step
  is one graph. (With per-sequence streams llama.cpp's ``split_equal`` cut a shuffled
  8-sequence step into several passes.)
- **Shared prefixes.** A new job starts from the longest prefix it shares with any
  slot's tokens: in place if that slot is idle, else by sharing that sequence's cells and
  cutting the copy. Reuse is in whole ``n_batch`` chunks from position 0; prompts are
  prefilled in passes of up to ``max_batch`` tokens that start and end on those chunks'
  boundaries, the last partial chunk in a pass of its own (:func:`chunk_end`).
- **Longest prefix first.** A free slot takes, of the first :data:`LOOKAHEAD` queued jobs,
  the one that starts from the longest cached or coming prefix (SGLang's ``lpm`` policy), so
  the rubrics of one response run together whatever the input order; no job is passed over
  more than :data:`MAX_PASSED` times. Under load, cached prompts that no queued job would
  start from are dropped: attention visits every cell below the pool's highest used one,
  masked or not (stock ggml-cpu tests each one; the build ``make install`` makes jumps over
  runs of them, kernels/llama_cpp/), so an unused prompt slows every step.
- **Continuous batching.** Each step packs every decoding slot's next token, then fills
  the batch with prompt chunks of slots still prefilling, in one ``llama_decode``. On a CPU
  a pass of several sequences stays under flash attention's 64-row tile
  (``rt.mixed_batch``); a prompt chunk alone may take ``max_batch`` tokens.
- **Per sequence**, exactly as a single run: its own sampler chain and seed, the
  output constraint checked on each sampled token (resampling from the allowed
  tokens only when it is rejected), the closing marker written when the feedback
  budget runs out, and the label distribution where the label is written.

Determinism: with ``n_parallel = 1`` the context holds one sequence, whose cells lie
exactly where a fresh run puts them, so results are bit-identical to a fresh run of the
same request. A batch (:meth:`attach` of a :class:`~prometheus_lite.jobs.Feed`) is read by
this loop itself, at a fixed point of each step, so its schedule, and every result, depends
on its input only, not on when the reading thread runs. With more slots, llama.cpp's
CPU kernels round differently for different batch shapes and cell placements (flash
attention sums over cells in their order in the pool; repacked and tiled matmuls switch
with the number of columns):
``LlamaRuntime(batch_invariant=True)`` removes the batch-shape part
(``bench/invariance.py`` measures each cause), and with it the engine keeps an *ordered
pool*: llama.cpp hands out cells from a search head that drops to any cell freed below it,
so no cell is freed while a job runs (removed tokens' cells are retired, not freed), a job
starts only when the pool has room for its prompt and whole budget beside the running
jobs' budgets, and when it has not and nothing runs, the pool is emptied. Every
sequence's cells then follow its positions, as in a fresh run.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from concurrent.futures import CancelledError
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import numpy as np

from .capacity import choose_parallel
from .constraint import ConstraintState
from .errors import DecodeError
from .jobs import Feed, Generation, Job, JudgeFuture
from .llama import BatchEntry, LlamaRuntime, label_distribution

__all__ = ["Engine", "Generation", "Job", "JudgeFuture", "choose_parallel", "chunk_end"]

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Slot:
    """One sequence of the context: what its cells hold, and the job using it, if any.

    ``cells`` models the unified pool: ``[segment, n]`` pairs in position order, each the
    first ``n`` cells of a segment (a run of cells one sequence wrote). ``llama_memory_seq_cp``
    shares cells, so a copy shares segments; the pool's use is the union of what all
    sequences hold (:meth:`Engine._cells_used`).
    """

    seq: int
    tokens: list[int] = field(default_factory=list)  # exactly what the cache holds, in order
    cells: list[list[int]] = field(default_factory=list)
    job: Job | None = None
    last_used: int = 0


# Queued jobs the engine compares when it chooses the next one, and how many later jobs may
# start before a queued one (so none waits for ever).
LOOKAHEAD = 64
MAX_PASSED = 16
SCHEDULES = ("lpm", "fcfs")


def _chunk_keys(tokens: list[int], n: int) -> list[int]:
    """One key per whole ``n``-token chunk of ``tokens``, each naming the chunk and all
    before it: two lists share their first k chunks when their first k keys are equal."""
    keys, key = [], 0
    for i in range(0, len(tokens) - n + 1, n):
        key = hash((key, *tokens[i : i + n]))
        keys.append(key)
    return keys


def chunk_end(n_past: int, n: int, n_batch: int, left: int) -> int:
    """Where a prompt chunk from ``n_past`` of an ``n``-token prompt ends, at most ``left``
    tokens on.

    A chunk ends on a multiple of ``n_batch`` (the prefix-reuse granularity), and the
    prompt's last, partial ``n_batch`` chunk is a pass of its own. Whether a prompt runs
    fresh or from a cached prefix, each token is then computed in a pass that starts on an
    ``n_batch`` boundary, and the last chunk's tokens in the same pass: a slot alone gets a
    fresh run's bits (ggml-cpu switches flash attention kernels at 64 rows and groups matmul
    columns from a pass's first one; tests/test_judge.py checks the bits).
    """
    tail = n // n_batch * n_batch  # where the last, partial chunk starts (n when none)
    if n_past >= tail:
        return min(n, n_past + left)
    end = min(tail, n_past + left) // n_batch * n_batch
    if end <= n_past:  # less room than the rest of this chunk
        end = min((n_past // n_batch + 1) * n_batch, n_past + left)
    return end


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    if n == 0:
        return 0
    x, y = np.asarray(a[:n]), np.asarray(b[:n])
    diff = np.flatnonzero(x != y)
    return int(diff[0]) if diff.size else n


class Engine:
    """Runs jobs on ``runtime``'s sequences, up to ``n_parallel`` at once.

    ``n_seq`` limits the sequences used (default all of the runtime's; those beyond
    ``n_parallel`` hold cached prompts). ``schedule`` chooses the next queued job: ``lpm``
    (longest cached prefix first) or ``fcfs`` (arrival order). Thread-safe ``submit``; one
    background thread (started on the first job) does all the llama.cpp work. For monitoring:
    ``queue_depth``, ``busy``, ``kv_cells_total``, ``kv_cells_used``, ``prompt_tokens_total``
    (prefilled), ``cached_tokens_total``, ``generated_tokens_total``, ``evictions_total``,
    ``preemptions_total``, ``pool_resets_total`` (ordered pool: emptied when full).
    """

    def __init__(
        self,
        runtime: LlamaRuntime,
        n_parallel: int = 1,
        *,
        n_seq: int | None = None,
        schedule: str = "lpm",
    ) -> None:
        n_seq = runtime.n_seq if n_seq is None else n_seq
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
        self.schedule = schedule
        if not 1 <= n_parallel <= n_seq <= runtime.n_seq:
            raise ValueError(
                f"need 1 <= n_parallel ({n_parallel}) <= n_seq ({n_seq}) <= {runtime.n_seq}"
            )
        self.rt = runtime
        self.n_parallel = n_parallel
        self._slots = [_Slot(i) for i in range(n_seq)]
        self._queue: deque[Job] = deque()
        self._waiting: list[Job] = []  # admitted, waiting for a prefix being computed or room
        self._feeds: list[Feed] = []  # batches whose jobs the loop takes itself
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._dead: BaseException | None = None  # set when the loop thread died
        self._clock = 0
        self._epoch = 0  # bumped whenever a waiting job's chances change
        self._segments = 0
        self._front: dict[int, tuple[int, int]] = {}  # segment -> (writer seq, cells written)
        self._eog = np.asarray(runtime.eog, dtype=np.int64)
        self._eog_set = frozenset(runtime.eog)
        self.kv_cells_total = runtime.kv_cells
        self.prompt_tokens_total = 0
        self.cached_tokens_total = 0
        self.generated_tokens_total = 0
        self.evictions_total = 0
        self.preemptions_total = 0
        # Batch invariance needs each sequence's cells in position order: an ordered pool
        # frees no cell while a job runs (removed tokens' cells are retired, see
        # LlamaRuntime.seq_retire) and is emptied when nothing runs and it is full.
        self._ordered = runtime.batch_invariant and n_seq > 1
        self._retired: dict[int, int] = {}  # segment -> its cells the retired sequence holds
        self.pool_resets_total = 0

    # -- public ---------------------------------------------------------------------
    @property
    def queue_depth(self) -> int:
        return len(self._queue) + len(self._waiting)

    @property
    def busy(self) -> int:
        return sum(1 for s in self._slots if s.job is not None)

    @property
    def kv_cells_used(self) -> int:
        """Cells of the KV pool holding tokens (running sequences and cached prompts)."""
        return self._cells_used()

    def submit(self, job: Job) -> JudgeFuture:
        """Queue ``job``; its future gives ``job.finish(generation)`` (or the Generation)."""
        if not self._fits(job):
            return job.future
        job.t_submit = time.perf_counter()
        with self._cv:
            if self._dead is not None:
                job.future.set_exception(self._dead_error())
                return job.future
            if self._closed:
                raise RuntimeError("the engine is closed")
            self._queue.append(job)
            self._wake()
        return job.future

    def attach(self, feed: Feed) -> None:
        """Take ``feed``'s jobs in the loop itself (:class:`~prometheus_lite.jobs.Feed`: a
        batch whose schedule depends on its input only). Safe to call from any thread."""
        with self._cv:
            if self._dead is not None:
                feed.end(self._dead_error())
                return
            if self._closed:
                raise RuntimeError("the engine is closed")
            self._feeds.append(feed)
            self._wake()

    def _fits(self, job: Job) -> bool:
        n = len(job.all_tokens) + (0 if job.forced is not None else 1)
        if n > self.rt.n_ctx:  # callers check this with a better message; never overflow
            job.future.set_exception(
                DecodeError(f"{n} tokens do not fit a sequence of n_ctx={self.rt.n_ctx}")
            )
            return False
        return True

    def _wake(self) -> None:
        """Start the loop's thread on the first work, and wake it (under ``_cv``)."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="prometheus-lite-engine", daemon=True
            )
            self._thread.start()
        self._cv.notify()

    def run(self, job: Job) -> Any:
        """Submit ``job`` and wait for its result."""
        return self.submit(job).result()

    def close(self) -> None:
        """Cancel queued jobs, stop running ones, and stop the loop."""
        with self._cv:
            self._closed = True
            queued = list(self._queue)
            self._queue.clear()
            feeds, self._feeds = self._feeds, []
            self._cv.notify()
        for feed in feeds:
            feed.end(CancelledError("the judge was closed"))
        for job in queued:
            job.future.cancel()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    # -- the loop -------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # the loop itself broke: nobody may wait forever
            log.exception("the engine thread stopped")
            self._die(exc)

    def _dead_error(self) -> DecodeError:
        return DecodeError(
            f"the judge's engine stopped after an internal error ({self._dead!r}); its "
            "pending items failed. Create a new Judge (or rerun the command to resume)."
        )

    def _die(self, exc: BaseException) -> None:
        with self._cv:
            self._dead = exc
            queued, self._queue = list(self._queue), deque()
            waiting, self._waiting = self._waiting, []
            feeds, self._feeds = self._feeds, []
        running = [s.job for s in self._slots if s.job is not None]
        error = self._dead_error()
        for feed in feeds:
            feed.end(error)
        for job in queued:
            if job.future.set_running_or_notify_cancel():
                job.future.set_exception(error)
        for job in waiting + running:
            job.future.set_exception(error)

    def _take_from_feeds(self) -> None:
        """Top up the queue from the attached feeds, at this fixed point of each step
        (outside the lock: reading a feed runs the caller's iterator). A feed whose reader
        lags ``hold`` results behind pauses the loop; it does not change its choices."""
        with self._cv:
            feeds = list(self._feeds)
        for feed in feeds:
            while feed.backlog() and not self._closed:
                feed.wait_for_reader(0.1)
            jobs = [job for job in feed.take(feed.wanted()) if self._fits(job)]
            now = time.perf_counter()
            for job in jobs:
                job.t_submit = now
            with self._cv:
                self._queue.extend(jobs)
                if (feed.ended or feed.closed) and feed in self._feeds:
                    self._feeds.remove(feed)

    def _loop(self) -> None:
        while True:
            if self._feeds:
                self._take_from_feeds()
            with self._cv:
                while (not self._closed and not self._queue and not self.busy
                       and not self._waiting and not self._feeds):
                    self._cv.wait()
                if self._closed:
                    break
                admitted: list[Job] = []
                free = self.n_parallel - self.busy - len(self._waiting)
                held: dict[int, set[int]] = {}
                if self._queue and free > 0:  # not every step: only when a slot can take one
                    # Admission changes no sequence: their keys serve the choice and the drop.
                    held = self._held_keys()
                    known = set().union(*held.values(), *map(self._keys, self._waiting))
                    while self._queue and len(admitted) < free:
                        job = self._next_queued(known)
                        if job.future.set_running_or_notify_cancel():
                            admitted.append(job)
                            known.update(self._keys(job))
                upcoming = list(islice(self._queue, LOOKAHEAD)) if admitted else []
            try:
                waiting, self._waiting = self._waiting + admitted, []
                if upcoming:
                    self._drop_unneeded(waiting + upcoming, held)
                for job in waiting:
                    if job.future.cancel_requested:
                        continue
                    if job.tried == self._epoch:  # nothing changed since it last tried
                        self._waiting.append(job)
                        continue
                    try:
                        if not self._start(job):
                            job.tried = self._epoch
                            self._waiting.append(job)
                    except Exception as exc:  # e.g. llama.cpp refused a sequence operation
                        log.exception("starting a job failed")
                        for slot in self._slots:
                            if slot.job is job:
                                slot.job = None
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

    # -- choosing the next job ----------------------------------------------------------
    def _held_keys(self) -> dict[int, set[int]]:
        """Each sequence's chunk keys: what it holds and, while a job runs on it, that
        job's whole prompt (prefilled or still coming)."""
        n = self.rt.n_batch
        held = {}
        for slot in self._slots:
            keys = set(_chunk_keys(slot.tokens, n))
            if slot.job is not None:
                keys.update(self._keys(slot.job))
            held[slot.seq] = keys
        return held

    def _keys(self, job: Job) -> list[int]:
        if job.keys is None:
            job.keys = _chunk_keys(job.all_tokens, self.rt.n_batch)
        return job.keys

    def _reuse(self, job: Job, keys: set[int]) -> int:
        """Whole chunks of ``job``'s prompt that ``keys`` hold from its start."""
        reuse = 0
        for key in self._keys(job):
            if key not in keys:
                break
            reuse += 1
        return reuse

    def _next_queued(self, known: set[int]) -> Job:
        """Take the next job off the queue: of the first :data:`LOOKAHEAD`, the one that
        starts from the longest prefix in ``known`` (cached or coming; SGLang's
        longest-prefix-match policy), in arrival order on a tie. A job passed over
        :data:`MAX_PASSED` times goes next."""
        q = self._queue
        if len(q) == 1 or q[0].passed >= MAX_PASSED or self.schedule == "fcfs":
            return q.popleft()
        best_i, best = 0, -1
        for i in range(min(len(q), LOOKAHEAD)):
            reuse = self._reuse(q[i], known)
            if reuse > best:
                best_i, best = i, reuse
        for i in range(best_i):
            q[i].passed += 1
        job = q[best_i]
        del q[best_i]
        return job

    def _drop_unneeded(self, known: list[Job], held: dict[int, set[int]]) -> None:
        """Under load (jobs still queued after the free slots were filled), drop the cached
        prompts that none of the ``known`` jobs would start from (``held``: see
        :meth:`_held_keys`).

        Attention visits every cell below the pool's highest used one (llama.cpp's ``n_kv``)
        for every row, masked or not, so a prompt kept for a reuse that may never come costs
        every step. Under load the next work is known: it is queued. Each known job has one
        provider, the sequence it would copy the most chunks from (running ones first, then
        the most recently used); a cached prompt that provides for none goes. Not in an
        ordered pool, whose cells are retired rather than freed.
        """
        if self._ordered:
            return
        order = sorted(self._slots, key=lambda s: (s.job is None, -s.last_used))
        providers = set()
        for job in known:
            best, who = 0, None
            for slot in order:
                reuse = self._reuse(job, held[slot.seq])
                if reuse > best:
                    best, who = reuse, slot.seq
            providers.add(who)
        for slot in self._slots:
            if slot.job is None and slot.tokens and slot.seq not in providers:
                self._truncate(slot, 0)
                self.evictions_total += 1

    # -- the pool ---------------------------------------------------------------------
    def _cells_used(self) -> int:
        held = dict(self._retired)
        for slot in self._slots:
            for seg, n in slot.cells:
                if held.get(seg, 0) < n:
                    held[seg] = n
        return sum(held.values())

    def _append(self, slot: _Slot, tokens: list[int]) -> None:
        """Record that ``slot``'s sequence now also holds ``tokens`` (after its last)."""
        if not tokens:
            return
        slot.tokens += tokens
        last = slot.cells[-1] if slot.cells else None
        if last is not None and self._front.get(last[0]) == (slot.seq, last[1]):
            last[1] += len(tokens)  # it wrote that segment's newest cells: extend it
        else:
            self._segments += 1
            last = [self._segments, len(tokens)]
            slot.cells.append(last)
        self._front[last[0]] = (slot.seq, last[1])

    def _truncate(self, slot: _Slot, n: int) -> None:
        """Keep the first ``n`` tokens of ``slot``'s sequence (cache and record); in an
        ordered pool the cells of the others are retired, not freed."""
        if len(slot.tokens) <= n:
            return
        if self._ordered:
            self.rt.seq_retire(slot.seq, n)
            for seg, k in slot.cells:  # the retired part of a segment is its tail: record
                if self._retired.get(seg, 0) < k:  # its whole extent (the union is the same)
                    self._retired[seg] = k
        else:
            self.rt.seq_truncate(slot.seq, n)
        del slot.tokens[n:]
        kept, total = [], 0
        for seg, k in slot.cells:
            if total >= n:
                break
            kept.append([seg, min(k, n - total)])
            total += kept[-1][1]
        slot.cells = kept
        self._epoch += 1

    def _copy(self, src: _Slot, dst: _Slot) -> None:
        self._truncate(dst, 0)
        self.rt.seq_copy(src.seq, dst.seq)
        dst.tokens = list(src.tokens)
        dst.cells = [list(c) for c in src.cells]

    def _evict_one(self, keep: tuple[_Slot, ...] = ()) -> bool:
        """Drop the least recently used cached prompt; False when there is none."""
        cached = [s for s in self._slots if s.job is None and s.tokens and s not in keep]
        if not cached:
            return False
        self._truncate(min(cached, key=lambda s: s.last_used), 0)
        self.evictions_total += 1
        return True

    def _preempt_newest(self) -> bool:
        """Give the newest running job's cells back; it starts again later. False when
        only one job runs (it always fits the pool alone)."""
        running = [s for s in self._slots if s.job is not None]
        if len(running) < 2:
            return False
        slot = max(running, key=lambda s: s.job.order)  # type: ignore[union-attr]
        job = slot.job
        assert job is not None
        slot.job = None
        if job.chain is not None:
            self.rt.free_sampler(job.chain)
            job.chain = None
        self._truncate(slot, 0)
        job.tried = -1
        self._waiting.insert(0, job)
        self.preemptions_total += 1
        log.info("KV pool full: job restarted later to let older ones finish")
        return True

    def _make_room(self, need: int, keep: tuple[_Slot, ...] = ()) -> int:
        """Free cells until ``need`` are free (cached prompts first, then the newest
        running jobs); returns the free cells."""
        free = self.kv_cells_total - self._cells_used()
        if self._ordered and free < need:
            # Running jobs outgrew what _start reserved for them (not expected): free cells
            # the usual way from now on, and say that grades may depend on the batch.
            self._unorder()
            free = self.kv_cells_total - self._cells_used()
        while free < need and self._evict_one(keep):
            free = self.kv_cells_total - self._cells_used()
        return free

    def _still_to_write(self, slot: _Slot) -> int:
        """Cells ``slot``'s running job may still add: the rest of its prompt and its
        whole token budget."""
        job = slot.job
        assert job is not None
        final = len(job.want) + (0 if job.forced is not None else job.max_new_tokens)
        return max(0, final - len(slot.tokens))

    def _unorder(self) -> None:
        """Leave the ordered pool: free the retired cells, and free cells as usual from now
        on (a running job may then get cells below its older ones)."""
        log.warning("the ordered KV pool ran out of room while jobs run: cells are freed "
                    "from now on, and grades may differ from a run alone")
        self._ordered = False
        self.rt.free_retired()
        self._retired.clear()
        self._epoch += 1

    def _reset_pool(self) -> None:
        """Ordered pool, nothing running: empty it (cached prompts too), so that cells are
        handed out from cell 0 on again, each sequence's in position order."""
        self.rt.clear()
        self.evictions_total += sum(1 for s in self._slots if s.tokens)
        for slot in self._slots:
            slot.tokens, slot.cells = [], []
        self._retired.clear()
        self._front.clear()
        self._epoch += 1
        self.pool_resets_total += 1

    # -- starting a job ---------------------------------------------------------------
    def _start(self, job: Job) -> bool:
        """Put ``job`` in a slot, starting from the longest cached prefix it can use.

        Returns False (the job waits) while another running job is still prefilling a
        longer prefix of it (computing it twice would cost more than waiting: the rubrics
        of one response arrive together), or while the pool has no room for its prompt
        after evicting cached prompts (it always runs when nothing else does).
        """
        rt = self.rt
        want = job.all_tokens
        if self._ordered:
            grows = 0 if job.forced is not None else min(job.max_new_tokens,
                                                          rt.n_ctx - len(job.tokens))
            reserved = sum(self._still_to_write(s) for s in self._slots if s.job is not None)
            if self.kv_cells_total - self._cells_used() < len(want) + grows + reserved:
                if self.busy:
                    return False  # the pool is emptied once the running jobs are done
                self._reset_pool()
        # The slot sharing the longest prefix; on a tie an idle one (reused in place, no copy).
        common, _, best = max(
            ((_common_prefix(s.tokens, want), s.job is None, s) for s in self._slots),
            key=lambda x: (x[0], x[1]),
        )
        # Whole chunks only, and never past the last prompt token: logits are needed from
        # there on (a running slot's cache can go on with generated tokens).
        first_row = len(job.tokens) - 1
        keep = min(common, first_row) // rt.n_batch * rt.n_batch
        running = [s for s in self._slots if s.job is not None]
        for s in running:
            if s.job.prefilling:  # type: ignore[union-attr]
                coming = min(_common_prefix(s.job.want, want), first_row)  # type: ignore[union-attr]
                if coming // rt.n_batch * rt.n_batch > keep:
                    return False
        idle = [s for s in self._slots if s.job is None]
        slot = best if keep and best.job is None else min(
            idle, key=lambda s: (len(s.tokens) > 0, s.last_used)
        )
        source = (best,) if keep else ()
        free = self._make_room(len(want) - keep + len(running), keep=source + (slot,))
        if running and free < len(want) - keep + len(running):
            return False
        if slot is not best and keep:
            self._copy(best, slot)
        self._truncate(slot, keep)
        self._clock += 1
        slot.job, slot.last_used = job, self._clock
        job.want, job.n_past, job.order = want, keep, self._clock
        job.feed, job.out, job.state, job.t_first = [], [], ConstraintState(), 0.0
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

    # -- one step -------------------------------------------------------------------
    def _step(self, only: _Slot | None = None) -> None:
        """One engine step, one ``llama_decode``: every decoding slot's next token, then
        prompt chunks. Where passes of several sequences are capped (``rt.mixed_batch``
        below ``rt.max_batch``: a CPU, whose flash attention runs a pass of 64 rows or more
        through tiles shared by its rows' sequences), a prompt chunk beside decode tokens
        fills the pass up to that cap, and a prompt chunk alone may take ``max_batch``.
        """
        rt = self.rt
        for slot in self._slots:
            if slot.job is not None and slot.job.future.cancel_requested:
                self._release(slot)
        active = [only] if only is not None else [s for s in self._slots if s.job is not None]
        active = [s for s in active if s.job is not None]
        if not active:
            return
        # Room: every decoding slot's tokens, or the oldest prompt's next chunk.
        while True:
            need = sum(len(s.job.feed) for s in active if not s.job.prefilling) or 1  # type: ignore[union-attr]
            free = self._make_room(need)
            if free >= need or only is not None or not self._preempt_newest():
                break
            active = [s for s in active if s.job is not None]
        active.sort(key=lambda s: s.job.order)  # type: ignore[union-attr]
        entries: list[BatchEntry] = []
        rows: list[tuple[_Slot, int, int]] = []  # (slot, batch row, position it predicts after)
        parts: list[tuple[_Slot, int]] = []  # (slot, tokens added) in this batch
        room = min(rt.max_batch, free)
        mixed = min(room, rt.mixed_batch)  # the most tokens of a pass of several sequences

        for slot in active:
            job = slot.job
            assert job is not None
            if job.prefilling or not job.feed or len(entries) + len(job.feed) > (
                mixed if entries else room
            ):
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
            left = (mixed if entries else room) - len(entries)
            if left <= 0:
                break
            if not job.prefilling:
                continue
            want = job.want
            end = chunk_end(job.n_past, len(want), rt.n_batch, left)
            first_row = len(job.tokens) - 1  # logits from the last prompt token on
            forced = job.forced is not None
            for p in range(job.n_past, end):
                want_logits = p >= first_row if forced else p == first_row
                if want_logits:
                    rows.append((slot, len(entries), p))
                entries.append(BatchEntry(want[p], p, slot.seq, want_logits))
            parts.append((slot, end - job.n_past))
        if entries:
            self._pass(entries, rows, parts)

    def _pass(self, entries: list[BatchEntry], rows: list[tuple[_Slot, int, int]],
              parts: list[tuple[_Slot, int]]) -> None:
        """One ``llama_decode`` of ``entries``, then each slot's record and next token."""
        rt = self.rt
        rc = rt.decode(entries)
        if rc != 0:
            self._decode_failed(rc, parts)
            return
        for slot, n in parts:
            job = slot.job
            assert job is not None
            if job.prefilling:
                self._append(slot, job.want[job.n_past : job.n_past + n])
                self.prompt_tokens_total += n
                job.n_past += n
                if not job.prefilling:
                    self._epoch += 1  # its prompt is cached now: waiting jobs may share it
            else:
                self._append(slot, job.feed)
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
        """Bring the record in line with the cache, then retry each slot alone.

        rc 1 (no room in the pool) computed nothing: make room and let the next step retry.
        Otherwise llama.cpp removed only the failing forward pass's tokens; earlier passes
        stay (llama_context::decode). Keep what stayed up to the first row whose logits
        were lost, cut the rest, and retry; the slots that fail alone fail.
        """
        if rc == 1:
            log.warning("llama_decode found no room in the KV pool for %d sequences", len(parts))
            if self._ordered:  # not expected: the pool's record disagrees with llama.cpp
                self._unorder()
                return
            if self._evict_one() or self._preempt_newest():
                return
        for slot, n in parts:
            job = slot.job
            assert job is not None
            kept = max(0, min(n, self.rt.seq_pos_max(slot.seq) + 1 - job.n_past))
            decoding = not job.prefilling
            tokens = job.feed[:n] if decoding else job.want[job.n_past : job.n_past + n]
            first_row = len(job.tokens) - 1
            ok = 0
            while ok < kept:  # rows of lost logits are computed again
                p = job.n_past + ok
                needs = ok == n - 1 if decoding else (
                    p >= first_row if job.forced is not None else p == first_row
                )
                if needs:
                    break
                ok += 1
            if kept > ok:
                self.rt.seq_truncate(slot.seq, job.n_past + ok)
            self._append(slot, tokens[:ok])
            job.n_past += ok
            if decoding:
                job.feed = job.feed[ok:]
            else:
                self.prompt_tokens_total += ok
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
        for slot, _ in parts:
            if slot.job is not None:
                self._step(only=slot)

    # -- choosing a token -------------------------------------------------------------
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
        self._epoch += 1
        if job.chain is not None:
            self.rt.free_sampler(job.chain)
            job.chain = None
        # Keep the prompt as a prefix cache; generated tokens are rarely shared.
        self._truncate(slot, min(len(job.tokens), len(slot.tokens)))
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
        try:
            result = job.finish(gen) if job.finish is not None else gen
        except Exception as exc:
            job.future.set_exception(exc)
        else:
            job.future.set_result(result)  # dropped if cancelled meanwhile

    def _fail(self, slot: _Slot, exc: BaseException) -> None:
        job = self._release(slot)
        # The cache may hold a partial prompt: it is still a valid prefix.
        job.future.set_exception(exc)

