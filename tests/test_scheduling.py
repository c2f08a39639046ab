"""Which queued job the engine starts next, and which cached prompts it drops under load.

The engine starts the queued job with the longest cached or coming prefix (SGLang's
longest-prefix-match policy), passing none over more than ``engine.MAX_PASSED`` times; under
load it drops cached prompts that no queued job would start from. Jobs are queued while the
test holds the engine's lock, so that the loop sees them all at once, as it does in a batch.
Each item's reused prompt tokens say which prompt was cached when it started.
"""

from __future__ import annotations

import pytest
from test_judge import LONG, check_grade

from prometheus_lite import Judge
from prometheus_lite import engine as engine_module
from prometheus_lite.engine import _common_prefix
from prometheus_lite.results import GradeRequest

A = ("Summarise the answer.", LONG[:500])
B = ("List the sentences.", LONG[500:1000])


def _queue_at_once(judge: Judge, requests: list[GradeRequest]) -> list:
    with judge.engine._cv:  # the loop admits nothing until all are queued
        futures = [judge.submit(r) for r in requests]
    results = [f.result(timeout=600) for f in futures]
    for r in results:
        check_grade(r)
    return results


def _reuse(judge: Judge, cached: GradeRequest, new: GradeRequest) -> int:
    """The prompt tokens ``new`` reuses when ``cached``'s prompt is in the cache."""
    a, b = judge._prompt(cached)[0], judge._prompt(new)[0]
    n = judge.runtime.n_batch
    return min(_common_prefix(a, b), len(b) - 1) // n * n


def _empty(judge: Judge) -> Judge:
    for slot in judge.engine._slots:
        judge.runtime.seq_clear(slot.seq)
        slot.tokens.clear()
        slot.cells.clear()
    return judge


@pytest.fixture(scope="module")
def shared() -> Judge:
    with Judge(n_ctx=1024, n_threads=1, n_parallel=1, max_new_tokens=8, greedy=True) as j:
        yield j


@pytest.fixture
def one(shared: Judge) -> Judge:  # nothing cached
    return _empty(shared)


def test_the_job_sharing_the_cached_prompt_goes_first(one: Judge) -> None:
    """Queued A/helpfulness, B/helpfulness, A/harmlessness: the second A item starts from
    the first's cached prompt, B from the second's (in arrival order B would have replaced
    A's prompt before A/harmlessness started)."""
    a1, b1, a2 = (GradeRequest(*A, "helpfulness"), GradeRequest(*B, "helpfulness"),
                  GradeRequest(*A, "harmlessness"))
    r_a1, r_b1, r_a2 = _queue_at_once(one, [a1, b1, a2])
    assert r_a1.usage.cached_prompt_tokens == 0
    assert r_a2.usage.cached_prompt_tokens == _reuse(one, a1, a2)
    assert r_b1.usage.cached_prompt_tokens == _reuse(one, a2, b1)
    assert _reuse(one, a1, a2) > _reuse(one, b1, a2)  # the case tells the orders apart


def test_fcfs_runs_in_arrival_order(one: Judge) -> None:
    """The same queue under ``schedule="fcfs"``: B runs between the two A items."""
    one.engine.schedule = "fcfs"
    try:
        a1, b1, a2 = (GradeRequest(*A, "helpfulness"), GradeRequest(*B, "helpfulness"),
                      GradeRequest(*A, "harmlessness"))
        _, r_b1, r_a2 = _queue_at_once(one, [a1, b1, a2])
    finally:
        one.engine.schedule = "lpm"
    assert r_b1.usage.cached_prompt_tokens == _reuse(one, a1, b1)
    assert r_a2.usage.cached_prompt_tokens == _reuse(one, b1, a2)
    with pytest.raises(ValueError, match="lpm, fcfs"):
        Judge(schedule="sjf")


def test_a_job_passed_over_max_passed_times_goes_next(
    one: Judge, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With MAX_PASSED = 1, B (passed over once for A2) starts before A3, which then finds
    only B's prompt cached."""
    monkeypatch.setattr(engine_module, "MAX_PASSED", 1)
    a1, b, a2, a3 = requests = [GradeRequest(*A, "helpfulness"), GradeRequest(*B, "helpfulness"),
                                GradeRequest(*A, "harmlessness"), GradeRequest(*A, "honesty")]
    _, r_b, r_a2, r_a3 = _queue_at_once(one, requests)
    assert r_a2.usage.cached_prompt_tokens == _reuse(one, a1, a2)
    assert r_b.usage.cached_prompt_tokens == _reuse(one, a2, b)
    assert r_a3.usage.cached_prompt_tokens == _reuse(one, b, a3) < _reuse(one, a2, a3)


def test_under_load_cached_prompts_no_queued_job_uses_are_dropped() -> None:
    """Two cached prompts (A and C). One new job alone (a quiet server): nothing is
    dropped. Three new jobs for two slots: the cached prompt none of them would start
    from is dropped, and every item still finishes."""
    c = ("Count the sentences.", LONG[1000:1500])
    with Judge(n_ctx=1024, kv_cells=4096, n_threads=1, n_parallel=2, max_new_tokens=8,
               greedy=True) as judge:
        engine = judge.engine
        _queue_at_once(judge, [GradeRequest(*A, "helpfulness"), GradeRequest(*c, "helpfulness")])
        first = {s.seq: list(s.tokens) for s in engine._slots if s.tokens}
        assert len(first) == 2 and engine.evictions_total == 0
        _queue_at_once(judge, [GradeRequest(*B, "helpfulness")])  # takes one's place in it
        assert engine.evictions_total == 0  # nothing queued behind it: the cache stays
        (c_seq,) = [s.seq for s in engine._slots if s.tokens and s.tokens == first.get(s.seq)]
        c_tokens = first[c_seq]
        _queue_at_once(judge, [GradeRequest(*B, name) for name in
                               ("harmlessness", "honesty", "factual_validity")])
        assert engine.evictions_total >= 1
        assert all(s.tokens[: len(c_tokens)] != c_tokens for s in engine._slots)
        for slot in engine._slots:  # the record matches llama.cpp's cache
            assert judge.runtime.seq_pos_max(slot.seq) + 1 == len(slot.tokens)
