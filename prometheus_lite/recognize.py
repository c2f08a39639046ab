"""Recognise an already-rendered Prometheus prompt and recover its parts (pure Python).

Callers that speak OpenAI's API (the official ``prometheus-eval`` library, LiteLLM, the
``openai`` client) send a finished prompt, not its parts: a system + user message pair, or
one string that FastChat's ``llama-2`` / ``mistral`` conversation already wrapped (what
prometheus-eval's vLLM path renders), or the bare filled template. :func:`recognize` turns
any of these back into a :class:`~prometheus_lite.results.GradeRequest` or
:class:`~prometheus_lite.results.CompareRequest`, which the judge then renders with its
*own* renderer for the loaded model's format, so graded text is always content (never
control tokens) and a v1 model gets its v1 wrapping whatever the caller wrapped.

A prompt that is not a Prometheus grading prompt raises :class:`PromptError` saying what
was expected. The parts round-trip: the request, rendered again from its parts (the
rubric from its parsed form), gives the caller's text back byte for byte (checked on
every call). Graded text may contain the template's own section headers: where that
leaves more than one way to read the prompt, it is refused with a PromptError naming
the header, never split silently one way.

Selene-1-Mini and Flow-Judge-v0.1 prompts (one user message, as their libraries send
them) are read by ``recognize_families`` under the same rules; their results carry
``family``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from . import templates as T
from .errors import PromptError, RubricError, check_unicode
from .placeholders import PLACEHOLDER, ambiguous, fill, fillings, split_template
from .recognize_families import FAMILY_TEMPLATES, recognize_family, unwrap_family
from .results import CompareRequest, GradeRequest
from .rubrics import PRESETS, RenderedRubric, Rubric, parse_rendered_rubric

__all__ = [
    "KNOWN_TEMPLATES",
    "Recognized",
    "RenderedRubric",
    "recognize",
    "recognize_messages",
    "recognize_text",
]

Mode = Literal["absolute", "relative"]

# name -> (mode, version, template). Names follow shared/reference/prometheus_prompts.json.
KNOWN_TEMPLATES: dict[str, tuple[Mode, str, str]] = {
    "v1.absolute": ("absolute", "v1", T.V1_ABSOLUTE_PROMPT),
    "v1.absolute_without_reference": ("absolute", "v1", T.V1_ABSOLUTE_PROMPT_WO_REF),
    "v2.absolute": ("absolute", "v2", T.V2_ABSOLUTE_PROMPT),
    "v2.absolute_without_reference": ("absolute", "v2", T.V2_ABSOLUTE_PROMPT_WO_REF),
    "v2.relative": ("relative", "v2", T.V2_RELATIVE_PROMPT),
    "v2.relative_without_reference": ("relative", "v2", T.V2_RELATIVE_PROMPT_WO_REF),
    "prometheus-eval-0.1.20.relative": ("relative", "v2", T.PE_0_1_20_RELATIVE_PROMPT),
    "prometheus-eval-0.1.20.relative_without_reference": (
        "relative",
        "v2",
        T.PE_0_1_20_RELATIVE_PROMPT_WO_REF,
    ),
}

HEADER = "###Task Description:\n"
FOOTER = "###Feedback:"  # every template ends in "\n\n###Feedback: " (trailing space)
_EXPECTED = (
    "expected a Prometheus grading prompt: the absolute (v1 or v2, with or without a "
    "reference answer) or relative (v2) template as prometheus-eval's ABSOLUTE_PROMPT / "
    "RELATIVE_PROMPT (and their _WO_REF variants) render it, starting with "
    f"{HEADER.strip()!r} and ending with {FOOTER!r} (or a Selene-1-Mini or Flow-Judge-v0.1 "
    "prompt as their own libraries render it); prometheus-lite runs a judge, not a chat model"
)


@dataclass(frozen=True)
class Recognized:
    """A recognised Prometheus prompt: the request to judge and how it was sent.

    ``user`` is the filled template exactly as the caller wrote it (trailing whitespace
    after ``###Feedback:`` restored to the template's single space); ``system`` is the
    caller's system message (None if there was none); ``template`` a key of
    :data:`KNOWN_TEMPLATES`; ``wrapping`` one of ``messages``, ``messages-merged``
    (system and template in one user turn, as on the Prometheus 2 model cards), ``bare``,
    ``llama-2``, ``mistral``, ``chatml``, ``llama-3``, ``phi-3``.
    """

    request: GradeRequest | CompareRequest
    mode: Mode
    version: str
    template: str
    wrapping: str
    system: str | None
    user: str
    family: str = "prometheus"  # or "selene", "flow-judge" (then ``version`` is "")


# --------------------------------------------------------------------------- templates


def _parse(template: str, text: str, mode: Mode) -> dict[str, str] | None:
    """The placeholder values if ``text`` is ``template`` filled, else None.

    Graded text may contain the template's own section headers (``###Score Rubrics:``
    in a response); then several splits fill the template to the same text. Of those,
    the ones whose rubric slot reads as a rubric (``[criteria]`` then the score lines
    for absolute grading, one ``[criteria]`` line for relative) are kept; if that leaves
    more than one, the prompt is ambiguous and a PromptError names the header (the
    caller can send the parts instead, which are never confused).
    """
    splits = fillings(template, text)
    if len(splits) > 1:
        plausible = [v for v in splits if _reads_as_rubric(mode, v["rubric"])]
        if len(plausible) == 1:
            splits = plausible
    if len(splits) > 1:
        raise ambiguous(template, splits[0], splits[1])
    return splits[0] if splits else None


def _reads_as_rubric(mode: Mode, slot: str) -> bool:
    if mode == "relative":
        return slot.startswith("[") and slot.endswith("]") and "\n" not in slot
    try:
        parse_rendered_rubric(slot)
    except RubricError:
        return False
    return True


def _rerender(name: str, request: GradeRequest | CompareRequest) -> str:
    """The template ``name`` filled from the request's parts as the judge reads them
    (the rubric through its parsed form), independently of how the text was cut."""
    mode, _, template = KNOWN_TEMPLATES[name]
    rubric = request.rubric
    assert isinstance(rubric, Rubric)
    values = {"instruction": request.instruction,
              "rubric": rubric.render() if mode == "absolute" else rubric.criteria_line()}
    if request.reference_answer is not None:
        values["reference_answer"] = request.reference_answer
    if isinstance(request, GradeRequest):
        values["response"] = request.response
    else:
        values["response_A"], values["response_B"] = request.response_a, request.response_b
    if set(PLACEHOLDER.findall(template)) != set(values):  # e.g. a reference it has no slot for
        return ""
    return fill(template, values)


def _check_round_trip(name: str, request: GradeRequest | CompareRequest, user: str) -> None:
    """The request re-renders the caller's text byte for byte, or a PromptError."""
    again = _rerender(name, request)
    if again != user:
        n = next((i for i, (a, b) in enumerate(zip(again, user, strict=False)) if a != b),
                 min(len(again), len(user)))
        raise PromptError(
            f"recognised the prompt as template {name!r}, but its parts do not render it back "
            f"(they differ at character {n}: {user[n : n + 40]!r} sent, "
            f"{again[n : n + 40]!r} re-rendered), so the judge would not grade what was "
            "sent; send the parts as JSON instead (POST /v1/grade or /v1/compare)"
        )


