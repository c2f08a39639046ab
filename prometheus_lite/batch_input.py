"""Batch input: JSONL lines to requests, with errors that name the line and the field.

Input line (one JSON object per line)::

    {"id": "q1", "instruction": "...", "response": "...",            # grade
     "reference_answer": "...", "rubric": "helpfulness" | {criteria, score1_description..}}
    {"id": "q2", "instruction": "...", "response_a": "...", "response_b": "...", ...}  # compare

The Feedback Collection names (``orig_instruction``, ``orig_response``,
``orig_reference_answer``, ``orig_criteria``, ``orig_score1_description``..) work as they
are, as do the Preference Collection's ``orig_response_A`` / ``orig_response_B``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

from .errors import BatchInputError, RubricError
from .results import CompareRequest, GradeRequest, Request
from .rubrics import PRESETS, Rubric, get_preset

__all__ = ["MODES", "Mode", "parse_line"]

Mode = Literal["grade", "compare"]
MODES: tuple[str, ...] = ("grade", "compare")

# Accepted names per field, first match wins: our names, then the Feedback /
# Preference Collection names.
_FIELD_NAMES: dict[str, tuple[str, ...]] = {
    "instruction": ("instruction", "orig_instruction"),
    "response": ("response", "orig_response"),
    "response_a": ("response_a", "orig_response_A", "orig_response_a"),
    "response_b": ("response_b", "orig_response_B", "orig_response_b"),
    "reference_answer": ("reference_answer", "orig_reference_answer"),
}
_WHAT: dict[str, str] = {
    "instruction": "the instruction the response answers",
    "response": "the response to grade",
    "response_a": "the first response to compare",
    "response_b": "the second response to compare",
    "reference_answer": "a reference answer that would get a score of 5",
}


# --------------------------------------------------------------------------- parsing


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return f"a number ({value!r})"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _loads(line: str, lineno: int) -> dict[str, Any]:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise BatchInputError(
            f"line {lineno}: invalid JSON ({e.msg} at column {e.colno}); each line must be "
            "one JSON object, e.g. {\"instruction\": \"...\", \"response\": \"...\"}"
        ) from None
    if not isinstance(obj, dict):
        raise BatchInputError(
            f"line {lineno}: expected a JSON object, got {_json_type(obj)}; each line must be "
            "one object with fields such as \"instruction\" and \"response\""
        )
    return obj


def _id_of(obj: Mapping[str, Any], lineno: int) -> str:
    """The item's id as a string: the ``id`` field's str(), or the 1-based line number."""
    value = obj.get("id")
    if value is None:
        return str(lineno)
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    raise BatchInputError(
        f"line {lineno}, field 'id': expected a string or a number, got {_json_type(value)}; "
        "give a unique string id or leave it out (the line number is used)"
    )


def _peek_id(line: str, lineno: int) -> str:
    """The id of a line that may be malformed: its own id if readable, else the line number."""
    try:
        return _id_of(_loads(line, lineno), lineno)
    except BatchInputError:
        return str(lineno)


def _field(obj: Mapping[str, Any], name: str, lineno: int, *, required: bool) -> str | None:
    for key in _FIELD_NAMES[name]:
        if key in obj and (obj[key] is not None or not required):
            value = obj[key]
            if value is None:
                return None
            if not isinstance(value, str):
                raise BatchInputError(
                    f"line {lineno}, field '{key}': expected a string, got {_json_type(value)}; "
                    f"give {_WHAT[name]} as JSON text in quotes"
                )
            return value
    if not required:
        return None
    hint = ""
    if name == "response" and "response_a" in obj:
        hint = " (this line has 'response_a': is it a compare item? use 'prometheus-lite compare')"
    elif name.startswith("response_") and "response" in obj:
        hint = " (this line has 'response': is it a grade item? use 'prometheus-lite grade')"
    names = " or ".join(f"'{k}'" for k in _FIELD_NAMES[name][:2])
    raise BatchInputError(
        f"line {lineno}: missing field {names}; add {_WHAT[name]} (a string; "
        f"\"\" is allowed){hint}"
    )


def _rubric(obj: Mapping[str, Any], lineno: int, default: Rubric | None) -> Rubric:
    presets = ", ".join(PRESETS)
    if "rubric" in obj and obj["rubric"] is not None:
        spec = obj["rubric"]
        try:
            if isinstance(spec, str):
                return get_preset(spec)
            if isinstance(spec, dict):
                return Rubric.from_dict(spec)
        except RubricError as e:
            raise BatchInputError(f"line {lineno}, field 'rubric': {e}") from None
        raise BatchInputError(
            f"line {lineno}, field 'rubric': expected a preset name ({presets}) or an object "
            f"with 'criteria' and 'score1_description'..'score5_description', "
            f"got {_json_type(spec)}"
        )
    if "orig_criteria" in obj or "criteria" in obj:
        try:
            return Rubric.from_dict(obj)
        except RubricError as e:
            raise BatchInputError(f"line {lineno}, rubric fields: {e}") from None
    if default is not None:
        return default
    raise BatchInputError(
        f"line {lineno}: no rubric; add a 'rubric' field (a preset name: {presets}; or an "
        "object with 'criteria' and 'score1_description'..'score5_description'), or the "
        "'orig_criteria'/'orig_score1_description'.. fields, or pass --rubric for all lines"
    )


def parse_line(
    line: str | Mapping[str, Any], lineno: int, mode: Mode, default_rubric: Rubric | None = None
) -> Request:
    """One JSONL input line (its text, or the object already parsed, as the service has
    it) as a request; raises ``BatchInputError`` naming the line number and the field,
    and saying how to fix it."""
    if mode not in MODES:
        raise ValueError(f"mode must be 'grade' or 'compare', got {mode!r}")
    obj = line if isinstance(line, Mapping) else _loads(line, lineno)
    item_id = _id_of(obj, lineno)
    instruction = _field(obj, "instruction", lineno, required=True)
    reference = _field(obj, "reference_answer", lineno, required=False)
    if mode == "grade":
        response = _field(obj, "response", lineno, required=True)
        rubric = _rubric(obj, lineno, default_rubric)
        return GradeRequest(instruction, response, rubric, reference, id=item_id)  # type: ignore[arg-type]
    response_a = _field(obj, "response_a", lineno, required=True)
    response_b = _field(obj, "response_b", lineno, required=True)
    rubric = _rubric(obj, lineno, default_rubric)
    return CompareRequest(
        instruction, response_a, response_b, rubric, reference, id=item_id  # type: ignore[arg-type]
    )


# --------------------------------------------------------------------------- files


def _input_lines(path: Path) -> Iterator[tuple[int, str | None]]:
    """(1-based line number, text or None if not UTF-8) for every non-blank line;
    streamed, never the whole file in memory."""
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as e:
        raise BatchInputError(f"cannot read input file '{path}': {e.strerror}") from None
    with f:
        yield from decode_lines(f)


def decode_lines(raw_lines: Iterable[bytes]) -> Iterator[tuple[int, str | None]]:
    """(1-based line number, text or None if not UTF-8) for every non-blank line of a
    byte stream (a leading UTF-8 BOM dropped): the batch file's and Ray's JSONL input."""
    for lineno, raw in enumerate(raw_lines, start=1):
        if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):  # UTF-8 BOM
            raw = raw[3:]
        if not raw.strip():
            continue
        try:
            yield lineno, raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            yield lineno, None
