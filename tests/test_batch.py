"""JSONL batch files: parsing every field form, error records, resume (a fake judge; the
embedded model for the real transient-failure path at the end)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from prometheus_lite.batch import (
    COMPARE_KEYS,
    GRADE_KEYS,
    parse_line,
    read_done,
    read_done_ids,
    run_batch,
)
from prometheus_lite.errors import BatchInputError
from prometheus_lite.results import (
    CompareRequest,
    Comparison,
    Failure,
    Grade,
    GradeRequest,
    Usage,
)
from prometheus_lite.rubrics import PRESETS, Rubric

RUBRIC = {
    "criteria": "Is it correct?",
    **{f"score{i}_description": f"level {i}" for i in range(1, 6)},
}


def line(**fields: Any) -> str:
    return json.dumps(fields)


# --------------------------------------------------------------------------- parse_line


def test_parse_grade_all_fields() -> None:
    req = parse_line(
        line(id="q1", instruction="2+2?", response="4", reference_answer="4", rubric=RUBRIC),
        1,
        "grade",
        None,
    )
    assert req == GradeRequest("2+2?", "4", Rubric(**RUBRIC), "4", id="q1")


def test_parse_defaults_id_to_line_number_and_rubric_to_default() -> None:
    req = parse_line(line(instruction="i", response="r"), 7, "grade", PRESETS["honesty"])
    assert req.id == "7"
    assert req.rubric == PRESETS["honesty"]
    assert req.reference_answer is None


@pytest.mark.parametrize("given, expected", [(12, "12"), (1.5, "1.5"), ("abc", "abc")])
def test_parse_id_kept_as_str(given: Any, expected: str) -> None:
    req = parse_line(
        line(id=given, instruction="i", response="r", rubric="reasoning"), 3, "grade", None
    )
    assert req.id == expected


def test_parse_preset_rubric_by_name() -> None:
    req = parse_line(
        line(instruction="i", response="r", rubric="factual-validity"), 1, "grade", None
    )
    assert req.rubric == PRESETS["factual_validity"]


def test_parse_empty_response_is_valid() -> None:
    req = parse_line(line(instruction="i", response="", rubric="helpfulness"), 1, "grade", None)
    assert isinstance(req, GradeRequest) and req.response == ""


def test_parse_feedback_collection_names() -> None:
    fc = {
        "orig_instruction": "Explain X.",
        "orig_response": "X is ...",
        "orig_reference_answer": "X is Y.",
        "orig_criteria": "Clarity?",
        **{f"orig_score{i}_description": f"d{i}" for i in range(1, 6)},
        "orig_feedback": "ignored",
        "orig_score": "3",
        "output": "ignored",
    }
    req = parse_line(json.dumps(fc), 4, "grade", PRESETS["helpfulness"])
    assert req == GradeRequest(
        "Explain X.",
        "X is ...",
        Rubric("Clarity?", "d1", "d2", "d3", "d4", "d5"),
        "X is Y.",
        id="4",
    )


def test_parse_compare_fields_and_preference_collection_names() -> None:
    req = parse_line(
        line(id=5, instruction="i", response_a="a", response_b="b", rubric="harmlessness"),
        1,
        "compare",
        None,
    )
    assert req == CompareRequest("i", "a", "b", PRESETS["harmlessness"], None, id="5")
    pc = {
        "orig_instruction": "i",
        "orig_response_A": "a",
        "orig_response_B": "b",
        "orig_reference_answer": "r",
        **{"orig_" + k: v for k, v in RUBRIC.items()},
    }
    req = parse_line(json.dumps(pc), 2, "compare", None)
    assert req == CompareRequest("i", "a", "b", Rubric(**RUBRIC), "r", id="2")


@pytest.mark.parametrize(
    "text, mode, fragments",
    [
        ("{not json", "grade", ["line 9", "invalid JSON"]),
        ("[1, 2]", "grade", ["line 9", "JSON object", "an array"]),
        (line(response="r", rubric="honesty"), "grade", ["line 9", "'instruction'"]),
        (line(instruction="i", rubric="honesty"), "grade", ["line 9", "'response'"]),
        (
            line(instruction="i", response=5, rubric="honesty"),
            "grade",
            ["line 9", "'response'", "a number", "string"],
        ),
        (
            line(instruction=None, response="r", rubric="honesty"),
            "grade",
            ["line 9", "'instruction'"],
        ),
        (
            line(instruction="i", response="r", reference_answer=["x"], rubric="honesty"),
            "grade",
            ["line 9", "'reference_answer'", "an array"],
        ),
        (line(instruction="i", response="r"), "grade", ["line 9", "no rubric", "--rubric"]),
        (
            line(instruction="i", response="r", rubric="nope"),
            "grade",
            ["line 9", "'rubric'", "nope", "helpfulness"],
        ),
        (
            line(instruction="i", response="r", rubric={"criteria": "c"}),
            "grade",
            ["line 9", "'rubric'", "score1_description"],
        ),
        (line(instruction="i", response="r", rubric=3), "grade", ["line 9", "'rubric'"]),
        (
            line(instruction="i", response="r", orig_criteria="c"),
            "grade",
            ["line 9", "score1_description"],
        ),
        (
            line(id=[1], instruction="i", response="r", rubric="honesty"),
            "grade",
            ["line 9", "'id'"],
        ),
        (
            line(instruction="i", response_a="a", response_b="b", rubric="honesty"),
            "grade",
            ["line 9", "'response'", "compare"],
        ),
        (
            line(instruction="i", response="r", rubric="honesty"),
            "compare",
            ["line 9", "'response_a'", "grade"],
        ),
        (
            line(instruction="i", response_a="a", rubric="honesty"),
            "compare",
            ["line 9", "'response_b'"],
        ),
    ],
)
def test_parse_errors_name_line_and_field(text: str, mode: Any, fragments: list[str]) -> None:
    with pytest.raises(BatchInputError) as exc:
        parse_line(text, 9, mode, None)
    for fragment in fragments:
        assert fragment in str(exc.value)


# --------------------------------------------------------------------------- fake judge


def _usage() -> Usage:
    return Usage(
        prompt_tokens=10,
        completion_tokens=5,
        cached_prompt_tokens=2,
        latency_s=0.01,
        finish="model",
    )


class FakeJudge:
    """Answers instantly; fails on responses equal to 'FAIL'; can stop after n items."""

    model_name = "fake"
    prompt_format = "v2"

    def __init__(self, stop_after: int | None = None, transient: int = 0) -> None:
        self.seen: list[str | None] = []
        self.stop_after = stop_after
        self.transient_left = transient  # how many 'TRANSIENT' items fail (transiently)
        self.closed = False

    def batch(self, requests: Iterable[Any]) -> Iterator[Any]:
        for req in requests:
            if self.stop_after is not None and len(self.seen) >= self.stop_after:
                raise KeyboardInterrupt  # a run killed in the middle
            self.seen.append(req.id)
            if isinstance(req, CompareRequest):
                yield Comparison("fb", "A", {"A": 0.7, "B": 0.3}, _usage(), "fake", "v2", id=req.id)
            elif req.response == "FAIL":
                yield Failure("too long", "PromptTooLongError", id=req.id)
            elif req.response == "TRANSIENT" and self.transient_left > 0:
                # What Judge.batch yields for an errors.DecodeError (KV cache full, OOM).
                self.transient_left -= 1
                yield Failure("llama_decode failed with code 1", "DecodeError", id=req.id,
                              transient=True)
            else:
                yield Grade(
                    f"fb {req.response}",
                    4,
                    {str(i): 0.2 for i in range(1, 6)},
                    3.0,
                    _usage(),
                    "fake",
                    "v2",
                    id=req.id,
                )

    def close(self) -> None:
        self.closed = True


class Factory:
    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.judges: list[FakeJudge] = []

    def __call__(self) -> FakeJudge:
        self.judges.append(FakeJudge(**self.kwargs))
        return self.judges[-1]


def write_items(path: Path, n: int, **extra: Any) -> None:
    with open(path, "w") as f:
        f.writelines(
            line(id=f"item{i}", instruction="i", response=f"r{i}", rubric="helpfulness", **extra)
            + "\n"
            for i in range(n)
        )


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    text = path.read_text()
    assert text == "" or text.endswith("\n")
    return [json.loads(t) for t in text.splitlines()]


# --------------------------------------------------------------------------- run_batch


def test_run_batch_writes_one_line_per_item_in_order(tmp_path: Path) -> None:
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_items(inp, 4)
    factory = Factory()
    summary = run_batch(factory, inp, out, "grade", progress=False)
    assert (summary.total, summary.skipped, summary.done, summary.errors) == (4, 0, 4, 0)
    recs = read_jsonl(out)
    assert [r["id"] for r in recs] == ["item0", "item1", "item2", "item3"]
    for r in recs:
        assert tuple(r) == GRADE_KEYS
        assert r["score"] == 4 and r["error"] is None and r["model"] == "fake"
        assert set(r["probabilities"]) == {"1", "2", "3", "4", "5"}
    assert factory.judges[0].closed


def test_output_folder_is_created(tmp_path: Path) -> None:
    inp, out = tmp_path / "in.jsonl", tmp_path / "new" / "dir" / "out.jsonl"
    write_items(inp, 1)
    assert run_batch(Factory(), inp, out, "grade", progress=False).done == 1
    assert len(read_jsonl(out)) == 1


def test_run_batch_compare_keys(tmp_path: Path) -> None:
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text(line(instruction="i", response_a="a", response_b="b", rubric="honesty") + "\n")
    run_batch(Factory(), inp, out, "compare", progress=False)
    (rec,) = read_jsonl(out)
    assert tuple(rec) == COMPARE_KEYS
    assert rec["winner"] == "A" and rec["probabilities"] == {"A": 0.7, "B": 0.3}


def test_malformed_lines_and_failures_become_error_records(tmp_path: Path) -> None:
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text(
        "\n".join(
            [
                line(id="a", instruction="i", response="ok", rubric="honesty"),
                "{broken",
                "",  # blank lines are skipped
                line(id="c", instruction="i", response=3, rubric="honesty"),
                line(id="d", instruction="i", response="FAIL", rubric="honesty"),
                line(id="e", instruction="i", response="ok"),  # no rubric, no default
            ]
        )
        + "\n"
    )
    summary = run_batch(Factory(), inp, out, "grade", progress=False)
    assert (summary.total, summary.done, summary.errors) == (5, 1, 4)
    recs = read_jsonl(out)
    assert [(r["id"], r["line"]) for r in recs] == [
        ("a", 1),
        ("2", 2),
        ("c", 4),
        ("d", 5),
        ("e", 6),
    ]
    assert all(tuple(r) == GRADE_KEYS for r in recs)
    assert recs[0]["error"] is None
    assert "line 2" in recs[1]["error"] and recs[1]["error_type"] == "BatchInputError"
    assert "line 4" in recs[2]["error"] and "'response'" in recs[2]["error"]
    assert recs[3]["error_type"] == "PromptTooLongError" and recs[3]["model"] == "fake"
    assert "--rubric" in recs[4]["error"]


def test_default_rubric_fills_lines_without_one(tmp_path: Path) -> None:
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text(line(instruction="i", response="r") + "\n")
    s = run_batch(Factory(), inp, out, "grade", default_rubric=PRESETS["reasoning"], progress=False)
    assert (s.done, s.errors) == (1, 0)


def test_duplicate_ids_get_error_records_and_survive_resume(tmp_path: Path) -> None:
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text(
        "".join(
            line(id=i, instruction="x", response="r", rubric="honesty") + "\n"
            for i in ["a", "b", "a", "c", "a"]
        )
    )
    s = run_batch(Factory(), inp, out, "grade", progress=False)
    assert (s.done, s.errors) == (3, 2)
    recs = read_jsonl(out)
    assert [r["id"] for r in recs] == ["a", "b", "a", "c", "a"]
    assert recs[0]["error"] is None
    assert "duplicate id 'a'" in recs[2]["error"] and "line 1" in recs[2]["error"]
    # a rerun finds everything done, including the duplicates' error records
    factory = Factory()
    s = run_batch(factory, inp, out, "grade", progress=False)
    assert (s.total, s.skipped, s.done, s.errors) == (5, 5, 0, 0)
    assert factory.judges == []  # a finished run never loads the model
    assert len(read_jsonl(out)) == 5


def test_duplicate_found_on_resume_after_its_first_was_done(tmp_path: Path) -> None:
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    lines = [
        line(id=i, instruction="x", response="r", rubric="honesty") + "\n" for i in ["a", "b", "a"]
    ]
    inp.write_text("".join(lines[:2]))
    run_batch(Factory(), inp, out, "grade", progress=False)  # killed before line 3
    inp.write_text("".join(lines))
    factory = Factory()
    s = run_batch(factory, inp, out, "grade", progress=False)
    assert (s.skipped, s.done, s.errors) == (2, 0, 1)
    assert factory.judges == []
    recs = read_jsonl(out)
    assert [r["id"] for r in recs] == ["a", "b", "a"]
    assert "duplicate id 'a' (first on line 1)" in recs[2]["error"]


def test_resume_after_interruption_skips_done_ids(tmp_path: Path) -> None:
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_items(inp, 6)
    with pytest.raises(KeyboardInterrupt):
        run_batch(Factory(stop_after=2), inp, out, "grade", progress=False)
    assert [r["id"] for r in read_jsonl(out)] == ["item0", "item1"]
    factory = Factory()
    s = run_batch(factory, inp, out, "grade", progress=False)
    assert (s.total, s.skipped, s.done) == (6, 2, 4)
    assert factory.judges[0].seen == ["item2", "item3", "item4", "item5"]
    assert [r["id"] for r in read_jsonl(out)] == [f"item{i}" for i in range(6)]


@pytest.mark.parametrize("torn", [b'{"id": "item2", "feedb', b'{"id": "item2", "fe\n'])
def test_resume_truncates_a_torn_last_line(tmp_path: Path, torn: bytes) -> None:
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_items(inp, 4)
    run_batch(Factory(), inp, out, "grade", progress=False)
    lines = out.read_bytes().splitlines(keepends=True)
    out.write_bytes(b"".join(lines[:2]) + torn)  # killed while writing item2
    factory = Factory()
    s = run_batch(factory, inp, out, "grade", progress=False)
    assert (s.skipped, s.done) == (2, 2)
    assert factory.judges[0].seen == ["item2", "item3"]
    recs = read_jsonl(out)
    assert [r["id"] for r in recs] == ["item0", "item1", "item2", "item3"]


def test_read_done_ids_rejects_a_corrupt_middle_line(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text('{"id": "a"}\nnot json\n{"id": "b"}\n')
    with pytest.raises(BatchInputError, match="line 2"):
        read_done_ids(out)
    assert read_done_ids(tmp_path / "missing.jsonl") == {}


def test_error_records_count_as_done(tmp_path: Path) -> None:
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text(
        "{broken\n" + line(id="x", instruction="i", response="FAIL", rubric="honesty") + "\n"
    )
    run_batch(Factory(), inp, out, "grade", progress=False)
    s = run_batch(Factory(), inp, out, "grade", progress=False)
    assert (s.skipped, s.done, s.errors) == (2, 0, 0)


def test_transient_failures_are_not_recorded_and_retried(tmp_path: Path) -> None:
    """A llama.cpp decode failure says nothing about the item: no error record (which a
    resume would skip for good), a count in the summary, and the rerun grades it."""
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text("".join(
        line(id=i, instruction="i", response=r, rubric="honesty") + "\n"
        for i, r in [("a", "ok"), ("b", "TRANSIENT"), ("c", "FAIL"), ("d", "TRANSIENT")]
    ))
    s = run_batch(Factory(transient=2), inp, out, "grade", progress=False)
    assert (s.total, s.skipped, s.done, s.errors, s.transient) == (4, 0, 1, 1, 2)
    assert [(r["id"], r["error_type"]) for r in read_jsonl(out)] == [
        ("a", None), ("c", "PromptTooLongError")]
    factory = Factory()
    s = run_batch(factory, inp, out, "grade", progress=False)
    assert (s.skipped, s.done, s.errors, s.transient) == (2, 2, 0, 0)
    assert factory.judges[0].seen == ["b", "d"]
    assert sorted(r["id"] for r in read_jsonl(out)) == ["a", "b", "c", "d"]


def test_transient_failure_of_a_duplicate_ids_first_line_is_retried(tmp_path: Path) -> None:
    """Two lines share id x; line 1 fails transiently (nothing written) and line 2 gets its
    duplicate-id error record. The rerun must judge line 1: the record of line 2 says it
    is line 2, not 'one of the x lines'."""
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text("".join(
        line(id=i, instruction="i", response=r, rubric="honesty") + "\n"
        for i, r in [("x", "TRANSIENT"), ("x", "ok"), ("y", "ok")]
    ))
    s = run_batch(Factory(transient=1), inp, out, "grade", progress=False)
    assert (s.done, s.errors, s.transient) == (1, 1, 1)
    assert [(r["id"], r["line"]) for r in read_jsonl(out)] == [("x", 2), ("y", 3)]
    factory = Factory()
    s = run_batch(factory, inp, out, "grade", progress=False)
    assert (s.total, s.skipped, s.done, s.errors, s.transient) == (3, 2, 1, 0, 0)
    assert factory.judges[0].seen == ["x"]
    recs = read_jsonl(out)
    assert [(r["id"], r["line"], r["error"] is None) for r in recs] == [
        ("x", 2, False), ("y", 3, True), ("x", 1, True)]
    s = run_batch(Factory(), inp, out, "grade", progress=False)
    assert (s.skipped, s.done, s.errors) == (3, 0, 0)


def test_resume_keys_on_id_and_line(tmp_path: Path) -> None:
    """read_done counts records per (id, line); a record whose line moved (the input was
    edited above it) or that has no line still counts for its id, so nothing is judged
    twice."""
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_items(inp, 3)
    run_batch(Factory(), inp, out, "grade", progress=False)
    assert read_done(out) == {("item0", 1): 1, ("item1", 2): 1, ("item2", 3): 1}
    items = inp.read_text()
    inp.write_text(line(id="new", instruction="i", response="n", rubric="honesty") + "\n"
                   + items)  # every old item moved down one line
    factory = Factory()
    s = run_batch(factory, inp, out, "grade", progress=False)
    assert (s.total, s.skipped, s.done) == (4, 3, 1) and factory.judges[0].seen == ["new"]
    out.write_text(out.read_text() + '{"id": "old"}\n')  # a record without a line number
    inp.write_text(inp.read_text() + line(id="old", instruction="i", response="o",
                                          rubric="honesty") + "\n")
    assert read_done(out)[("old", None)] == 1
    s = run_batch(Factory(), inp, out, "grade", progress=False)
    assert (s.total, s.skipped, s.done) == (5, 5, 0)


def test_a_second_run_on_the_same_output_is_refused(tmp_path: Path) -> None:
    """While another open file description holds the output's flock (as another process
    running on it does), a run refuses before reading, repairing or writing anything."""
    import fcntl

    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_items(inp, 2)
    out.write_bytes(b'{"id": "item0"}\n{"id": "it')  # a torn tail the run must not touch
    before = out.read_bytes()
    factory = Factory()
    with open(out, "ab") as other:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(BatchInputError, match="in use by another prometheus-lite run"):
            run_batch(factory, inp, out, "grade", progress=False)
    assert out.read_bytes() == before and factory.judges == []
    s = run_batch(factory, inp, out, "grade", progress=False)  # lock released: runs
    assert (s.skipped, s.done) == (1, 1)


def test_only_bad_lines_left_needs_no_model(tmp_path: Path) -> None:
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text("{broken\n")
    factory = Factory()
    s = run_batch(factory, inp, out, "grade", progress=False)
    assert (s.done, s.errors) == (0, 1) and factory.judges == []


def test_unicode_round_trips(tmp_path: Path) -> None:
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text(
        line(id="ü", instruction="i", response="日本 \ud800", rubric="honesty") + "\n",
        encoding="utf-8",
    )
    run_batch(Factory(), inp, out, "grade", progress=False)
    (rec,) = read_jsonl(out)
    assert rec["id"] == "ü" and rec["feedback"] == "fb 日本 \ud800"


def test_dry_run_renders_without_a_judge(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inp = tmp_path / "in.jsonl"
    write_items(inp, 2)
    inp.write_text(inp.read_text() + "{broken\n")

    def no_judge() -> Any:
        raise AssertionError("a dry run must not load a model")

    s = run_batch(
        no_judge,
        inp,
        None,
        "grade",
        progress=False,
        dry_run_render=lambda req: f"PROMPT {req.response}",
    )
    assert (s.done, s.errors, s.output) == (2, 1, None)
    recs = [json.loads(t) for t in capsys.readouterr().out.splitlines()]
    assert [(r["id"], r["prompt"]) for r in recs] == [
        ("item0", "PROMPT r0"),
        ("item1", "PROMPT r1"),
        ("3", None),
    ]
    out = tmp_path / "prompts.jsonl"
    run_batch(no_judge, inp, out, "grade", progress=False, dry_run_render=lambda r: "P")
    assert len(read_jsonl(out)) == 3
    with pytest.raises(BatchInputError, match="already exists"):
        run_batch(no_judge, inp, out, "grade", progress=False, dry_run_render=lambda r: "P")


def test_output_required_and_distinct_from_input(tmp_path: Path) -> None:
    inp = tmp_path / "in.jsonl"
    write_items(inp, 1)
    with pytest.raises(BatchInputError, match="--output"):
        run_batch(Factory(), inp, None, "grade", progress=False)
    with pytest.raises(BatchInputError, match="input file"):
        run_batch(Factory(), inp, inp, "grade", progress=False)
    with pytest.raises(BatchInputError, match="does not exist"):
        run_batch(Factory(), tmp_path / "nope.jsonl", tmp_path / "o.jsonl", "grade", progress=False)


def test_progress_bar_on_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_items(inp, 3)
    run_batch(Factory(), inp, out, "grade", progress=True)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "grading" in captured.err and "3/3" in captured.err


# --------------------------------------------------------------------------- a real judge


class _SharedJudge:
    """A real Judge (embedded model) for several runs: run_batch's close() leaves it open.

    ``flaky`` items (their response) get a token id past the vocabulary appended to their
    prompt, once each: llama.cpp rejects that batch, the engine fails the item with a
    DecodeError and Judge.batch yields it as a transient Failure, the real path of a
    transient llama.cpp failure."""

    def __init__(self, judge: Any) -> None:
        self.judge = judge
        self.model_name, self.prompt_format = judge.model_name, judge.prompt_format
        self.flaky: set[str] = set()
        runtime = judge.runtime
        tokenize = runtime.tokenize_prompt

        def tokenize_prompt(prompt: Any) -> list[int]:
            tokens = tokenize(prompt)
            hit = next((r for r in self.flaky if r in prompt.text), None)
            if hit is None:
                return tokens
            self.flaky.discard(hit)
            return tokens[:-1] + [runtime.n_vocab + 7]

        runtime.tokenize_prompt = tokenize_prompt

    def batch(self, requests: Iterable[Any]) -> Iterator[Any]:
        return self.judge.batch(requests)

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def real_judge() -> Iterator[_SharedJudge]:
    from prometheus_lite import Judge

    judge = Judge(None, n_threads=1, n_parallel=1, greedy=True, max_new_tokens=16, seed=3,
                  n_gpu_layers=0)
    try:
        yield _SharedJudge(judge)
    finally:
        judge.close()


def test_real_transient_failure_of_a_duplicate_ids_first_line_is_retried(
    tmp_path: Path, real_judge: _SharedJudge
) -> None:
    """The same situation with the real engine: line 1's llama_decode fails (transient,
    not written), line 2 (same id) gets its duplicate-id record; the rerun judges line 1."""
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text("".join(
        line(id=i, instruction="Say hi.", response=r, rubric="honesty") + "\n"
        for i, r in [("x", "Hello there (flaky)."), ("x", "Hi."), ("y", "Hey.")]
    ))
    real_judge.flaky = {"Hello there (flaky)."}
    s = run_batch(lambda: real_judge, inp, out, "grade", progress=False)
    assert (s.done, s.errors, s.transient) == (1, 1, 1)
    assert not real_judge.flaky  # the failure was injected
    assert [(r["id"], r["line"], r["error_type"]) for r in read_jsonl(out)] == [
        ("x", 2, "BatchInputError"), ("y", 3, None)]
    s = run_batch(lambda: real_judge, inp, out, "grade", progress=False)  # the real rerun
    assert (s.skipped, s.done, s.errors, s.transient) == (2, 1, 0, 0)
    recs = read_jsonl(out)
    assert [(r["id"], r["line"]) for r in recs] == [("x", 2), ("y", 3), ("x", 1)]
    assert recs[2]["error"] is None and recs[2]["score"] in (1, 2, 3, 4, 5)


def test_parse_line_takes_text_or_the_parsed_object() -> None:
    """The service parses a request body once and hands the object over."""
    from prometheus_lite.batch import parse_line

    obj = {"id": "a", "instruction": "q", "response": "r", "rubric": "helpfulness"}
    assert parse_line(obj, 1, "grade") == parse_line(json.dumps(obj), 1, "grade")
