"""Batch grading on a local Ray cluster (2 CPUs on 127.0.0.1) with the embedded model.

Everything is checked against single-machine grading: ``batch.run_batch`` with one
``Judge`` (greedy, same seed) writes the reference records.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray")
pq = pytest.importorskip("pyarrow.parquet")

from prometheus_lite.batch import run_batch  # noqa: E402
from prometheus_lite.integrations.ray import (  # noqa: E402
    judge_dataset,
    record_schema,
    run_ray_batch,
)

pytestmark = [
    pytest.mark.timeout(600),
    # Ray Data leaves its own log files open when a dataset finishes (ResourceWarning).
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

MAX_TOKENS = 24
# One slot on both sides: results are then bit-identical to a fresh run of each item, so
# however Ray splits the items they must equal single-machine grading exactly.
JUDGE = dict(greedy=True, max_new_tokens=MAX_TOKENS, seed=7, n_gpu_layers=0, n_parallel=1)
# What must match single-machine grading (latency and prompt-cache reuse depend on order).
COMPARED = ("id", "line", "feedback", "score", "winner", "probabilities", "expected_score",
            "error", "error_type", "model", "prompt_format", "prompt_tokens",
            "completion_tokens", "finish", "truncated_response_tokens")

TOPICS = ["the capital of France", "how a rainbow forms", "why the sky is blue",
          "what a prime number is", "how to boil an egg", "who wrote Hamlet"]
N_ALL = len(TOPICS) + 2  # grade_items(): the topics, a bad field and a malformed line


def grade_items() -> list[str]:
    lines = [
        json.dumps({"id": f"g{i}", "instruction": f"Explain {t}.",
                    "response": f"Here is a short explanation of {t}.", "rubric": "helpfulness"})
        for i, t in enumerate(TOPICS)
    ]
    lines.insert(3, '{"id": "broken", "instruction": 5, "response": "x"}')  # a bad field
    lines.insert(6, "this is not json")  # malformed line: id is its line number
    return lines


@pytest.fixture(scope="module")
def cluster() -> Any:
    """One local Ray cluster for the module: 2 CPUs, loopback only, no dashboard."""
    ctx = ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
                   log_to_driver=False, configure_logging=False)
    try:
        yield ctx.address_info["gcs_address"]
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def grade_input(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ray-in") / "items.jsonl"
    path.write_text("\n".join(grade_items()) + "\n")
    return path


class _Factory:
    def __call__(self) -> Any:
        from prometheus_lite import Judge

        return Judge(None, n_threads=1, **JUDGE)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def by_id(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    counts = Counter(r["id"] for r in records)
    assert max(counts.values()) == 1, f"ids written twice: {counts.most_common(3)}"
    return {r["id"]: {k: r.get(k) for k in COMPARED if k in r} for r in records}


@pytest.fixture(scope="module")
def reference(grade_input: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Single-machine records of the same input (batch.run_batch, one Judge)."""
    out = tmp_path_factory.mktemp("ray-ref") / "ref.jsonl"
    run_batch(_Factory(), grade_input, out, "grade", progress=False)
    return by_id(read_jsonl(out))


def ray_run(inp: Path | str, out: Path | str, **kw: Any) -> Any:
    options = dict(workers=2, threads_per_worker=1, batch_size=2, progress=False, **JUDGE)
    options.update(kw)
    return run_ray_batch(inp, out, options.pop("mode", "grade"), **options)


# --------------------------------------------------------------------------- equality


