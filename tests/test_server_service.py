"""The service under real use: admission places never leak, CORS with an API key, a
slow tokenisation does not stall /health, the caller's system message, token streaming
with the real openai client, and a batch drained on SIGTERM.

A real ``prometheus-lite serve`` on 127.0.0.1 (the embedded SmolLM2-135M); every load
loop is bounded in count and time.
"""

from __future__ import annotations

import json
import math
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from live_server import LiveServer
from prometheus_eval import prompts as PE

pytestmark = pytest.mark.timeout(600)

KEY = "k"
ORIGIN = "http://a"
# One slot and no queue: capacity 1, so one leaked place shows as a 429.
ARGS = ("--n-ctx", "2048", "--max-tokens", "16", "--greedy", "--seed", "0",
        "--parallel", "1", "--max-queue", "0", "--cors-origin", ORIGIN)
ITEM = {"instruction": "What is 2 + 2?", "response": "4", "reference_answer": "4",
        "rubric": "reasoning"}


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    srv = LiveServer(*ARGS, api_key=KEY)
    yield srv
    assert srv.stop() == 0


def _messages(system: str | None = PE.ABS_SYSTEM_PROMPT, **over: str) -> list[dict[str, str]]:
    values = {"instruction": "What is 2 + 2?", "response": "4", "reference_answer": "4",
              "rubric": PE.REASONING_RUBRIC, **over}
    user = {"role": "user", "content": PE.ABSOLUTE_PROMPT.format(**values)}
    return [{"role": "system", "content": system}, user] if system is not None else [user]


def _openai(server: LiveServer) -> Any:
    from openai import OpenAI

    return OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=120)


