"""`prometheus-lite serve`: a real server process on 127.0.0.1, real HTTP clients.

The embedded SmolLM2-135M model with short budgets; results are checked against the same
Judge driven in-process (greedy decoding, one thread: the same tokens either way).
"""

from __future__ import annotations

import json
import math
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from live_server import LiveServer
from prometheus_eval import PrometheusEval
from prometheus_eval import prompts as PE
from prometheus_eval.parser import parse_output

from prometheus_lite.batch import COMPARE_KEYS, GRADE_KEYS
from prometheus_lite.judge import Judge
from prometheus_lite.llama import Sampling
from prometheus_lite.results import CompareRequest, GradeRequest
from prometheus_lite.rubrics import ALL_PRESETS, PRESETS

pytestmark = pytest.mark.timeout(600)

KEY = "test-key-7f3a9c"
N_CTX = "2048"
# One slot unless a test says otherwise: answers then equal the in-process judge's exactly.
COMMON = ("--n-ctx", N_CTX, "--max-tokens", "16", "--greedy", "--seed", "0", "--parallel", "1")

ITEM = {"instruction": "What is 2 + 2?", "response": "4", "reference_answer": "4",
        "rubric": "reasoning"}
PAIR = {"instruction": "Say hello in French.", "response_a": "Bonjour.",
        "response_b": "Adios.", "rubric": "helpfulness"}


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    srv = LiveServer(*COMMON, "--max-tokens-cap", "64", "--max-body-bytes", "200000",
                     api_key=KEY)
    yield srv
    assert srv.stop() == 0


@pytest.fixture(scope="module")
def judge() -> Iterator[Judge]:
    # One slot, as the server: with more, where cells lie in the shared KV pool changes
    # llama.cpp's rounding (README, "Determinism").
    with Judge(n_ctx=int(N_CTX), n_threads=1, max_new_tokens=16, greedy=True, seed=0,
               n_parallel=1) as j:
        yield j


def check_record(rec: dict[str, Any], mode: str = "grade", *, line: bool = False) -> None:
    keys = GRADE_KEYS if mode == "grade" else COMPARE_KEYS
    assert tuple(rec) == tuple(k for k in keys if line or k != "line")
    assert rec["error"] is None, rec["error"]
    labels = ["1", "2", "3", "4", "5"] if mode == "grade" else ["A", "B"]
    assert sorted(rec["probabilities"]) == labels
    assert math.isclose(math.fsum(rec["probabilities"].values()), 1.0, abs_tol=1e-6)
    if mode == "grade":
        assert rec["score"] in range(1, 6)
    else:
        assert rec["winner"] in ("A", "B")


# ------------------------------------------------------------------ operations and auth


def test_health_ready_and_api_key(server: LiveServer) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as anon:
        assert anon.get("/health").json() == {"status": "ok"}
        for path in ("/ready", "/metrics", "/v1/models", "/openapi.json"):
            r = anon.get(path)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
            assert "Authorization: Bearer KEY" in r.json()["error"]["message"]
        wrong = {"Authorization": "Bearer wrong-key-123456"}
        assert anon.get("/ready", headers=wrong).status_code == 401
        assert anon.post("/v1/grade", json=ITEM, headers=wrong).status_code == 401
        assert anon.get("/ready", headers={"Authorization": KEY}).status_code == 401
    with server.client() as c:
        assert c.get("/ready").json()["ready"] is True
        assert c.get("/v1/models").status_code == 200
    time.sleep(0.2)
    log = "\n".join(server.lines)
    assert KEY not in log and "wrong-key-123456" not in log
    statuses = [e["status"] for e in server.access_log() if e["path"] == "/ready"]
    assert 401 in statuses and 200 in statuses


def test_openapi_document(server: LiveServer) -> None:
    with server.client() as c:
        doc = c.get("/openapi.json").json()
    paths = set(doc["paths"])
    for path in ("/v1/grade", "/v1/compare", "/v1/batch", "/v1/rubrics", "/v1/model",
                 "/v1/models", "/v1/chat/completions", "/v1/completions", "/health",
                 "/ready", "/metrics"):
        assert path in paths
    assert "GradeItem" in doc["components"]["schemas"]
    assert "repetition_penalty" in doc["components"]["schemas"]["ChatCompletionRequest"][
        "properties"]


