"""The engine's contracts: futures, a dead loop, one pass per step, the shared KV pool,
decode failures in a later forward pass, teacher forcing beside a running grade.

Models here run with one thread: on a shared, oversubscribed CPU llama.cpp's thread
barriers cost more than the second thread gains.
"""

from __future__ import annotations

import collections
import ctypes
import threading
import time
from concurrent.futures import FIRST_COMPLETED, CancelledError, as_completed, wait

import numpy as np
import pytest
from test_judge import LONG, check_grade

from prometheus_lite import Judge
from prometheus_lite.capacity import choose_parallel, pool_cells
from prometheus_lite.engine import Engine, JudgeFuture, chunk_end
from prometheus_lite.errors import DecodeError
from prometheus_lite.hub import resolve_model
from prometheus_lite.llama import KV_CACHE_TYPES, BatchEntry, LlamaRuntime
from prometheus_lite.results import GradeRequest

GiB, MiB = 1 << 30, 1 << 20


# -- sizing (no model) ----------------------------------------------------------------------
def test_auto_with_gpu_offload_sizes_the_pool_against_free_gpu_memory() -> None:
    """Issue 15.1: a Mistral-7B (128 KiB of f16 KV per token) at n_ctx 4096 on a card with
    3 GiB free after the weights, on a 128 GiB host: the pool fits half of the 3 GiB."""
    per_token = 32 * 8 * 128 * 2 * 2
    cap = choose_parallel("auto", n_ctx=4096, kv_bytes_per_token=per_token, gpu=True,
                          memory_bytes=128 * GiB, device_free_bytes=3 * GiB)
    assert cap.kv_cells * per_token <= 1.5 * GiB
    assert (cap.n_parallel, cap.kv_cells) == (9, 12288)  # 4096 + 8 x 1024 cells = 1.5 GiB
    assert "reduced to 9" in cap.why and "GPU memory free after the weights (3.0 GiB)" in cap.why
    assert f"KV pool of {cap.kv_cells} cells" in cap.why
    # The same card with 40 GiB free: the GPU default of 16, in 2.4 GiB.
    big = choose_parallel("auto", n_ctx=4096, kv_bytes_per_token=per_token, gpu=True,
                          memory_bytes=16 * GiB, device_free_bytes=40 * GiB)
    assert (big.n_parallel, big.kv_cells) == (16, pool_cells(16, 4096)) == (16, 19456)
    # No device figures: host RAM, and the reason says so.
    host = choose_parallel("auto", n_ctx=4096, kv_bytes_per_token=per_token, gpu=True,
                           memory_bytes=8 * GiB)
    assert "reported no GPU memory" in host.why and host.kv_cells * per_token <= 2 * GiB


def test_cpu_sizing_one_slot_is_one_sequence_and_explicit_counts_shrink() -> None:
    cap = choose_parallel("auto", n_ctx=4096, kv_bytes_per_token=128 * 1024, gpu=False,
                          memory_bytes=24 * GiB)
    assert (cap.n_parallel, cap.n_seq, cap.kv_cells) == (8, 16, 11264)
    one = choose_parallel(1, n_ctx=4096, kv_bytes_per_token=128 * 1024, gpu=False,
                          memory_bytes=24 * GiB)
    assert (one.n_parallel, one.n_seq, one.kv_cells) == (1, 1, 4096)
    small = choose_parallel(12, n_ctx=4096, kv_bytes_per_token=800 * 1024, gpu=False,
                            memory_bytes=16 * GiB)
    assert small.n_parallel == 2 and "12 reduced to 2" not in small.why  # 4 GiB of 800 KiB cells
    assert "reduced to 2" in small.why
    assert choose_parallel(3, n_ctx=1000, kv_bytes_per_token=1, gpu=False, memory_bytes=GiB,
                           kv_cells=300).kv_cells == 1024  # at least n_ctx, padded to 256
    with pytest.raises(ValueError, match="positive integer"):
        choose_parallel(0, n_ctx=1, kv_bytes_per_token=1, gpu=False, memory_bytes=1)


# -- futures (no model) ---------------------------------------------------------------------
def test_cancelling_a_running_future_notifies_wait_and_as_completed() -> None:
    """Issue 15.3: wait()/as_completed() return for a future cancelled while running."""
    f, g = JudgeFuture(), JudgeFuture()
    assert f.set_running_or_notify_cancel() and g.set_running_or_notify_cancel()
    seen = []
    f.add_done_callback(seen.append)
    threading.Timer(0.05, f.cancel).start()
    done, _ = wait([f, g], timeout=5, return_when=FIRST_COMPLETED)
    assert done == {f} and f.cancelled() and seen == [f]
    threading.Timer(0.05, g.cancel).start()
    assert list(as_completed([g], timeout=5)) == [g]
    with pytest.raises(CancelledError):
        g.result(timeout=0)


