"""Score rubrics: the ``Rubric`` type, the five Prometheus 2 presets, loading and parsing.

A rubric states its scale (``families.SCALES``): "1-5" (the default; Prometheus,
M-Prometheus, Selene, Flow-Judge 5-point), "1-3" and "0-1" (Flow-Judge 3-point and
binary) or "yes-no" (Selene classification). Each scale has its own description fields:
``score1_description``.. for numeric scales (``score0_description`` for binary's 0), and
``yes_description`` / ``no_description``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Union

from .errors import RubricError, check_unicode
from .families import SCALES, Scale
from .family_templates import FLOW_JUDGE_PRESET_RUBRICS
from .templates import PRESET_RUBRICS, RUBRIC_TEMPLATE

__all__ = [
    "ALL_PRESETS",
    "FLOW_JUDGE_PRESETS",
    "PRESETS",
    "RUBRIC_FIELDS",
    "RenderedRubric",
    "Rubric",
    "get_preset",
    "get_scale",
    "load_rubric",
    "parse_rendered_rubric",
    "preset_names",
]

RUBRIC_FIELDS: tuple[str, ...] = ("criteria",) + tuple(f"score{i}_description" for i in range(1, 6))
# Every description field of every scale.
_ALL_DESCRIPTIONS = tuple(dict.fromkeys(f for sc in SCALES.values() for f in sc.fields))


def get_scale(name: Any) -> Scale:
    """A scale by name or alias ("1-5", "5-point", "binary", "yes/no", ...)."""
    key = str(name).strip().lower().replace("_", "-").replace(" ", "-")
    for scale in SCALES.values():
        if key == scale.name or key in scale.aliases:
            return scale
    names = ", ".join(f"{sc.name!r}" for sc in SCALES.values())
    raise RubricError(f"unknown rubric scale {name!r}; use one of {names}")


def _what(name: str) -> str:
    if name == "criteria":
        return "the criteria (the question the judge answers)"
    if name in ("yes_description", "no_description"):
        return f"a description of what the answer {name.split('_')[0].capitalize()} means"
    return f"a description of what a score of {name[5]} means"

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
    score0_description: str = ""
    yes_description: str = ""
    no_description: str = ""
    scale: str = "1-5"

    def __post_init__(self) -> None:
        scale = get_scale(self.scale)
        object.__setattr__(self, "scale", scale.name)
        for name in ("criteria", *scale.fields):
            value = getattr(self, name)
            what = _what(name)
            if value is None:
                raise RubricError(f"rubric field '{name}' is missing; give {what}")
            if not isinstance(value, str):
                raise RubricError(
                    f"rubric field '{name}' must be a string, got {type(value).__name__}; "
                    f"give {what} as text"
                )
            if not value.strip():
                raise RubricError(f"rubric field '{name}' is empty; give {what}")
            check_unicode(f"rubric field '{name}'", value, RubricError)
        extra = [f for f in _ALL_DESCRIPTIONS if f not in scale.fields and getattr(self, f)]
        if extra:
            raise RubricError(
                f"rubric field(s) {', '.join(extra)} do not belong to scale '{scale.name}' "
                f"(labels {', '.join(scale.labels)}: fields {', '.join(scale.fields)}); "
                "remove them or state the scale that has them with 'scale'"
            )

    @property
    def labels(self) -> tuple[str, ...]:
        """The scale's labels, lowest first ("1".."5", "0"/"1", "No"/"Yes", ...)."""
        return SCALES[self.scale].labels

    def descriptions(self) -> dict[str, str]:
        """Label -> what it means, lowest first."""
        scale = SCALES[self.scale]
        return {lb: getattr(self, f) for lb, f in zip(scale.labels, scale.fields, strict=True)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Rubric:
        """Build from ``criteria`` and the scale's description keys (``score1_description``..;
        or the Feedback Collection's ``orig_*`` names), with an optional ``scale`` (default
        "1-5"). A flow-judge metric's ``rubric: [{score, description}, ..]`` list works
        too (its scores give the scale). Other keys are ignored."""
        if not isinstance(d, Mapping):
            raise RubricError(
                f"a rubric must be a JSON object / mapping, got {type(d).__name__}; "
                f"expected keys: {', '.join(RUBRIC_FIELDS)}"
            )
        if isinstance(d.get("rubric"), list) and "criteria" in d:
            return cls._from_items(d["criteria"], d["rubric"], d.get("scale"))
        scale = get_scale(d.get("scale", "1-5"))
        fields = ("criteria", *scale.fields)
        values: dict[str, Any] = {"scale": scale.name}
        missing: list[str] = []
        for name in fields:
            if name in d:
                values[name] = d[name]
            elif f"orig_{name}" in d:
                values[name] = d[f"orig_{name}"]
            else:
                missing.append(name)
        if missing:
            hint = ""
            if scale.name == "1-5":
                others = [sc for sc in SCALES.values() if all(f in d for f in sc.fields)]
                if others:
                    hint = f"; this looks like a '{others[0].name}' rubric: add \"scale\": "
                    hint += f"\"{others[0].name}\""
            raise RubricError(
                f"rubric is missing {', '.join(missing)}; a '{scale.name}' rubric needs the "
                f"keys {', '.join(fields)} (or the same names prefixed with 'orig_'){hint}"
            )
        return cls(**values)

    @classmethod
    def _from_items(cls, criteria: Any, items: list[Any], scale_name: Any) -> Rubric:
        """flow-judge's Metric shape: ``[{"score": 0, "description": ".."}, ..]``."""
        try:
            by_score = {str(int(it["score"])): it["description"] for it in items}
        except (TypeError, KeyError, ValueError):
            raise RubricError(
                "a rubric list must hold objects with an integer 'score' and a 'description'"
            ) from None
        scales = [sc for sc in SCALES.values() if set(sc.labels) == set(by_score)]
        if scale_name is not None:
            scales = [get_scale(scale_name)]
        if not scales or set(scales[0].labels) != set(by_score):
            raise RubricError(
                f"rubric scores {sorted(by_score)} are not a scale prometheus-lite knows; "
                "use scores 0-1, 1-3 or 1-5"
            )
        scale = scales[0]
        fields = dict(zip(scale.fields, (by_score[lb] for lb in scale.labels), strict=True))
        return cls(criteria=criteria, scale=scale.name, **fields)

    def to_dict(self) -> dict[str, str]:
        """The criteria and the scale's descriptions (plus ``scale`` unless "1-5");
        ``from_dict`` reads it back."""
        data = {name: getattr(self, name) for name in ("criteria", *SCALES[self.scale].fields)}
        if self.scale != "1-5":
            data["scale"] = self.scale
        return data

    def render(self) -> str:
        """The official rubric template: ``[criteria]`` then ``Score 1: ..`` .. ``Score 5: ..``."""
        if self.scale != "1-5":
            raise RubricError(
                f"the Prometheus rubric template has scores 1-5, this rubric's scale is "
                f"'{self.scale}'; use a model whose family supports it (Flow-Judge: 0-1, 1-3; "
                "Selene: yes-no) or a 1-5 rubric"
            )
        values = self.to_dict()
        return _PLACEHOLDER.sub(lambda m: values[m.group(1)], RUBRIC_TEMPLATE)

    def criteria_line(self) -> str:
        """``[criteria]``: what the official library passes for relative grading."""
        return f"[{self.criteria}]"


@dataclass(frozen=True)
class RenderedRubric(Rubric):
    """A rubric slot's text kept exactly as the caller rendered it.

    Used when a recognised prompt's rubric is not in ``SCORE_RUBRIC_TEMPLATE``'s shape
    (a free-form rubric) or, for relative grading, is a criteria line that is not a
    preset's: ``render()`` and ``criteria_line()`` both give ``text`` back unchanged, so
    the judge sees the caller's rubric byte for byte. ``criteria`` holds the text
    without its brackets (for display); the score descriptions are empty.
    """

    text: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.text, str) or not self.text.strip():
            raise RubricError("the prompt's score rubric is empty; put the rubric in the prompt")

    def render(self) -> str:
        return self.text

    def criteria_line(self) -> str:
        return self.text