def test_cors_is_off_by_default(server: LiveServer) -> None:
    with server.client() as c:
        r = c.options("/v1/grade", headers={"Origin": "http://evil.example",
                                            "Access-Control-Request-Method": "POST"})
        assert "access-control-allow-origin" not in r.headers
        r = c.get("/v1/models", headers={"Origin": "http://evil.example"})
        assert "access-control-allow-origin" not in r.headers


def test_metrics_exposition(server: LiveServer) -> None:
    with server.client() as c:
        assert c.post("/v1/grade", json=ITEM).status_code == 200
        r = c.get("/metrics")
    assert r.headers["content-type"].startswith("text/plain")
    for name in ("prometheus_lite_queue_depth", "prometheus_lite_busy_slots",
                 "prometheus_lite_requests_total", "prometheus_lite_request_duration_seconds",
                 "prometheus_lite_prompt_tokens_total", "prometheus_lite_generated_tokens_total",
                 "prometheus_lite_judgement_duration_seconds_bucket"):
        assert name in r.text
    assert server.metric("prometheus_lite_slots") == 1
    assert server.metric("prometheus_lite_requests_total", endpoint="/v1/grade",
                         outcome="ok") >= 1
    assert server.metric("prometheus_lite_generated_tokens_total") >= 8


# ------------------------------------------------------------------ judge endpoints


def test_grade_equals_the_in_process_judge(server: LiveServer, judge: Judge) -> None:
    with server.client() as c:
        rec = c.post("/v1/grade", json={**ITEM, "id": "q1"}).json()
        anonymous = c.post("/v1/grade", json=ITEM).json()
    check_record(rec)
    expected = judge.judge(GradeRequest(ITEM["instruction"], ITEM["response"],
                                        PRESETS["reasoning"], ITEM["reference_answer"]))
    assert rec["id"] == "q1" and anonymous["id"] is None
    assert (rec["score"], rec["feedback"]) == (expected.score, expected.feedback)
    assert rec["probabilities"] == pytest.approx(expected.probabilities, abs=1e-6)
    assert rec["prompt_tokens"] == expected.usage.prompt_tokens


def test_compare_and_feedback_collection_names(server: LiveServer, judge: Judge) -> None:
    with server.client() as c:
        rec = c.post("/v1/compare", json=PAIR).json()
        orig = c.post("/v1/grade", json={
            "orig_instruction": "Q", "orig_response": "A", "orig_criteria": "Is it short?",
            **{f"orig_score{i}_description": f"level {i}" for i in range(1, 6)}}).json()
    check_record(rec, "compare")
    check_record(orig)
    expected = judge.judge(CompareRequest(PAIR["instruction"], PAIR["response_a"],
                                          PAIR["response_b"], PRESETS["helpfulness"]))
    assert rec["winner"] == expected.winner
    assert rec["probabilities"] == pytest.approx(expected.probabilities, abs=1e-6)


