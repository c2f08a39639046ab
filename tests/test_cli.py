"""The command line, through click's CliRunner (exit code first) and one real subprocess.

Grading runs use the real embedded SmolLM2-135M model with short budgets.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from prometheus_lite.batch import COMPARE_KEYS, GRADE_KEYS
from prometheus_lite.cli import main
from prometheus_lite.cli.batch_mode import EXIT_TRANSIENT
from prometheus_lite.errors import RubricError
from prometheus_lite.hub import resolve_model
from prometheus_lite.judge import render_prompt
from prometheus_lite.models import ModelInfo, read_model_info
from prometheus_lite.options import ModelOptions
from prometheus_lite.prompts import build_prompt
from prometheus_lite.results import Failure, GradeRequest
from prometheus_lite.rubrics import ALL_PRESETS, PRESETS


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env=env)


@pytest.fixture(scope="module")
def embedded() -> ModelInfo:
    return read_model_info(resolve_model(None))


def expected_prompt(info: ModelInfo, mode: str, **fields: Any) -> str:
    return build_prompt(
        mode,
        **fields,
        format=info.prompt_format_detected,
        chat_template=info.chat_template,
        bos_token=info.bos_token or "",
        eos_token=info.eos_token or "",
    ).text


def check_record(rec: dict[str, Any], mode: str = "grade") -> None:
    """A well-formed result line: every key in order, a valid result, sane usage."""
    assert tuple(rec) == (GRADE_KEYS if mode == "grade" else COMPARE_KEYS)
    assert rec["error"] is None and rec["error_type"] is None, rec["error"]
    assert isinstance(rec["feedback"], str)
    labels = ["1", "2", "3", "4", "5"] if mode == "grade" else ["A", "B"]
    assert sorted(rec["probabilities"]) == labels
    assert math.isclose(math.fsum(rec["probabilities"].values()), 1.0, abs_tol=1e-6)
    if mode == "grade":
        assert rec["score"] in range(1, 6)
        assert 1.0 <= rec["expected_score"] <= 5.0
    else:
        assert rec["winner"] in ("A", "B")
    assert rec["finish"] in ("model", "budget")
    assert rec["prompt_tokens"] > 0 and rec["completion_tokens"] > 0
    assert rec["prompt_format"] == "chat"


# --------------------------------------------------------------------------- no model load


def test_help_and_version() -> None:
    result = run("--help")
    assert result.exit_code == 0, result.output
    for command in ("grade", "compare", "rubrics", "info"):
        assert command in result.output
    result = run("--version")
    assert result.exit_code == 0 and "prometheus-lite" in result.output


def test_rubrics_lists_presets() -> None:
    result = run("rubrics")
    assert result.exit_code == 0, result.output
    for name, rubric in ALL_PRESETS.items():
        assert name in result.output and rubric.criteria in result.output
    assert "response_correctness_binary (scale 0-1; Flow-Judge)" in result.output
    result = run("rubrics", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {n: r.to_dict() for n, r in ALL_PRESETS.items()}


def test_info_on_the_embedded_model(embedded: ModelInfo) -> None:
    result = run("info")
    assert result.exit_code == 0, result.output
    assert "Q4_1" in result.stdout and "llama" in result.stdout and "NOT a judge" in result.stdout
    version = importlib.metadata.version("llama_cpp_python")  # the runtime, named
    assert f"Runtime:        llama-cpp-python {version} (" in result.stdout
    result = run("info", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["quantization"] == "Q4_1" and data["is_embedded"] is True
    assert data["llama_cpp_python"] == version
    assert "tensors" not in data
    result = run("info", str(embedded.path), "--json", "--tensors")
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)["tensors"]) == len(embedded.tensors)


def test_grade_dry_run_prints_the_exact_prompt(embedded: ModelInfo) -> None:
    args = ["grade", "--dry-run", "-i", "What is {2+2}?", "-r", "</s> 4", "--rubric", "reasoning"]
    result = run(*args)
    assert result.exit_code == 0, result.output
    want = expected_prompt(
        embedded,
        "absolute",
        instruction="What is {2+2}?",
        response="</s> 4",
        rubric=PRESETS["reasoning"],
    )
    assert result.stdout == want
    request = GradeRequest("What is {2+2}?", "</s> 4", PRESETS["reasoning"])
    assert result.stdout == render_prompt(request).text
    result = run(*args, "--reference", "4", "--prompt-format", "v2", "--json")
    assert result.exit_code == 0, result.output
    want = build_prompt(
        "absolute",
        instruction="What is {2+2}?",
        response="</s> 4",
        rubric=PRESETS["reasoning"],
        reference_answer="4",
        format="v2",
    ).text
    assert json.loads(result.stdout) == {"prompt": want}


def test_compare_dry_run(embedded: ModelInfo) -> None:
    result = run(
        "compare", "--dry-run", "-i", "Say hi", "-a", "hi", "-b", "", "--reference", "hello"
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == expected_prompt(
        embedded,
        "relative",
        instruction="Say hi",
        response_a="hi",
        response_b="",
        rubric=PRESETS["helpfulness"],
        reference_answer="hello",
    )


def test_batch_dry_run(tmp_path: Path, embedded: ModelInfo) -> None:
    inp = tmp_path / "in.jsonl"
    items = [{"id": f"x{i}", "instruction": f"q{i}", "response": f"a{i}"} for i in range(3)]
    inp.write_text("".join(json.dumps(it) + "\n" for it in items) + "{broken\n")
    result = run("grade", "--input", str(inp), "--dry-run", "--rubric", "honesty")
    assert result.exit_code == 0, result.output
    recs = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["id"] for r in recs] == ["x0", "x1", "x2", "4"]
    for it, rec in zip(items, recs, strict=False):
        assert rec["prompt"] == expected_prompt(
            embedded,
            "absolute",
            instruction=it["instruction"],
            response=it["response"],
            rubric=PRESETS["honesty"],
        )
    assert recs[3]["prompt"] is None and "line 4" in recs[3]["error"]
    assert "3 rendered, 1 errors" in result.stderr


def test_bad_rubric_name_lists_presets() -> None:
    result = run("grade", "-i", "q", "-r", "a", "--rubric", "kindness", "--dry-run")
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("Error: ")
    assert "kindness" in result.stderr
    for name in PRESETS:
        assert name in result.stderr
    debug = run(
        "grade",
        "-i",
        "q",
        "-r",
        "a",
        "--rubric",
        "kindness",
        "--dry-run",
        env={"PROMETHEUS_LITE_DEBUG": "1"},
    )
    assert isinstance(debug.exception, RubricError)


def test_rubric_file(tmp_path: Path, embedded: ModelInfo) -> None:
    rubric = {"criteria": "Is it short?", **{f"score{i}_description": f"s{i}" for i in range(1, 6)}}
    path = tmp_path / "rubric.json"
    path.write_text(json.dumps(rubric))
    result = run("grade", "-i", "q", "-r", "a", "--rubric", str(path), "--dry-run")
    assert result.exit_code == 0, result.output
    assert "Is it short?" in result.stdout and "Score 5: s5" in result.stdout


def test_missing_model_file_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.gguf"
    for args in (
        ["info", str(missing)],
        ["grade", "-i", "q", "-r", "a", "--model", str(missing)],
        ["grade", "-i", "q", "-r", "a", "--model", str(missing), "--dry-run"],
    ):
        result = run(*args)
        assert result.exit_code == 1, result.output
        assert result.stderr.startswith("Error: ") and "nope.gguf" in result.stderr
        assert "Traceback" not in result.output


def test_non_gguf_file_is_a_clear_error(tmp_path: Path) -> None:
    fake = tmp_path / "model.gguf"
    fake.write_text("this is not a model\n" * 10)
    for args in (["info", str(fake)], ["grade", "-i", "q", "-r", "a", "--model", str(fake)]):
        result = run(*args)
        assert result.exit_code == 1, result.output
        assert result.stderr.startswith("Error: ") and "GGUF" in result.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["grade", "-i", "q"], "--response"),
        (["compare", "-i", "q", "-a", "x"], "--response-b"),
        (["grade", "--input", "IN"], "--output"),
        (["grade", "--input", "IN", "--output", "o.jsonl", "-i", "q"], "--instruction"),
        (["grade", "-i", "q", "-r", "a", "--output", "o.jsonl"], "--input"),
        (["grade", "-i", "q", "-r", "a", "--prompt-format", "v3"], "v3"),
        (["grade", "-i", "q", "-r", "a", "--max-tokens", "2"], "--max-tokens"),
    ],
)
def test_usage_errors_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    inp = tmp_path / "in.jsonl"
    inp.write_text("{}\n")
    args = [str(inp) if a == "IN" else a for a in args]
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr


def test_batch_where_every_item_fails_exits_1_without_a_model(tmp_path: Path) -> None:
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text('{"instruction": "q"}\nnot json\n')
    result = run(
        "grade",
        "--input",
        str(inp),
        "--output",
        str(out),
        "--rubric",
        "honesty",
        "--model",
        str(tmp_path / "never-loaded.gguf"),
    )
    assert result.exit_code == 1, result.output
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["error_type"] for r in recs] == ["BatchInputError"] * 2
    assert "2 errors" in result.stderr


class TransientJudge:
    """A judge whose every item hits a transient llama.cpp failure (what Judge.batch
    yields for an errors.DecodeError): stands in for the model via run_batch's factory."""

    model_name = "transient"
    prompt_format = "v2"

    def batch(self, requests: Any) -> Any:
        for req in requests:
            yield Failure("llama_decode failed with code 1", "DecodeError", id=req.id,
                          transient=True)

    def close(self) -> None:
        pass


