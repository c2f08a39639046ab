"""Batch grading on a Ray cluster with Ray Data: one Judge per actor, loaded once.

The idiom is Ray Data's batch inference: ``Dataset.map_batches`` with a callable class
(:class:`JudgeActor`) in a fixed pool of actors (``ActorPoolStrategy(size=workers)``),
each reserving the CPU threads (``num_cpus``) and GPUs (``num_gpus``) it gives llama.cpp.
Ray schedules the actors over the cluster's nodes; each actor resolves the model on its
own node (a path on shared storage, or a Hugging Face reference downloaded there).

Two entry points:

- :func:`judge_dataset` (Python): a ``ray.data.Dataset`` of items (rows with the JSONL
  fields of ``prometheus_lite.batch``), or a path, in; a Dataset of result records
  (the ``batch`` records, one Arrow schema per mode, :func:`record_schema`) out. Lazy:
  nothing runs until the Dataset is consumed.
- :func:`run_ray_batch` (the CLI's ``--ray``): a file in, a JSONL file or a folder of
  Parquet shards out, resumable like ``prometheus-lite grade --input``.

How a file run works: the driver streams the input once (JSONL lines or Parquet rows,
local or on any filesystem pyarrow reads: ``s3://``, ``gs://``, ``hdfs://``) to give
every item its line number and id, skip the ids the output already holds and turn
malformed lines and duplicate ids into error records exactly as ``batch.run_batch``
does. The items to judge go out as blocks of ``batch_size`` rows, one actor task each,
several tasks at once per actor (all feeding its one engine, so its slots stay busy);
an actor killed mid-run costs only its blocks in flight: Ray restarts the actor and
retries those tasks. Results stream back to the driver, which alone writes the output, one
record at a time and never an (id, line) twice; a rerun after any interruption skips
what is already written.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections import Counter
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from ..batch import (
    BatchSummary,
    Mode,
    error_record,
    parse_line,
    plan_lines,
    result_record,
)
from ..errors import BatchInputError, ClusterError, PrometheusLiteError
from ..families import FAMILIES, SCALES, WINNER_LABELS
from ..rubrics import Rubric
from .ray_files import JsonlOutput, ParquetOutput, is_jsonl, read_items, record_schema

if TYPE_CHECKING:
    import ray.data

__all__ = [
    "JudgeActor",
    "connect",
    "judge_dataset",
    "plan_items",
    "read_items",
    "record_schema",
    "run_ray_batch",
    "tasks_in_flight",
]

logger = logging.getLogger(__name__)

# The transient failure (llama.cpp could not decode): never written, a rerun retries it.
TRANSIENT_ERROR = "DecodeError"

# One row per input item, as the driver hands it to the actors.
TASK_SCHEMA = pa.schema(
    [
        ("line", pa.int64()),  # 1-based line (JSONL) or row (Parquet) number
        ("id", pa.string()),
        ("item", pa.string()),  # the item as one JSON object (None when not UTF-8)
        ("error", pa.string()),  # set: the item is not judged, this is its error record
    ]
)

# --------------------------------------------------------------------------- actors


class JudgeActor:
    """The ``map_batches`` callable: one Judge per actor, built once in its process;
    thread-safe (several blocks are judged at once).

    Takes pyarrow batches of either task rows (``TASK_SCHEMA``, from a file run) or raw
    items (any columns with the batch JSONL field names; ``planned=False``) and returns
    one result record per row, in the row order (raw items whose id is in ``skip_ids``
    give none).
    """

    def __init__(
        self,
        mode: Mode,
        model: str | None,
        judge_options: Mapping[str, Any],
        default_rubric: Rubric | None = None,
        planned: bool = True,
        skip_ids: Collection[str] = (),
    ) -> None:
        from ..judge import Judge  # loads llama.cpp: in the actor's process only

        self.mode = mode
        self.default_rubric = default_rubric
        self.planned = planned
        self.skip_ids = frozenset(skip_ids)
        self.schema = record_schema(mode)
        self.judge = Judge(model, **judge_options)
        self.model_name = self.judge.model_name
        self.prompt_format = self.judge.prompt_format
        # Several calls run at once (one thread each, see _map): build the cached output
        # constraint here, not twice in racing threads.
        if mode == "compare":
            self.judge.constraint(WINNER_LABELS)
        else:
            for scale in FAMILIES[self.judge.family].scales:
                self.judge.constraint(SCALES[scale].labels)

    def _tasks(
        self, rows: list[dict[str, Any]]
    ) -> Iterator[tuple[int | None, str | None, Any]]:
        """(line, id, request or error message) per row to answer."""
        for row in rows:
            if self.planned:
                line, item_id, text = row["line"], row["id"], row["item"]
                if row["error"] is not None:
                    yield line, item_id, row["error"]
                    continue
            else:
                line = row.get("line") if isinstance(row.get("line"), int) else None
                text = json.dumps({k: v for k, v in row.items() if v is not None},
                                  ensure_ascii=False, default=str)
                item_id = str(row["id"]) if row.get("id") is not None else None
                if item_id is None:
                    yield line, None, (
                        "this row has no 'id'; give every item a unique id so that "
                        "results can be matched to items and a rerun can skip them")
                    continue
                if item_id in self.skip_ids:
                    continue
            try:
                yield line, item_id, parse_line(text, line or 0, self.mode, self.default_rubric)
            except BatchInputError as e:
                yield line, item_id, str(e)

    def __call__(self, batch: pa.Table) -> pa.Table:
        """Judge one block. Several blocks run at once in one actor (threads): each one
        queues its items in the same engine, so the slots stay busy while a block waits
        for its slowest item."""
        tasks = list(self._tasks(batch.to_pylist()))
        requests = [req for _, _, req in tasks if not isinstance(req, str)]
        results = iter(self.judge.batch(requests))
        records = []
        for line, item_id, req in tasks:
            if isinstance(req, str):
                rec = error_record(self.mode, item_id, line or 0, req, "BatchInputError",
                                   model=self.model_name, prompt_format=self.prompt_format)
                rec["line"] = line
            else:
                rec = result_record(next(results), self.mode, id=item_id, line=line,
                                    model=self.model_name, prompt_format=self.prompt_format)
            records.append(rec)
        return pa.Table.from_pylist(records, schema=self.schema)

    def __del__(self) -> None:
        judge = getattr(self, "judge", None)
        if judge is not None:
            judge.close()


def plan_items(
    items: Iterable[tuple[int, str | None]],
    mode: Mode,
    default_rubric: Rubric | None,
    done: Mapping[tuple[str, int | None], int],
) -> tuple[list[dict[str, Any]], int, int]:
    """Which items to handle now, as task rows (``TASK_SCHEMA``); returns (tasks, total,
    skipped). Same rules as ``batch.run_batch`` (``batch.plan_lines``): an item is done
    when a record says it is that item (its id and line or row number); a later
    duplicate id is an error record."""
    texts = dict(items)  # the driver holds the input once either way (the tasks)
    plan, total, skipped = plan_lines(texts.items(), mode, default_rubric, done)
    tasks = [
        {"line": lineno, "id": p.id, "item": texts[lineno], "error": p.error}
        for lineno, p in plan.items()
    ]
    return tasks, total, skipped


# --------------------------------------------------------------------------- datasets


def judge_dataset(
    data: ray.data.Dataset | str | os.PathLike[str],
    mode: Mode = "grade",
    *,
    model: str | os.PathLike[str] | None = None,
    workers: int = 1,
    threads_per_worker: int = 1,
    gpus_per_worker: float = 0,
    memory_per_worker: int | None = None,
    batch_size: int = 8,
    tasks_per_worker: int | None = None,
    default_rubric: Rubric | None = None,
    skip_ids: Collection[str] = (),
    ray_remote_args: Mapping[str, Any] | None = None,
    actor: type[JudgeActor] = JudgeActor,
    **judge_options: Any,
) -> ray.data.Dataset:
    """A Dataset of result records (:func:`record_schema`) for ``data``, judged by
    ``workers`` actors, each a ``Judge(model, n_threads=threads_per_worker,
    **judge_options)`` (seed, sampling, greedy, max_new_tokens, n_ctx, n_gpu_layers,
    prompt_format, truncate_response, n_parallel).

    ``data`` is a Dataset whose rows are items (columns named as in a batch JSONL line,
    ``id`` required; ids in ``skip_ids`` are left out) or a JSONL/Parquet path (then
    ``skip_ids`` is not used: see :func:`run_ray_batch` for resuming a file). Each actor
    reserves ``threads_per_worker`` CPUs, ``gpus_per_worker`` GPUs and
    ``memory_per_worker`` bytes of memory; ``ray_remote_args`` go to ``map_batches``
    as they are (e.g. ``accelerator_type``, ``max_restarts``). Lazy: nothing is judged
    until the Dataset is consumed (``iter_rows``, ``write_parquet``, ``take_all``...).

    Each actor judges ``tasks_per_worker`` blocks of ``batch_size`` items at once, all
    queued in its one engine, so its ``n_parallel`` slots stay busy while a block waits
    for its slowest item (default: enough blocks for twice the slots,
    :func:`tasks_in_flight`). A killed actor costs its blocks in flight (Ray retries
    them). ``actor`` is :class:`JudgeActor` or a subclass (e.g. one that monitors the
    engine).
    """
    import ray.data

    if workers < 1 or threads_per_worker < 1 or batch_size < 1:
        raise ValueError("workers, threads_per_worker and batch_size must be at least 1")
    planned = not isinstance(data, ray.data.Dataset)
    if planned:
        tasks, _, _ = plan_items(read_items(os.fspath(data)), mode, default_rubric, Counter())
        data = tasks_dataset(tasks, batch_size)
    return _map(data, mode, model, planned=planned, workers=workers,
                threads_per_worker=threads_per_worker, gpus_per_worker=gpus_per_worker,
                memory_per_worker=memory_per_worker, batch_size=batch_size,
                tasks_per_worker=tasks_per_worker, default_rubric=default_rubric,
                skip_ids=skip_ids, ray_remote_args=ray_remote_args, actor=actor,
                judge_options=judge_options)


def tasks_dataset(tasks: list[dict[str, Any]], batch_size: int) -> ray.data.Dataset:
    """Task rows as a Dataset of blocks of ``batch_size`` rows: one block per actor task,
    so a lost actor costs one batch."""
    import ray.data

    chunks = [tasks[i : i + batch_size] for i in range(0, len(tasks), batch_size)]
    if not chunks:
        return ray.data.from_arrow(TASK_SCHEMA.empty_table())
    return ray.data.from_arrow([pa.Table.from_pylist(c, schema=TASK_SCHEMA) for c in chunks])


def _map(
    ds: ray.data.Dataset,
    mode: Mode,
    model: str | os.PathLike[str] | None,
    *,
    planned: bool,
    workers: int,
    threads_per_worker: int,
    gpus_per_worker: float,
    memory_per_worker: int | None,
    batch_size: int,
    tasks_per_worker: int | None,
    default_rubric: Rubric | None,
    skip_ids: Collection[str],
    ray_remote_args: Mapping[str, Any] | None,
    judge_options: Mapping[str, Any],
    actor: type[JudgeActor] = JudgeActor,
) -> ray.data.Dataset:

    options = {**judge_options, "n_threads": threads_per_worker}
    if not gpus_per_worker and options.get("n_gpu_layers") is None:
        options["n_gpu_layers"] = 0  # no GPU reserved for the actor: do not use one
    remote: dict[str, Any] = dict(ray_remote_args or {})
    if gpus_per_worker:
        remote["num_gpus"] = gpus_per_worker
    if memory_per_worker:
        remote["memory"] = memory_per_worker
    if tasks_per_worker is None:
        tasks_per_worker = tasks_in_flight(batch_size, options.get("n_parallel", "auto"),
                                           gpu=bool(gpus_per_worker))
    if tasks_per_worker < 1:
        raise ValueError(f"tasks_per_worker must be at least 1, got {tasks_per_worker}")
    return ds.map_batches(
        actor,
        fn_constructor_kwargs=dict(
            mode=mode,
            model=None if model is None else os.fspath(model),
            judge_options=options,
            default_rubric=default_rubric,
            planned=planned,
            skip_ids=frozenset(skip_ids),
        ),
        batch_size=batch_size,
        batch_format="pyarrow",
        compute=_actor_pool(workers, tasks_per_worker, remote),
        num_cpus=threads_per_worker,
        **remote,
    )


def tasks_in_flight(batch_size: int, n_parallel: int | str, *, gpu: bool) -> int:
    """Blocks each actor judges at once by default: enough to queue twice its engine's
    slots (``n_parallel``; for "auto", ``engine.choose_parallel``'s defaults of 16 slots
    with a GPU and 8 on CPUs), so the slots never wait for a block's slowest item."""
    slots = n_parallel if isinstance(n_parallel, int) else (16 if gpu else 8)
    return max(2, -(-2 * slots // batch_size))


def _actor_pool(workers: int, in_flight: int, remote: dict[str, Any]) -> Any:
    """A fixed pool of ``workers`` actors, each running ``in_flight`` calls at once (in
    threads: the UDF is thread-safe and llama.cpp works outside the GIL)."""
    import inspect

    import ray.data

    params = inspect.signature(ray.data.ActorPoolStrategy).parameters
    if "enable_true_multi_threading" in params:  # Ray >= 2.5x: threads are opt-in
        return ray.data.ActorPoolStrategy(
            size=workers, max_tasks_in_flight_per_actor=in_flight,
            max_concurrent_calls_per_actor=in_flight, enable_true_multi_threading=True)
    remote["max_concurrency"] = in_flight  # older Ray Data: a threaded actor
    return ray.data.ActorPoolStrategy(size=workers, max_tasks_in_flight_per_actor=in_flight)


# --------------------------------------------------------------------------- running


def connect(address: str = "auto", *, num_cpus: int | None = None) -> bool:
    """Join a Ray cluster: "auto" (the running one: ``ray start --head`` or RAY_ADDRESS),
    "local" (start one on this machine just for this run) or an address (``HOST:PORT``,
    ``ray://HOST:10001``). Returns True when this call started Ray (the caller shuts it
    down); an already initialised Ray is used as it is."""
    import ray

    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"log_to_driver": False}
    if address == "local":
        kwargs.update(include_dashboard=False, num_cpus=num_cpus)
    elif address != "auto":
        _check_reachable(address)
    try:
        ray.init(address=address, **kwargs)
    except ConnectionError as e:
        raise ClusterError(
            f"cannot reach a Ray cluster at '{address}' ({e}); start one with "
            "'ray start --head' (then --ray auto), give its address (--ray HOST:6379), "
            "or run on this machine alone with --ray local") from None
    return True


def _check_reachable(address: str, timeout: float = 10.0) -> None:
    """Fail fast on an address nothing listens on (ray.init would retry for minutes)."""
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ClusterError(f"Ray address '{address}' is not HOST:PORT (or ray://HOST:PORT, "
                           "auto, local)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        raise ClusterError(
            f"cannot reach a Ray cluster at '{address}' ({e.strerror or e}); start one with "
            "'ray start --head' (then --ray auto), check the address, or run on this "
            "machine alone with --ray local") from None


@dataclass(frozen=True)
class RayBatchSummary(BatchSummary):
    """``BatchSummary`` plus the items whose decode failed transiently (not written)."""

    retry: int = 0


def run_ray_batch(
    input_uri: str | os.PathLike[str],
    output_uri: str | os.PathLike[str],
    mode: Mode,
    *,
    address: str = "auto",
    model: str | os.PathLike[str] | None = None,
    workers: int = 1,
    threads_per_worker: int = 1,
    gpus_per_worker: float = 0,
    memory_per_worker: int | None = None,
    batch_size: int = 8,
    tasks_per_worker: int | None = None,
    default_rubric: Rubric | None = None,
    progress: bool = True,
    shard_rows: int = 256,
    **judge_options: Any,
) -> RayBatchSummary:
    """Judge every item of ``input_uri`` not yet in ``output_uri`` on a Ray cluster.

    ``output_uri`` ending in ``.jsonl`` is a local JSONL file (the records of
    ``prometheus-lite grade --input``); anything else is a folder of Parquet shards
    (local or on an object store). A rerun with the same output skips what is written.
    ``judge_options`` go to every actor's ``Judge`` (see :func:`judge_dataset`).
    """
    input_uri, output_uri = os.fspath(input_uri), os.fspath(output_uri)
    local = "://" not in input_uri and "://" not in output_uri
    if local and os.path.isfile(input_uri) and os.path.isfile(output_uri) \
            and os.path.samefile(input_uri, output_uri):
        raise BatchInputError("--output must not be the input file; choose another path")
    # Opened (and locked) before anything else: a second run on the same output refuses
    # here, before reading it, planning or starting any actor.
    out: JsonlOutput | ParquetOutput = (
        JsonlOutput(output_uri) if is_jsonl(output_uri)
        else ParquetOutput(output_uri, mode, shard_rows=shard_rows)
    )
    counts = {"done": 0, "errors": 0, "retry": 0}
    written: set[tuple[str, int | None]] = set()
    try:
        tasks, total, skipped = plan_items(read_items(input_uri), mode, default_rubric,
                                           out.done)
        n_judge = sum(1 for t in tasks if t["error"] is None)
        logger.info("%s: %d items, %d already done, %d to judge, %d input errors",
                    input_uri, total, skipped, n_judge, len(tasks) - n_judge)
        if n_judge:
            _judge_tasks(tasks, out, mode, counts, written, address=address, model=model,
                         workers=workers, threads_per_worker=threads_per_worker,
                         gpus_per_worker=gpus_per_worker, memory_per_worker=memory_per_worker,
                         batch_size=batch_size, tasks_per_worker=tasks_per_worker,
                         default_rubric=default_rubric, progress=progress,
                         judge_options=judge_options)
        else:  # only error records left: no cluster, no model needed
            for t in tasks:
                rec = error_record(mode, t["id"], t["line"], t["error"], "BatchInputError")
                out.write(rec)
                counts["errors"] += 1
    finally:
        out.close()
    if counts["retry"]:
        logger.warning("%d items failed to decode (transient, not written); rerun to retry "
                       "them", counts["retry"])
    return RayBatchSummary(total=total, skipped=skipped, done=counts["done"],
                           errors=counts["errors"] + counts["retry"],
                           output=Path(output_uri), retry=counts["retry"])


def _judge_tasks(
    tasks: list[dict[str, Any]],
    out: JsonlOutput | ParquetOutput,
    mode: Mode,
    counts: dict[str, int],
    written: set[tuple[str, int | None]],
    *,
    address: str,
    progress: bool,
    workers: int,
    threads_per_worker: int,
    batch_size: int,
    **kwargs: Any,
) -> None:
    import ray
    from ray.data import DataContext

    started = connect(address, num_cpus=max(os.cpu_count() or 1, workers * threads_per_worker))
    try:
        ctx = DataContext.get_current()
        ctx.enable_progress_bars = progress
        ds = _map(tasks_dataset(tasks, batch_size), mode, kwargs.pop("model"), planned=True,
                  workers=workers, threads_per_worker=threads_per_worker,
                  batch_size=batch_size, skip_ids=(), ray_remote_args=None, **kwargs)
        for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            for rec in batch.to_pylist():
                key = (rec["id"], rec["line"])
                if key in written:  # a retried task's repeat: never write an item twice
                    logger.warning("id %r (line %s) came back twice; kept the first",
                                   *key)
                    continue
                if rec["error_type"] == TRANSIENT_ERROR:
                    counts["retry"] += 1
                    continue
                written.add(key)
                out.write(rec)
                counts["errors" if rec["error"] is not None else "done"] += 1
    except PrometheusLiteError:
        raise
    except Exception as e:  # a Ray failure that retries did not absorb
        if type(e).__module__.startswith("ray"):
            raise ClusterError(f"the Ray job failed: {e}; finished items are kept in the "
                               "output, rerun the same command to resume") from e
        raise
    finally:
        if started:
            ray.shutdown()

