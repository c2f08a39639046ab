"""Every rendered prompt of the v1 evaluation sets re-renders byte for byte from its parts.

The parts are read with this file's own header strings (not prompts.py's parser), filled
into our v1 template, and the result compared with the file's text; the parser must agree.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from prometheus_lite.errors import PromptError
from prometheus_lite.prompts import parse_rendered_absolute, render_absolute
from prometheus_lite.rubrics import Rubric

ARTIFACT = '",\n'  # after "###Feedback: " in every prompt (see SOURCE.md)


def iter_prompts(data_dir: Path) -> Iterator[tuple[str, int, str, str]]:
    """(file, row, field, prompt) for every rendered prompt."""
    for name in ("vicuna_eval.jsonl", "mt_bench_eval.jsonl"):
        with open(data_dir / name, encoding="utf-8") as f:
            for row, line in enumerate(f):
                yield name, row, "instruction", json.loads(line)["instruction"]
    name = "hhh_alignment_eval.json"
    rows = json.loads((data_dir / name).read_text(encoding="utf-8"))
    for row, record in enumerate(rows):
        for field in ("chosen_instruction", "rejected_instruction"):
            yield name, row, field, record[field]


def first_difference(a: str, b: str) -> int:
    return next(
        (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))
    )


# The v1 prompt's section headers as the evaluation files write them, and its rubric lines:
# the test's own reading of the files, independent of prompts.py and templates.py.
INSTRUCTION = "###The instruction to evaluate:\n"
RESPONSE = "\n\n###Response to evaluate:\n"
REFERENCE = "\n\n###Reference Answer (Score 5):\n"
RUBRIC = "\n\n###Score Rubrics:\n"
FEEDBACK = "\n\n###Feedback: "
RUBRIC_LINES = re.compile(
    r"\[(?P<criteria>.*?)\]\n"
    + r"\n".join(f"Score {i}: (?P<score{i}_description>.*?)" for i in range(1, 6))
    + r"\Z",
    re.DOTALL,
)


def read_parts(text: str) -> dict[str, Any]:
    """instruction, response, reference_answer (None if absent) and rubric of a prompt,
    cut at the headers (the instruction ends at the first response header, the rest are
    matched from the end: responses may contain header lines)."""
    assert text.endswith(FEEDBACK)
    _, _, body = text[: -len(FEEDBACK)].partition(INSTRUCTION)
    instruction, _, body = body.partition(RESPONSE)
    body, _, rubric_text = body.rpartition(RUBRIC)
    response, ref_header, reference = body.rpartition(REFERENCE)
    if not ref_header:
        response, reference = reference, None
    rubric = RUBRIC_LINES.fullmatch(rubric_text)
    assert rubric is not None, rubric_text[:80]
    return {
        "instruction": instruction,
        "response": response,
        "reference_answer": reference,
        "rubric": Rubric(**rubric.groupdict()),
    }


def check_prompt(text: str) -> str | None:
    """None if our v1 template, filled with the prompt's parts, gives the file's text
    byte for byte and the parser agrees on the parts; else what differs."""
    parts = read_parts(text)
    again = render_absolute(
        parts["instruction"],
        parts["response"],
        parts["rubric"],
        parts["reference_answer"],
        version="v1",
    )
    if again != text:
        offset = first_difference(again, text)
        return (
            f"re-render differs at offset {offset}: "
            f"{text[offset : offset + 40]!r} (file) vs {again[offset : offset + 40]!r}"
        )
    try:
        parsed = parse_rendered_absolute(text)
    except PromptError as e:
        return f"parse_rendered_absolute: {e}"
    if parsed != {**parts, "version": "v1"}:
        return "parse_rendered_absolute disagrees on the parts"
    return None


def test_benchmark_prompts_round_trip(shared_dir: Path) -> None:
    data_dir = shared_dir / "data" / "prometheus-benchmarks"
    failures: list[str] = []
    count = 0
    with_reference = 0
    for file, row, field, raw in iter_prompts(data_dir):
        count += 1
        where = f"{file} row {row} {field}"
        if not raw.endswith("###Feedback: " + ARTIFACT):
            failures.append(f"{where}: no '###Feedback: \",\\n' ending")
            continue
        text = raw[: -len(ARTIFACT)]
        with_reference += read_parts(text)["reference_answer"] is not None
        problem = check_prompt(text)
        if problem is not None:
            failures.append(f"{where}: {problem}")
    assert not failures, f"{len(failures)} prompts failed:\n" + "\n".join(failures[:20])
    assert count == 1082
    assert with_reference == 640  # vicuna + mt_bench have references, hhh does not


@pytest.mark.parametrize(
    "old, new",
    [
        ("assess the quality", "assess  the quality"),  # a double space
        ("You should refer to the score rubric.", "You should refer to the rubric."),
        ("explanations.\n\n###The instruction", "explanations.\n###The instruction"),
    ],
)
def test_the_check_catches_a_template_difference(shared_dir: Path, old: str, new: str) -> None:
    """check_prompt compares against the file's bytes: one changed character is caught."""
    raw = next(iter_prompts(shared_dir / "data" / "prometheus-benchmarks"))[3]
    text = raw[: -len(ARTIFACT)]
    assert check_prompt(text) is None
    changed = text.replace(old, new, 1)
    assert changed != text
    problem = check_prompt(changed)
    assert problem is not None and problem.startswith("re-render differs")


def test_benchmark_prompt_parts(shared_dir: Path) -> None:
    data_dir = shared_dir / "data" / "prometheus-benchmarks"
    raw = next(iter_prompts(data_dir))[3]
    parts = parse_rendered_absolute(raw[: -len(ARTIFACT)])
    assert parts["instruction"] == "How can I improve my time management skills?"
    assert parts["response"].startswith("Improving your time management skills")
    assert parts["reference_answer"]
    assert not parts["rubric"].criteria.startswith("[")


@pytest.mark.parametrize("field", ["chosen_instruction", "rejected_instruction"])
def test_hhh_has_no_reference(shared_dir: Path, field: str) -> None:
    data_dir = shared_dir / "data" / "prometheus-benchmarks"
    record = json.loads((data_dir / "hhh_alignment_eval.json").read_text(encoding="utf-8"))[0]
    parts = parse_rendered_absolute(record[field][: -len(ARTIFACT)])
    assert parts["reference_answer"] is None
