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

The input lines (``batch_input``: parsing, with errors naming line and field) and the
output records and file (``batch_output``: keys, durable writer, lock, resume) have
their own modules; this one plans a run and runs it. Their public names are here too.
"""

from __future__ import annotations

import logging
import os
import sys
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .batch_input import MODES, Mode, _input_lines, _peek_id, parse_line
from .batch_output import (
    COMPARE_KEYS,
    DRY_RUN_KEYS,
    GRADE_KEYS,
    Done,
    _LineWriter,
    error_record,
    read_done,
    read_done_ids,
    result_record,
)
from .errors import BatchInputError, PrometheusLiteError
from .results import Failure, Request
from .rubrics import Rubric

__all__ = [
    "COMPARE_KEYS",
    "DRY_RUN_KEYS",
    "GRADE_KEYS",
    "MODES",
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