def test_cancel_true_means_cancelled_whatever_the_engine_does_next() -> None:
    for late in ("result", "exception"):
        f = JudgeFuture()
        f.set_running_or_notify_cancel()
        assert f.cancel() and f.cancelled() and f.done()
        if late == "result":
            f.set_result(1)  # the engine finished the job meanwhile: dropped
        else:
            f.set_exception(RuntimeError("x"))
        assert f.cancelled()
        with pytest.raises(CancelledError):
            f.result(timeout=0)
    f = JudgeFuture()
    f.set_running_or_notify_cancel()
    f.set_result(2)
    assert not f.cancel() and f.result() == 2
    pending = JudgeFuture()
    assert pending.cancel() and not pending.set_running_or_notify_cancel()


def test_cancel_races_the_result_from_many_threads() -> None:
    """Under every interleaving: cancel() True <=> the future ends cancelled."""
    for _ in range(300):
        f = JudgeFuture()
        f.set_running_or_notify_cancel()
        said: list[bool] = []
        t = threading.Thread(target=lambda f=f, said=said: said.append(f.cancel()))
        t.start()
        f.set_result("done")
        t.join()
        assert said[0] == f.cancelled()
        assert wait([f], timeout=1).done == {f}


# -- on the embedded model ------------------------------------------------------------------
class GraphCounter:
    """Counts llama.cpp graph computations (one ``result_output`` node per forward pass)
    through the scheduler's eval callback, and can abort the n-th pass of one decode."""

    def __init__(self) -> None:
        import llama_cpp
        from llama_cpp import _ggml

        self._name = _ggml.libggml.ggml_get_name
        self._name.argtypes, self._name.restype = [ctypes.c_void_p], ctypes.c_char_p
        self.graphs = 0
        self.abort_at: int | None = None  # abort the pass with this number (1-based)
        self.aborted = 0

        def on_node(tensor, ask, _):
            if ask and self._name(tensor) == b"result_output":
                self.graphs += 1
            return False  # never observe: each split computes as one graph

        def abort(_):
            if self.abort_at is not None and self.graphs >= self.abort_at:
                self.abort_at = None
                self.aborted += 1
                return True
            return False

        self.eval_callback = llama_cpp.ggml_backend_sched_eval_callback(on_node)
        self.abort_callback = llama_cpp.ggml_abort_callback(abort)


@pytest.fixture(scope="module")
def counted():
    counter = GraphCounter()
    rt = LlamaRuntime(resolve_model(None), n_ctx=1024, n_threads=1, n_seq=4, kv_cells=2048,
                      n_batch=64, max_batch=64, n_ubatch=32, eval_callback=counter.eval_callback)
    import llama_cpp

    llama_cpp.llama_set_abort_callback(rt._ctx, counter.abort_callback, None)
    yield rt, counter
    rt.close()


def test_a_shuffled_mixed_step_is_one_forward_pass(counted) -> None:
    """Issue 16.2: prompt chunks and single decode tokens of sequences in any order make
    one graph computation (per-sequence KV streams split this batch into four)."""
    rt, counter = counted
    for seq in range(4):
        rt.seq_clear(seq)
    assert rt.decode([BatchEntry(100 + i, i, s, False) for s in (0, 1, 2) for i in range(5)]) == 0
    before = counter.graphs
    step = [BatchEntry(7, 5, 2, True), BatchEntry(8, 5, 0, True)]  # decodes, out of order
    step += [BatchEntry(200 + i, i, 3, i == 9) for i in range(10)]  # a prompt chunk
    step += [BatchEntry(9, 5, 1, True)]
    assert rt.decode(step) == 0
    assert counter.graphs - before == 1
    assert [rt.seq_pos_max(s) for s in range(4)] == [5, 5, 5, 9]


def test_a_failure_in_a_later_pass_keeps_the_record_in_line(counted) -> None:
    """Issue 15.5: llama.cpp keeps the passes before a failing one. The engine reconciles
    with llama_memory_seq_pos_max, retries, and every job finishes; afterwards each
    sequence's cache ends where the engine's record says."""
    rt, counter = counted
    for seq in range(4):
        rt.seq_clear(seq)
    judge = Judge(n_ctx=1024, n_threads=1, n_parallel=1, max_new_tokens=24, greedy=True)
    try:
        engine = Engine(rt, 3, n_seq=4)
        jobs = [judge._job(GradeRequest(f"Q{i}?", LONG[: 300 * (i + 1)], "helpfulness"))
                for i in range(3)]
        original = rt.decode
        mixed = []

        def decode(entries):  # abort the 2nd pass of the first batch mixing sequences
            if len({e.seq for e in entries}) > 1 and len(entries) > rt.n_ubatch and not mixed:
                mixed.append(entries)
                counter.abort_at = counter.graphs + 2
            return original(entries)

        rt.decode = decode
        results = [engine.submit(j) for j in jobs]
        for f in results:
            check_grade(f.result(timeout=600))
        assert mixed and counter.aborted == 1
        for slot in engine._slots:
            assert rt.seq_pos_max(slot.seq) + 1 == len(slot.tokens)
        engine.close()
    finally:
        rt.decode = original
        judge.close()


