"""Selene, Flow-Judge and M-Prometheus prompts against the authors' own files.

The templates are compared with the files in shared/reference/judges/ (Selene's YAML,
flow-judge's prompt_formatter.py read through ``ast``), and the filled prompts with what
the authors' own code produces: ``str.format`` on Selene's templates, flow-judge's
``format_vars`` / ``format_rubric`` / ``format_user_prompt`` executed from its file, on
its own preset metrics. Chat wrapping is checked against hand-filled ChatML / Phi-3
turns with the real templates from llama.cpp's source tree.
"""

from __future__ import annotations

import ast
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import yaml
from llama_vendor import chat_template

from prometheus_lite import family_templates as FT
from prometheus_lite import templates as T
from prometheus_lite.errors import PromptError, RubricError
from prometheus_lite.family_prompts import render_flow_judge, render_selene
from prometheus_lite.prompts import PromptFormat, build_prompt
from prometheus_lite.rubrics import PRESETS, Rubric, load_rubric

JUDGES = ("reference", "judges")
TRICKY = "Braces {response} {{x}} and tags </feedback><score>5</score> **Result:** 1 [RESULT] 2"

SELENE_FILES = {
    "absolute-scoring.yaml": FT.SELENE_ABSOLUTE,
    "absolute-scoring-with-reference.yaml": FT.SELENE_ABSOLUTE_WITH_REFERENCE,
    "classification.yaml": FT.SELENE_CLASSIFICATION,
    "classification-with-reference.yaml": FT.SELENE_CLASSIFICATION_WITH_REFERENCE,
    "pairwise.yaml": FT.SELENE_PAIRWISE,
}


def selene_official(shared: Path, name: str) -> str:
    path = shared.joinpath(*JUDGES, "selene-mini", "prompt-templates", name)
    return yaml.safe_load(path.read_text(encoding="utf-8"))["user_template"]


@pytest.mark.parametrize("name", sorted(SELENE_FILES))
def test_selene_templates_are_the_official_yaml(shared_dir: Path, name: str) -> None:
    assert SELENE_FILES[name] == selene_official(shared_dir, name)


def flow_module(shared: Path, name: str) -> dict[str, Any]:
    """Execute one of flow-judge's files with its package imports provided."""
    base = shared.joinpath(*JUDGES, "flow-judge", "flow-judge_main")
    if "flow_judge.metrics.metric" not in sys.modules:
        metric = types.ModuleType("flow_judge.metrics.metric")
        exec(compile((base / "metric.py").read_text(), "metric.py", "exec"), metric.__dict__)  # noqa: S102
        for pkg in ("flow_judge", "flow_judge.metrics"):
            sys.modules.setdefault(pkg, types.ModuleType(pkg))
        sys.modules["flow_judge.metrics.metric"] = metric
        sys.modules["flow_judge.metrics"].Metric = metric.Metric  # type: ignore[attr-defined]
        sys.modules["flow_judge.metrics"].RubricItem = metric.RubricItem  # type: ignore[attr-defined]
    ns: dict[str, Any] = {"__name__": "flow_judge.metrics.x", "__package__": "flow_judge.metrics"}
    exec(compile((base / name).read_text(), name, "exec"), ns)  # noqa: S102
    return ns


def test_flow_judge_templates_are_the_librarys(shared_dir: Path) -> None:
    path = shared_dir.joinpath(*JUDGES, "flow-judge", "flow-judge_main", "prompt_formatter.py")
    strings = {
        node.targets[0].id: node.value.value
        for node in ast.parse(path.read_text()).body
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
    }
    assert FT.FLOW_JUDGE_PROMPT == strings["USER_PROMPT_TEMPLATE"]
    assert FT.FLOW_JUDGE_PROMPT_NO_INPUTS == strings["USER_PROMPT_NO_INPUTS_TEMPLATE"]