def test_two_actors_equal_single_machine_jsonl(cluster: str, grade_input: Path,
                                               reference: dict[str, Any],
                                               tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    summary = ray_run(grade_input, out)
    assert (summary.total, summary.done, summary.errors, summary.skipped) == (N_ALL, N_ALL - 2,
                                                                           2, 0)
    got = by_id(read_jsonl(out))
    assert got.keys() == reference.keys()
    for item_id, ref in reference.items():
        assert got[item_id] == ref, item_id
    assert reference["broken"]["error_type"] == "BatchInputError"
    assert "invalid JSON" in reference["7"]["error"]

    again = ray_run(grade_input, out)  # a finished run: nothing left to do
    assert (again.done, again.errors, again.skipped) == (0, 0, N_ALL)
    assert len(read_jsonl(out)) == N_ALL


def test_parquet_in_and_sharded_parquet_out(cluster: str, grade_input: Path,
                                            reference: dict[str, Any],
                                            tmp_path: Path) -> None:
    import pyarrow as pa

    good = [json.loads(line) for line in grade_items() if line.startswith('{"id": "g')]
    inp = tmp_path / "items.parquet"
    pq.write_table(pa.Table.from_pylist(good), inp)
    out = tmp_path / "shards"
    summary = run_ray_batch(inp, out, "grade", workers=2, threads_per_worker=1, batch_size=2,
                            progress=False, shard_rows=2, **JUDGE)
    n = len(good)
    assert (summary.total, summary.done, summary.errors) == (n, n, 0)
    shards = sorted(out.glob("part-*.parquet"))
    # 6 records, at most 2 per shard (a shard is also flushed after 30 s: more under load)
    rows = [pq.read_metadata(s).num_rows for s in shards]
    assert sum(rows) == n and max(rows) <= 2 and len(shards) >= 3, rows
    table = pa.concat_tables([pq.read_table(s) for s in shards])
    assert table.schema == record_schema("grade")
    got = by_id(table.to_pylist())
    for item_id, rec in got.items():
        ref = dict(reference[item_id])
        # Parquet rows are numbered, not lines: the JSONL line numbers differ.
        assert rec["line"] == int(item_id[1:]) + 1
        rec.pop("line"), ref.pop("line")
        # One struct holds every scale's labels: this row's others are null.
        rec["probabilities"] = {k: v for k, v in rec["probabilities"].items() if v is not None}
        assert rec == ref, item_id
    assert ray_run(inp, out).skipped == n  # resumes from the shards


def test_parquet_records_hold_every_scale(tmp_path: Path) -> None:
    """Flow-Judge's 0-1 and 1-3, Selene's yes-no and 1-5 grades in one Parquet schema."""
    import pyarrow as pa

    from prometheus_lite.families import SCALES

    schema = record_schema("grade")
    rows = []
    for i, scale in enumerate(SCALES.values()):
        n = len(scale.labels)
        rows.append({"id": f"s{i}", "score": i,
                     "probabilities": {lb: 1 / n for lb in scale.labels}})
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp_path / "p.parquet")
    back = pq.read_table(tmp_path / "p.parquet").to_pylist()
    for row, scale in zip(back, SCALES.values(), strict=True):
        kept = {k: v for k, v in row["probabilities"].items() if v is not None}
        assert kept == {lb: 1 / len(scale.labels) for lb in scale.labels}


def test_dataset_api_compare_equals_single_machine(cluster: str, tmp_path: Path) -> None:
    from prometheus_lite import Judge
    from prometheus_lite.batch import parse_line, result_record

    items = [{"id": f"c{i}", "instruction": f"Explain {t}.", "response_a": f"{t} is simple.",
              "response_b": f"I do not know about {t}.", "rubric": "helpfulness"}
             for i, t in enumerate(TOPICS[:5])]
    items.append({"instruction": "no id", "response_a": "a", "response_b": "b"})
    ds = ray.data.from_items(items)
    rows = judge_dataset(ds, "compare", workers=2, threads_per_worker=1, batch_size=2,
                         skip_ids={"c4"}, **JUDGE).take_all()
    assert len(rows) == 5  # c4 skipped
    no_id = [r for r in rows if r["id"] is None]
    assert len(no_id) == 1 and "no 'id'" in no_id[0]["error"]
    got = by_id([r for r in rows if r["id"] is not None])
    assert sorted(got) == ["c0", "c1", "c2", "c3"]
    with Judge(None, n_threads=1, **JUDGE) as judge:
        for item in items[:4]:
            req = parse_line(json.dumps(item), 0, "compare")
            ref = result_record(judge.judge(req), "compare", id=item["id"])
            expected = {k: ref.get(k) for k in COMPARED if k in ref}
            actual = dict(got[item["id"]])
            actual.pop("line")  # a Dataset row has no line number
            assert actual == expected, item["id"]


def _watching_actor(log: Path) -> type:
    """A JudgeActor that records, in ``log``, the most blocks it judged at once and the
    most engine slots busy at once (sampled every 2 ms). Made in a function so Ray ships
    the class by value."""
    import threading

    from prometheus_lite.integrations.ray import JudgeActor

    class WatchingActor(JudgeActor):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.lock = threading.Lock()
            self.calls = self.most_calls = self.most_busy = 0
            threading.Thread(target=self.sample, daemon=True).start()

        def sample(self) -> None:
            while True:
                self.most_busy = max(self.most_busy, self.judge.engine.busy)
                time.sleep(0.002)

        def __call__(self, batch: Any) -> Any:
            with self.lock:
                self.calls += 1
                self.most_calls = max(self.most_calls, self.calls)
            try:
                return super().__call__(batch)
            finally:
                with self.lock:
                    self.calls -= 1
                    log.write_text(json.dumps([self.most_calls, self.most_busy]))

    return WatchingActor