@pytest.fixture(scope="module")
def two() -> Judge:
    with Judge(n_ctx=1024, n_threads=1, n_parallel=2, max_new_tokens=300, greedy=True) as j:
        yield j


def test_teacher_forcing_beside_a_running_grade_of_the_same_prompt(two: Judge) -> None:
    """Issue 15.2: the cached prefix of a slot still generating reaches past the prompt;
    teacher forcing must still compute every row it returns."""
    request = GradeRequest("Explain photosynthesis.", LONG[:400], "helpfulness")
    with Judge(n_ctx=1024, n_threads=1, n_parallel=1, max_new_tokens=160, greedy=True) as one:
        answer = one.grade(request.instruction, request.response, request.rubric)
        fresh = one.teacher_force(request, answer.output_tokens[:150])
    running = two.submit(request)  # generates up to 300 tokens, greedy: the same text
    while two.engine.busy == 0 or not any(
        s.job is not None and len(s.job.out) > 160 for s in two.engine._slots
    ):
        assert not running.done(), "the grade ended before teacher forcing could start"
        time.sleep(0.05)
    forced = two.teacher_force(request, answer.output_tokens[:150])
    running.cancel()
    assert np.isfinite(forced.logits).all()
    # Beside a decoding sequence the batch shape differs: equal up to batching noise (up to
    # ~1.2 on logits of ~20 measured on this 4-bit model), far from the zeros (or garbage)
    # of rows never computed.
    assert np.abs(forced.logits - fresh.logits).max(axis=1).max() < 3.0
    assert np.abs(forced.logits - fresh.logits).mean() < 0.5  # measured 0.13
    assert (forced.logits.argmax(1) == fresh.logits.argmax(1)).mean() > 0.9


def test_a_dead_engine_fails_every_pending_and_later_job(two: Judge) -> None:
    """Issue 15.4: an error inside the error handler ends the loop thread (a step fails,
    then failing its jobs fails too); nobody may wait forever."""
    rt = two.runtime
    engine = Engine(rt, 2)
    requests = [GradeRequest(f"Q{i}?", "Yes.", "helpfulness") for i in range(5)]

    def broken(*args: object) -> None:
        raise RuntimeError("llama.cpp refused")

    engine._step = broken  # type: ignore[method-assign]
    engine._fail = broken  # type: ignore[method-assign]
    try:
        futures = [engine.submit(two._job(r)) for r in requests]
        for f in futures:
            with pytest.raises(DecodeError, match="engine stopped"):
                f.result(timeout=60)
        later = engine.submit(two._job(requests[0]))
        with pytest.raises(DecodeError, match="Create a new Judge"):
            later.result(timeout=5)
    finally:
        engine.close()
        for slot in two.engine._slots:  # the other engine's sequences share the context
            rt.seq_clear(slot.seq)
            slot.tokens.clear()
            slot.cells.clear()
    check_grade(two.grade("Q?", "Yes.", "helpfulness"))  # the judge's own engine still works


def test_a_small_pool_evicts_queues_and_finishes_everything() -> None:
    """Issue 16.2: a pool of one context for three slots: cached prompts are evicted, new
    work waits (or the newest job steps back), and every item finishes well-formed."""
    items = [GradeRequest(f"Question {i}?", LONG[: 150 * (i % 4 + 1)] + f" ({i})",
                          "helpfulness", id=str(i)) for i in range(6)]
    with Judge(n_ctx=1024, kv_cells=1024, n_threads=1, n_parallel=3, max_new_tokens=96,
               greedy=True) as judge:
        engine = judge.engine
        assert judge.kv_cells_total == 1024 and judge.runtime.n_seq == 6
        peak = collections.Counter()
        original = judge.runtime.decode

        def decode(entries):
            peak["busy"] = max(peak["busy"], engine.busy)
            peak["used"] = max(peak["used"], engine.kv_cells_used)
            return original(entries)

        judge.runtime.decode = decode
        results = list(judge.batch(items))
        for r in results:
            check_grade(r)
        assert [r.id for r in results] == [it.id for it in items]
        assert engine.evictions_total + engine.preemptions_total > 0
        assert peak["used"] <= 1024
        for slot in engine._slots:  # the record matches llama.cpp's cache
            assert judge.runtime.seq_pos_max(slot.seq) + 1 == len(slot.tokens)
        assert engine.kv_cells_used <= judge.kv_cells_total