def test_batch_streams_ndjson_records(server: LiveServer) -> None:
    items = [{**ITEM, "id": "g1"}, {**PAIR, "id": "c1"}, {"id": "bad", "instruction": "Q"},
             {**ITEM, "response": "5", "id": 7}]
    with server.client() as c:
        r = c.post("/v1/batch", json=items)
        jsonl = "\n".join(json.dumps(i) for i in items[:2]) + "\nnot json\n"
        r2 = c.post("/v1/batch", content=jsonl,
                    headers={"Content-Type": "application/x-ndjson"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
    records = [json.loads(line) for line in r.text.splitlines()]
    by_id = {rec["id"]: rec for rec in records}
    assert sorted(by_id) == ["7", "bad", "c1", "g1"] and len(records) == 4
    check_record(by_id["g1"], line=True)
    check_record(by_id["7"], line=True)
    check_record(by_id["c1"], "compare", line=True)
    assert by_id["bad"]["error_type"] == "BatchInputError"
    assert "item 3: missing field 'response'" in by_id["bad"]["error"]
    assert [by_id[i]["line"] for i in ("g1", "c1", "bad", "7")] == [1, 2, 3, 4]
    lines = [json.loads(line) for line in r2.text.splitlines()]
    assert sorted(rec["line"] for rec in lines) == [1, 2, 3]
    assert [rec["error_type"] for rec in lines if rec["line"] == 3] == ["BatchInputError"]


def test_rubrics_and_model(server: LiveServer, judge: Judge) -> None:
    with server.client() as c:
        rubrics = c.get("/v1/rubrics").json()
        model = c.get("/v1/model").json()
        models = c.get("/v1/models").json()
    assert rubrics == {name: r.to_dict() for name, r in ALL_PRESETS.items()}
    assert model["architecture"] == judge.info.architecture
    assert model["serving"]["n_ctx"] == int(N_CTX) and model["serving"]["n_parallel"] == 1
    assert model["serving"]["prompt_format"] == judge.prompt_format
    assert "tensors" not in model
    assert [m["id"] for m in models["data"]] == [judge.model_name]


# ------------------------------------------------------------------ OpenAI-compatible


def _openai(server: LiveServer) -> Any:
    from openai import OpenAI

    return OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=120)


def _absolute_messages(**over: str) -> list[dict[str, str]]:
    values = {"instruction": "What is 2 + 2?", "response": "4", "reference_answer": "4",
              "rubric": PE.REASONING_RUBRIC, **over}
    return [{"role": "system", "content": PE.ABS_SYSTEM_PROMPT},
            {"role": "user", "content": PE.ABSOLUTE_PROMPT.format(**values)}]


def test_openai_chat_client(server: LiveServer, judge: Judge) -> None:
    client = _openai(server)
    r = client.chat.completions.create(model="anything", messages=_absolute_messages(),
                                       logprobs=True, top_logprobs=5)
    choice = r.choices[0]
    ext = choice.model_extra["prometheus"]
    check_record(ext)
    assert r.model == judge.model_name
    _, score = parse_output(choice.message.content, mode="absolute")  # the library's parser
    assert score == ext["score"]
    label = choice.logprobs.content[0]
    assert label.token == str(ext["score"])
    assert math.exp(label.logprob) == pytest.approx(ext["probabilities"][label.token])
    tops = [t.token for t in label.top_logprobs]
    assert sorted(tops) == ["1", "2", "3", "4", "5"]
    assert tops == sorted(ext["probabilities"], key=lambda k: -ext["probabilities"][k])
    expected = judge.judge(GradeRequest("What is 2 + 2?", "4", PRESETS["reasoning"], "4"))
    assert (ext["score"], ext["feedback"]) == (expected.score, expected.feedback)
    assert choice.message.content == expected.raw_output
    assert r.usage.prompt_tokens == expected.usage.prompt_tokens


def test_openai_relative_and_streaming(server: LiveServer) -> None:
    client = _openai(server)
    content = PE.RELATIVE_PROMPT_WO_REF.format(
        instruction="Say hello in French.", response_A="Bonjour.", response_B="Adios.",
        rubric=PE.load_rubric("helpfulness", "relative"))
    messages = [{"role": "system", "content": PE.REL_SYSTEM_PROMPT},
                {"role": "user", "content": content}]
    r = client.chat.completions.create(model="m", messages=messages)
    ext = r.choices[0].model_extra["prometheus"]
    check_record(ext, "compare")
    assert parse_output(r.choices[0].message.content, mode="relative")[1] == ext["winner"]
    chunks = list(client.chat.completions.create(
        model="m", messages=messages, stream=True, stream_options={"include_usage": True}))
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == r.choices[0].message.content
    assert chunks[-1].usage.total_tokens == r.usage.total_tokens


def test_openai_completions_with_prometheus_eval_wrapping(server: LiveServer) -> None:
    class _Mock:
        def validate_mockllm(self) -> bool:
            return True

    pe = PrometheusEval(model=_Mock(), absolute_grade_template=PE.ABSOLUTE_PROMPT)
    prompts = [pe._get_conversation_prompt(_absolute_messages(response=x)).strip()
               for x in ("4", "5")]
    r = _openai(server).completions.create(model="m", prompt=prompts, logprobs=2)
    assert len(r.choices) == 2
    for choice in r.choices:
        ext = choice.model_extra["prometheus"]
        check_record(ext)
        assert choice.text.endswith(f"[RESULT] {ext['score']}")
        assert choice.logprobs.tokens == [str(ext["score"])]
        assert len(choice.logprobs.top_logprobs[0]) == 2


def test_openai_sampling_parameters_are_honoured(server: LiveServer, judge: Judge) -> None:
    client = _openai(server)
    kw = dict(model="m", messages=_absolute_messages(), temperature=0.7, top_p=0.8,
              max_tokens=12, seed=5)
    a = client.chat.completions.create(**kw, extra_body={"repetition_penalty": 1.3})
    b = client.chat.completions.create(**kw, extra_body={"repetition_penalty": 1.3})
    expected = judge.judge(
        GradeRequest("What is 2 + 2?", "4", PRESETS["reasoning"], "4"),
        sampling=Sampling(temperature=0.7, top_p=0.8, repetition_penalty=1.3),
        seed=5, max_new_tokens=12,
    )
    for r in (a, b):
        assert r.choices[0].message.content == expected.raw_output
        ext = r.choices[0].model_extra["prometheus"]
        assert ext["probabilities"] == pytest.approx(expected.probabilities, abs=1e-6)
        assert r.usage.completion_tokens == expected.usage.completion_tokens <= 12 + 8
    n2 = client.chat.completions.create(**{**kw, "n": 2})
    assert [c.index for c in n2.choices] == [0, 1]
    seed6 = judge.judge(GradeRequest("What is 2 + 2?", "4", PRESETS["reasoning"], "4"),
                        sampling=Sampling(temperature=0.7, top_p=0.8), seed=6,
                        max_new_tokens=12)
    assert n2.choices[1].message.content == seed6.raw_output


def test_prometheus_eval_litellm_wrapper(server: LiveServer, monkeypatch: Any) -> None:
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network at import
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    from prometheus_eval.litellm import LiteLLM

    before = server.metric("prometheus_lite_requests_total", endpoint="/v1/chat/completions",
                           outcome="ok")
    model = LiteLLM("openai/prometheus-lite", api_base=server.url + "/v1")
    judge = PrometheusEval(model=model, absolute_grade_template=PE.ABSOLUTE_PROMPT,
                           relative_grade_template=PE.RELATIVE_PROMPT)
    feedbacks, scores = judge.absolute_grade(
        instructions=["What is 2 + 2?", "Name a primary colour."], responses=["4", "Green."],
        rubric=PE.FACTUAL_VALIDITY_RUBRIC, reference_answers=["4", "Red."],
        params={"max_tokens": 16},
    )
    assert all(isinstance(s, int) and 1 <= s <= 5 for s in scores), scores
    _, winners = judge.relative_grade(
        instructions=["Say hello in French."], responses_A=["Bonjour."],
        responses_B=["Adios."], rubric=PE.load_rubric("helpfulness", "relative"),
        reference_answers=["Bonjour."], params={"max_tokens": 16},
    )
    assert winners[0] in ("A", "B")
    after = server.metric("prometheus_lite_requests_total", endpoint="/v1/chat/completions",
                          outcome="ok")
    assert after - before == 3  # one request per item: the library never had to retry


# ------------------------------------------------------------------ bad input


BIG = "word " * 3000


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "needle"),
    [
        ("POST", "/v1/grade", b"{bad json", 400, "not valid JSON"),
        ("POST", "/v1/grade", b"", 400, "body is empty"),
        ("POST", "/v1/grade", b"[1, 2]", 400, "valid dictionary"),
        ("POST", "/v1/grade", {"instruction": 5, "response": "x"}, 400, "field 'instruction'"),
        ("POST", "/v1/grade", {"response": "x", "rubric": "honesty"}, 400,
         "missing field 'instruction'"),
        ("POST", "/v1/grade", {**ITEM, "rubric": "kindness"}, 400, "unknown rubric preset"),
        ("POST", "/v1/grade", {**ITEM, "rubric": {"criteria": "c"}}, 400,
         "score1_description"),
        ("POST", "/v1/grade", {**ITEM, "rubric": None}, 400, "no rubric"),
        ("POST", "/v1/grade", b'{"instruction": "\\ud800", "response": "x", "rubric": "honesty"}',
         400, "surrogate"),
        ("POST", "/v1/grade", {**ITEM, "instruction": BIG}, 400, "Raise --n-ctx"),
        ("POST", "/v1/compare", {**PAIR, "response_b": None}, 400, "missing field"),
        ("POST", "/v1/grade", {**ITEM, "id": [1]}, 400, "field 'id'"),
        ("POST", "/v1/batch", b"", 400, "batch is empty"),
        ("POST", "/v1/batch", b"[]", 400, "batch is empty"),
        ("POST", "/v1/batch", b"[{]", 400, "not a valid JSON array"),
        ("POST", "/v1/batch", b"\xff\xfe", 400, "not UTF-8"),
        ("POST", "/v1/grade", b"x" * 300_000, 413, "--max-body-bytes"),
        ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}]}, 400,
         "expected a Prometheus grading prompt"),
        ("POST", "/v1/chat/completions", {"messages": []}, 400, "field 'messages'"),
        ("POST", "/v1/chat/completions", {"messages": "hi"}, 400, "field 'messages'"),
        ("POST", "/v1/chat/completions",
         {"messages": _absolute_messages(), "temperature": -1}, 400, "field 'temperature'"),
        ("POST", "/v1/chat/completions",
         {"messages": _absolute_messages(), "max_tokens": 500}, 400, "--max-tokens-cap"),
        ("POST", "/v1/chat/completions",
         {"messages": _absolute_messages(), "seed": -1}, 400, "field 'seed'"),
        ("POST", "/v1/chat/completions",
         {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, 400,
         "reads text only"),
        ("POST", "/v1/completions", {"prompt": "Tell me a joke"}, 400, "Prometheus"),
        ("POST", "/v1/completions", {"prompt": []}, 400, "empty list"),
        ("POST", "/v1/completions",
         {"prompt": _absolute_messages()[1]["content"], "echo": True}, 400, "echo"),
        ("GET", "/v1/nothing", None, 404, "no endpoint /v1/nothing"),
        ("GET", "/v1/grade", None, 405, "GET is not allowed"),
        ("GET", "/v1/model/../../etc/passwd", None, 404, "no endpoint"),
    ],
)
def test_bad_input_is_a_clear_4xx(server: LiveServer, method: str, path: str, body: Any,
                                  status: int, needle: str) -> None:
    with server.client() as c:
        kw: dict[str, Any] = {}
        if isinstance(body, bytes):
            kw = {"content": body, "headers": {"Content-Type": "application/json"}}
        elif body is not None:
            kw = {"json": body}
        r = c.request(method, path, **kw)
        assert r.status_code == status, r.text
        error = r.json()["error"]
        assert needle in error["message"], error
        assert c.post("/v1/grade", json=ITEM).status_code == 200  # everyone else still served


