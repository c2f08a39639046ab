"""Batch output: result records, and the JSONL file they are appended to.

Each record is one JSON line with the keys of ``GRADE_KEYS``/``COMPARE_KEYS``, in order;
a record says which input item it is by its ``id`` and ``line``. Lines are written whole
and durable (``_LineWriter``), under an OS lock held for the whole run (``_lock``), and
read back on resume (``read_done``), a line torn by a killed run repaired.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any, Literal

from .batch_input import Mode
from .errors import BatchInputError
from .results import Comparison, Failure, Grade, Result

try:
    import fcntl
except ImportError:  # Windows: no flock; runs on one output are not guarded there
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "COMPARE_KEYS",
    "DRY_RUN_KEYS",
    "GRADE_KEYS",
    "Done",
    "error_record",
    "read_done",
    "read_done_ids",
    "result_record",
]

logger = logging.getLogger(__name__)

# What an output already holds: records per (id, line) they say they are (line None when
# a record has none).
Done = Counter[tuple[str, int | None]]

# Output line keys, in the order they are written (same set for every line of a mode).
GRADE_KEYS: tuple[str, ...] = (
    "id", "line", "feedback", "score", "probabilities", "expected_score", "error",
    "error_type", "model", "prompt_format", "prompt_tokens", "completion_tokens",
    "cached_prompt_tokens", "latency_s", "finish", "truncated_response_tokens",
    "raw",  # the answer as the judge family's own parser reads it (results.Grade.raw)
)
COMPARE_KEYS: tuple[str, ...] = tuple(
    "winner" if k == "score" else k for k in GRADE_KEYS if k != "expected_score"
)
DRY_RUN_KEYS: tuple[str, ...] = ("id", "line", "prompt", "error", "error_type")


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
            raw=result.raw,
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
