"""Files of a Ray batch run: the input items and the result records (pyarrow only).

Inputs are JSONL (optionally compressed) or Parquet, local or on any filesystem pyarrow
reads (``s3://``, ``gs://``, ``hdfs://``). Outputs are a local JSONL file (the records of
``prometheus-lite grade --input``, ``batch``'s durable writer) or a folder of Parquet
shards (:func:`record_schema`). Each output is locked for the whole run where the
filesystem allows it (a local file or folder: ``flock``), before anything in it is read,
repaired or removed, so a second run on it refuses at once and touches nothing. Used by
``integrations.ray``; no Ray import here.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ..batch_input import Mode, decode_lines
from ..batch_output import COMPARE_KEYS, GRADE_KEYS, Done, _LineWriter, _lock, read_done
from ..errors import BatchInputError
from ..families import SCALES, WINNER_LABELS

__all__ = ["JsonlOutput", "ParquetOutput", "is_jsonl", "read_items", "record_schema"]

# Arrow types of the record fields (``batch.GRADE_KEYS``/``COMPARE_KEYS``).
_TYPES: dict[str, pa.DataType] = {
    "id": pa.string(), "line": pa.int64(), "feedback": pa.string(), "score": pa.int64(),
    "winner": pa.string(), "expected_score": pa.float64(), "error": pa.string(),
    "error_type": pa.string(), "model": pa.string(), "prompt_format": pa.string(),
    "prompt_tokens": pa.int64(), "completion_tokens": pa.int64(),
    "cached_prompt_tokens": pa.int64(), "latency_s": pa.float64(), "finish": pa.string(),
    "truncated_response_tokens": pa.int64(), "raw": pa.string(),
}


# Every grade label of every scale, numbers first ("0".."5", then "No", "Yes"): one
# Parquet schema holds grades on any scale, each row's labels set and the others null.
GRADE_LABELS: tuple[str, ...] = tuple(sorted(
    {lb for scale in SCALES.values() for lb in scale.labels}, key=lambda lb: (not lb.isdigit(), lb)
))


def record_schema(mode: Mode) -> pa.Schema:
    """The Arrow schema of result records: ``batch.GRADE_KEYS``/``COMPARE_KEYS`` in order,
    ``probabilities`` a struct over every scale's labels (:data:`GRADE_LABELS`; a row
    fills its own scale's and leaves the rest null) or over "A", "B"."""
    keys = GRADE_KEYS if mode == "grade" else COMPARE_KEYS
    labels = GRADE_LABELS if mode == "grade" else WINNER_LABELS
    probs = pa.struct([(label, pa.float64()) for label in labels])
    return pa.schema([(k, probs if k == "probabilities" else _TYPES[k]) for k in keys])


# --------------------------------------------------------------------------- input


def _filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    if "://" in uri:
        try:
            return pafs.FileSystem.from_uri(uri)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as e:
            raise BatchInputError(f"cannot open '{uri}': {e}") from None
    return pafs.LocalFileSystem(), os.path.abspath(uri)


def _is_parquet(path: str) -> bool:
    return path.endswith((".parquet", ".pq"))


def _input_files(uri: str) -> tuple[pafs.FileSystem, list[str], str]:
    """(filesystem, files in order, "jsonl" | "parquet") of an input path."""
    fs, path = _filesystem(uri)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise BatchInputError(f"input '{uri}' does not exist; give a JSONL or Parquet file, "
                              "or a folder of Parquet files")
    if info.type == pafs.FileType.Directory:
        files = sorted(i.path for i in fs.get_file_info(pafs.FileSelector(path, recursive=True))
                       if i.type == pafs.FileType.File and _is_parquet(i.path))
        if not files:
            raise BatchInputError(f"input folder '{uri}' has no .parquet files; give a JSONL "
                                  "file, a Parquet file or a folder of Parquet files")
        return fs, files, "parquet"
    return fs, [path], "parquet" if _is_parquet(path) else "jsonl"


def _split_lines(stream: Any, chunk: int = 1 << 20) -> Iterator[bytes]:
    """The lines of a pyarrow input stream (which has no readline), newline kept."""
    rest = b""
    while True:
        data = stream.read(chunk)
        if not data:
            break
        parts = (rest + data).split(b"\n")
        rest = parts.pop()
        for part in parts:
            yield part + b"\n"
    if rest:
        yield rest


def read_items(uri: str) -> Iterator[tuple[int, str | None]]:
    """(1-based line or row number, the item as JSON text or None if not UTF-8) for every
    item of a JSONL file (blank lines skipped; ``.gz`` and other compressed files are read
    by their extension) or of a Parquet file or folder (null fields left out), streamed."""
    fs, files, kind = _input_files(uri)
    if kind == "jsonl":
        with fs.open_input_stream(files[0]) as f:
            yield from decode_lines(_split_lines(f))
        return
    row = 0
    for path in files:
        with fs.open_input_file(path) as f:
            for batch in pq.ParquetFile(f).iter_batches(batch_size=1024):
                for item in batch.to_pylist():
                    row += 1
                    yield row, json.dumps({k: v for k, v in item.items() if v is not None},
                                          ensure_ascii=False, default=str)


# --------------------------------------------------------------------------- outputs