def test_chunked_body_over_the_limit_is_413(server: LiveServer) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit must count the bytes
        yield b'{"instruction": "'
        for _ in range(30):
            yield b"x" * 10_000
        yield b'", "response": "4", "rubric": "honesty"}'

    with server.client() as c:
        r = c.post("/v1/grade", content=chunks(), headers={"Content-Type": "application/json"})
        assert r.status_code == 413 and "--max-body-bytes" in r.json()["error"]["message"]
        r = c.post("/v1/batch", content=chunks())
        assert r.status_code == 413
        assert c.post("/v1/grade", json=ITEM).status_code == 200


# ------------------------------------------------------------------ load, queue, shutdown


def _load(server: LiveServer, n_clients: int, per_client: int) -> list[tuple[str, int, Any]]:
    """Every client sends its requests one after another; (id, status, body) each."""

    def client(k: int) -> list[tuple[str, int, Any]]:
        out = []
        with server.client(timeout=300) as c:
            for i in range(per_client):
                rid = f"c{k}-{i}"
                body = {**ITEM, "response": str(i % 7), "id": rid}
                r = c.post("/v1/grade", json=body)
                out.append((rid, r.status_code, r.json(), r.headers.get("retry-after")))
                if r.status_code == 429:
                    time.sleep(0.05)
        return out  # type: ignore[return-value]

    with ThreadPoolExecutor(n_clients) as pool:
        return [x for xs in pool.map(client, range(n_clients)) for x in xs]