def test_kv_cache_types() -> None:
    rt = LlamaRuntime(resolve_model(None), n_ctx=256, n_threads=1, cache_type_k="q8_0",
                      cache_type_v="q4_0")
    try:
        f16 = rt.kv_bytes_per_token("f16", "f16")
        assert rt.kv_bytes_per_token() == pytest.approx(f16 * (34 / 32 + 18 / 32) / 4, abs=1)
        assert rt.decode([BatchEntry(5, 0, 0, True)]) == 0
    finally:
        rt.close()
    assert set(KV_CACHE_TYPES) == {"f16", "q8_0", "q4_0"}
    with pytest.raises(ValueError, match="at most max_batch"):  # never past the batch's arrays
        rt_small = LlamaRuntime(resolve_model(None), n_ctx=256, n_threads=1, max_batch=64)
        try:
            rt_small.decode([BatchEntry(5, p, 0, False) for p in range(65)])
        finally:
            rt_small.close()
    with pytest.raises(ValueError, match="needs flash attention"):
        LlamaRuntime(resolve_model(None), cache_type_v="q8_0", flash_attn=False)
    with pytest.raises(ValueError, match="f16, q8_0, q4_0"):
        LlamaRuntime(resolve_model(None), cache_type_k="q5_1")


def test_a_pass_of_several_sequences_stays_under_the_attention_tile() -> None:
    """On a CPU a pass mixing sequences holds at most llama.MIXED_MAX_TOKENS tokens (the
    tiled flash attention kernel makes mixed rows attend over each other's cells); one
    sequence's prompt chunk still uses the whole batch."""
    from prometheus_lite.llama import MIXED_MAX_TOKENS

    seen: list[tuple[int, int]] = []  # (tokens, sequences) per decode
    with Judge(n_ctx=1024, n_threads=1, n_parallel=4, max_new_tokens=12, greedy=True) as j:
        assert j.runtime.mixed_batch == MIXED_MAX_TOKENS < j.runtime.max_batch
        original = j.runtime.decode

        def decode(entries):
            seen.append((len(entries), len({e.seq for e in entries})))
            return original(entries)

        j.runtime.decode = decode  # type: ignore[method-assign]
        requests = [GradeRequest(f"Question {i}: explain photosynthesis.", LONG[: 200 + 40 * i],
                                 "helpfulness") for i in range(6)]
        results = list(j.batch(requests))
    assert all(r.score in range(1, 6) for r in results)
    assert any(n > 1 for _, n in seen), "no pass mixed sequences: nothing was checked"
    assert max(t for t, n in seen if n > 1) <= MIXED_MAX_TOKENS
    assert max(t for t, n in seen if n == 1) == j.runtime.max_batch == 64


def test_prompt_passes_start_on_chunk_boundaries_and_keep_the_last_chunk_alone() -> None:
    """chunk_end: passes of up to ``left`` tokens that start and end on n_batch boundaries,
    the prompt's partial last chunk in a pass of its own, so a prompt resumed from any
    cached prefix computes each token in a pass of the same kind as a fresh run."""
    assert chunk_end(0, 1000, 64, 512) == 512
    assert chunk_end(512, 1000, 64, 512) == 960  # the partial chunk [960, 1000) waits
    assert chunk_end(896, 1000, 64, 512) == 960
    assert chunk_end(960, 1000, 64, 512) == 1000
    assert chunk_end(0, 40, 64, 512) == 40
    assert chunk_end(0, 128, 64, 512) == 128  # no partial chunk
    assert chunk_end(0, 1000, 64, 100) == 64  # room for one whole chunk and a bit
    assert chunk_end(0, 1000, 64, 30) == 30  # less room than one chunk
    assert chunk_end(30, 1000, 64, 512) == 512
    for n in (1, 63, 64, 65, 700, 1000, 1024, 1500):
        tail = n // 64 * 64
        for start in range(0, tail + 1, 64):  # a fresh run and every cached prefix
            passes, p = [], start
            while p < n:
                end = chunk_end(p, n, 64, 512)
                assert p < end <= min(n, p + 512)
                passes.append((p, end))
                p = end
            assert all(a % 64 == 0 for a, _ in passes)
            assert all(b % 64 == 0 or b == n for _, b in passes)
            if tail < n:
                assert passes[-1] == (tail, n)