def test_an_actor_keeps_its_slots_busy_across_blocks(cluster: str, tmp_path: Path) -> None:
    """Blocks of one item, two slots: the actor judges several blocks at once, all in its
    one engine, so both slots work (the old code ran one block at a time: one slot)."""
    log = tmp_path / "watch.json"
    items = [{"id": f"s{i}", "instruction": f"Explain {t}.", "response": f"{t}: yes.",
              "rubric": "helpfulness"} for i, t in enumerate(TOPICS[:4])]
    rows = judge_dataset(ray.data.from_items(items, override_num_blocks=4), "grade", workers=1,
                         threads_per_worker=1,
                         batch_size=1, actor=_watching_actor(log),
                         **{**JUDGE, "n_parallel": 2}).take_all()
    assert sorted(r["id"] for r in rows) == ["s0", "s1", "s2", "s3"]
    assert all(r["error"] is None for r in rows)
    most_calls, most_busy = json.loads(log.read_text())
    assert most_calls >= 2 and most_busy == 2, (most_calls, most_busy)


# --------------------------------------------------------------------------- failures


def _judge_actors() -> dict[str, dict[str, Any]]:
    """Ray's actor table (GCS; no dashboard needed), JudgeActor entries only."""
    from ray._private import state

    return {k: a for k, a in state.actors().items() if "JudgeActor" in a["ActorClassName"]}


