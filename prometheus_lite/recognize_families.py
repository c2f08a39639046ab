"""Recognise a rendered Selene-1-Mini or Flow-Judge-v0.1 prompt (pure Python).

The OpenAI face of ``serve`` receives finished prompts. ``recognize.py`` reads the
Prometheus ones; this module reads the other families' as their own libraries send
them: one user message (no system message) holding the filled template, or that
message already wrapped in the model's chat template (Llama 3 headers for Selene,
Phi-3's ``<|user|>`` for Flow-Judge; ChatML and ``[INST]`` are accepted too).

A prompt is accepted only if the parts it is cut into render it back byte for byte
through the judge's own renderer (``family_prompts``), so the judge grades exactly
what was sent. Where graded text repeats a template's own literal lines and so allows
more than one reading, the prompt is refused with an error naming the header.

The variable names are the ones the judge renders: Selene's ``user_input``,
``assistant_response``, ``reference_response``, ``rubric_objective``,
``rubric_score_N_description``; Flow-Judge's response-evaluation preset names
(inputs ``query`` and ``reference_answer``, output ``response``). A Flow-Judge prompt
with other variable names (a custom metric) is refused with a message saying so.
"""

from __future__ import annotations

import re

from . import family_templates as FT
from .errors import PromptError, RubricError
from .family_prompts import render_flow_judge, render_selene
from .placeholders import ambiguous, fillings
from .results import CompareRequest, GradeRequest
from .rubrics import RenderedRubric, Rubric

__all__ = [
    "FAMILY_TEMPLATES", "recognize_family", "starts_like_family", "unwrap_family",
]

Request = GradeRequest | CompareRequest

# name -> (family, mode, template)
FAMILY_TEMPLATES: dict[str, tuple[str, str, str]] = {
    "selene.absolute": ("selene", "absolute", FT.SELENE_ABSOLUTE),
    "selene.absolute_with_reference": ("selene", "absolute", FT.SELENE_ABSOLUTE_WITH_REFERENCE),
    "selene.classification": ("selene", "absolute", FT.SELENE_CLASSIFICATION),
    "selene.classification_with_reference": (
        "selene", "absolute", FT.SELENE_CLASSIFICATION_WITH_REFERENCE,
    ),
    "selene.pairwise": ("selene", "relative", FT.SELENE_PAIRWISE),
    "flow-judge": ("flow-judge", "absolute", FT.FLOW_JUDGE_PROMPT),
    "flow-judge.no_inputs": ("flow-judge", "absolute", FT.FLOW_JUDGE_PROMPT_NO_INPUTS),
}

# (wrapping, opening, closings longest first); a leading BOS is ignored.
_WRAPPINGS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("llama-3", "<|start_header_id|>user<|end_header_id|>\n\n",
     ("<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
      "<|eot_id|><|start_header_id|>assistant<|end_header_id|>", "<|eot_id|>")),
    ("phi-3", "<|user|>\n", ("<|end|>\n<|assistant|>\n", "<|end|>\n<|assistant|>", "<|end|>")),
    ("chatml", "<|im_start|>user\n",
     ("<|im_end|>\n<|im_start|>assistant\n", "<|im_end|>\n<|im_start|>assistant", "<|im_end|>")),
    ("mistral", "[INST] ", (" [/INST]", "[/INST]")),
)
_BOS = ("<|begin_of_text|>", "<s>")


def starts_like_family(text: str) -> bool:
    """Whether ``text`` (unwrapped) begins like one of the family templates."""
    return any(text.startswith(_head(t)) for _, _, t in FAMILY_TEMPLATES.values())


def unwrap_family(text: str) -> tuple[str, str]:
    """(wrapping, user text) of one prompt string: bare, or one user turn in a chat template."""
    stripped = text
    for bos in _BOS:
        if stripped.startswith(bos):
            stripped = stripped[len(bos):]
    for name, opening, closings in _WRAPPINGS:
        if stripped.startswith(opening):
            inner = stripped[len(opening):]
            for closing in closings:
                if inner.endswith(closing):
                    return name, inner[: len(inner) - len(closing)]
            return name, inner
    return "bare", stripped


def recognize_family(user: str) -> tuple[str, Request] | None:
    """(template name, a key of FAMILY_TEMPLATES; the request) of a filled Selene /
    Flow-Judge template; None when ``user`` starts like none of them; a PromptError when
    it starts like one but cannot be read."""
    if not starts_like_family(user):
        return None
    readings: list[tuple[str, Request, dict[str, str]]] = []
    first_error: PromptError | None = None
    for name, (family, mode, template) in FAMILY_TEMPLATES.items():
        for values in fillings(template, user):
            try:
                requests = _requests(family, name, values)
            except (PromptError, RubricError) as exc:
                first_error = first_error or PromptError(f"{name} prompt: {exc}")
                continue
            for request in requests:
                if _render(family, mode, request) == user:
                    readings.append((name, request, values))
    if not readings:
        if first_error is not None:
            raise first_error
        family = next(f for f, _, t in FAMILY_TEMPLATES.values() if user.startswith(_head(t)))
        raise PromptError(
            f"this text starts like a {family} prompt but is not one of its templates filled "
            f"(known: {', '.join(n for n, v in FAMILY_TEMPLATES.items() if v[0] == family)}); "
            "send it exactly as the family's own library renders it, or send the parts as "
            "JSON (POST /v1/grade or /v1/compare)"
        )
    if len({(n, r) for n, r, _ in readings}) > 1:
        (n1, _, a), (n2, _, b) = readings[0], readings[1]
        if n1 == n2:
            raise ambiguous(FAMILY_TEMPLATES[n1][2], a, b)
        raise PromptError(
            f"the graded text repeats lines of the {FAMILY_TEMPLATES[n1][0]} templates, so the "
            f"prompt reads both as {n1!r} and as {n2!r}; send the parts as JSON instead "
            "(POST /v1/grade or /v1/compare)"
        )
    name, request, _ = readings[0]
    return name, request