def test_load_16_clients_every_request_answered_once() -> None:
    srv = LiveServer(*COMMON, "--max-tokens", "8", "--max-queue", "3", "--parallel", "4")
    try:
        started = time.monotonic()
        answers = _load(srv, 16, 5)
        elapsed = time.monotonic() - started
        assert len(answers) == 80 and elapsed < 400
        ids = Counter(rid for rid, *_ in answers)
        assert len(ids) == 80 and max(ids.values()) == 1
        ok = [a for a in answers if a[1] == 200]
        refused = [a for a in answers if a[1] == 429]
        assert len(ok) + len(refused) == 80, Counter(a[1] for a in answers)
        assert ok and refused
        for rid, _, body, _ in ok:
            assert body["id"] == rid
            check_record(body)
        for _, _, body, retry_after in refused:
            assert int(retry_after) >= 1 and body["error"]["type"] == "rate_limit_error"
        # the server judged exactly the answered ones: none lost, none twice
        assert srv.metric("prometheus_lite_judgements_total", mode="grade",
                          outcome="ok") == len(ok)
        assert srv.metric("prometheus_lite_queue_depth") == 0
        logged = [e for e in srv.access_log() if e["path"] == "/v1/grade"]
        assert Counter(e["status"] for e in logged) == Counter(a[1] for a in answers)
    finally:
        assert srv.stop() == 0


