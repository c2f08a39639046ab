"""`serve`'s OpenAI face for the Selene and Flow-Judge formats: a real server on 127.0.0.1
(the embedded model with ``--prompt-format``), the real ``openai`` client sending each
family's prompt as its own library renders it, and every answer read by the family's own
parser (executed from shared/)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from family_parsers import flow_parser, selene_parsers
from live_server import LiveServer
from test_families_prompts import TRICKY, flow_module, selene_official

from prometheus_lite.rubrics import PRESETS

pytestmark = pytest.mark.timeout(600)

HELPFUL = PRESETS["helpfulness"]
SCORES = {f"rubric_score_{i}_description": getattr(HELPFUL, f"score{i}_description")
          for i in range(1, 6)}


@pytest.fixture(scope="module", params=["selene", "flow-judge"])
def server(request: pytest.FixtureRequest) -> Iterator[LiveServer]:
    srv = LiveServer("--n-ctx", "2048", "--max-tokens", "24", "--seed", "0", "--parallel", "2",
                     "--prompt-format", request.param)
    srv.fmt = request.param  # type: ignore[attr-defined]
    yield srv
    assert srv.stop() == 0


def _client(server: LiveServer) -> Any:
    from openai import OpenAI

    return OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0, timeout=120)


def _flow_prompt(shared: Path) -> str:
    fmt = flow_module(shared, "prompt_formatter.py")
    metric = flow_module(shared, "presets.py")["RESPONSE_CORRECTNESS_3POINT"]
    return fmt["format_user_prompt"]({
        "INPUTS": fmt["format_vars"]([{"query": "Q"}, {"reference_answer": "R " + TRICKY}]),
        "OUTPUT": fmt["format_vars"]([{"response": TRICKY}]),
        "EVALUATION_CRITERIA": metric.criteria,
        "RUBRIC": fmt["format_rubric"](metric.rubric),
    })


def _selene_prompt(shared: Path) -> str:
    return selene_official(shared, "absolute-scoring.yaml").format(
        user_input="Q", assistant_response=TRICKY, rubric_objective=HELPFUL.criteria, **SCORES)


def test_the_familys_prompt_gets_the_familys_answer(server: LiveServer, shared_dir: Path) -> None:
    fmt = server.fmt  # type: ignore[attr-defined]
    prompt = _selene_prompt(shared_dir) if fmt == "selene" else _flow_prompt(shared_dir)
    client = _client(server)
    r = client.chat.completions.create(model="m", messages=[{"role": "user", "content": prompt}],
                                       n=2)
    for choice in r.choices:
        ext = choice.model_extra["prometheus"]
        content = choice.message.content
        assert ext["error"] is None and ext["prompt_format"] == fmt
        if fmt == "selene":
            critique, score = selene_parsers(shared_dir)[0](content)
            assert critique is not None and score == ext["score"]
            assert sorted(ext["probabilities"]) == ["1", "2", "3", "4", "5"]
        else:
            parsed = flow_parser(shared_dir)(content, fail_on_parse_error=True)
            assert (parsed.feedback, parsed.score) == (ext["feedback"], ext["score"])
            assert sorted(ext["probabilities"]) == ["1", "2", "3"]  # the preset's 3-point scale
    # The legacy completions face, with the prompt wrapped as the family's chat template does.
    wrapped = ("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n" + prompt
               + "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
               if fmt == "selene" else "<|user|>\n" + prompt + "<|end|>\n<|assistant|>\n")
    c = client.completions.create(model="m", prompt=wrapped)
    assert c.choices[0].model_extra["prometheus"]["prompt_format"] == fmt


def test_a_prompt_the_loaded_family_cannot_grade_is_a_clear_400(
    server: LiveServer, shared_dir: Path
) -> None:
    from openai import BadRequestError

    fmt = server.fmt  # type: ignore[attr-defined]
    if fmt == "flow-judge":  # Flow-Judge has no pairwise prompt
        prompt = selene_official(shared_dir, "pairwise.yaml").format(
            user_input="Q", assistant_response_a="a", assistant_response_b="b",
            rubric_objective=HELPFUL.criteria)
        match = "no pairwise"
    else:  # Selene grades 1-5 and yes-no, not a 3-point scale
        prompt, match = _flow_prompt(shared_dir), "grade on 1-5 or yes-no"
    with pytest.raises(BadRequestError, match=match):
        _client(server).chat.completions.create(
            model="m", messages=[{"role": "user", "content": prompt}])