def _first_difference(text: str) -> str:
    """Which line of the closest known template the text departs from (for errors)."""
    best, best_name = -1, ""
    for name, (_, _, template) in KNOWN_TEMPLATES.items():
        head = split_template(template)[0][0]
        pairs = enumerate(zip(head, text, strict=False))
        n = next((i for i, (a, b) in pairs if a != b), min(len(head), len(text)))
        if n > best:
            best, best_name = n, name
    template = KNOWN_TEMPLATES[best_name][2]
    line_no = template[:best].count("\n") + 1
    line = template.split("\n")[line_no - 1]
    return f"closest known template {best_name!r} differs at its line {line_no} ({line[:80]!r})"


def _rubric(mode: Mode, slot: str) -> Rubric:
    if mode == "absolute":
        try:
            return parse_rendered_rubric(slot)
        except RubricError:
            pass  # a free-form rubric: kept verbatim
    else:
        for preset in PRESETS.values():
            if preset.criteria_line() == slot:
                return preset
    criteria = slot[1:-1] if slot.startswith("[") and slot.endswith("]") else slot
    try:
        return RenderedRubric(criteria=criteria, text=slot)
    except RubricError as e:
        raise PromptError(str(e)) from None


def _parse_user(user: str) -> tuple[str, Mode, str, str, GradeRequest | CompareRequest]:
    """(normalised user text, mode, version, template name, request) of a filled template."""
    if not user.startswith(HEADER):
        raise PromptError(f"{_EXPECTED}; got text starting with {user[:60]!r}")
    end = user.rfind(FOOTER)
    if end < 0 or user[end + len(FOOTER) :].strip():
        raise PromptError(
            f"{_EXPECTED}; this text starts like one but does not end with {FOOTER!r} "
            f"(it ends with {user[-40:]!r})"
        )
    user = user[: end + len(FOOTER)] + " "
    if "(denoted as Relevant Context)" in user.partition("\n\n")[0]:
        raise PromptError(
            "this is Prometheus 2's 'with relevant context' template, which prometheus-lite "
            "does not grade; put the context into the instruction and use ABSOLUTE_PROMPT / "
            "RELATIVE_PROMPT (or their _WO_REF variants)"
        )
    ambiguous: PromptError | None = None
    for name, (mode, version, template) in KNOWN_TEMPLATES.items():
        try:
            values = _parse(template, user, mode)
        except PromptError as exc:  # another template may still match without doubt
            ambiguous = ambiguous or exc
            continue
        if values is None:
            continue
        rubric = _rubric(mode, values["rubric"])
        reference = values.get("reference_answer")
        if mode == "absolute":
            request: GradeRequest | CompareRequest = GradeRequest(
                values["instruction"], values["response"], rubric, reference
            )
        else:
            request = CompareRequest(
                values["instruction"], values["response_A"], values["response_B"], rubric, reference
            )
        _check_round_trip(name, request, user)
        return user, mode, version, name, request
    if ambiguous is not None:
        raise ambiguous
    raise PromptError(
        f"{_EXPECTED}; this text starts like one but matches none of the known templates "
        f"({_first_difference(user)}), or one of its section headers is missing"
    )