# --------------------------------------------------------------------------- internals


def _head(template: str) -> str:
    """The template's first line: a text starting with it is meant as that template."""
    return template.split("\n", 1)[0]


def _render(family: str, mode: str, request: Request) -> str:
    if family == "flow-judge":
        assert isinstance(request, GradeRequest)
        return render_flow_judge(request.instruction, request.response, request.rubric,
                                 request.reference_answer)
    if isinstance(request, CompareRequest):
        responses: tuple[str, ...] = (request.response_a, request.response_b)
    else:
        responses = (request.response,)
    return render_selene(mode, request.instruction, responses, request.rubric,
                         request.reference_answer)


def _requests(family: str, name: str, v: dict[str, str]) -> list[Request]:
    """Every request these placeholder values can stand for (Flow's nested variables
    may be read more than one way; the round trip and the caller sort them out)."""
    if family == "selene":
        return [_selene(name, v)]
    response = _tagged(v["OUTPUT"], "response")
    rubric = _flow_rubric(v["EVALUATION_CRITERIA"], v["RUBRIC"])
    if name == "flow-judge.no_inputs":
        return [GradeRequest("", response, rubric, None)]
    return [GradeRequest(query, response, rubric, reference)
            for query, reference in _flow_inputs(v["INPUTS"])]


def _selene(name: str, v: dict[str, str]) -> Request:
    objective = v["rubric_objective"]
    if name == "selene.pairwise":
        rubric: Rubric = RenderedRubric(criteria=objective, text=f"[{objective}]")
        return CompareRequest(v["user_input"], v["assistant_response_a"],
                              v["assistant_response_b"], rubric)
    if name.startswith("selene.classification"):
        rubric = Rubric(criteria=objective, yes_description=v["rubric_yes_description"],
                        no_description=v["rubric_no_description"], scale="yes-no")
    else:
        rubric = Rubric(criteria=objective, **{
            f"score{i}_description": v[f"rubric_score_{i}_description"] for i in range(1, 6)})
    return GradeRequest(v["user_input"], v["assistant_response"], rubric,
                        v.get("reference_response"))


def _tagged(text: str, tag: str) -> str:
    """The value of flow-judge's ``<tag>\\nvalue\\n</tag>`` (format_vars of one variable)."""
    opening, closing = f"<{tag}>\n", f"\n</{tag}>"
    if not (text.startswith(opening) and text.endswith(closing)
            and len(text) >= len(opening) + len(closing)):
        found = re.match(r"<([A-Za-z0-9_]+)>", text)
        raise PromptError(
            f"expected the variable <{tag}> here (the response-evaluation presets' name), "
            f"found {('<' + found.group(1) + '>') if found else repr(text[:30])}; prometheus-lite "
            "grades the presets' variables (query, reference_answer, response): rename the "
            "metric's variables or send the parts as JSON"
        )
    return text[len(opening) : len(text) - len(closing)]


def _flow_inputs(text: str) -> list[tuple[str, str | None]]:
    """(query, reference answer or None) readings of the <inputs> block."""
    out: list[tuple[str, str | None]] = []
    try:
        out.append((_tagged(text, "query"), None))
    except PromptError:
        pass
    sep = "\n</query>\n<reference_answer>\n"
    if text.startswith("<query>\n") and text.endswith("\n</reference_answer>"):
        i = text.find(sep)
        while i >= 0:
            out.append((text[len("<query>\n") : i],
                        text[i + len(sep) : len(text) - len("\n</reference_answer>")]))
            i = text.find(sep, i + 1)
    if not out:
        _tagged(text, "query")  # raises the error naming what was found
    return out


_SCORE_LINE = re.compile(r"^- Score (\d+): ", re.MULTILINE)


def _flow_rubric(criteria: str, text: str) -> Rubric:
    """A rubric from flow-judge's ``format_rubric`` lines (``- Score N: description``)."""
    starts = list(_SCORE_LINE.finditer(text))
    if not starts or starts[0].start() != 0:
        raise PromptError("the <scoring_rubric> block must list '- Score N: description' lines")
    items = []
    for m, nxt in zip(starts, [*starts[1:], None], strict=True):
        end = nxt.start() - 1 if nxt is not None else len(text)
        items.append({"score": int(m.group(1)), "description": text[m.end() : end]})
    return Rubric.from_dict({"criteria": criteria, "rubric": items})