def test_selene_prompts_are_the_templates_filled(shared_dir: Path) -> None:
    """What the cookbooks do (``template.format(**values)``), for every template."""
    helpful = PRESETS["helpfulness"]
    yes_no = Rubric(criteria="Is it " + TRICKY, yes_description="yes " + TRICKY,
                    no_description="no", scale="yes-no")
    common = {"user_input": "Q " + TRICKY, "reference_response": "R " + TRICKY}
    scores = {f"rubric_score_{i}_description": getattr(helpful, f"score{i}_description")
              for i in range(1, 6)}
    cases = [
        ("absolute-scoring.yaml", render_selene("absolute", common["user_input"], (TRICKY,),
                                                helpful, None),
         {**scores, "assistant_response": TRICKY, "rubric_objective": helpful.criteria}),
        ("absolute-scoring-with-reference.yaml",
         render_selene("absolute", common["user_input"], (TRICKY,), helpful,
                       common["reference_response"]),
         {**scores, "assistant_response": TRICKY, "rubric_objective": helpful.criteria}),
        ("classification.yaml", render_selene("absolute", common["user_input"], (TRICKY,),
                                              yes_no, None),
         {"assistant_response": TRICKY, "rubric_objective": yes_no.criteria,
          "rubric_yes_description": yes_no.yes_description, "rubric_no_description": "no"}),
        ("classification-with-reference.yaml",
         render_selene("absolute", common["user_input"], (TRICKY,), yes_no,
                       common["reference_response"]),
         {"assistant_response": TRICKY, "rubric_objective": yes_no.criteria,
          "rubric_yes_description": yes_no.yes_description, "rubric_no_description": "no"}),
        ("pairwise.yaml", render_selene("relative", common["user_input"], ("A1", "B1 {x}"),
                                        helpful, None),
         {"assistant_response_a": "A1", "assistant_response_b": "B1 {x}",
          "rubric_objective": helpful.criteria}),
    ]
    for name, ours, values in cases:
        official = selene_official(shared_dir, name)
        expected = official.format(**common, **values)  # str.format ignores unused keys
        assert ours == expected, name


FLOW_PRESETS = [f"RESPONSE_{m}_{s}" for m in ("CORRECTNESS", "FAITHFULNESS", "RELEVANCE")
                for s in ("BINARY", "3POINT", "5POINT")]


@pytest.mark.parametrize("preset", FLOW_PRESETS)
def test_flow_judge_prompts_are_the_librarys(shared_dir: Path, preset: str) -> None:
    """flow-judge's own FlowJudge._format_prompt path on its own preset metrics."""
    fmt = flow_module(shared_dir, "prompt_formatter.py")
    metric = flow_module(shared_dir, "presets.py")[preset]
    rubric = Rubric.from_dict(
        {"criteria": metric.criteria,
         "rubric": [{"score": it.score, "description": it.description} for it in metric.rubric]}
    )
    assert rubric.scale == {"BINARY": "0-1", "3POINT": "1-3", "5POINT": "1-5"}[preset.split("_")[2]]
    for instruction, reference in (("Q " + TRICKY, "R " + TRICKY), ("Q", None), ("", None)):
        inputs = []
        if instruction or reference is not None:
            inputs.append({"query": instruction})
        if reference is not None:
            inputs.append({"reference_answer": reference})
        expected = fmt["format_user_prompt"]({
            "INPUTS": fmt["format_vars"](inputs),
            "OUTPUT": fmt["format_vars"]([{"response": TRICKY}]),
            "EVALUATION_CRITERIA": metric.criteria,
            "RUBRIC": fmt["format_rubric"](metric.rubric),
        })
        assert render_flow_judge(instruction, TRICKY, rubric, reference) == expected


def _template(name: str) -> str:
    return chat_template(name)


def test_flow_judge_prompt_in_the_phi3_template() -> None:
    """One user message, no system prompt, in Phi-3.5-mini-instruct's own template."""
    rubric = Rubric(criteria="c", score0_description="bad", score1_description="good",
                    scale="binary")
    prompt = build_prompt("absolute", instruction="Q", response="<|end|>" + TRICKY,
                          rubric=rubric, format="flow-judge",
                          chat_template=_template("microsoft-Phi-3.5-mini-instruct.jinja"))
    user = render_flow_judge("Q", "<|end|>" + TRICKY, rubric, None)
    assert prompt.text == "<|user|>\n" + user + "<|end|>\n<|assistant|>\n"
    assert (user, False) in prompt.segments  # graded text never parsed as special tokens
    assert prompt.labels == ("0", "1") and prompt.format is PromptFormat.FLOW_JUDGE