# --------------------------------------------------------------------------- wrappings

# (name, opening with a system message, separator before the template, closing); the
# text before the template is opening + system + separator (or a no-system opening).
_WRAPPINGS: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("llama-2", "[INST] <<SYS>>\n", "\n<</SYS>>\n\n", ("[/INST]",)),
    ("chatml", "<|im_start|>system\n", "<|im_end|>\n<|im_start|>user\n",
     ("<|im_end|>\n<|im_start|>assistant", "<|im_end|>")),
    ("llama-3", "<|start_header_id|>system<|end_header_id|>\n\n",
     "<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n",
     ("<|eot_id|><|start_header_id|>assistant<|end_header_id|>", "<|eot_id|>")),
)
_NO_SYSTEM_OPENINGS: dict[str, str] = {
    "[INST] ": "mistral",
    "<|im_start|>user\n": "chatml",
    "<|start_header_id|>user<|end_header_id|>\n\n": "llama-3",
}
_BOS = ("<s>", "<|begin_of_text|>")  # a BOS written into the text is ignored


def _unwrap(text: str) -> tuple[str, str | None, str]:
    """(wrapping name, system message or None, filled template) of one prompt string."""
    start = text.find(HEADER)
    end = text.rfind(FOOTER)
    if start < 0:
        raise PromptError(f"{_EXPECTED}; got text starting with {text.lstrip()[:60]!r}")
    if end < start:
        raise PromptError(
            f"{_EXPECTED}; this text starts like one but does not end with {FOOTER!r} "
            f"(it ends with {text[-40:]!r})"
        )
    head, user = text[:start], text[start : end + len(FOOTER)] + " "
    tail = text[end + len(FOOTER) :].strip()
    stripped = head.lstrip()
    for bos in _BOS:
        if stripped.startswith(bos):
            stripped = stripped[len(bos) :].lstrip()
    if not stripped and not tail:
        return "bare", None, user
    for name, opening, separator, closings in _WRAPPINGS:
        if stripped.startswith(opening) and stripped.endswith(separator) and tail in closings:
            return name, stripped[len(opening) : len(stripped) - len(separator)], user
    if stripped.startswith("[INST] ") and tail == "[/INST]":
        system = stripped[len("[INST] ") :]
        if not system:
            return "mistral", None, user
        # FastChat "mistral": system + "\n"; the model cards: system + "\n\n" in one turn.
        if system.endswith("\n"):
            return "mistral", system[:-2] if system.endswith("\n\n") else system[:-1], user
    for opening, name in _NO_SYSTEM_OPENINGS.items():
        closings = next((w[3] for w in _WRAPPINGS if w[0] == name), ("[/INST]",))
        if stripped == opening and tail in closings:
            return name, None, user
    if not stripped:
        raise PromptError(
            f"{_EXPECTED}; this text starts like one but does not end with {FOOTER!r} "
            f"(after it comes {tail[:60]!r})"
        )
    raise PromptError(
        f"{_EXPECTED}. The Prometheus prompt in this text is wrapped in an unknown way "
        f"(before it: {head[-60:]!r}; after it: {tail[:60]!r}); send it bare, as system + user "
        "messages, or wrapped by FastChat's 'llama-2' or 'mistral' conversation template"
    )