def _wait_idle(server: LiveServer, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if (server.metric("prometheus_lite_busy_slots") == 0
                and server.metric("prometheus_lite_queue_depth") == 0):
            return
        time.sleep(0.1)
    raise AssertionError("the engine did not become idle")


def _wait_busy(server: LiveServer, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while server.metric("prometheus_lite_busy_slots") < 1:
        assert time.monotonic() < deadline, "the engine never started the judgement"
        time.sleep(0.05)


# ------------------------------------------------------------------ (9) admission places


def test_cut_off_batches_leak_no_admission_place(server: LiveServer) -> None:
    items = [{**ITEM, "id": f"i{i}", "response": str(i)} for i in range(4)]

    def cut_off(k: int) -> None:
        # Clients leave at different moments: waiting for a place, mid-stream, at once.
        try:
            with server.client(timeout=0.15 + 0.2 * (k % 6)) as c:
                with c.stream("POST", "/v1/batch", json=items) as r:
                    for _ in r.iter_lines():
                        if k % 3 == 0:
                            break
        except httpx.TimeoutException:
            pass

    for wave in range(3):  # 3 waves of 6 concurrent batches
        threads = [threading.Thread(target=cut_off, args=(6 * wave + k,)) for k in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    _wait_idle(server)
    time.sleep(0.3)
    with server.client() as c:
        r = c.post("/v1/grade", json=ITEM)
        assert r.status_code == 200, r.text  # the one place is free again
        r = c.post("/v1/batch", json=items[:2])
        assert r.status_code == 200
        records = [json.loads(line) for line in r.text.splitlines()]
        assert [rec["error"] for rec in records] == [None, None]
    assert server.metric("prometheus_lite_busy_slots") == 0
    assert server.metric("prometheus_lite_queue_depth") == 0


# ------------------------------------------------------------------ (10) CORS with a key


def test_cors_preflight_and_error_answers_with_an_api_key(server: LiveServer) -> None:
    preflight = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization, content-type"}
    with httpx.Client(base_url=server.url, timeout=60) as anon:
        r = anon.options("/v1/grade", headers=preflight)  # never carries the key
        assert r.status_code == 200, r.text
        assert r.headers["access-control-allow-origin"] == ORIGIN
        assert "authorization" in r.headers["access-control-allow-headers"].lower()
        r = anon.options("/v1/grade", headers={**preflight, "Origin": "http://evil"})
        assert r.status_code == 400 and "access-control-allow-origin" not in r.headers
        r = anon.post("/v1/grade", json=ITEM, headers={"Origin": ORIGIN})
        assert r.status_code == 401
        assert r.headers["access-control-allow-origin"] == ORIGIN
        assert "retry-after" in r.headers.get("access-control-expose-headers", "").lower()
    with server.client() as c:
        r = c.post("/v1/grade", content=b"x" * 9_000_000, headers={  # over 8 MiB
            "Origin": ORIGIN, "Content-Type": "application/json"})
    assert r.status_code == 413 and r.headers["access-control-allow-origin"] == ORIGIN
    # 429: the one place is taken by a long judgement.
    client = _openai(server)
    long = threading.Thread(target=lambda: client.chat.completions.create(
        model="m", messages=_messages(), max_tokens=120))
    long.start()
    try:
        _wait_busy(server)
        with server.client() as c:
            r = c.post("/v1/grade", json=ITEM, headers={"Origin": ORIGIN})
        assert r.status_code == 429, r.text
        assert r.headers["access-control-allow-origin"] == ORIGIN
        assert int(r.headers["retry-after"]) >= 1
    finally:
        long.join(120)


# ------------------------------------------------------------------ (11) smaller defects


def test_slow_tokenisation_does_not_stall_health(server: LiveServer) -> None:
    """An 8 MB response (just under the default body limit) takes seconds to tokenise (then
    it is too long: 400); /health keeps answering meanwhile."""
    big = {**ITEM, "response": "word " * 1_600_000}
    answer: dict[str, Any] = {}

    def grade() -> None:
        started = time.monotonic()
        with server.client(timeout=120) as c:
            answer["status"] = c.post("/v1/grade", json=big).status_code
        answer["seconds"] = time.monotonic() - started

    t = threading.Thread(target=grade)
    health: list[float] = []
    with httpx.Client(base_url=server.url, timeout=60) as c:
        t.start()
        time.sleep(0.3)  # the body is sent and being tokenised
        for _ in range(400):  # bounded: at most ~400 probes
            if not t.is_alive():
                break
            started = time.monotonic()
            assert c.get("/health").status_code == 200
            health.append(time.monotonic() - started)
            time.sleep(0.05)
    t.join(120)
    assert answer["status"] == 400
    assert answer["seconds"] > 1.0, "tokenising was too quick to show anything"
    assert health, "no /health probe ran while the request was tokenised"
    # Relative, not absolute (a loaded machine): a stalled loop answers /health only
    # when tokenising ends, i.e. after most of the request's time.
    assert max(health) < 0.5 * answer["seconds"], (max(health), answer["seconds"])


def test_a_foreign_system_message_is_refused_not_dropped(server: LiveServer) -> None:
    from openai import BadRequestError

    client = _openai(server)
    with pytest.raises(BadRequestError) as e:
        client.chat.completions.create(model="m", messages=_messages("You are a pirate."))
    assert "system message" in str(e.value) and "Leave the system message out" in str(e.value)
    for system in (PE.ABS_SYSTEM_PROMPT, None):  # the official one, or none: judged
        r = client.chat.completions.create(model="m", messages=_messages(system))
        assert r.choices[0].model_extra["prometheus"]["score"] in range(1, 6)


def test_busy_slots_and_queue_depth_come_from_the_engine(server: LiveServer) -> None:
    client = _openai(server)
    long = threading.Thread(target=lambda: client.chat.completions.create(
        model="m", messages=_messages(), max_tokens=80))
    long.start()
    try:
        _wait_busy(server)
        assert server.metric("prometheus_lite_busy_slots") == 1
        assert server.metric("prometheus_lite_queue_depth") == 0
    finally:
        long.join(120)
    _wait_idle(server)


# ------------------------------------------------------------------ (12) streaming


def _check_stream(chunks: list[Any], reference: Any, text_of: Any, logprobs_of: Any) -> None:
    pieces = [(i, text_of(ch)) for i, ch in enumerate(chunks) if ch.choices and text_of(ch)]
    assert len(pieces) >= 5, pieces  # token by token, not the finished answer at once
    assert "".join(t for _, t in pieces) == reference.text
    label_at, label = pieces[-1]
    ext = reference.prometheus
    assert label.endswith(str(ext["score"]))
    assert logprobs_of(chunks[label_at]) is not None  # the label's event has the logprobs
    assert all(logprobs_of(chunks[i]) is None for i, _ in pieces[:-1])
    final = [ch for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert len(final) == 1
    record = final[0].choices[0].model_extra["prometheus"]
    same = ("score", "feedback", "probabilities", "prompt_tokens", "completion_tokens")
    assert {k: record[k] for k in same} == {k: ext[k] for k in same}
    assert chunks.index(final[0]) > label_at
    assert chunks[-1].usage.completion_tokens == ext["completion_tokens"]


class _Reference:
    def __init__(self, text: str, prometheus: dict[str, Any]) -> None:
        self.text, self.prometheus = text, prometheus


def test_chat_stream_token_by_token(server: LiveServer) -> None:
    client = _openai(server)
    kw: dict[str, Any] = dict(model="m", messages=_messages(), max_tokens=24, logprobs=True,
                              top_logprobs=5)
    whole = client.chat.completions.create(**kw)
    chunks = list(client.chat.completions.create(
        **kw, stream=True, stream_options={"include_usage": True}))
    ref = _Reference(whole.choices[0].message.content, whole.choices[0].model_extra["prometheus"])
    _check_stream(chunks, ref, lambda ch: ch.choices[0].delta.content,
                  lambda ch: ch.choices[0].logprobs)
    assert chunks[0].choices[0].delta.role == "assistant"
    label = [ch for ch in chunks if ch.choices and ch.choices[0].logprobs][0]
    entry = label.choices[0].logprobs.content[0]
    assert entry.token == str(ref.prometheus["score"])
    assert math.exp(entry.logprob) == pytest.approx(ref.prometheus["probabilities"][entry.token])


def test_completions_stream_token_by_token(server: LiveServer) -> None:
    client = _openai(server)
    prompt = _messages(None)[0]["content"]
    kw: dict[str, Any] = dict(model="m", prompt=prompt, max_tokens=24, logprobs=2)
    whole = client.completions.create(**kw)
    chunks = list(client.completions.create(
        **kw, stream=True, stream_options={"include_usage": True}))
    ref = _Reference(whole.choices[0].text, whole.choices[0].model_extra["prometheus"])
    _check_stream(chunks, ref, lambda ch: ch.choices[0].text, lambda ch: ch.choices[0].logprobs)
    label = [ch for ch in chunks if ch.choices and ch.choices[0].logprobs][0]
    assert label.choices[0].logprobs.tokens == [str(ref.prometheus["score"])]


def test_leaving_mid_stream_cancels_the_judgement(server: LiveServer) -> None:
    _wait_idle(server)
    cancelled = server.metric("prometheus_lite_judgements_total", mode="grade",
                              outcome="cancelled")
    ok = server.metric("prometheus_lite_judgements_total", mode="grade", outcome="ok")
    client = _openai(server)
    stream = client.chat.completions.create(model="m", messages=_messages(), max_tokens=400,
                                            stream=True)
    seen = 0
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            seen += 1
        if seen == 3:
            break
    stream.close()  # the client goes away with the feedback half written
    assert seen == 3
    deadline = time.monotonic() + 60
    while server.metric("prometheus_lite_judgements_total", mode="grade",
                        outcome="cancelled") == cancelled:
        assert time.monotonic() < deadline, "the judgement was not cancelled"
        time.sleep(0.1)
    _wait_idle(server)
    assert server.metric("prometheus_lite_judgements_total", mode="grade",
                         outcome="ok") == ok
    with server.client() as c:
        assert c.post("/v1/grade", json=ITEM).status_code == 200
    time.sleep(0.2)
    closed = [e for e in server.access_log() if e["path"] == "/v1/chat/completions"]
    assert closed[-1]["outcome"] == "client_closed"


# ------------------------------------------------------------------ (11) draining a batch


def test_sigterm_drains_a_batch_without_admitting_more() -> None:
    srv = LiveServer("--n-ctx", "2048", "--max-tokens", "16", "--greedy", "--parallel", "1",
                     "--grace-period", "15")
    n = 40  # ~0.5 s each here: far more than the grace period holds
    items = [{**ITEM, "id": f"i{i}", "response": str(i)} for i in range(n)]
    records: list[dict[str, Any]] = []
    try:
        with srv.client(timeout=120) as c, c.stream("POST", "/v1/batch", json=items) as r:
            lines = r.iter_lines()
            records.append(json.loads(next(lines)))
            srv.proc.send_signal(signal.SIGTERM)
            started = time.monotonic()
            records += [json.loads(line) for line in lines if line]
            drained_in = time.monotonic() - started
        code = srv.stop(timeout=60)
    finally:
        srv.stop(signal.SIGKILL)
    assert code == 0, "\n".join(srv.lines[-20:])
    assert sorted(rec["line"] for rec in records) == list(range(1, n + 1))  # none lost
    judged = [rec for rec in records if rec["error"] is None]
    refused = [rec for rec in records if rec["error_type"] == "ServerShuttingDown"]
    assert len(judged) + len(refused) == n
    assert 1 <= len(judged) <= 4  # what was admitted when the signal came (window 2)
    assert all("rerun it" in rec["error"] for rec in refused)
    assert drained_in < 15  # finished before the grace period, not cut off by it