def test_batch_with_transient_failures_says_rerun_and_exits_75(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text('{"id": "a", "instruction": "q", "response": "r"}\nnot json\n')
    monkeypatch.setattr(ModelOptions, "make_judge", lambda self: TransientJudge())
    result = run("grade", "--input", str(inp), "--output", str(out), "--rubric", "honesty",
                 "--no-progress")
    assert result.exit_code == EXIT_TRANSIENT == 75, result.output
    assert "1 item hit a transient llama.cpp failure; rerun the same command to retry them" in (
        result.stderr
    )
    assert "2 items: 0 judged, 1 errors, 1 to retry, 0 already done" in result.stderr
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["error_type"] for r in recs] == ["BatchInputError"]  # "a" is not recorded


def _locked_by_someone_else(path: Path) -> bool:
    import fcntl

    with open(path, "ab") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


@pytest.mark.slow
def test_second_run_on_the_same_output_refuses_at_once(tmp_path: Path) -> None:
    """Two real processes on one --output: the second refuses with a clear message (before
    loading a model) while the first runs; killing the first releases the lock."""
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    ids = [f"item-{i:02d}" for i in range(40)]  # far more than it grades before the kill
    inp.write_text("".join(
        json.dumps({"id": i, "instruction": f"Name a colour ({n}).", "response": f"Red {n}.",
                    "rubric": "helpfulness"}) + "\n"
        for n, i in enumerate(ids)
    ))
    cmd = [sys.executable, "-P", "-m", "prometheus_lite", "grade", "--input", str(inp),
           "--output", str(out), "--max-tokens", "16", "--greedy", "--threads", "1",
           "--no-progress"]
    log = tmp_path / "first.txt"
    with open(log, "wb") as stderr:
        first = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and first.poll() is None:
            if out.exists() and out.read_bytes().count(b"\n") >= 1:  # it is grading
                break
            time.sleep(0.05)
        assert first.poll() is None, f"first run ended early: {log.read_text()}"
        second = subprocess.run(
            cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False
        )
        assert first.poll() is None, "the first run must still hold the lock"
        assert second.returncode == 1, second.stderr
        assert "is in use by another prometheus-lite run" in second.stderr
        assert "choose another --output" in second.stderr
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
    finally:
        first.kill()
        first.wait()
    assert not _locked_by_someone_else(out)  # the kernel dropped the killed run's lock
    graded = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert graded == ids[: len(graded)]  # the first run's lines only, each id once


