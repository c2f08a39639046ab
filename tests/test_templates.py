"""The prompt constants equal the reference JSON byte for byte."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from prometheus_lite import templates as T
from prometheus_lite.rubrics import PRESETS

# constant name -> path in prometheus_prompts.json
CONSTANTS = {
    "V1_SYSTEM_PROMPT": ("v1", "system_prompt"),
    "V1_ABSOLUTE_PROMPT": ("v1", "absolute"),
    "V1_ABSOLUTE_PROMPT_WO_REF": ("v1", "absolute_without_reference"),
    "V2_ABSOLUTE_SYSTEM_PROMPT": ("v2", "absolute_system_prompt"),
    "V2_RELATIVE_SYSTEM_PROMPT": ("v2", "relative_system_prompt"),
    "V2_ABSOLUTE_PROMPT": ("v2", "absolute"),
    "V2_ABSOLUTE_PROMPT_WO_REF": ("v2", "absolute_without_reference"),
    "V2_RELATIVE_PROMPT": ("v2", "relative"),
    "V2_RELATIVE_PROMPT_WO_REF": ("v2", "relative_without_reference"),
}


@pytest.fixture(scope="module")
def reference(shared_dir: Path) -> dict[str, Any]:
    path = shared_dir / "reference" / "prometheus_prompts.json"
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", sorted(CONSTANTS))
def test_constant_matches_json(name: str, reference: dict[str, Any]) -> None:
    section, key = CONSTANTS[name]
    assert getattr(T, name) == reference[section][key]


@pytest.mark.parametrize("section", ["v1", "v2"])
def test_rubric_template_matches_json(section: str, reference: dict[str, Any]) -> None:
    assert T.RUBRIC_TEMPLATE == reference[section]["rubric_template"]


def test_all_exported() -> None:
    for name in CONSTANTS:
        assert name in T.__all__
    for name in ("RUBRIC_TEMPLATE", "PRESET_RUBRICS", "V1_CHAT_WRAPPER", "V2_CHAT_WRAPPER"):
        assert name in T.__all__


def test_preset_names(reference: dict[str, Any]) -> None:
    assert list(T.PRESET_RUBRICS) == list(reference["v2"]["preset_rubrics"])
    assert list(T.PRESET_RUBRICS) == [
        "helpfulness",
        "harmlessness",
        "honesty",
        "factual_validity",
        "reasoning",
    ]


@pytest.mark.parametrize("name", list(T.PRESET_RUBRICS))
def test_preset_renders_to_json(name: str, reference: dict[str, Any]) -> None:
    assert PRESETS[name].render() == reference["v2"]["preset_rubrics"][name]


def test_v1_wrapper_text() -> None:
    system, user = T.V1_SYSTEM_PROMPT, "###Feedback: "
    text = T.V1_CHAT_WRAPPER.replace("{system}", system).replace("{user}", user)
    assert text == (
        "[INST] <<SYS>>\nYou are a fair evaluator language model.\n<</SYS>>\n\n"
        "###Feedback:  [/INST]"
    )
    assert text.endswith("###Feedback:  [/INST]")


def test_v2_wrapper_text() -> None:
    text = T.V2_CHAT_WRAPPER.replace("{system}", "S").replace("{user}", "U")
    assert text == "[INST] S\nU [/INST]"
    assert "<s>" not in T.V1_CHAT_WRAPPER + T.V2_CHAT_WRAPPER  # BOS comes from the tokenizer


def test_absolute_templates_end_with_feedback_header() -> None:
    for name in CONSTANTS:
        if "PROMPT" in name and "SYSTEM" not in name:
            assert getattr(T, name).endswith("\n\n###Feedback: ")