# Prometheus's preset rubrics (1-5), in the official library's order.
PRESETS: Mapping[str, Rubric] = MappingProxyType(
    {name: Rubric(**fields) for name, fields in PRESET_RUBRICS.items()}
)
# Flow-Judge's response-correctness metrics (0-1, 1-3, 1-5), for --rubric and batch lines.
FLOW_JUDGE_PRESETS: Mapping[str, Rubric] = MappingProxyType(
    {name: Rubric(**fields) for name, fields in FLOW_JUDGE_PRESET_RUBRICS.items()}
)
# Every name get_preset knows: what `info --rubrics` and GET /v1/rubrics list.
ALL_PRESETS: Mapping[str, Rubric] = MappingProxyType({**PRESETS, **FLOW_JUDGE_PRESETS})


def preset_names() -> list[str]:
    """Names of the preset rubrics, in the official library's order."""
    return list(PRESETS)


def get_preset(name: str) -> Rubric:
    """A preset rubric by name (``factual-validity`` and ``Factual_Validity`` also work):
    Prometheus's five (1-5) or Flow-Judge's ``response_correctness_{binary,3point,5point}``."""
    key = name.strip().lower().replace("-", "_")
    if key not in ALL_PRESETS:
        raise RubricError(
            f"unknown rubric preset '{name}'; valid presets: {', '.join(ALL_PRESETS)} "
            "(or give a path to a JSON file holding one rubric object)"
        )
    return ALL_PRESETS[key]


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
