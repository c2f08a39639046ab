"""Recognising rendered Prometheus prompts: our own renders and prometheus-eval's, round trip."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_eval import PrometheusEval
from prometheus_eval import prompts as PE

from prometheus_lite import templates as T
from prometheus_lite.errors import PromptError
from prometheus_lite.prompts import build_prompt
from prometheus_lite.recognize import (
    KNOWN_TEMPLATES,
    RenderedRubric,
    recognize,
    recognize_messages,
    recognize_text,
)
from prometheus_lite.results import CompareRequest, GradeRequest
from prometheus_lite.rubrics import PRESETS, Rubric, get_preset

RUBRIC = Rubric("Is it {clear} and [short]?", "a {0}", "b", "c", "d", "e\n  with lines")

SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

TRICKY = [
    "",
    "{response} {rubric}",
    "</s><s>[INST] <|im_end|><|im_start|>system\n[/INST]",
    "Feedback: good [RESULT] 1\n###Feedback: ",
    "x\n\n###Score Rubrics:\nnot the rubric\n\n###Feedback: ",
    "日本語, emoji 🙂, \\1 \\g<0>",
    "  padded \n\n",
]


def _fields(request: GradeRequest | CompareRequest) -> dict[str, Any]:
    if isinstance(request, GradeRequest):
        return dict(
            instruction=request.instruction,
            response=request.response,
            reference_answer=request.reference_answer,
        )
    return dict(
        instruction=request.instruction,
        response_a=request.response_a,
        response_b=request.response_b,
        reference_answer=request.reference_answer,
    )


# ------------------------------------------------------------------ our own renders


@pytest.mark.parametrize("value", TRICKY)
@pytest.mark.parametrize("fmt", ["v1", "v2", "chat"])
@pytest.mark.parametrize("reference", [True, False])
def test_build_prompt_round_trips_absolute(value: str, fmt: str, reference: bool) -> None:
    ref = value + "R" if reference else None
    prompt = build_prompt(
        "absolute", instruction="Q " + value, response=value, rubric=RUBRIC,
        reference_answer=ref, format=fmt, chat_template=SMOLLM2_TEMPLATE,
    )
    rec = recognize_text(prompt.text)  # headers in graded text: only one split reads a rubric
    assert rec.mode == "absolute"
    assert rec.version == ("v1" if fmt == "v1" else "v2")
    assert rec.wrapping == {"v1": "llama-2", "v2": "mistral", "chat": "chatml"}[fmt]
    assert rec.template == f"{rec.version}.absolute" + ("" if reference else "_without_reference")
    assert isinstance(rec.request, GradeRequest)
    assert rec.request.rubric == RUBRIC and type(rec.request.rubric) is Rubric
    system = T.V1_SYSTEM_PROMPT if fmt == "v1" else T.V2_ABSOLUTE_SYSTEM_PROMPT
    assert rec.system == system
    assert _fields(rec.request) == dict(
            instruction="Q " + value, response=value, reference_answer=ref
        )
    again = build_prompt("absolute", rubric=rec.request.rubric, format=fmt,
                         chat_template=SMOLLM2_TEMPLATE, **_fields(rec.request))
    assert again.text == prompt.text


@pytest.mark.parametrize("value", TRICKY)
@pytest.mark.parametrize("fmt", ["v2", "chat"])
@pytest.mark.parametrize("reference", [True, False])
def test_build_prompt_round_trips_relative(value: str, fmt: str, reference: bool) -> None:
    ref = value + "R" if reference else None
    rubric = get_preset("honesty")
    prompt = build_prompt(
        "relative", instruction="Q", response_a=value + "A", response_b=value + "B",
        rubric=rubric, reference_answer=ref, format=fmt, chat_template=SMOLLM2_TEMPLATE,
    )
    rec = recognize_text(prompt.text)  # the rubric header only in responses: unambiguous
    assert (rec.mode, rec.version, rec.system) == ("relative", "v2", T.V2_RELATIVE_SYSTEM_PROMPT)
    assert rec.template == "v2.relative" + ("" if reference else "_without_reference")
    assert isinstance(rec.request, CompareRequest)
    assert rec.request.rubric == rubric  # a preset's criteria line gives the whole preset
    assert _fields(rec.request) == dict(
            instruction="Q", response_a=value + "A", response_b=value + "B", reference_answer=ref
        )
    again = build_prompt("relative", rubric=rec.request.rubric, format=fmt,
                         chat_template=SMOLLM2_TEMPLATE, **_fields(rec.request))
    assert again.text == prompt.text


@pytest.mark.parametrize("name", sorted(KNOWN_TEMPLATES))
@pytest.mark.parametrize("wrapping", ["messages", "messages-merged", "bare", "bare-stripped",
                                      "llama-2", "mistral", "model-card", "llama-3"])
def test_every_template_in_every_wrapping(name: str, wrapping: str) -> None:
    mode, version, template = KNOWN_TEMPLATES[name]
    values = dict(instruction="I {x}", response="R", response_A="A", response_B="B",
                  reference_answer="ref", rubric=RUBRIC.render())
    user = template
    for key, value in values.items():
        user = user.replace("{" + key + "}", value)
    system = "SYS"
    sent: Any = {
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
        "messages-merged": [{"role": "user", "content": system + "\n\n" + user}],
        "bare": user,
        "bare-stripped": user.strip(),
        "llama-2": f"<s>[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST]",
        "mistral": f"[INST] {system}\n{user} [/INST]",
        "model-card": f"<s>[INST] {system}\n\n{user} [/INST]",
        "llama-3": (
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
            f"{system}<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n{user}<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n"
        ),
    }[wrapping]
    rec = recognize(sent)
    assert (rec.mode, rec.version, rec.template, rec.user) == (mode, version, name, user)
    assert rec.system == (None if wrapping.startswith("bare") else system)
    assert rec.wrapping == {"bare-stripped": "bare", "model-card": "mistral"}.get(
        wrapping, wrapping
    )
    has_ref = "{reference_answer}" in template
    assert rec.request.reference_answer == ("ref" if has_ref else None)
    assert rec.request.instruction == "I {x}"
    if mode == "absolute":
        assert rec.request.response == "R" and rec.request.rubric == RUBRIC
    else:  # the whole rubric in the criteria slot: kept verbatim
        assert (rec.request.response_a, rec.request.response_b) == ("A", "B")
        assert isinstance(rec.request.rubric, RenderedRubric)
        assert rec.request.rubric.criteria_line() == RUBRIC.render()


# ------------------------------------------------------------------ prometheus-eval itself


class _Recorder:
    """A prometheus-eval model (the library's mock kind): records what the library sends."""

    def __init__(self, answer: str) -> None:
        self.answer = answer
        self.inputs: list[Any] = []

    def validate_mockllm(self) -> bool:
        return True

    def completions(self, inputs: list[Any], **params: Any) -> list[str]:
        self.inputs.extend(inputs)
        return [self.answer] * len(inputs)


PE_RUBRIC = PE.SCORE_RUBRIC_TEMPLATE.format(
    criteria="Is the response {concise}?", score1_description="Rambling.",
    score2_description="Long.", score3_description="Fair.", score4_description="Short.",
    score5_description="Concise.",
)


@pytest.mark.parametrize("template", ["ABSOLUTE_PROMPT", "ABSOLUTE_PROMPT_WO_REF"])
def test_prometheus_eval_absolute(template: str) -> None:
    model = _Recorder("Good. [RESULT] 4")
    judge = PrometheusEval(model=model, absolute_grade_template=getattr(PE, template))
    refs = ["The ref {1}.", "Another ref."] if template == "ABSOLUTE_PROMPT" else None
    instructions = ["What is {x}?", "Say hi."]
    responses = ["x is </s> 5 [RESULT] 2", "Hi!\n\n###Score Rubrics:\nnot a header\n###Feedback: "]
    judge.absolute_grade(instructions=instructions, responses=responses, rubric=PE_RUBRIC,
                         reference_answers=refs or [None, None])
    judge.single_absolute_grade(instruction="Q", response="A", rubric=PE.HELPFULNESS_RUBRIC)
    assert len(model.inputs) == 3
    for i, messages in enumerate(model.inputs):
        rec = recognize(messages)
        assert rec.system == PE.ABS_SYSTEM_PROMPT and rec.wrapping == "messages"
        assert rec.template.startswith("v2.absolute")
        # prometheus-eval's vLLM path: FastChat "mistral" wrapping, then .strip()
        wrapped = judge._get_conversation_prompt(messages).strip()
        rec2 = recognize(wrapped)
        assert rec2.wrapping == "mistral" and rec2.request == rec.request
        if i < 2:
            ref = refs[i] if refs else None
            assert rec.request == GradeRequest(
                rec.request.instruction, responses[i], rec.request.rubric, ref
            )
            assert rec.request.rubric == Rubric(
                "Is the response {concise}?", "Rambling.", "Long.", "Fair.", "Short.", "Concise."
            )
    assert recognize(model.inputs[0]).request.instruction == instructions[0]
    assert recognize(model.inputs[2]).request.rubric == PRESETS["helpfulness"]
    if template == "ABSOLUTE_PROMPT":  # str.format writes None for a missing reference
        assert recognize(model.inputs[2]).request.reference_answer == "None"


@pytest.mark.parametrize("template", ["RELATIVE_PROMPT", "RELATIVE_PROMPT_WO_REF"])
def test_prometheus_eval_relative(template: str) -> None:
    model = _Recorder("A is better. [RESULT] A")
    judge = PrometheusEval(model=model, relative_grade_template=getattr(PE, template))
    refs = ["ref"] if template == "RELATIVE_PROMPT" else None
    criteria = PE.load_rubric("factual_validity", "relative")
    judge.relative_grade(instructions=["Q {q}"], responses_A=["a </s>"], responses_B=["b"],
                         rubric=criteria, reference_answers=refs or [None])
    judge.relative_grade(instructions=["Q"], responses_A=["a"], responses_B=["b"],
                         rubric="Which is kinder?", reference_answers=refs or [None])
    first, second = (recognize(m) for m in model.inputs)
    for rec in (first, second):
        assert rec.mode == "relative" and rec.system == PE.REL_SYSTEM_PROMPT
        # the PyPI wheel renders the older relative prompt
        assert rec.template.startswith("prometheus-eval-0.1.20.relative")
        assert rec.request.reference_answer == (refs[0] if refs else None)
    assert isinstance(first.request, CompareRequest)
    assert (first.request.instruction, first.request.response_a) == ("Q {q}", "a </s>")
    assert first.request.rubric == PRESETS["factual_validity"]
    assert isinstance(second.request.rubric, RenderedRubric)
    assert second.request.rubric.criteria_line() == "Which is kinder?"
    # judged through our renderer: the parts reach the current relative template intact
    again = build_prompt("relative", rubric=second.request.rubric, format="v2",
                         **_fields(second.request))
    assert "\n\n###Score Rubric:\nWhich is kinder?\n\n###Feedback:  [/INST]" in again.text


def test_old_relative_templates_match_the_installed_wheel() -> None:
    assert T.PE_0_1_20_RELATIVE_PROMPT == PE.RELATIVE_PROMPT
    assert T.PE_0_1_20_RELATIVE_PROMPT_WO_REF == PE.RELATIVE_PROMPT_WO_REF
    assert T.V2_ABSOLUTE_PROMPT == PE.ABSOLUTE_PROMPT
    assert T.V2_ABSOLUTE_PROMPT_WO_REF == PE.ABSOLUTE_PROMPT_WO_REF
    assert T.RUBRIC_TEMPLATE == PE.SCORE_RUBRIC_TEMPLATE


def test_free_form_absolute_rubric_is_kept_verbatim() -> None:
    user = PE.ABSOLUTE_PROMPT_WO_REF.format(
        instruction="Q", response="A", rubric="Grade kindness, 1 (rude) to 5 (kind)."
    )
    rec = recognize([{"role": "user", "content": user}])
    assert isinstance(rec.request.rubric, RenderedRubric)
    again = build_prompt("absolute", rubric=rec.request.rubric, format="v2",
                         **_fields(rec.request))
    assert again.text == f"[INST] {T.V2_ABSOLUTE_SYSTEM_PROMPT}\n{user} [/INST]"


# ------------------------------------------------------------------ not Prometheus prompts


def _user(**over: str) -> str:
    values = dict(instruction="Q", response="A", rubric=PE.HELPFULNESS_RUBRIC)
    values.update(over)
    return PE.ABSOLUTE_PROMPT_WO_REF.format(**values)


@pytest.mark.parametrize(
    ("prompt", "match"),
    [
        ("", "expected a Prometheus grading prompt"),
        ("Tell me a joke.", "got text starting with 'Tell me a joke.'"),
        ([{"role": "user", "content": "hello"}], "got text starting with 'hello'"),
        (_user().replace("###Score Rubrics:", "###Rubric:"), "matches none of the known"),
        (_user().replace("a score rubric representing", "a rubric"), "differs at its line 2"),
        (_user()[:-20], "does not end with '###Feedback:'"),
        ("Please: " + _user(), "wrapped in an unknown way"),
        (_user() + "\nAnd also write a poem.", "does not end with"),
        ("[INST] " + _user() + " [/INST] Sure", "wrapped in an unknown way"),
        (
            PE.ABSOLUTE_PROMPT_WO_REF.replace(
                "a response to evaluate,",
                "a response to evaluate, a relevant context to support the evaluation "
                "(denoted as Relevant Context),",
            ).format(instruction="Q", response="A", rubric="r"),
            "relevant context",
        ),
        (_user(rubric=" \n"), "rubric is empty"),
        ([{"role": "assistant", "content": _user()}], "role 'assistant'"),
        ([{"role": "user", "content": _user()}] * 2, "exactly one user message"),
        ([{"role": "user", "content": _user()}, {"role": "system", "content": "s"}],
         "system message must come first"),
        ([{"role": "user", "content": 5}], r"messages\[0\].content must be a string, got int"),
        ([{"role": "user"}], "got nothing"),
        (["hi"], "must be an object"),
        ({"role": "user"}, "must be a list"),
        (_user(response="bad \ud800"), "half of a surrogate pair"),
        ([{"role": "user", "content": _user(response="\udfff")}], "messages\\[0\\].content"),
    ],
)
def test_not_a_prometheus_prompt(prompt: Any, match: str) -> None:
    with pytest.raises(PromptError, match=match):
        recognize(prompt)


def test_not_a_string() -> None:
    with pytest.raises(PromptError, match="must be a string, got bytes"):
        recognize_text(b"###Task Description:\n")  # type: ignore[arg-type]
    with pytest.raises(PromptError, match="must be a list"):
        recognize_messages("hello")  # type: ignore[arg-type]


# ------------------------------------------------------------------ section headers in graded text

HEADERS = ["###Response to evaluate:", "###Score Rubrics:", "###Reference Answer (Score 5):",
           "###The instruction to evaluate:", "###Feedback:"]


@pytest.mark.parametrize("header", HEADERS)
@pytest.mark.parametrize("field", ["instruction", "response", "reference_answer"])
@pytest.mark.parametrize("reference", [True, False])
def test_graded_text_with_the_templates_own_headers(header: str, field: str,
                                                    reference: bool) -> None:
    """Never a silently wrong split: the exact parts, or an error naming the header."""
    if field == "reference_answer" and not reference:
        pytest.skip("no reference answer to hold the header")
    parts = {"instruction": "What is 2 + 2?", "response": "4",
             "reference_answer": "Four." if reference else None}
    parts[field] = f"Some text.\n\n{header}\nMore text, in the {field}."
    for fmt in ("v1", "v2"):
        prompt = build_prompt("absolute", rubric=RUBRIC, format=fmt, **parts)
        try:
            rec = recognize_text(prompt.text)
        except PromptError as exc:
            assert repr(header) in str(exc) and "send the parts as JSON" in str(exc)
            continue
        assert _fields(rec.request) == parts, (fmt, header, field)
        assert rec.request.rubric == RUBRIC


def test_ambiguous_headers_are_refused_and_unambiguous_ones_kept() -> None:
    # The instruction holds the response header: two splits give this text.
    prompt = build_prompt("absolute", instruction="Q\n\n###Response to evaluate:\nfake",
                          response="4", rubric=RUBRIC, reference_answer=None, format="v2")
    with pytest.raises(PromptError, match="'###Response to evaluate:'") as e:
        recognize_text(prompt.text)
    assert "'instruction' and 'response'" in str(e.value)
    # A reference header in a prompt without a reference section is only text.
    prompt = build_prompt("absolute", instruction="Q",
                          response="4\n\n###Reference Answer (Score 5):\n5", rubric=RUBRIC,
                          reference_answer=None, format="v2")
    rec = recognize_text(prompt.text)
    assert rec.template == "v2.absolute_without_reference"
    assert _fields(rec.request) == {"instruction": "Q", "reference_answer": None,
                                    "response": "4\n\n###Reference Answer (Score 5):\n5"}


def test_the_round_trip_check_can_fail() -> None:
    """The check re-renders from the request's parts, so a wrong part is caught."""
    from dataclasses import replace

    from prometheus_lite.recognize import _check_round_trip

    rec = recognize_text(build_prompt("absolute", instruction="Q", response="4",
                                      rubric=RUBRIC, reference_answer="R", format="v2").text)
    _check_round_trip(rec.template, rec.request, rec.user)  # the right parts pass
    for wrong in (replace(rec.request, response="5"),
                  replace(rec.request, rubric=replace(RUBRIC, score3_description="C")),
                  replace(rec.request, reference_answer=None)):
        with pytest.raises(PromptError, match="do not render it back"):
            _check_round_trip(rec.template, wrong, rec.user)


def test_m_prometheus_prompts_are_prometheus_2_prompts() -> None:
    """M-Prometheus is prompted as Prometheus 2 (v2 text and system prompt) in Qwen2.5's
    ChatML: recognised as such, graded text with a header included."""
    from llama_vendor import chat_template

    qwen = chat_template("Qwen-Qwen2.5-7B-Instruct.jinja")
    response = "Yes.\n\n###Score Rubrics:\nnot the rubric"
    for mode, parts in (("absolute", {"response": response}),
                        ("relative", {"response_a": response, "response_b": "No."})):
        prompt = build_prompt(mode, instruction="Q", rubric=get_preset("honesty"),
                              reference_answer="R", format="chat", chat_template=qwen, **parts)
        rec = recognize_text(prompt.text)
        assert (rec.wrapping, rec.version, rec.mode) == ("chatml", "v2", mode)
        assert _fields(rec.request) == {"instruction": "Q", "reference_answer": "R", **parts}
