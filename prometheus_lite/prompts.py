"""Build the exact text a Prometheus judge sees (pure Python + jinja2; no llama_cpp).

Templates are filled by one-pass placeholder replacement, never ``str.format``: graded
text contains braces, and a value such as ``"{response}"`` must stay literal. A built
``Prompt`` also splits its text into segments that say where special tokens may be
parsed (wrapper pieces) and where not (user content), so graded text containing e.g.
``</s>``, ``<|im_end|>`` or ``<|eot_id|>`` never becomes a control token, under every
chat template (a template whose output cannot be split that way is refused).
"""

from __future__ import annotations

import json
import logging
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from functools import lru_cache
from typing import Any

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from . import templates as T
from .errors import PromptError, RubricError, check_unicode
from .families import WINNER_LABELS
from .family_prompts import check_scale, render_flow_judge, render_selene
from .placeholders import fill, split_template
from .rubrics import Rubric, parse_rendered_rubric

__all__ = [
    "Prompt",
    "PromptFormat",
    "build_prompt",
    "parse_rendered_absolute",
    "render_absolute",
    "render_relative",
]

logger = logging.getLogger(__name__)

MODES = ("absolute", "relative")
_warned_no_template = False


class PromptFormat(str, Enum):
    """Prompt text + wrapping: Prometheus v1, Prometheus 2, the model's own chat template
    with the Prometheus 2 text (M-Prometheus, and non-judge models), or the Selene /
    Flow-Judge templates as one user message in the model's chat template."""

    V1 = "v1"
    V2 = "v2"
    CHAT = "chat"
    SELENE = "selene"
    FLOW_JUDGE = "flow-judge"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Prompt:
    """The full text the model sees (BOS excluded unless a chat template writes it),
    split into ``(piece, may_contain_special_tokens)`` segments that join to ``text``."""

    text: str
    segments: tuple[tuple[str, bool], ...]
    format: PromptFormat
    mode: str
    # The labels the answer ends with; () means the mode's Prometheus labels (see ``labels``).
    label_set: tuple[str, ...] = ()

    @property
    def labels(self) -> tuple[str, ...]:
        if self.label_set:
            return self.label_set
        return WINNER_LABELS if self.mode == "relative" else ("1", "2", "3", "4", "5")

    def __post_init__(self) -> None:
        if "".join(piece for piece, _ in self.segments) != self.text:
            raise ValueError("Prompt segments do not join to the prompt text")


# (with reference, without reference) per version
_ABSOLUTE = {
    "v1": (T.V1_ABSOLUTE_PROMPT, T.V1_ABSOLUTE_PROMPT_WO_REF),
    "v2": (T.V2_ABSOLUTE_PROMPT, T.V2_ABSOLUTE_PROMPT_WO_REF),
}
_SYSTEM = {
    ("v1", "absolute"): T.V1_SYSTEM_PROMPT,
    ("v2", "absolute"): T.V2_ABSOLUTE_SYSTEM_PROMPT,
    ("v2", "relative"): T.V2_RELATIVE_SYSTEM_PROMPT,
}
_WRAPPER = {"v1": T.V1_CHAT_WRAPPER, "v2": T.V2_CHAT_WRAPPER}


# --------------------------------------------------------------------------- filling


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str):
        got = "nothing (None)" if value is None else type(value).__name__
        raise PromptError(f"'{name}' must be a string, got {got}")
    check_unicode(f"'{name}'", value, PromptError)
    return value


def _version(version: str) -> str:
    name = version.value if isinstance(version, PromptFormat) else version
    if name not in _ABSOLUTE:
        raise PromptError(f"unknown Prometheus prompt version {version!r}; use 'v1' or 'v2'")
    return name


def _rubric(rubric: Any) -> Rubric:
    if not isinstance(rubric, Rubric):
        raise PromptError(
            f"rubric must be a Rubric, got {type(rubric).__name__}; "
            "build one with prometheus_lite.rubrics.load_rubric()"
        )
    return rubric


def render_absolute(
    instruction: str,
    response: str,
    rubric: Rubric,
    reference_answer: str | None,
    *,
    version: str,
) -> str:
    """The filled v1/v2 absolute template; the no-reference variant iff reference is None."""
    with_ref, without_ref = _ABSOLUTE[_version(version)]
    values = {
        "instruction": _text("instruction", instruction),
        "response": _text("response", response),
        "rubric": _rubric(rubric).render(),
    }
    if reference_answer is None:
        return fill(without_ref, values)
    values["reference_answer"] = _text("reference_answer", reference_answer)
    return fill(with_ref, values)