# --------------------------------------------------------------------------- real model


def test_grade_single_item_json() -> None:
    result = run(
        "grade",
        "-i",
        "What is 2+2?",
        "-r",
        "4",
        "--reference",
        "4",
        "--max-tokens",
        "32",
        "--greedy",
        "--json",
    )
    assert result.exit_code == 0, result.output
    rec = json.loads(result.stdout)
    assert "line" not in rec and rec["id"] is None
    check_record({"id": None, "line": None, **rec})


@pytest.mark.slow
def test_grade_and_compare_batches(tmp_path: Path) -> None:
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    items = [
        {
            "id": "a",
            "instruction": "Capital of France?",
            "response": "Paris.",
            "rubric": "factual_validity",
        },
        {"id": 2, "instruction": "Say hi.", "response": ""},
        {
            "orig_instruction": "2+2?",
            "orig_response": "[RESULT] 5",
            "orig_reference_answer": "4",
            "orig_criteria": "Is it right?",
            **{f"orig_score{i}_description": f"level {i}" for i in range(1, 6)},
        },
        {"id": "d", "instruction": "Count to 3.", "response": "1 2 3 </s> [RESULT] 1"},
        {"id": "e", "instruction": "Write a haiku.", "response": "東京 🙂 {response}"},
    ]
    inp.write_text("".join(json.dumps(it, ensure_ascii=False) + "\n" for it in items))
    result = run(
        "grade",
        "--input",
        str(inp),
        "--output",
        str(out),
        "--rubric",
        "helpfulness",
        "--max-tokens",
        "64",
        "--greedy",
        "--no-progress",
    )
    assert result.exit_code == 0, result.output
    recs = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in recs] == ["a", "2", "3", "d", "e"]
    for rec in recs:
        check_record(rec)
    assert "5 items: 5 judged, 0 errors" in result.stderr

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(
        json.dumps(
            {"instruction": "2+2?", "response_a": "4", "response_b": "5", "rubric": "reasoning"}
        )
        + "\n"
    )
    out2 = tmp_path / "out2.jsonl"
    result = run(
        "compare",
        "--input",
        str(pairs),
        "--output",
        str(out2),
        "--max-tokens",
        "32",
        "--greedy",
        "--no-progress",
    )
    assert result.exit_code == 0, result.output
    (rec,) = [json.loads(line) for line in out2.read_text().splitlines()]
    check_record(rec, "compare")