# --------------------------------------------------------------------------- public


def _result(wrapping: str, system: str | None, user: str) -> Recognized:
    user, mode, version, name, request = _parse_user(user)
    return Recognized(request, mode, version, name, wrapping, system, user)


def _family_result(found: tuple[str, GradeRequest | CompareRequest], wrapping: str,
                   user: str) -> Recognized:
    name, request = found
    family = FAMILY_TEMPLATES[name][0]
    mode: Mode = "relative" if isinstance(request, CompareRequest) else "absolute"
    return Recognized(request, mode, "", name, wrapping, None, user, family)


def recognize_text(text: str) -> Recognized:
    """Recognise one prompt string: bare, or wrapped by FastChat ``llama-2`` / ``mistral``
    (as prometheus-eval's vLLM path renders it), the model cards' ``[INST] system\\n\\n
    user [/INST]``, ChatML or Llama 3 headers; a leading ``<s>`` is allowed."""
    if not isinstance(text, str):
        raise PromptError(f"a prompt must be a string, got {type(text).__name__}")
    check_unicode("the prompt", text, PromptError)
    if HEADER not in text:
        wrapping, user = unwrap_family(text)
        found = recognize_family(user)
        if found is not None:
            return _family_result(found, wrapping, user)
    return _result(*_unwrap(text))


def recognize_messages(messages: Sequence[Mapping[str, Any]]) -> Recognized:
    """Recognise a chat request: an optional system message, then one user message
    holding the filled template (as prometheus-eval's LiteLLM path sends it), or one user
    message holding ``system + "\\n\\n" + template`` (the Prometheus 2 model cards)."""
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise PromptError(
            "messages must be a list of {'role', 'content'} objects, "
            f"got {type(messages).__name__}"
        )
    system: str | None = None
    users: list[str] = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise PromptError(f"messages[{i}] must be an object with 'role' and 'content'")
        role, content = message.get("role"), message.get("content")
        if not isinstance(content, str):
            got = "nothing" if content is None else type(content).__name__
            raise PromptError(f"messages[{i}].content must be a string, got {got}")
        check_unicode(f"messages[{i}].content", content, PromptError)
        if role == "system":
            if i != 0:
                raise PromptError(
                    f"messages[{i}]: a system message must come first, and only once"
                )
            system = content
        elif role == "user":
            users.append(content)
        else:
            raise PromptError(
                f"messages[{i}] has role {role!r}; a Prometheus grading request is an optional "
                "system message and one user message holding the filled template"
            )
    if len(users) != 1:
        raise PromptError(
            f"expected exactly one user message holding the Prometheus prompt, got {len(users)}"
        )
    user = users[0].lstrip()
    wrapping = "messages"
    if HEADER not in user:
        found = recognize_family(user)
        if found is not None:
            if system is not None:
                raise PromptError(
                    f"a {FAMILY_TEMPLATES[found[0]][0]} prompt is one user message without a "
                    "system message (as its own library sends it); leave the system message out"
                )
            return _family_result(found, wrapping, user)
    start = user.find(HEADER)
    if start > 0 and system is None and user[:start].endswith("\n\n"):
        system, user, wrapping = user[: start - 2], user[start:], "messages-merged"
    return _result(wrapping, system, user)


def recognize(prompt: str | Sequence[Mapping[str, Any]]) -> Recognized:
    """Recognise a prompt given as one string or as chat messages (see the two above)."""
    if isinstance(prompt, str):
        return recognize_text(prompt)
    return recognize_messages(prompt)