def is_jsonl(uri: str) -> bool:
    return uri.endswith((".jsonl", ".ndjson", ".json"))


class JsonlOutput:
    """A local JSONL file, appended one durable line per record (``batch``'s writer).

    Opening it takes the file's lock (``flock``, held until ``close``) before anything is
    read or repaired: a second run on the same file refuses at once and touches nothing.
    """

    def __init__(self, path: str) -> None:
        if "://" in path:
            raise BatchInputError(
                f"JSONL output must be a local file, got '{path}'; for object stores write "
                "Parquet shards to a folder (an --output without .jsonl)")
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise BatchInputError(f"cannot create the folder of output file '{path}': "
                                  f"{e.strerror}; choose a writable --output") from None
        self._writer = _LineWriter(self.path)  # locks, or refuses
        try:
            self.done = read_done(self.path)
        except BaseException:
            self._writer.close()
            raise

    def write(self, rec: dict[str, Any]) -> None:
        """One record as ``grade --input`` writes it: from an Arrow row, the other
        scales' null labels are dropped (the struct holds every scale's)."""
        rec = dict(rec)
        if rec.get("line") is None:
            rec.pop("line", None)
        if isinstance(rec.get("probabilities"), dict):
            rec["probabilities"] = {k: p for k, p in rec["probabilities"].items()
                                    if p is not None}
        self._writer.write(rec)

    def close(self) -> None:
        self._writer.close()


class ParquetOutput:
    """A folder of Parquet shards ``part-<run>-<n>.parquet``, each written whole.

    A shard is flushed every ``shard_rows`` records or ``shard_seconds`` seconds, so an
    interruption loses at most that much finished work. Locally a shard is written to a
    hidden temporary name and renamed, so a shard either exists complete or not at all;
    on object stores (S3, GCS) an object only appears once fully uploaded.

    A local folder is locked for the run (``flock`` on the folder, taken before anything
    in it is read or removed): a second run on it refuses at once and touches nothing.
    Object stores have no such lock: there, make sure only one run writes to a folder.
    """

    def __init__(self, uri: str, mode: Mode, *, shard_rows: int = 256,
                 shard_seconds: float = 30.0) -> None:
        self.fs, self.dir = _filesystem(uri)
        self.uri = uri
        self.schema = record_schema(mode)
        self.local = isinstance(self.fs, pafs.LocalFileSystem)
        self.shard_rows, self.shard_seconds = shard_rows, shard_seconds
        info = self.fs.get_file_info(self.dir)
        if info.type == pafs.FileType.File:
            raise BatchInputError(f"output '{uri}' is a file; Parquet output is a folder of "
                                  "shards (give a folder, or a .jsonl file for JSONL)")
        self.fs.create_dir(self.dir, recursive=True)
        self._lock_fd = self._lock() if self.local else None
        try:
            self.done = self._done()
        except BaseException:
            self._unlock()
            raise
        self.run = uuid.uuid4().hex[:8]
        self.n = 0
        self._rows: list[dict[str, Any]] = []
        self._since = time.monotonic()

    def _lock(self) -> int:
        """Lock the folder for this run (``flock`` on the folder itself, held until
        ``close``; the kernel drops it however the run ends), or refuse at once."""
        try:
            fd = os.open(self.dir, os.O_RDONLY)
        except OSError as e:
            raise BatchInputError(f"cannot open output folder '{self.uri}': {e.strerror}; "
                                  "choose a readable --output") from None
        try:
            _lock(fd, Path(self.uri))
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _done(self) -> Done:
        done: Done = Counter()
        for info in self.fs.get_file_info(pafs.FileSelector(self.dir)):
            name = info.base_name
            if name.startswith(".") and name.endswith(".tmp") and self.local:
                # Left by a killed run (a live one would hold the folder's lock): never a
                # finished shard.
                self.fs.delete_file(info.path)
                continue
            if info.type != pafs.FileType.File or not name.endswith(".parquet"):
                continue
            try:
                with self.fs.open_input_file(info.path) as f:
                    table = pq.read_table(f, columns=["id", "line"])
            except (pa.ArrowInvalid, OSError, KeyError) as e:
                raise BatchInputError(
                    f"output folder '{self.uri}': shard '{name}' is not a prometheus-lite "
                    f"result file ({e}); delete it or choose another --output") from None
            done.update((str(i), line) for i, line in zip(
                table.column("id").to_pylist(), table.column("line").to_pylist(), strict=True))
        return done

    def write(self, rec: dict[str, Any]) -> None:
        self._rows.append(rec)
        if (len(self._rows) >= self.shard_rows
                or time.monotonic() - self._since >= self.shard_seconds):
            self.flush()

    def flush(self) -> None:
        self._since = time.monotonic()
        if not self._rows:
            return
        table = pa.Table.from_pylist(self._rows, schema=self.schema)
        name = f"part-{self.run}-{self.n:05d}.parquet"
        final = f"{self.dir}/{name}"
        target = f"{self.dir}/.{name}.tmp" if self.local else final
        with self.fs.open_output_stream(target) as f:
            pq.write_table(table, f)
        if self.local:
            self.fs.move(target, final)
        self.n += 1
        self._rows = []

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._unlock()
