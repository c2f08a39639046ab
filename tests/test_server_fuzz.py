"""Property-based fuzz of the service's own OpenAPI document (schemathesis): no input,
valid or not, gets a 5xx answer, and the server keeps serving.

The server runs with the API key set and a small token cap, so a generated request that
is valid costs a short grade; every example count is bounded.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from live_server import LiveServer

pytestmark = pytest.mark.timeout(900)

KEY = "fuzz-key-1b2c3d"


@pytest.fixture(scope="module")
def fuzz_server() -> Iterator[LiveServer]:
    """The fuzzed server. After every test of this module has run (in whatever order:
    pytest-xdist does not keep schemathesis' items in file order), it must still serve a
    grade, have logged no 5xx and no internal error, and stop cleanly."""
    srv = LiveServer("--n-ctx", "2048", "--max-tokens", "8", "--max-tokens-cap", "16",
                     "--greedy", "--max-body-bytes", "65536", api_key=KEY)
    yield srv
    try:
        _check_survived(srv)
    finally:
        assert srv.stop() == 0


def _check_survived(srv: LiveServer) -> None:
    with srv.client() as c:
        item = {"instruction": "2+2?", "response": "4", "rubric": "reasoning"}
        assert c.post("/v1/grade", json=item).status_code == 200
    assert srv.metric("prometheus_lite_requests_total", endpoint="other", outcome="error") == 0
    log = srv.access_log()
    # (GET /ready answered 503 while the model loaded, before the fuzz: that is its job)
    bad = [(e["method"], e["path"], e["status"]) for e in log
           if e["status"] >= 500 and e["path"] != "/ready"]
    assert len(log) > 50 and not bad, (len(log), bad)


@schemathesis.serializer("application/x-ndjson")
def _ndjson(ctx: Any, value: Any) -> bytes:
    """The JSON-lines body of POST /v1/batch (the schema calls it a string; negative
    examples may be anything: a list becomes one JSON line per element)."""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    rows = value if isinstance(value, list) else [value]
    return "\n".join(json.dumps(row) for row in rows).encode("utf-8", "surrogatepass")


def _schema() -> Any:
    """The app's OpenAPI document, built without a model (the served one is checked to
    be the same); loaded at import, as schemathesis parametrizes at collection."""
    from prometheus_lite.server import ServerSettings, create_app

    document = create_app(lambda: None, ServerSettings(api_key=KEY)).openapi()  # type: ignore[arg-type,return-value]
    schema = schemathesis.openapi.from_dict(document)
    # Both valid requests (graded for real) and requests that break the schema on purpose.
    schema.config.generation.update(
        modes=[schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE]
    )
    return schema, document


schema, DOCUMENT = _schema()


def test_served_schema_is_the_fuzzed_one(fuzz_server: LiveServer) -> None:
    with fuzz_server.client() as c:
        assert c.get("/openapi.json").json() == DOCUMENT


@schema.parametrize()
@settings(max_examples=12, deadline=None, database=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_no_input_gets_a_5xx(case: Any, fuzz_server: LiveServer) -> None:
    response = case.call(base_url=fuzz_server.url, headers=fuzz_server.headers, timeout=120)
    assert response.status_code < 500, (
        f"{case.method} {case.path} -> {response.status_code}: {response.text[:300]}"
    )
    if response.status_code >= 400:
        assert "error" in response.json()  # every refusal says what was wrong
