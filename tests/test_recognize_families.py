"""Selene-1-Mini and Flow-Judge-v0.1 prompts, rendered by the authors' own code, read back.

The prompts are filled independently of prometheus-lite: Selene's YAML templates with
``str.format`` (what its cookbooks do), Flow-Judge's with its own ``format_user_prompt``,
``format_vars`` and ``format_rubric`` executed from shared/ on its own preset metrics.
The recogniser must recover the parts exactly, in every wrapping the libraries send, and
refuse what it cannot read with a message that says what to do.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_families_prompts import TRICKY, flow_module, selene_official

from prometheus_lite.errors import PromptError
from prometheus_lite.recognize import recognize, recognize_messages, recognize_text
from prometheus_lite.results import CompareRequest, GradeRequest
from prometheus_lite.rubrics import PRESETS, Rubric

HELPFUL = PRESETS["helpfulness"]
SCORES = {f"rubric_score_{i}_description": getattr(HELPFUL, f"score{i}_description")
          for i in range(1, 6)}
YES_NO = {"rubric_objective": "Grounded? " + TRICKY, "rubric_yes_description": "yes " + TRICKY,
          "rubric_no_description": "no"}


def _selene(shared: Path, name: str, **values: str) -> str:
    return selene_official(shared, name).format(**values)


@pytest.mark.parametrize("with_reference", [False, True])
def test_selene_absolute(shared_dir: Path, with_reference: bool) -> None:
    name = "absolute-scoring-with-reference.yaml" if with_reference else "absolute-scoring.yaml"
    values = {"user_input": "Q " + TRICKY, "assistant_response": TRICKY,
              "rubric_objective": HELPFUL.criteria, "reference_response": "R " + TRICKY,
              **SCORES}
    rec = recognize_text(_selene(shared_dir, name, **values))
    assert rec.family == "selene" and rec.mode == "absolute" and rec.wrapping == "bare"
    assert rec.request == GradeRequest("Q " + TRICKY, TRICKY, HELPFUL,
                                       "R " + TRICKY if with_reference else None)
    assert rec.template == ("selene.absolute_with_reference" if with_reference
                            else "selene.absolute")


@pytest.mark.parametrize("with_reference", [False, True])
def test_selene_classification(shared_dir: Path, with_reference: bool) -> None:
    name = ("classification-with-reference.yaml" if with_reference
            else "classification.yaml")
    text = _selene(shared_dir, name, user_input="Q", assistant_response=TRICKY,
                   reference_response="R", **YES_NO)
    request = recognize_text(text).request
    assert isinstance(request, GradeRequest) and request.rubric.scale == "yes-no"
    assert request.rubric == Rubric(criteria=YES_NO["rubric_objective"],
                                    yes_description="yes " + TRICKY, no_description="no",
                                    scale="yes-no")
    assert request.reference_answer == ("R" if with_reference else None)


def test_selene_pairwise_in_llama3_headers(shared_dir: Path) -> None:
    """What Selene's cookbooks send through transformers' chat template (BOS included)."""
    user = _selene(shared_dir, "pairwise.yaml", user_input="Q", assistant_response_a="A " + TRICKY,
                   assistant_response_b="B", rubric_objective=HELPFUL.criteria)
    text = ("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n" + user
            + "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")
    rec = recognize_text(text)
    assert rec.wrapping == "llama-3" and rec.mode == "relative" and rec.user == user
    assert isinstance(rec.request, CompareRequest)
    assert (rec.request.response_a, rec.request.response_b) == ("A " + TRICKY, "B")
    assert rec.request.rubric.criteria == HELPFUL.criteria
    assert recognize([{"role": "user", "content": user}]).request == rec.request


FLOW_PRESETS = [f"RESPONSE_CORRECTNESS_{s}" for s in ("BINARY", "3POINT", "5POINT")]


def _flow_prompt(shared: Path, preset: str, inputs: list[dict[str, str]],
                 output: str = "response") -> tuple[str, Rubric]:
    fmt = flow_module(shared, "prompt_formatter.py")
    metric = flow_module(shared, "presets.py")[preset]
    text = fmt["format_user_prompt"]({
        "INPUTS": fmt["format_vars"](inputs),
        "OUTPUT": fmt["format_vars"]([{output: TRICKY}]),
        "EVALUATION_CRITERIA": metric.criteria,
        "RUBRIC": fmt["format_rubric"](metric.rubric),
    })
    rubric = Rubric.from_dict({"criteria": metric.criteria, "rubric": [
        {"score": it.score, "description": it.description} for it in metric.rubric]})
    return text, rubric


@pytest.mark.parametrize("preset", FLOW_PRESETS)
@pytest.mark.parametrize("inputs", ["query", "query+reference", "none"])
def test_flow_judge_presets(shared_dir: Path, preset: str, inputs: str) -> None:
    given = {"query": [{"query": "Q " + TRICKY}],
             "query+reference": [{"query": "Q"}, {"reference_answer": "R\n</query>\n" + TRICKY}],
             "none": []}[inputs]
    text, rubric = _flow_prompt(shared_dir, preset, given)
    rec = recognize([{"role": "user", "content": text}])  # what its llamafile backend sends
    assert rec.family == "flow-judge" and rec.wrapping == "messages"
    expected = {"query": GradeRequest("Q " + TRICKY, TRICKY, rubric),
                "query+reference": GradeRequest("Q", TRICKY, rubric, "R\n</query>\n" + TRICKY),
                "none": GradeRequest("", TRICKY, rubric)}[inputs]
    assert rec.request == expected
    assert rec.template == ("flow-judge.no_inputs" if inputs == "none" else "flow-judge")


def test_flow_judge_in_the_phi3_template(shared_dir: Path) -> None:
    text, rubric = _flow_prompt(shared_dir, FLOW_PRESETS[0], [{"query": "Q"}])
    rec = recognize_text("<|user|>\n" + text + "<|end|>\n<|assistant|>\n")
    assert rec.wrapping == "phi-3" and rec.request == GradeRequest("Q", TRICKY, rubric)


def test_flow_judge_custom_variables_are_refused_clearly(shared_dir: Path) -> None:
    """The faithfulness presets name their inputs query and context: not a grade item's."""
    text, _ = _flow_prompt(shared_dir, "RESPONSE_CORRECTNESS_BINARY",
                           [{"query": "Q"}, {"context": "C"}])
    with pytest.raises(PromptError, match="query, reference_answer, response"):
        recognize_text(text)
    text, _ = _flow_prompt(shared_dir, "RESPONSE_CORRECTNESS_BINARY", [{"query": "Q"}],
                           output="summary")
    with pytest.raises(PromptError, match="found <summary>"):
        recognize_text(text)


