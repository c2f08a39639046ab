"""jobs.Feed, the engine's side and the reader's, without a model: how many jobs the engine
takes, when it pauses for a slow reader, and what the reader gets (the engine test with a
model is tests/test_parallel.py::test_a_batch_schedule_depends_on_its_input_only)."""

from __future__ import annotations

import pytest

from prometheus_lite.jobs import Feed, Job, JudgeFuture
from prometheus_lite.llama import Sampling


def make(item: int) -> Job | JudgeFuture:
    if item < 0:  # bad input: the reader gets a future holding the error
        future = JudgeFuture()
        future.set_exception(ValueError(f"bad item {item}"))
        return future
    return Job(tokens=[item], constraint=None, sampling=Sampling(), seed=0, max_new_tokens=8)


def test_the_engine_keeps_ahead_jobs_unfinished_and_pauses_for_a_slow_reader():
    feed = Feed(range(10), make, ahead=3, hold=2)
    assert feed.wanted() == 3
    jobs = feed.take(3)
    assert [j.tokens for j in jobs] == [[0], [1], [2]]
    assert feed.wanted() == 0
    jobs[1].future.set_result("one")  # finished out of order: still one place free
    assert feed.wanted() == 1 and not feed.backlog()
    jobs[0].future.set_result("zero")
    assert feed.wanted() == 2
    assert feed.backlog()  # two finished results wait for the reader: hold reached
    item, future = feed.next()
    assert item == 0 and future.result() == "zero"
    assert not feed.backlog()
    more = feed.take(feed.wanted())
    assert [j.tokens for j in more] == [[3], [4]]
    feed.close()  # the reader stops: the unread are cancelled, the engine takes no more
    assert all(j.future.cancelled() for j in more) and jobs[2].future.cancelled()
    assert feed.wanted() == 0 and not feed.backlog()


def test_bad_items_reach_only_the_reader_and_the_end_is_seen():
    feed = Feed([0, -1, 2], make, ahead=8, hold=8)
    jobs = feed.take(feed.wanted())
    assert [j.tokens for j in jobs] == [[0], [2]] and feed.ended
    assert feed.wanted() == 0
    order = []
    while (entry := feed.next()) is not None:
        order.append(entry[0])
        if entry[0] == -1:
            with pytest.raises(ValueError, match="bad item -1"):
                entry[1].result()
    assert order == [0, -1, 2]


def test_an_iterator_error_comes_after_the_items_before_it():
    def items():
        yield 0
        yield 1
        raise OSError("input file vanished")

    feed = Feed(items(), make, ahead=8, hold=8)
    assert len(feed.take(feed.wanted())) == 2 and feed.ended
    assert feed.next()[0] == 0 and feed.next()[0] == 1
    with pytest.raises(OSError, match="vanished"):
        feed.next()
    assert feed.next() is None


def test_limits_must_be_positive():
    with pytest.raises(ValueError, match="at least 1"):
        Feed([], make, ahead=0, hold=1)