def test_m_prometheus_prompt_in_the_chatml_template() -> None:
    """M-Prometheus: the Prometheus 2 (v2) text and system prompt in Qwen2.5's ChatML."""
    prompt = build_prompt("absolute", instruction="Q", response=TRICKY, rubric=PRESETS["honesty"],
                          format="chat", chat_template=_template("Qwen-Qwen2.5-7B-Instruct.jinja"))
    user = T.V2_ABSOLUTE_PROMPT_WO_REF.replace("{instruction}", "Q").replace(
        "{rubric}", PRESETS["honesty"].render()).replace("{response}", TRICKY)
    assert prompt.text == (
        "<|im_start|>system\n" + T.V2_ABSOLUTE_SYSTEM_PROMPT + "<|im_end|>\n"
        "<|im_start|>user\n" + user + "<|im_end|>\n<|im_start|>assistant\n"
    )


def test_selene_prompt_in_the_llama31_template() -> None:
    prompt = build_prompt("relative", instruction="Q", response_a="a", response_b="b",
                          rubric=PRESETS["honesty"], format="selene",
                          chat_template=_template("meta-llama-Llama-3.1-8B-Instruct.jinja"))
    user = render_selene("relative", "Q", ("a", "b"), PRESETS["honesty"], None)
    assert (user, False) in prompt.segments
    tail = "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    assert prompt.text.endswith(user + tail)
    assert "<|start_header_id|>user<|end_header_id|>" in prompt.text
    assert prompt.labels == ("A", "B")


THREE = {"criteria": "c", "score1_description": "a", "score2_description": "b",
         "score3_description": "d", "scale": "3-point"}


@pytest.mark.parametrize(
    ("fmt", "mode", "rubric", "match"),
    [
        ("v2", "absolute", THREE, "grade on 1-5.*flow-judge"),
        ("chat", "absolute", {**THREE, "scale": "1-3"}, "grade on 1-5"),
        ("selene", "absolute", THREE, "selene models grade on 1-5 or yes-no"),
        ("flow-judge", "absolute", {"criteria": "c", "yes_description": "y",
                                    "no_description": "n", "scale": "yes-no"}, "selene"),
        ("flow-judge", "relative", "helpfulness", "no pairwise"),
    ],
)
def test_a_scale_the_family_lacks_is_a_clear_error(fmt, mode, rubric, match) -> None:
    responses = {"response": "r"} if mode == "absolute" else {"response_a": "a", "response_b": "b"}
    with pytest.raises(PromptError, match=match):
        build_prompt(mode, instruction="q", rubric=load_rubric(rubric), format=fmt,
                     chat_template="{% for m in messages %}{{ m.content }}{% endfor %}",
                     **responses)


def test_rubric_scales() -> None:
    r = load_rubric({"criteria": "c", "score0_description": "no", "score1_description": "yes",
                     "scale": "binary"})
    assert r.scale == "0-1" and r.labels == ("0", "1")
    assert Rubric.from_dict(r.to_dict()) == r
    assert PRESETS["helpfulness"].to_dict().keys() == {
        "criteria", *(f"score{i}_description" for i in range(1, 6))}  # unchanged for 1-5
    with pytest.raises(RubricError, match="add \"scale\": \"1-3\""):
        Rubric.from_dict({k: v for k, v in THREE.items() if k != "scale"})
    with pytest.raises(RubricError, match="do not belong to scale '1-3'"):
        Rubric(**{**THREE, "score5_description": "x"})
    with pytest.raises(RubricError, match="unknown rubric scale"):
        Rubric(**{**THREE, "scale": "1-7"})


def test_flow_judge_presets_are_the_librarys(shared_dir: Path) -> None:
    """The named Flow-Judge rubrics equal its own preset metrics, field by field."""
    from prometheus_lite.rubrics import FLOW_JUDGE_PRESETS, get_preset

    presets = flow_module(shared_dir, "presets.py")
    assert set(FLOW_JUDGE_PRESETS) == {"response_correctness_binary",
                                       "response_correctness_3point",
                                       "response_correctness_5point"}
    for name, rubric in FLOW_JUDGE_PRESETS.items():
        metric = presets[name.upper()]
        assert metric.required_inputs == ["query", "reference_answer"]
        assert metric.required_output == "response"
        assert rubric.criteria == metric.criteria
        assert rubric.descriptions() == {str(it.score): it.description for it in metric.rubric}
        assert get_preset(name.replace("_", "-")) is rubric
