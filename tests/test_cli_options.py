"""The judging options added this round: KV cache types, batch invariance, the judge families'
prompt formats. Real runs of the embedded model, short budgets."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from prometheus_lite.cli import main
from prometheus_lite.gguf_keys import PROMPT_FORMAT_VALUES
from prometheus_lite.llama import KV_CACHE_TYPES
from prometheus_lite.options import KV_CACHE_TYPE_NAMES


def test_cache_type_names_are_the_runtimes() -> None:
    assert tuple(KV_CACHE_TYPES) == KV_CACHE_TYPE_NAMES


def test_prompt_format_choices_cover_every_format() -> None:
    result = CliRunner().invoke(main, ["grade", "--help"])
    assert result.exit_code == 0, result.output
    for fmt in PROMPT_FORMAT_VALUES:
        assert fmt in result.output


def test_quantized_cache_and_pool_in_the_batch_start_line(tmp_path: Path) -> None:
    items = tmp_path / "in.jsonl"
    items.write_text(
        json.dumps({"instruction": "2+2?", "response": "4", "rubric": "helpfulness"}) + "\n"
    )
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(main, [
        "grade", "--input", str(items), "--output", str(out), "--greedy", "--max-tokens", "16",
        "--parallel", "2", "--cache-type-k", "q8_0", "--cache-type-v", "q8_0", "--no-progress",
        "--schedule", "fcfs",
    ])
    assert result.exit_code == 0, result.output
    assert "KV pool" in result.output and "KV cache K q8_0, V q8_0" in result.output
    assert "schedule fcfs" in result.output
    record = json.loads(out.read_text())
    assert record["score"] in (1, 2, 3, 4, 5) and not record["error"]


def test_bad_cache_type_is_a_usage_error() -> None:
    result = CliRunner().invoke(main, ["grade", "--instruction", "q", "--response", "r",
                                       "--rubric", "helpfulness", "--cache-type-k", "q5_9"])
    assert result.exit_code == 2
    assert "q5_9" in result.output and "f16" in result.output


def test_batch_invariant_flag_grades(monkeypatch) -> None:
    # The option sets llama.cpp's process-wide GGML_CPU_TILED_MM=0; undo it for later tests.
    monkeypatch.setenv("GGML_CPU_TILED_MM", "1")
    result = CliRunner().invoke(main, [
        "grade", "--instruction", "2+2?", "--response", "4", "--rubric", "helpfulness",
        "--greedy", "--max-tokens", "16", "--batch-invariant", "--json",
    ])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output[result.output.index("{"):])["score"] in (1, 2, 3, 4, 5)
