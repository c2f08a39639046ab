"""The parallel engine on the real embedded model: slots, shared prefixes, cancellation."""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import CancelledError

import pytest
from test_judge import LONG, check_comparison, check_grade

from prometheus_lite import Judge
from prometheus_lite.errors import DecodeError, PromptTooLongError
from prometheus_lite.results import CompareRequest, Failure, GradeRequest
from prometheus_lite.rubrics import PRESETS

RUBRICS = list(PRESETS)


def varied(n: int) -> list[GradeRequest | CompareRequest]:
    """Items of very different lengths, absolute and relative, with and without reference."""
    out: list[GradeRequest | CompareRequest] = []
    for i in range(n):
        response = (LONG[: 40 * (i % 7) ** 2] or "Yes.") + f" ({i})"
        rubric = RUBRICS[i % len(RUBRICS)]
        ref = "A careful answer." if i % 3 == 0 else None
        if i % 4 == 3:
            out.append(CompareRequest(f"Question {i}?", response, "No.", rubric, ref, id=str(i)))
        else:
            out.append(GradeRequest(f"Question {i}?", response, rubric, ref, id=str(i)))
    return out


def check(result: object) -> None:
    if isinstance(result, CompareRequest | Failure):
        raise AssertionError(result)
    if hasattr(result, "winner"):
        check_comparison(result)  # type: ignore[arg-type]
    else:
        check_grade(result)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def serial() -> Judge:
    with Judge(n_ctx=2048, max_new_tokens=24, greedy=True, n_parallel=1) as j:
        yield j


@pytest.fixture(scope="module")
def parallel() -> Judge:
    with Judge(n_ctx=2048, max_new_tokens=24, greedy=True, n_parallel=4) as j:
        yield j


def test_parallel_batch_keeps_order_and_the_contract(serial: Judge, parallel: Judge) -> None:
    """N=4 against N=1 on varied items: same ids in order, every answer well-formed, and
    the label distributions agree up to batching noise (see engine.py: Determinism)."""
    items = varied(8)  # every length class of varied() (i % 7), absolute and relative
    one = list(serial.batch(items))
    four = list(parallel.batch(items))
    assert [r.id for r in four] == [r.id for r in one] == [it.id for it in items]
    diffs = []
    for a, b in zip(one, four, strict=True):
        check(a)
        check(b)
        if a.raw_output[:-1] == b.raw_output[:-1]:  # same feedback: same label position
            diffs += [abs(a.probabilities[k] - b.probabilities[k]) for k in a.probabilities]
    assert diffs, "no item kept its feedback at N=4: far beyond batching noise"
    assert max(diffs) < 0.05


def test_one_slot_is_bit_identical_to_a_fresh_run(serial: Judge) -> None:
    items = varied(5)
    list(serial.batch(items))  # run other prompts (in the engine's order: a compare may be last)
    serial.judge(items[4])  # cache another absolute prompt: it shares the template's start
    again = serial.judge(items[2])
    with Judge(n_ctx=2048, max_new_tokens=24, greedy=True, n_parallel=1) as fresh:
        first = fresh.judge(items[2])
    assert first.usage.cached_prompt_tokens == 0 < again.usage.cached_prompt_tokens
    assert (again.raw_output, again.probabilities) == (first.raw_output, first.probabilities)