def test_actor_killed_mid_run(cluster: str, grade_input: Path, reference: dict[str, Any],
                              tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    done: dict[str, Any] = {}

    def run() -> None:
        try:
            done["summary"] = ray_run(grade_input, out, batch_size=1)
        except BaseException as e:  # surfaced by the assertion below
            done["error"] = e

    t = threading.Thread(target=run)
    t.start()
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and (not out.exists() or len(read_jsonl(out)) < 3):
        time.sleep(0.2)
    alive = [(k, a["Pid"]) for k, a in _judge_actors().items() if a["State"] == "ALIVE"]
    assert alive, "no JudgeActor alive mid-run"
    victim, pid = alive[0]
    os.kill(pid, signal.SIGKILL)
    killed_at = len(read_jsonl(out))
    t.join(timeout=300)
    assert not t.is_alive()
    assert "error" not in done, done.get("error")
    assert killed_at < N_ALL, "the run finished before the actor was killed"
    summary = done["summary"]
    assert (summary.done, summary.errors) == (N_ALL - 2, 2)
    got = by_id(read_jsonl(out))  # every id exactly once
    assert got == reference
    assert _judge_actors()[victim]["NumRestarts"] >= 1  # Ray restarted it and retried


def cli_command(inp: Path, out: Path, cluster: str, workers: int = 2) -> list[str]:
    """The CLI's Ray batch run with JUDGE's settings (one slot: bit-identical results)."""
    exe = Path(sys.executable).with_name("prometheus-lite")
    return [str(exe), "grade", "--input", str(inp), "--output", str(out), "--ray", cluster,
            "--workers", str(workers), "--threads-per-worker", "1", "--batch-size", "1",
            "--greedy", "--seed", str(JUDGE["seed"]), "--max-tokens", str(MAX_TOKENS),
            "--parallel", "1", "--n-gpu-layers", "0", "--no-progress"]


def test_cli_rerun_after_interrupted_run(cluster: str, grade_input: Path,
                                         reference: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    cmd = cli_command(grade_input, out, cluster)
    log = tmp_path / "first.err"  # a file, not a pipe: nobody reads while it runs
    with log.open("wb") as err_file, subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=err_file) as first:
        try:
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline and first.poll() is None and (
                    not out.exists() or len(read_jsonl(out)) < 2):
                time.sleep(0.2)
            assert first.poll() is None, log.read_text(errors="replace")[-2000:]
            first.send_signal(signal.SIGKILL)  # the whole driver dies, its actors with it
        finally:
            first.wait(timeout=60)
    partial = by_id(read_jsonl(out))
    assert 2 <= len(partial) < N_ALL
    second = subprocess.run(cmd, capture_output=True, timeout=300)
    err = second.stderr.decode()
    assert second.returncode == 0, err[-2000:]
    n_left = N_ALL - len(partial)
    assert f"{N_ALL} items: {n_left - sum(1 for k in ('broken', '7') if k not in partial)} judged" \
        in err, err[-2000:]
    assert f"{len(partial)} already done" in err
    assert by_id(read_jsonl(out)) == reference


@pytest.mark.parametrize("kind", ["jsonl", "parquet"])
def test_a_second_run_on_the_same_output_refuses_at_once(
        cluster: str, tmp_path: Path, kind: str) -> None:
    """Two real CLI runs on one output: while the first is judging, the second refuses
    before reading, repairing or removing anything and before starting any actor (the
    old code judged everything and died at its first write, or, for Parquet, ran on and
    deleted the first run's temporary shard); the first run then finishes as if alone."""
    out = tmp_path / ("out.jsonl" if kind == "jsonl" else "shards")
    ids = [f"g{i}" for i in range(8)]  # long enough to still be running during the second
    inp = tmp_path / "items.jsonl"
    inp.write_text("".join(
        json.dumps({"id": i, "instruction": f"Explain {TOPICS[k % len(TOPICS)]}.",
                    "response": f"Here is a short explanation of {TOPICS[k % len(TOPICS)]}.",
                    "rubric": "helpfulness"}) + "\n" for k, i in enumerate(ids)))
    cmd = cli_command(inp, out, cluster, workers=1)
    actors_before = set(_judge_actors())
    log = tmp_path / "first.err"  # a file, not a pipe: nobody reads while it runs
    err_file = log.open("wb")
    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err_file)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and first.poll() is None and not [
                a for k, a in _judge_actors().items()
                if k not in actors_before and a["State"] == "ALIVE"]:
            time.sleep(0.2)
        assert first.poll() is None, log.read_text(errors="replace")[-2000:]
        other_tmp = out / ".part-0ther000-00000.parquet.tmp"  # as a live run's shard
        if kind == "parquet":
            other_tmp.write_bytes(b"being written")
        actors_mid = set(_judge_actors())
        second = subprocess.run(cmd, capture_output=True, timeout=180)
        still_running = first.poll() is None
        err = second.stderr.decode()
        assert second.returncode == 1, err[-2000:]
        assert "is in use by another prometheus-lite run" in err, err[-2000:]
        assert set(_judge_actors()) == actors_mid, "the refused run started actors"
        if kind == "parquet":
            assert other_tmp.read_bytes() == b"being written"
        assert still_running, "the first run ended before the second: nothing was checked"
        assert first.wait(timeout=400) == 0, log.read_text(errors="replace")[-2000:]
    finally:
        if first.poll() is None:
            first.kill()
        first.wait(timeout=60)
        err_file.close()
    if kind == "jsonl":
        records = read_jsonl(out)
    else:
        records = pq.read_table(out).to_pylist()  # hidden .tmp files are not read
    got = by_id(records)  # every id exactly once
    assert sorted(got) == sorted(ids)
    assert all(r["error"] is None for r in got.values())


# --------------------------------------------------------------------------- usage


def test_cli_ray_options_need_batch_mode(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from prometheus_lite.cli import main

    result = CliRunner().invoke(main, ["grade", "-i", "q", "-r", "a", "--workers", "2"])
    assert result.exit_code == 2
    assert "--workers: batch mode only" in result.output
    result = CliRunner().invoke(main, ["grade", "--input", str(tmp_path / "none.parquet"),
                                       "--output", str(tmp_path / "o.jsonl")])
    assert result.exit_code == 2
    assert "need --ray" in result.output


def test_unreachable_cluster_is_a_clear_error(tmp_path: Path) -> None:
    inp = tmp_path / "in.jsonl"
    inp.write_text(grade_items()[0] + "\n")
    env = {**os.environ, "RAY_ADDRESS": ""}
    exe = Path(sys.executable).with_name("prometheus-lite")
    proc = subprocess.run([str(exe), "grade", "--input", str(inp), "--output",
                           str(tmp_path / "o.jsonl"), "--ray", "127.0.0.1:1"],
                          capture_output=True, timeout=120, env=env)
    assert proc.returncode == 1
    assert "Error: cannot reach a Ray cluster at '127.0.0.1:1'" in proc.stderr.decode()
