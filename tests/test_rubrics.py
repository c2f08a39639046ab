"""Rubric validation, presets, loading, and render/parse round trips."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from prometheus_lite.errors import RubricError
from prometheus_lite.rubrics import (
    PRESETS,
    RUBRIC_FIELDS,
    Rubric,
    get_preset,
    load_rubric,
    parse_rendered_rubric,
    preset_names,
)

FIELDS: dict[str, str] = {
    "criteria": "Is the answer concise?",
    "score1_description": "Rambling.",
    "score2_description": "Long.",
    "score3_description": "Acceptable.",
    "score4_description": "Short.",
    "score5_description": "Perfectly concise.",
}


def make(**changes: Any) -> Rubric:
    return Rubric(**{**FIELDS, **changes})


# ------------------------------------------------------------------ validation


@pytest.mark.parametrize("field", [f for f in RUBRIC_FIELDS if f != "criteria"])
def test_missing_description(field: str) -> None:
    values = {k: v for k, v in FIELDS.items() if k != field}
    with pytest.raises(RubricError, match=field):
        Rubric(**values)


@pytest.mark.parametrize("value", ["", "   ", "\n\t"])
def test_empty_criteria(value: str) -> None:
    with pytest.raises(RubricError, match="'criteria' is empty"):
        make(criteria=value)


@pytest.mark.parametrize("value", [3, ["a"], b"bytes", None])
def test_wrong_type(value: Any) -> None:
    with pytest.raises(RubricError, match="score3_description"):
        make(score3_description=value)


def test_message_says_how_to_fix() -> None:
    with pytest.raises(RubricError, match="what a score of 4 means"):
        make(score4_description=" ")


def test_values_are_kept_verbatim() -> None:
    r = make(score2_description="  padded  ")
    assert r.score2_description == "  padded  "


def test_frozen() -> None:
    r = make()
    with pytest.raises(AttributeError):
        r.criteria = "x"  # type: ignore[misc]


# ------------------------------------------------------------------ dicts


def test_from_dict_and_to_dict() -> None:
    r = Rubric.from_dict({**FIELDS, "extra": 1})
    assert r == make()
    assert r.to_dict() == FIELDS
    assert Rubric.from_dict(r.to_dict()) == r


def test_from_dict_orig_names() -> None:
    d = {f"orig_{k}": v for k, v in FIELDS.items()}
    d["orig_instruction"] = "ignored"
    assert Rubric.from_dict(d) == make()


def test_from_dict_plain_name_wins_over_orig() -> None:
    d = {**{f"orig_{k}": "old" for k in FIELDS}, **FIELDS}
    assert Rubric.from_dict(d) == make()


def test_from_dict_lists_missing_keys() -> None:
    d = {k: v for k, v in FIELDS.items() if k not in ("criteria", "score5_description")}
    with pytest.raises(RubricError) as e:
        Rubric.from_dict(d)
    assert "criteria" in str(e.value) and "score5_description" in str(e.value)


def test_from_dict_not_a_mapping() -> None:
    with pytest.raises(RubricError, match="mapping"):
        Rubric.from_dict(["criteria"])  # type: ignore[arg-type]


# ------------------------------------------------------------------ presets


def test_presets() -> None:
    assert preset_names() == [
        "helpfulness",
        "harmlessness",
        "honesty",
        "factual_validity",
        "reasoning",
    ]
    assert set(PRESETS) == set(preset_names())
    for name in preset_names():
        assert get_preset(name) is PRESETS[name]
        assert load_rubric(name) is PRESETS[name]
    assert get_preset("Factual-Validity") is PRESETS["factual_validity"]


def test_unknown_preset_lists_valid_names() -> None:
    with pytest.raises(RubricError) as e:
        get_preset("kindness")
    for name in preset_names():
        assert name in str(e.value)
    with pytest.raises(RubricError, match="helpfulness"):
        load_rubric("kindness")


# ------------------------------------------------------------------ loading


def test_load_passthrough_and_mapping() -> None:
    r = make()
    assert load_rubric(r) is r
    assert load_rubric(FIELDS) == r


def test_load_from_file(tmp_path: Path) -> None:
    path = tmp_path / "rubric.json"
    path.write_text(json.dumps(FIELDS), encoding="utf-8")
    assert load_rubric(str(path)) == make()
    assert load_rubric(path) == make()


def test_load_bad_json(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"criteria": "x",', encoding="utf-8")
    with pytest.raises(RubricError) as e:
        load_rubric(str(path))
    assert str(path) in str(e.value) and "not valid JSON" in str(e.value)


def test_load_json_not_an_object(tmp_path: Path) -> None:
    path = tmp_path / "list.json"
    path.write_text(json.dumps([FIELDS]), encoding="utf-8")
    with pytest.raises(RubricError, match="one object"):
        load_rubric(str(path))


def test_load_incomplete_file_names_file(tmp_path: Path) -> None:
    path = tmp_path / "partial.json"
    path.write_text(json.dumps({"criteria": "x"}), encoding="utf-8")
    with pytest.raises(RubricError) as e:
        load_rubric(str(path))
    assert str(path) in str(e.value) and "score1_description" in str(e.value)


def test_load_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.json"
    with pytest.raises(RubricError) as e:
        load_rubric(str(path))
    assert str(path) in str(e.value) and "does not exist" in str(e.value)


def test_load_wrong_type() -> None:
    with pytest.raises(RubricError):
        load_rubric(42)  # type: ignore[arg-type]


# ------------------------------------------------------------------ render / parse


def test_render_and_criteria_line() -> None:
    r = make()
    assert r.render() == (
        "[Is the answer concise?]\nScore 1: Rambling.\nScore 2: Long.\n"
        "Score 3: Acceptable.\nScore 4: Short.\nScore 5: Perfectly concise."
    )
    assert r.criteria_line() == "[Is the answer concise?]"


def test_render_does_not_substitute_twice() -> None:
    r = make(criteria="{score1_description}", score1_description="{criteria} {x}")
    assert r.render().startswith("[{score1_description}]\nScore 1: {criteria} {x}\n")


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"criteria": "[Bracketed] criteria with [more] brackets]"},
        {"criteria": "ends with bracket]"},
        {"criteria": "[starts with bracket"},
        {"score3_description": "multi\nline\nScore 9: not a header"},
        {"score5_description": "trailing whitespace \n"},
        {"criteria": "Ünïcödé 日本語 {braces}"},
    ],
)
def test_parse_render_round_trip(changes: dict[str, str]) -> None:
    r = make(**changes)
    assert parse_rendered_rubric(r.render()) == r


@pytest.mark.parametrize("name", list(PRESETS))
def test_parse_presets(name: str) -> None:
    assert parse_rendered_rubric(PRESETS[name].render()) == PRESETS[name]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "criteria without brackets\nScore 1: a\nScore 2: b\nScore 3: c\nScore 4: d\nScore 5: e",
        "[c]\nScore 1: a\nScore 2: b\nScore 3: c\nScore 4: d",
        "[c]\nScore 1: a\nScore 3: c\nScore 2: b\nScore 4: d\nScore 5: e",
        "[c] \nScore 1: a\nScore 2: b\nScore 3: c\nScore 4: d\nScore 5: e",
        "[c]\nScore 1: \nScore 2: b\nScore 3: c\nScore 4: d\nScore 5: e",
        "[]\nScore 1: a\nScore 2: b\nScore 3: c\nScore 4: d\nScore 5: e",
    ],
)
def test_parse_is_strict(text: str) -> None:
    with pytest.raises(RubricError):
        parse_rendered_rubric(text)


def test_unpaired_surrogate_in_a_rubric_is_a_clear_error() -> None:
    fields = {f: "fine" for f in RUBRIC_FIELDS}
    fields["score3_description"] = "bad \udfff"
    with pytest.raises(RubricError, match="score3_description' is not valid Unicode"):
        Rubric(**fields)