def test_rubrics_of_one_response_share_its_prefix(serial: Judge, parallel: Judge) -> None:
    instruction, response = "Explain photosynthesis briefly.", LONG[:900]
    separate = [serial.grade(instruction, response, r) for r in RUBRICS]
    together = serial.grade_rubrics(instruction, response, RUBRICS)
    # N=1: bit-identical to separate grades, whatever the cache held.
    assert [(g.raw_output, g.probabilities) for g in together] == [
        (g.raw_output, g.probabilities) for g in separate
    ]
    shared = parallel.grade_rubrics(instruction, response, RUBRICS)
    for g in shared:
        check_grade(g)
    # The copied prefix computes what a fresh prefill would: same answers up to batching noise.
    same = [(a, b) for a, b in zip(separate, shared, strict=True)
            if a.raw_output[:-1] == b.raw_output[:-1]]
    assert same
    assert max(abs(a.probabilities[k] - b.probabilities[k]) for a, b in same
               for k in a.probabilities) < 0.05
    # All five are submitted at once; four of them wait for the first one's prefill of
    # the instruction and response instead of computing it again.
    prompt = shared[0].usage.prompt_tokens
    assert sum(g.usage.cached_prompt_tokens for g in shared[1:]) > 4 * (prompt // 2)


def test_cancel_queued_and_running(parallel: Judge) -> None:
    items = varied(10)
    futures = [parallel.submit(it, max_new_tokens=64) for it in items]
    assert futures[-1].cancel()  # still queued behind four slots
    time.sleep(0.2)
    assert futures[0].cancel()  # running: stopped at its next step
    with pytest.raises(CancelledError):
        futures[0].result(timeout=60)
    assert futures[0].cancelled() and futures[-1].cancelled()
    for f in futures[1:-1]:
        check(f.result(timeout=300))  # the others go on
    check(parallel.judge(items[0]))  # and the slot is usable again


def test_submit_from_many_threads(parallel: Judge) -> None:
    items = varied(8)
    results: dict[str, object] = {}

    def worker(k: int) -> None:
        for it in items[k::4]:
            results[it.id] = parallel.submit(it).result(timeout=300)  # type: ignore[index]

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert sorted(results, key=int) == [it.id for it in items]
    for r in results.values():
        check(r)


def test_too_long_beside_short_ones_fails_alone(parallel: Judge) -> None:
    huge = GradeRequest("Q?", LONG * 4, "helpfulness", id="huge")
    # Fits one sequence exactly at the limit: each slot has its own n_ctx cells.
    fits = GradeRequest("Q?", LONG[: 2 * len(LONG) // 3], "helpfulness", id="fits")
    items = [*varied(3), huge, fits, *varied(2)]
    results = list(parallel.batch(items))
    assert [r.id for r in results] == [it.id for it in items]
    bad = results[3]
    assert isinstance(bad, Failure) and bad.error_type == PromptTooLongError.__name__
    assert not bad.transient
    for r in results[:3] + results[4:]:
        check(r)
    assert results[4].usage.prompt_tokens > parallel.runtime.n_ctx // 2


def test_a_decode_failure_fails_only_its_item(parallel: Judge) -> None:
    """llama.cpp rejects a batch holding an invalid token: the engine retries each sequence
    alone, fails the bad one with a transient DecodeError, and the others go on."""
    items = varied(4)
    jobs = [parallel._job(it) for it in items]
    jobs[1].tokens = jobs[1].tokens[:-1] + [parallel.runtime.n_vocab + 7]
    futures = [parallel.engine.submit(j) for j in jobs]
    with pytest.raises(DecodeError, match="llama_decode failed"):
        futures[1].result(timeout=300)
    for f in futures[:1] + futures[2:]:
        check(f.result(timeout=300))
    check(parallel.judge(items[1]))  # its slot works again


def test_a_batch_schedule_depends_on_its_input_only() -> None:
    """The same batch twice on fresh judges, the second read from a slow, jittery source by
    a slow reader: the engine takes the items itself (jobs.Feed), at points its own state
    fixes, so both runs make the same llama_decode calls and give the same bits. (Submitted
    from the reader's thread, the first item started alone in the jittery run.)"""
    items = varied(7)
    runs = []
    for jitter in (False, True):
        rng = random.Random(7)
        with Judge(n_ctx=2048, max_new_tokens=16, greedy=True, n_parallel=4) as judge:
            calls: list[tuple[tuple[int, int, int, bool], ...]] = []
            decode = judge.runtime.decode

            def logged(entries, *args, _decode=decode, _calls=calls, **kwargs):
                _calls.append(tuple((e.token, e.pos, e.seq, e.logits) for e in entries))
                return _decode(entries, *args, **kwargs)

            judge.runtime.decode = logged  # type: ignore[method-assign]

            def source(_jitter=jitter, _rng=rng):
                for item in items:
                    if _jitter:  # later items come while earlier ones decode
                        time.sleep(_rng.uniform(0.3, 0.8))
                    yield item

            results = []
            for result in judge.batch(source()):
                if jitter:
                    time.sleep(rng.uniform(0, 0.2))
                results.append(result)
        for r in results:
            check(r)
        runs.append((calls, [(r.id, r.raw_output, r.probabilities) for r in results]))
    assert runs[0][1] == runs[1][1]
    assert len(runs[0][0]) == len(runs[1][0]) and runs[0][0] == runs[1][0]


def test_an_input_error_reaches_the_caller_after_the_results_before_it(parallel: Judge) -> None:
    items = varied(3)

    def source():
        yield from items
        raise ValueError("line 4: not JSON")

    got = []
    with pytest.raises(ValueError, match="line 4: not JSON"):
        for result in parallel.batch(source()):
            got.append(result)
    assert [r.id for r in got] == [it.id for it in items]
    for r in got:
        check(r)
    check(parallel.judge(items[0]))  # the engine goes on