def test_a_scale_no_family_has_is_refused(shared_dir: Path) -> None:
    text, _ = _flow_prompt(shared_dir, "RESPONSE_CORRECTNESS_5POINT", [{"query": "Q"}])
    text = text.replace("- Score 5: ", "- Score 6: ")
    with pytest.raises(PromptError, match="scores 0-1, 1-3 or 1-5"):
        recognize_text(text)


def test_graded_text_that_repeats_a_header_is_refused(shared_dir: Path) -> None:
    response = "x\n```\n\nResponse:\n```\ny"
    text = _selene(shared_dir, "absolute-scoring.yaml", user_input="Q",
                   assistant_response=response, rubric_objective=HELPFUL.criteria, **SCORES)
    with pytest.raises(PromptError, match="'Response:'.*send the parts as JSON"):
        recognize_text(text)


def test_a_system_message_with_a_family_prompt_is_refused(shared_dir: Path) -> None:
    text, _ = _flow_prompt(shared_dir, FLOW_PRESETS[0], [{"query": "Q"}])
    with pytest.raises(PromptError, match="without a system message"):
        recognize_messages([{"role": "system", "content": "Be fair."},
                            {"role": "user", "content": text}])


def test_an_edited_template_names_the_family(shared_dir: Path) -> None:
    text = _selene(shared_dir, "absolute-scoring.yaml", user_input="Q", assistant_response="R",
                   rubric_objective=HELPFUL.criteria, **SCORES)
    with pytest.raises(PromptError, match="starts like a selene prompt"):
        recognize_text(text.replace("Here is the data:", "Here is my data:"))
    with pytest.raises(PromptError, match="Selene-1-Mini or Flow-Judge"):
        recognize_text("Grade this: 4")