def test_sigterm_mid_load_drains_and_exits_0() -> None:
    srv = LiveServer(*COMMON, "--max-queue", "16", "--grace-period", "120")
    results: list[tuple[int, Any]] = []

    def one(i: int) -> None:
        try:
            with srv.client(timeout=200) as c:
                r = c.post("/v1/grade", json={**ITEM, "id": str(i)})
                results.append((r.status_code, r.json()))
        except httpx.TransportError as e:
            results.append((0, repr(e)))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while srv.metric("prometheus_lite_busy_slots") < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # all six are admitted by now (queued behind the first)
    srv.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    with pytest.raises(httpx.TransportError):
        httpx.post(srv.url + "/v1/grade", json=ITEM, timeout=10)  # no longer accepting
    for t in threads:
        t.join(200)
    code = srv.stop(timeout=200)
    assert code == 0, "\n".join(srv.lines[-20:])
    assert sorted(s for s, _ in results) == [200] * 6, results
    for _, body in results:
        check_record(body)
    assert any("draining" in line for line in srv.lines)


def test_timeout_answers_504_and_disconnect_cancels() -> None:
    # 200 tokens take seconds on one CPU thread (~25 tokens/s here): far past the 1.5 s timeout.
    srv = LiveServer("--n-ctx", N_CTX, "--max-tokens", "200", "--greedy",
                     "--request-timeout", "1.5", "--parallel", "1")
    try:
        with srv.client(timeout=60) as c:
            started = time.monotonic()
            r = c.post("/v1/grade", json=ITEM)
            assert r.status_code == 504 and time.monotonic() - started < 10
            assert "--request-timeout" in r.json()["error"]["message"]
        # The timed-out judgement still holds the one slot; this one queues, then its
        # client leaves: the server cancels it before it ever runs.
        with srv.client(timeout=0.5) as c, pytest.raises(httpx.ReadTimeout):
            c.post("/v1/grade", json={**ITEM, "id": "leaver"})
        deadline = time.monotonic() + 60

        def count(outcome: str) -> float:
            return srv.metric("prometheus_lite_judgements_total", mode="grade", outcome=outcome)

        def settled() -> bool:
            # A cancelled future counts at once; the engine frees its slot at its next step.
            return (count("ok") + count("cancelled") == 2
                    and srv.metric("prometheus_lite_queue_depth") == 0
                    and srv.metric("prometheus_lite_busy_slots") == 0)

        while not settled() and time.monotonic() < deadline:
            time.sleep(0.2)  # a serial engine runs the first one to its end; a slot engine stops it
        assert count("cancelled") >= 1 and count("ok") + count("cancelled") == 2
        assert srv.metric("prometheus_lite_queue_depth") == 0
        assert srv.metric("prometheus_lite_busy_slots") == 0
        statuses = [e["status"] for e in srv.access_log() if e["path"] == "/v1/grade"]
        assert statuses == [504, 499]
    finally:
        assert srv.stop() == 0


def test_sigint_when_idle_exits_0() -> None:
    srv = LiveServer("--n-ctx", N_CTX, "--max-tokens", "8")
    assert srv.stop(signal.SIGINT, timeout=60) == 0
    assert any("stopped" in line for line in srv.lines)


def test_dry_run_shows_settings_never_the_key() -> None:
    from click.testing import CliRunner

    from prometheus_lite.cli import main

    r = CliRunner().invoke(main, ["serve", "--dry-run", "--max-queue", "7"],
                           env={"PROMETHEUS_LITE_API_KEY": "hidden-key-42"})
    assert r.exit_code == 0, r.output
    assert "max_queue: 7" in r.output and "api_key: (set)" in r.output
    assert "hidden-key-42" not in r.output


def test_serve_refuses_a_missing_model() -> None:
    import subprocess
    import sys

    p = subprocess.run(
        [sys.executable, "-P", "-m", "prometheus_lite", "serve", "--port", "0",
         "--model", os.path.join(os.sep, "nonexistent", "m.gguf")],
        capture_output=True, text=True, timeout=120,
    )
    assert p.returncode == 1 and "m.gguf" in p.stderr
