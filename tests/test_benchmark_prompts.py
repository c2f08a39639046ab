"""Every rendered prompt of the v1 evaluation sets parses and re-renders byte for byte."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

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
        try:
            parts = parse_rendered_absolute(text)
        except Exception as e:  # noqa: BLE001 - collected into one report
            failures.append(f"{where}: {type(e).__name__}: {e}")
            continue
        assert isinstance(parts["rubric"], Rubric)
        assert parts["version"] == "v1"
        with_reference += parts["reference_answer"] is not None
        again = render_absolute(
            parts["instruction"],
            parts["response"],
            parts["rubric"],
            parts["reference_answer"],
            version="v1",
        )
        if again != text:
            offset = first_difference(again, text)
            failures.append(
                f"{where}: re-render differs at offset {offset}: "
                f"{text[offset : offset + 40]!r} vs {again[offset : offset + 40]!r}"
            )
    assert not failures, f"{len(failures)} prompts failed:\n" + "\n".join(failures[:20])
    assert count == 1082
    assert with_reference == 640  # vicuna + mt_bench have references, hhh does not


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
