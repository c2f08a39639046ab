"""JSONL batch files: parse input lines, judge them, append one result line per item.

Resumable: a rerun with the same output file skips every line already written there
(results and error records alike; a record says which line it is by its ``id`` and
``line``) and appends the rest, in input order. To retry
items that failed, delete their lines (``"error": "..."``) from the output and rerun. An
item that hit a transient llama.cpp failure (``Failure.transient``: out of memory, KV
cache full) is not written at all, so the rerun retries it. One run at a time per output
file: a run holds an OS lock on it (``flock``) from start to end, and a second run on the
same file refuses at once. No llama_cpp import here: the judge comes from a factory,
called only if there is work left.

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
import logging
import math
import os
import sys
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

from .errors import BatchInputError, PrometheusLiteError, RubricError
from .results import CompareRequest, Comparison, Failure, Grade, GradeRequest, Request, Result
from .rubrics import PRESETS, Rubric, get_preset

try:
    import fcntl
except ImportError:  # Windows: no flock; runs on one output are not guarded there
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "COMPARE_KEYS",
    "GRADE_KEYS",
    "BatchSummary",
    "Done",
    "Mode",
    "error_record",
    "parse_line",
    "plan_lines",
    "read_done",
    "read_done_ids",
    "result_record",
    "run_batch",
]

logger = logging.getLogger(__name__)

Mode = Literal["grade", "compare"]
# What an output already holds: records per (id, line) they say they are (line None when
# a record has none).
Done = Counter[tuple[str, int | None]]
MODES: tuple[str, ...] = ("grade", "compare")

# Output line keys, in the order they are written (same set for every line of a mode).
GRADE_KEYS: tuple[str, ...] = (
    "id", "line", "feedback", "score", "probabilities", "expected_score", "error",
    "error_type", "model", "prompt_format", "prompt_tokens", "completion_tokens",
    "cached_prompt_tokens", "latency_s", "finish", "truncated_response_tokens",
)
COMPARE_KEYS: tuple[str, ...] = tuple(
    "winner" if k == "score" else k for k in GRADE_KEYS if k != "expected_score"
)
DRY_RUN_KEYS: tuple[str, ...] = ("id", "line", "prompt", "error", "error_type")

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


@dataclass(frozen=True)
class BatchSummary:
    """What one ``run_batch`` call did. ``total`` = ``skipped + done + errors + transient``."""

    total: int  # non-blank input lines
    skipped: int  # already in the output file (a previous run wrote them)
    done: int  # judged (or rendered, in a dry run) by this run
    errors: int  # error records written by this run
    output: Path | None  # None: a dry run printed to stdout
    # Items that hit a transient llama.cpp failure: not written, so a rerun retries them.
    transient: int = 0


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
    line: str, lineno: int, mode: Mode, default_rubric: Rubric | None = None
) -> Request:
    """One JSONL input line as a request; raises ``BatchInputError`` naming the line
    number and the field, and saying how to fix it."""
    if mode not in MODES:
        raise ValueError(f"mode must be 'grade' or 'compare', got {mode!r}")
    obj = _loads(line, lineno)
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


# --------------------------------------------------------------------------- records


def result_record(
    result: Result,
    mode: Mode,
    *,
    id: str | None = None,
    line: int | None = None,
    model: str | None = None,
    prompt_format: str | None = None,
) -> dict[str, Any]:
    """The output line for one result, keys in ``GRADE_KEYS``/``COMPARE_KEYS`` order
    (``line`` left out when None). Failures get nulls in the result fields."""
    keys = GRADE_KEYS if mode == "grade" else COMPARE_KEYS
    rec: dict[str, Any] = dict.fromkeys(keys)
    rec["id"] = id if id is not None else result.id
    rec["line"] = line
    if isinstance(result, Failure):
        rec.update(error=result.error, error_type=result.error_type,
                   model=model, prompt_format=prompt_format)
    else:
        u = result.usage
        rec.update(
            feedback=result.feedback,
            probabilities=dict(result.probabilities),
            model=result.model,
            prompt_format=result.prompt_format,
            prompt_tokens=u.prompt_tokens,
            completion_tokens=u.completion_tokens,
            cached_prompt_tokens=u.cached_prompt_tokens,
            latency_s=round(u.latency_s, 4),
            finish=u.finish,
            truncated_response_tokens=u.truncated_response_tokens,
        )
        if isinstance(result, Grade):
            rec.update(score=result.score, expected_score=result.expected_score)
        elif isinstance(result, Comparison):
            rec["winner"] = result.winner
    if line is None:
        del rec["line"]
    return rec


def error_record(
    mode: Mode | Literal["dry-run"],
    id: str,
    line: int,
    error: str,
    error_type: str,
    *,
    model: str | None = None,
    prompt_format: str | None = None,
) -> dict[str, Any]:
    """The output line for an item that could not be judged (same keys as a result)."""
    if mode == "dry-run":
        return {"id": id, "line": line, "prompt": None, "error": error, "error_type": error_type}
    rec = result_record(Failure(error, error_type, id), mode, id=id, line=line,
                        model=model, prompt_format=prompt_format)
    return rec


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _dumps(rec: Mapping[str, Any]) -> bytes:
    """One JSON line (strict JSON: NaN/inf become null), newline included."""
    rec = _finite(rec)
    try:
        return (json.dumps(rec, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates from the input: escape them instead
        return (json.dumps(rec, ensure_ascii=True, allow_nan=False) + "\n").encode("ascii")


# --------------------------------------------------------------------------- files


def _input_lines(path: Path) -> Iterator[tuple[int, str | None]]:
    """(1-based line number, text or None if not UTF-8) for every non-blank line;
    streamed, never the whole file in memory."""
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as e:
        raise BatchInputError(f"cannot read input file '{path}': {e.strerror}") from None
    with f:
        for lineno, raw in enumerate(f, start=1):
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):  # UTF-8 BOM
                raw = raw[3:]
            if not raw.strip():
                continue
            try:
                yield lineno, raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError:
                yield lineno, None


def _records(path: Path, *, repair: bool) -> Iterator[dict[str, Any]]:
    """Every record of an existing output file (missing file: none); see ``read_done``."""
    if not path.exists():
        return
    good_end = 0  # byte offset just past the last good line
    bad: tuple[int, str] | None = None  # (line number, why) of the first unreadable line
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as e:
        raise BatchInputError(f"cannot read output file '{path}': {e.strerror}") from None
    with f:
        offset = 0
        for lineno, raw in enumerate(f, start=1):
            offset += len(raw)
            if bad is not None:  # an unreadable line followed by more lines: not torn
                raise BatchInputError(
                    f"output file '{path}', line {bad[0]}: {bad[1]}; this file was not "
                    "written by prometheus-lite or was edited: fix or delete that line, "
                    "or choose another --output"
                )
            if not raw.strip():
                good_end = offset
                continue
            if not raw.endswith(b"\n"):
                bad = (lineno, "line has no newline at the end")
                continue
            try:
                rec = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                bad = (lineno, "not valid JSON")
                continue
            if not isinstance(rec, dict) or "id" not in rec:
                bad = (lineno, "not a result record (no 'id' field)")
                continue
            yield rec
            good_end = offset
    if bad is not None:
        logger.warning(
            "output file '%s': line %d is torn (%s), left by an interrupted run; %s",
            path, bad[0], bad[1], "removing it" if repair else "ignoring it",
        )
        if repair:
            os.truncate(path, good_end)


def _line_of(rec: Mapping[str, Any]) -> int | None:
    line = rec.get("line")
    return line if isinstance(line, int) and not isinstance(line, bool) else None


def read_done(output_path: str | os.PathLike[str], *, repair: bool = True) -> Done:
    """What an existing output file holds: how many records say they are each
    ``(id, line)`` (``line`` None for a record without one). Missing file: nothing.

    A torn last line (no trailing newline, or not valid JSON) is what a killed run can
    leave; with ``repair`` it is truncated away so appending starts on a clean line.
    Any other unreadable line means the file was not written by prometheus-lite (or was
    edited) and raises ``BatchInputError``.
    """
    return Counter((str(r["id"]), _line_of(r)) for r in _records(Path(output_path), repair=repair))


def read_done_ids(output_path: str | os.PathLike[str], *, repair: bool = True) -> Counter[str]:
    """How many records each id has in an existing output file (see ``read_done``)."""
    return Counter(str(r["id"]) for r in _records(Path(output_path), repair=repair))


class _LineWriter:
    """Appends whole JSON lines to a file, each durable before the next item starts.

    Why one ``os.write`` per line on an ``O_APPEND`` fd, then ``fsync``: there is no
    user-space buffer, so a kill -9 can only lose the line being built, never leave
    half of an earlier line behind in a Python buffer; the kernel appends each write
    at the current end of file as a unit; and ``fsync`` makes every written line
    survive a crash of the machine as well. The rare short write (disk full, a fatal
    signal in the middle of a very long line) leaves a torn last line without a
    newline, which ``read_done_ids`` truncates away on the next run.
    """

    def __init__(self, path: Path | None, *, exclusive: bool = False) -> None:
        self.path = path
        self._fd: int | None = None
        if path is not None:
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | (os.O_EXCL if exclusive else 0)
            try:
                self._fd = os.open(path, flags, 0o644)
            except FileExistsError:
                raise BatchInputError(
                    f"output file '{path}' already exists; a dry run does not overwrite "
                    "files: delete it or leave out --output to print to stdout"
                ) from None
            except OSError as e:
                raise BatchInputError(
                    f"cannot open output file '{path}' for appending: {e.strerror}; "
                    "check that its folder exists and is writable"
                ) from None
            try:
                _lock(self._fd, path)
            except BaseException:
                self.close()
                raise

    def write(self, rec: Mapping[str, Any]) -> None:
        data = _dumps(rec)
        if self._fd is None:
            out: IO[str] = sys.stdout
            out.write(data.decode("utf-8"))
            out.flush()
            return
        view = memoryview(data)
        while view:  # one write() in practice; loop only for a short write
            n = os.write(self._fd, view)
            view = view[n:]
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _lock(fd: int, path: Path) -> None:
    """Take the output file's lock for this run, or refuse at once if another run has it.

    ``flock`` on the file itself: the kernel releases it when the process ends, however
    it ends (kill -9 included), so a crashed run never leaves a stale lock behind; and
    unlike ``fcntl``/``lockf`` record locks it survives this process opening and closing
    the file again (``read_done_ids`` does).
    """
    if fcntl is None:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise BatchInputError(
            f"output file '{path}' is in use by another prometheus-lite run (it holds the "
            "file's lock); two runs on one output would grade the same items twice. Wait "
            "for that run to finish (then rerun to resume), or choose another --output"
        ) from None
    except OSError as e:  # a file system without flock support (some network mounts)
        logger.warning(
            "cannot lock output file '%s' (%s); make sure no other run writes to it",
            path, e.strerror,
        )


# --------------------------------------------------------------------------- running


@dataclass
class _Plan:
    """Per input line to handle: its id, and the error message if it is not judged."""

    id: str
    error: str | None = None
    error_type: str = "BatchInputError"


def plan_lines(
    lines: Iterable[tuple[int, str | None]],
    mode: Mode,
    default_rubric: Rubric | None,
    done: Mapping[tuple[str, int | None], int],
) -> tuple[dict[int, _Plan], int, int]:
    """First pass: which lines to handle now. Returns (plan by line, total, skipped).

    ``lines`` are (line number, text or None if not UTF-8), as ``_input_lines`` gives;
    ``done`` is what the output holds (``read_done``).

    A line is done when a record says it is that line: same id, same line number. So a
    line that failed transiently (never written) is judged again even when a later line
    with the same id has its duplicate-id error record. Records whose line number holds
    no line with their id (the input was edited above them, or the record has no line
    number) still count, for the first not-done lines with their id, in input order:
    an edited input does not get its finished items judged twice.
    """
    entries: list[tuple[int, str, str | None]] = []  # (line, id, error), every line
    for lineno, text in lines:
        error: str | None = None
        if text is None:
            item_id = str(lineno)
            error = f"line {lineno}: not UTF-8 text; save the input file as UTF-8"
        else:
            try:
                item_id = parse_line(text, lineno, mode, default_rubric).id  # type: ignore[assignment]
            except BatchInputError as e:
                item_id, error = _peek_id(text, lineno), str(e)
        entries.append((lineno, item_id, error))

    left = Counter({key: n for key, n in done.items() if n > 0})
    skip: set[int] = set()
    for lineno, item_id, _ in entries:  # records that name their line
        if left[(item_id, lineno)] > 0:
            left[(item_id, lineno)] -= 1
            skip.add(lineno)
    unplaced: Counter[str] = Counter()
    for (item_id, _), n in left.items():
        unplaced[item_id] += n
    for lineno, item_id, _ in entries:  # records whose line is not (or no longer) theirs
        if lineno not in skip and unplaced[item_id] > 0:
            unplaced[item_id] -= 1
            skip.add(lineno)

    plan: dict[int, _Plan] = {}
    first_line: dict[str, int] = {}
    for lineno, item_id, error in entries:
        first = first_line.setdefault(item_id, lineno)
        if lineno in skip:
            continue
        if first != lineno and error is None:
            error = (
                f"line {lineno}: duplicate id '{item_id}' (first on line {first}); ids must "
                "be unique so a resumed run knows which lines are done: give this line "
                "another id"
            )
        plan[lineno] = _Plan(item_id, error)
    return plan, len(entries), len(skip)


def run_batch(
    judge_factory: Callable[[], Any],
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str] | None,
    mode: Mode,
    *,
    default_rubric: Rubric | None = None,
    progress: bool = True,
    dry_run_render: Callable[[Request], Any] | None = None,
) -> BatchSummary:
    """Judge every input line not yet in ``output_path``, appending one JSON line each.

    ``judge_factory()`` must return an object with ``batch(requests)`` (yielding one
    result per request, in order), ``model_name``, ``prompt_format`` and ``close()``;
    it is called only when something is left to judge. Malformed lines and duplicate
    ids get an error record and the run goes on; a transient failure
    (``Failure.transient``) is counted in ``BatchSummary.transient`` and not written,
    so a rerun retries it. The output file is locked for the whole run: a second run
    on it raises ``BatchInputError`` before reading or writing anything. With
    ``dry_run_render`` (request -> ``Prompt`` or text) nothing is judged: each line's
    ``{"id", "prompt"}`` goes to ``output_path`` (which must not exist) or stdout, and
    no model is loaded.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be 'grade' or 'compare', got {mode!r}")
    input_path = Path(input_path)
    out = Path(output_path) if output_path is not None else None
    if not input_path.is_file():
        raise BatchInputError(f"input file '{input_path}' does not exist; give a JSONL file")
    if out is not None and out.exists() and out.resolve() == input_path.resolve():
        raise BatchInputError("--output must not be the input file; choose another path")
    dry = dry_run_render is not None
    if out is None and not dry:
        raise BatchInputError("an output file is needed to run a batch; pass --output FILE.jsonl")

    if out is not None and not dry:
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise BatchInputError(
                f"cannot create the folder of output file '{out}': {e.strerror}; "
                "choose an --output in a writable folder"
            ) from None
    # Opened (and locked) before the output is read: the torn-tail repair and the list
    # of done ids must not race another run appending to the same file. (A dry run
    # writes a new file, O_EXCL, once its input has been read.)
    writer = None if dry else _LineWriter(out)
    try:
        done: Done = Counter() if dry else read_done(out)  # type: ignore[arg-type]
        plan, total, skipped = plan_lines(_input_lines(input_path), mode, default_rubric, done)
    except BaseException:
        if writer is not None:
            writer.close()
        raise
    if writer is None:
        writer = _LineWriter(out, exclusive=True)
    n_judge = sum(1 for p in plan.values() if p.error is None)
    logger.info("%s: %d items, %d already done, %d to judge, %d input errors",
                input_path, total, skipped, n_judge, len(plan) - n_judge)

    counts = {"done": 0, "errors": 0, "transient": 0}
    bar = _progress(len(plan), skipped, enabled=progress, mode=mode)
    judge: Any = None
    state: dict[str, str | None] = {"model": None, "prompt_format": None}
    record_mode: Any = "dry-run" if dry else mode

    def tick() -> None:
        if bar is not None:
            bar.set_postfix(_postfix(counts["done"], counts["errors"], skipped), refresh=False)
            bar.update(1)

    def emit(rec: dict[str, Any], ok: bool) -> None:
        writer.write(rec)
        counts["done" if ok else "errors"] += 1
        tick()

    def emit_error(lineno: int, p: _Plan) -> None:
        emit(error_record(record_mode, p.id, lineno, p.error or "", p.error_type,
                          model=state["model"], prompt_format=state["prompt_format"]), False)

    # Input order is kept: errors wait in `pending` behind the requests before them.
    pending: deque[tuple[int, _Plan]] = deque()

    def requests() -> Iterator[Request]:
        for lineno, text in _input_lines(input_path):
            p = plan.get(lineno)
            if p is None:
                continue
            pending.append((lineno, p))
            if p.error is None:
                yield parse_line(text or "", lineno, mode, default_rubric)

    def flush_errors() -> None:
        while pending and pending[0][1].error is not None:
            emit_error(*pending.popleft())

    try:
        if dry:
            for req in requests():
                lineno, p = pending.pop()
                flush_errors()
                try:
                    prompt = dry_run_render(req)  # type: ignore[misc]
                except PrometheusLiteError as e:
                    emit_error(lineno, _Plan(p.id, str(e), type(e).__name__))
                    continue
                text = getattr(prompt, "text", prompt)
                emit({"id": p.id, "line": lineno, "prompt": text, "error": None,
                      "error_type": None}, True)
        elif n_judge:
            judge = judge_factory()
            state["model"] = getattr(judge, "model_name", None)
            state["prompt_format"] = getattr(judge, "prompt_format", None)
            for result in judge.batch(requests()):
                flush_errors()
                lineno, p = pending.popleft()
                if isinstance(result, Failure) and result.transient:
                    # Says nothing about the item: no record, so a rerun retries it.
                    logger.warning("line %d (id %s): %s; not recorded, a rerun retries it",
                                   lineno, p.id, result.error)
                    counts["transient"] += 1
                    tick()
                    continue
                emit(result_record(result, mode, id=p.id, line=lineno,
                                   model=state["model"], prompt_format=state["prompt_format"]),
                     not isinstance(result, Failure))
        else:
            for _ in requests():  # only error records left: no model needed
                pass
        flush_errors()
    finally:
        writer.close()
        if bar is not None:
            bar.close()
        if judge is not None and hasattr(judge, "close"):
            judge.close()
    return BatchSummary(total=total, skipped=skipped, done=counts["done"],
                        errors=counts["errors"], output=out, transient=counts["transient"])


def _progress(total: int, skipped: int, *, enabled: bool, mode: str) -> Any:
    if not enabled or total == 0:
        return None
    from tqdm import tqdm

    bar = tqdm(total=total, file=sys.stderr, unit="item", mininterval=0.5, dynamic_ncols=True,
               desc="grading" if mode == "grade" else "comparing")
    bar.set_postfix(_postfix(0, 0, skipped), refresh=False)
    return bar


def _postfix(ok: int, errors: int, skipped: int) -> dict[str, int]:
    return {"ok": ok, "errors": errors, "skipped": skipped}  # (dict order is kept)

