"""Score rubrics: the ``Rubric`` type, the five Prometheus 2 presets, loading and parsing."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Union

from .errors import RubricError
from .templates import PRESET_RUBRICS, RUBRIC_TEMPLATE

__all__ = [
    "PRESETS",
    "RUBRIC_FIELDS",
    "Rubric",
    "get_preset",
    "load_rubric",
    "parse_rendered_rubric",
    "preset_names",
]

RUBRIC_FIELDS: tuple[str, ...] = ("criteria",) + tuple(f"score{i}_description" for i in range(1, 6))

RubricSpec = Union[str, "os.PathLike[str]", Mapping[str, Any], "Rubric"]

_PLACEHOLDER = re.compile(r"\{(criteria|score[1-5]_description)\}")


@dataclass(frozen=True)
class Rubric:
    """A Prometheus score rubric: criteria plus what each score 1..5 means.

    Values are kept exactly as given (no stripping), so rendering is byte-exact.
    """

    criteria: str = ""
    score1_description: str = ""
    score2_description: str = ""
    score3_description: str = ""
    score4_description: str = ""
    score5_description: str = ""

    def __post_init__(self) -> None:
        for name in RUBRIC_FIELDS:
            value = getattr(self, name)
            what = "the criteria (the question the judge answers)"
            if name != "criteria":
                what = f"a description of what a score of {name[5]} means"
            if value is None:
                raise RubricError(f"rubric field '{name}' is missing; give {what}")
            if not isinstance(value, str):
                raise RubricError(
                    f"rubric field '{name}' must be a string, got {type(value).__name__}; "
                    f"give {what} as text"
                )
            if not value.strip():
                raise RubricError(f"rubric field '{name}' is empty; give {what}")
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:  # a lone "\ud800" escape in JSON input
                raise RubricError(
                    f"rubric field '{name}' is not valid Unicode: {value[exc.start]!r} at "
                    f"character {exc.start} is half of a surrogate pair; fix that text"
                ) from None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Rubric:
        """Build from ``criteria``/``scoreN_description`` keys (or the Feedback
        Collection's ``orig_*`` names); other keys are ignored."""
        if not isinstance(d, Mapping):
            raise RubricError(
                f"a rubric must be a JSON object / mapping, got {type(d).__name__}; "
                f"expected keys: {', '.join(RUBRIC_FIELDS)}"
            )
        values: dict[str, Any] = {}
        missing: list[str] = []
        for name in RUBRIC_FIELDS:
            if name in d:
                values[name] = d[name]
            elif f"orig_{name}" in d:
                values[name] = d[f"orig_{name}"]
            else:
                missing.append(name)
        if missing:
            raise RubricError(
                f"rubric is missing {', '.join(missing)}; a rubric needs the keys "
                f"{', '.join(RUBRIC_FIELDS)} (or the same names prefixed with 'orig_')"
            )
        return cls(**values)

    def to_dict(self) -> dict[str, str]:
        """The six fields as a plain dict (``from_dict`` reads it back)."""
        return asdict(self)

    def render(self) -> str:
        """The official rubric template: ``[criteria]`` then ``Score 1: ..`` .. ``Score 5: ..``."""
        values = self.to_dict()
        return _PLACEHOLDER.sub(lambda m: values[m.group(1)], RUBRIC_TEMPLATE)

    def criteria_line(self) -> str:
        """``[criteria]``: what the official library passes for relative grading."""
        return f"[{self.criteria}]"


PRESETS: Mapping[str, Rubric] = MappingProxyType(
    {name: Rubric(**fields) for name, fields in PRESET_RUBRICS.items()}
)


def preset_names() -> list[str]:
    """Names of the preset rubrics, in the official library's order."""
    return list(PRESETS)


def get_preset(name: str) -> Rubric:
    """A preset rubric by name (``factual-validity`` and ``Factual_Validity`` also work)."""
    key = name.strip().lower().replace("-", "_")
    if key not in PRESETS:
        raise RubricError(
            f"unknown rubric preset '{name}'; valid presets: {', '.join(PRESETS)} "
            "(or give a path to a JSON file holding one rubric object)"
        )
    return PRESETS[key]


def load_rubric(spec: RubricSpec) -> Rubric:
    """A ``Rubric`` from a preset name, a path to a JSON rubric file, a mapping or a Rubric."""
    if isinstance(spec, Rubric):
        return spec
    if isinstance(spec, Mapping):
        return Rubric.from_dict(spec)
    if not isinstance(spec, (str, os.PathLike)):
        raise RubricError(
            f"cannot make a rubric from {type(spec).__name__}; give a preset name, "
            "a JSON file path, or a mapping"
        )
    if isinstance(spec, str) and spec.strip().lower().replace("-", "_") in PRESETS:
        return get_preset(spec)
    path = Path(spec)
    if not path.is_file():
        text = os.fspath(spec)
        if not text.lower().endswith(".json") and "/" not in text and os.sep not in text:
            get_preset(text)  # raises: neither a preset nor a file
        raise RubricError(
            f"rubric file '{path}' does not exist; give an existing JSON file "
            f"or a preset name ({', '.join(PRESETS)})"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise RubricError(f"cannot read rubric file '{path}': {e}") from e
    except json.JSONDecodeError as e:
        raise RubricError(
            f"rubric file '{path}' is not valid JSON (line {e.lineno}, column {e.colno}: "
            f"{e.msg}); it must hold one object with keys {', '.join(RUBRIC_FIELDS)}"
        ) from e
    if not isinstance(data, dict):
        raise RubricError(
            f"rubric file '{path}' holds a JSON {type(data).__name__}; it must hold one "
            f"object with keys {', '.join(RUBRIC_FIELDS)}"
        )
    try:
        return Rubric.from_dict(data)
    except RubricError as e:
        raise RubricError(f"rubric file '{path}': {e}") from e


def parse_rendered_rubric(text: str) -> Rubric:
    """Inverse of ``Rubric.render``; strict: raises ``RubricError`` if ``text`` is not
    in the template's shape. The criteria may contain brackets: it runs from the
    first ``[`` to the ``]`` just before the first ``\\nScore 1: ``."""
    if not isinstance(text, str) or not text.startswith("["):
        raise RubricError("a rendered rubric must start with '[criteria]'")
    values: dict[str, str] = {}
    rest = text[1:]
    markers = ["]\nScore 1: "] + [f"\nScore {i}: " for i in range(2, 6)]
    for name, marker in zip(RUBRIC_FIELDS[:-1], markers, strict=True):
        head, sep, rest = rest.partition(marker)
        if not sep:
            raise RubricError(
                f"rendered rubric has no {marker.lstrip(']')!r} line; expected "
                "'[criteria]' then 'Score 1: ..' to 'Score 5: ..' lines"
            )
        values[name] = head
    values["score5_description"] = rest
    rubric = Rubric(**values)
    if rubric.render() != text:  # cannot happen by construction; guards the invariant
        raise RubricError("rendered rubric does not round-trip through the rubric template")
    return rubric