def render_relative(
    instruction: str,
    response_a: str,
    response_b: str,
    rubric: Rubric,
    reference_answer: str | None,
) -> str:
    """The filled v2 relative template; the rubric slot gets only ``[criteria]``."""
    values = {
        "instruction": _text("instruction", instruction),
        "response_A": _text("response_a", response_a),
        "response_B": _text("response_b", response_b),
        "rubric": _rubric(rubric).criteria_line(),
    }
    if reference_answer is None:
        return fill(T.V2_RELATIVE_PROMPT_WO_REF, values)
    values["reference_answer"] = _text("reference_answer", reference_answer)
    return fill(T.V2_RELATIVE_PROMPT, values)


# --------------------------------------------------------------------------- wrapping


def _wrap(wrapper: str, system: str, user: str) -> tuple[tuple[str, bool], ...]:
    """Segments of a FastChat wrapper: its own text True, the contents False."""
    pre, _, rest = wrapper.partition("{system}")
    mid, _, post = rest.partition("{user}")
    pieces = ((pre, True), (system, False), (mid, True), (user, False), (post, True))
    return tuple((p, special) for p, special in pieces if p)


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _tojson(
    x: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: Any = None,
    sort_keys: bool = False,
) -> str:
    # As HF transformers: no HTML escaping, non-ASCII kept.
    return json.dumps(
        x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


@lru_cache(maxsize=16)
def _compile(chat_template: str) -> jinja2.Template:
    """Compile like HF transformers' apply_chat_template."""
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    try:
        return env.from_string(chat_template)
    except jinja2.exceptions.TemplateSyntaxError as e:
        raise PromptError(
            f"the model's chat template is not valid Jinja ({e}); use --prompt-format v2 instead"
        ) from e


def _render_chat(
    tmpl: jinja2.Template,
    roles: Sequence[str],
    contents: Sequence[str],
    bos_token: str,
    eos_token: str,
) -> str:
    messages = [{"role": r, "content": c} for r, c in zip(roles, contents, strict=True)]
    return tmpl.render(
        messages=messages, add_generation_prompt=True, bos_token=bos_token, eos_token=eos_token
    )


class _Unsegmentable(PromptError):
    """The template's text and the graded contents cannot be told apart in its output."""


_SENTINEL = re.compile("\ue000[0-9]+\ue001")


def _chat_segments(
    tmpl: jinja2.Template,
    roles: Sequence[str],
    contents: Sequence[str],
    text: str,
    bos_token: str,
    eos_token: str,
) -> tuple[tuple[str, bool], ...] | None:
    """Split ``text`` (the template rendered with ``contents``) into the template's own
    pieces (True: may hold special tokens) and the contents as the template wrote them
    (False: always plain text). None if the template leaves a content out.

    Found by rendering unique sentinels instead of the contents: what lies between them
    is the template's text. A template may transform a content (Llama-3 ``| trim``, JSON
    escaping): rendering each content alone among sentinels gives its transformed text.
    Raises ``_Unsegmentable`` when the output is not template pieces around per-content
    texts, so graded text never ends up where special tokens are parsed.
    """
    # Private-use characters and digits: unchanged by case/whitespace/escaping filters.
    sentinels = [f"\ue000{i}{secrets.randbits(64)}\ue001" for i in range(len(contents))]

    def render(values: Sequence[str]) -> str:
        try:
            return _render_chat(tmpl, roles, values, bos_token, eos_token)
        except Exception as e:  # noqa: BLE001 - any template failure means "can't segment"
            raise _Unsegmentable(
                f"the model's chat template fails on placeholder contents ({e})"
            ) from None

    marked = render(sentinels)
    if any(s not in marked for s in sentinels):
        return None
    parts = _SENTINEL.split(marked)  # template pieces, with sentinels removed
    order = [sentinels.index(s) for s in _SENTINEL.findall(marked) if s in sentinels]
    if len(order) != len(parts) - 1:  # a sentinel-like string the template wrote itself
        raise _Unsegmentable("the model's chat template writes private-use characters")

    def join(values: Sequence[str]) -> str:
        return parts[0] + "".join(
            values[i] + piece for i, piece in zip(order, parts[1:], strict=True)
        )

    written = list(contents)
    if join(contents) != text:
        # The template transforms contents: find each one's text on its own.
        for i, sentinel in enumerate(sentinels):
            alone = render([contents[i] if j == i else s for j, s in enumerate(sentinels)])
            times = marked.count(sentinel)
            size, rest = divmod(len(alone) - len(marked), times)
            start = marked.index(sentinel)
            candidate = alone[start : start + len(sentinel) + size] if not rest else None
            if candidate is None or marked.replace(sentinel, candidate) != alone:
                raise _Unsegmentable(
                    "the model's chat template changes a message depending on its "
                    "surroundings, so its own text and the graded text cannot be told apart"
                )
            written[i] = candidate
    if join(written) != text:
        raise _Unsegmentable(
            "the model's chat template writes the messages differently together than one "
            "at a time, so its own text and the graded text cannot be told apart"
        )
    pieces = [(parts[0], True)]
    for i, piece in zip(order, parts[1:], strict=True):
        pieces += [(written[i], False), (piece, True)]
    return tuple((p, special) for p, special in pieces if p)


def _chat_prompt(
    chat_template: str,
    system: str | None,
    user: str,
    mode: str,
    bos_token: str,
    eos_token: str,
    fmt: PromptFormat = PromptFormat.CHAT,
    labels: tuple[str, ...] = (),
) -> Prompt:
    """Render [system, user]; if the template refuses a system role (or drops it), one
    user turn ``system + "\\n\\n" + user`` as on the Prometheus 2 model cards. Without a
    system prompt (Selene, Flow-Judge), one user turn.

    Graded text is always plain text: if the template's output cannot be split into
    its own pieces and the contents, the prompt fails with a PromptError."""
    tmpl = _compile(chat_template)
    if system is None:
        attempts: list[tuple[tuple[str, ...], tuple[str, ...]]] = [(("user",), (user,))]
    else:
        attempts = [(("system", "user"), (system, user)), (("user",), (system + "\n\n" + user,))]
    for n, (roles, contents) in enumerate(attempts):
        last = n == len(attempts) - 1
        try:
            text = _render_chat(tmpl, roles, contents, bos_token, eos_token)
        except Exception as e:
            if not last:
                logger.debug("chat template rejects a system message (%s); merging it", e)
                continue
            raise PromptError(
                f"the model's chat template failed to render the prompt ({e}); "
                "use --prompt-format v2 instead"
            ) from e
        try:
            segments = _chat_segments(tmpl, roles, contents, text, bos_token, eos_token)
        except _Unsegmentable as e:
            if not last:
                logger.debug("%s with a system message; merging it", e)
                continue
            raise PromptError(
                f"{e}; graded text could then be read as special tokens, so prometheus-lite "
                "does not use it: use --prompt-format v2 instead"
            ) from None
        if segments is not None:
            return Prompt(text, segments, fmt, mode, labels)
        if not last:
            logger.debug("chat template drops the system message; merging it")
    raise PromptError(
        "the model's chat template leaves out the message content; use --prompt-format v2 instead"
    )


def build_prompt(
    mode: str,
    *,
    instruction: str,
    response: str | None = None,
    response_a: str | None = None,
    response_b: str | None = None,
    rubric: Rubric,
    reference_answer: str | None = None,
    format: PromptFormat | str,
    chat_template: str | None = None,
    bos_token: str = "",
    eos_token: str = "",
) -> Prompt:
    """The wrapped prompt for absolute (``response``) or relative (``response_a``/``_b``)
    grading. CHAT without a chat template falls back to the v2 wrapper: the Prompt's
    ``format`` is then V2, what was used (``models.resolve_prompt_format`` makes that
    choice once per model, so a judge never asks for it)."""
    if mode not in MODES:
        raise PromptError(f"unknown grading mode {mode!r}; use 'absolute' or 'relative'")
    try:
        fmt = PromptFormat(format)
    except ValueError:
        valid = ", ".join(f.value for f in PromptFormat)
        raise PromptError(f"unknown prompt format {format!r}; use one of: {valid}") from None
    if fmt in (PromptFormat.SELENE, PromptFormat.FLOW_JUDGE):
        return _family_prompt(
            fmt, mode, instruction, response, response_a, response_b, rubric,
            reference_answer, chat_template, bos_token, eos_token,
        )
    check_scale("prometheus", mode, _rubric(rubric))
    version = "v1" if fmt is PromptFormat.V1 else "v2"
    if mode == "relative" and version == "v1":
        raise PromptError(
            "Prometheus v1 has no relative grading; use a Prometheus 2 model or --prompt-format v2"
        )
    if mode == "absolute":
        response = _text("response", response)
        user = render_absolute(instruction, response, rubric, reference_answer, version=version)
    else:
        response_a, response_b = _text("response_a", response_a), _text("response_b", response_b)
        user = render_relative(instruction, response_a, response_b, rubric, reference_answer)
    system = _SYSTEM[(version, mode)]
    if fmt is PromptFormat.CHAT:
        if chat_template:
            return _chat_prompt(chat_template, system, user, mode, bos_token, eos_token)
        global _warned_no_template
        if not _warned_no_template:  # once: a batch calls this per item
            _warned_no_template = True
            logger.warning("the model has no chat template; using the Prometheus 2 (v2) wrapper")
        fmt = PromptFormat.V2
    segments = _wrap(_WRAPPER[version], system, user)
    return Prompt("".join(p for p, _ in segments), segments, fmt, mode)


def _family_prompt(
    fmt: PromptFormat,
    mode: str,
    instruction: str,
    response: str | None,
    response_a: str | None,
    response_b: str | None,
    rubric: Rubric,
    reference_answer: str | None,
    chat_template: str | None,
    bos_token: str,
    eos_token: str,
) -> Prompt:
    """A Selene or Flow-Judge prompt: the filled template as one user message."""
    rubric = _rubric(rubric)
    instruction = _text("instruction", instruction)
    if reference_answer is not None:
        reference_answer = _text("reference_answer", reference_answer)
    if mode == "absolute":
        responses: tuple[str, ...] = (_text("response", response),)
    else:
        responses = (_text("response_a", response_a), _text("response_b", response_b))
    if fmt is PromptFormat.SELENE:
        user = render_selene(mode, instruction, responses, rubric, reference_answer)
    else:
        if mode == "relative":
            check_scale("flow-judge", mode, rubric)
        user = render_flow_judge(instruction, responses[0], rubric, reference_answer)
    labels = WINNER_LABELS if mode == "relative" else rubric.labels
    if not chat_template:
        raise PromptError(
            f"--prompt-format {fmt.value} sends its prompt as a user message in the model's "
            "chat template, and this model has none; use a GGUF with a chat template "
            "(tokenizer.chat_template), or --prompt-format v2"
        )
    return _chat_prompt(chat_template, None, user, mode, bos_token, eos_token, fmt, labels)


# --------------------------------------------------------------------------- parsing


def _match_absolute(text: Any) -> tuple[str, str] | None:
    """(version, template) whose fixed header and footer enclose ``text``."""
    if not isinstance(text, str):
        return None
    for version, variants in _ABSOLUTE.items():
        for template in variants:
            lits, _ = split_template(template)
            if (
                len(text) >= len(lits[0]) + len(lits[-1])
                and text.startswith(lits[0])
                and text.endswith(lits[-1])
            ):
                return version, template
    return None


def parse_rendered_absolute(text: str) -> dict[str, Any]:
    """Recover instruction, response, reference_answer (None if absent), rubric and
    version from a rendered v1/v2 absolute prompt. The instruction ends at the first
    response header; later headers are matched from the end (responses may contain
    ``###`` lines). Raises ``PromptError`` if ``text`` is not such a prompt."""
    match = _match_absolute(text)
    if match is None:
        raise PromptError(
            "text is not a rendered Prometheus absolute prompt (header or footer differs)"
        )
    version, template = match
    lits, names = split_template(template)
    body = text[len(lits[0]) : len(text) - len(lits[-1])]
    values: dict[str, str] = {}
    values[names[0]], found, body = body.partition(lits[1])
    for name, sep in zip(reversed(names[2:]), reversed(lits[2:-1]), strict=True):
        body, found_here, values[name] = body.rpartition(sep)
        found = found and found_here
    values[names[1]] = body
    if not found:
        raise PromptError("text is not a rendered Prometheus absolute prompt (a header is missing)")
    try:
        rubric = parse_rendered_rubric(values["rubric"])
    except RubricError as e:
        raise PromptError(f"the prompt's score rubric cannot be parsed: {e}") from e
    parsed: dict[str, Any] = {
        "instruction": values["instruction"],
        "response": values["response"],
        "reference_answer": values.get("reference_answer"),
        "rubric": rubric,
        "version": version,
    }
    if (
        render_absolute(
            parsed["instruction"],
            parsed["response"],
            rubric,
            parsed["reference_answer"],
            version=version,
        )
        != text
    ):
        raise PromptError("text does not round-trip through the absolute template")
    return parsed