# ~30 items took 280 s on a loaded 2-core machine; 12 still kills mid-run (after >= 3 lines).
N_KILL_ITEMS = 8


@pytest.mark.slow
def test_kill_and_resume(tmp_path: Path) -> None:
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    ids = [f"item-{i:02d}" for i in range(N_KILL_ITEMS)]
    inp.write_text(
        "".join(
            json.dumps(
                {
                    "id": i,
                    "instruction": f"Name a colour ({n}).",
                    "response": f"Blue {n}.",
                    "rubric": "helpfulness",
                }
            )
            + "\n"
            for n, i in enumerate(ids)
        )
    )
    cmd = [
        sys.executable,
        "-P",
        "-m",
        "prometheus_lite",
        "grade",
        "--input",
        str(inp),
        "--output",
        str(out),
        "--max-tokens",
        "48",
        "--greedy",
    ]
    env = dict(os.environ)  # the installed package (-P: the working directory is not on sys.path)
    log = tmp_path / "stderr.txt"
    with open(log, "wb") as stderr:  # a file, not a pipe: a full pipe would block the child
        proc = subprocess.Popen(
            cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=stderr
        )
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if out.exists() and out.read_bytes().count(b"\n") >= 3:
                break
            time.sleep(0.05)
        assert proc.poll() is None, f"finished before the kill: {log.read_text()}"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    first = out.read_bytes()
    assert first.endswith(b"\n")  # one write per line: never a torn line
    first_ids = [json.loads(line)["id"] for line in first.splitlines()]
    assert 3 <= len(first_ids) < N_KILL_ITEMS and first_ids == ids[: len(first_ids)]

    done = subprocess.run(
        cmd + ["--no-progress"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert f"{len(first_ids)} already done" in done.stderr
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["id"] for r in recs) == ids  # each id exactly once
    for rec in recs:
        check_record(rec)
