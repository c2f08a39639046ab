"""``prometheus-lite eval``: the Prometheus papers' evaluation of a judge, reproduced.

Sets (``SET`` arguments):

- ``vicuna``: Vicuna Bench (``vicuna_eval.jsonl``): absolute grading, correlated with the
  mean of each row's three GPT-4 scores (Pearson, Spearman, Kendall's tau-b).
- ``mt_bench``: MT Bench (``mt_bench_eval.jsonl``): the shared copy carries no labels, so
  it is graded and summarised (score distribution), not correlated.
- ``hhh``: HHH Alignment (``hhh_alignment_eval.json``): the chosen and the rejected
  response of each pair are graded absolutely; a pair is right when the chosen one scores
  higher, a tie when both score the same (ties count as not right, as in the official
  script, and are reported separately).
- ``PATH.jsonl``: any JSONL of grade items (the ``grade --input`` format, Feedback
  Collection rows included) with a numeric label field (``--label-field``; by default
  the first of ``label``, ``orig_score``, ``gpt4_score``, ``score`` the file has; a list
  of numbers is averaged): correlated like vicuna.

Protocol, as the official evaluation (prometheus-eval's ``eval/run_evaluate.py``): the
official sampling (temperature 1.0, top_p 0.9, repetition penalty 1.03, 1024 new tokens),
three samples per item whose mean is the item's score; inputs that do not fit the model's
context are skipped and counted. ``score="expected"`` instead takes the expected score
(sum of score x probability) of one greedy run. Sample ``k`` of every item is drawn with
seed ``seed + k``, so a sample does not depend on which items ran before it.

Resumable: every finished generation is one line of ``DIR/samples.jsonl`` (written and
made durable before the next, as batch grading does) and a rerun of the same command
does only what is missing; ``DIR/run.json`` holds the settings, and a rerun with other
settings is refused rather than mixed in. ``DIR/results.json`` lets anyone recompute
every figure: ``items`` (``id``, ``set``, ``label``, ``scores``, ``score``; hhh pairs as
two records sharing a ``pair`` id) and ``metrics`` per set with 95 % bootstrap
confidence intervals (``scipy.stats.bootstrap``, BCa, fixed seed). ``DIR/results.md`` is
the table in the papers' layout with the published figures beside ours.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .batch import _LineWriter, parse_line, read_done_ids
from .errors import BatchInputError, PrometheusLiteError
from .eval_metrics import bootstrap_ci, correlation_metrics, pair_metrics, score_summary
from .eval_table import format_table
from .published import PUBLISHED, detect_release
from .results import Failure, Grade, GradeRequest

__all__ = [
    "EvalConfig",
    "EvalError",
    "EvalItem",
    "EvalSet",
    "SHARED_SETS",
    "bootstrap_ci",
    "correlation_metrics",
    "format_table",
    "load_sets",
    "pair_metrics",
    "run_eval",
    "score_summary",
]

log = logging.getLogger(__name__)

SCHEMA = "prometheus-lite-eval/1"
# name -> (file in prometheus-benchmarks/, kind)
SHARED_SETS: dict[str, tuple[str, str]] = {
    "vicuna": ("vicuna_eval.jsonl", "correlation"),
    "mt_bench": ("mt_bench_eval.jsonl", "unlabelled"),
    "hhh": ("hhh_alignment_eval.json", "pairs"),
}
LABEL_FIELDS = ("label", "orig_score", "gpt4_score", "score")
SAMPLES = "samples.jsonl"
RUN = "run.json"
TOO_LONG = "PromptTooLongError"


class EvalError(PrometheusLiteError):
    """The evaluation cannot run as asked (unknown set, bad label field, other settings)."""


@dataclass(frozen=True)
class EvalItem:
    """One graded prompt of a set."""

    id: str  # unique in the run: "<set>:<row>" (hhh: "hhh:<row>:chosen"/":rejected")
    set: str
    request: GradeRequest
    label: float | str | None  # the mean GPT-4 score; hhh: "chosen" / "rejected"; None
    pair: str | None = None  # hhh: the pair id ("hhh:<row>") both records share
    source: str | None = None  # hhh: helpful / harmless / honest / other


@dataclass(frozen=True)
class EvalSet:
    name: str
    kind: str  # "correlation", "pairs" or "unlabelled"
    path: str
    items: tuple[EvalItem, ...]
    label_field: str | None = None
    input_errors: tuple[dict[str, Any], ...] = ()  # bad lines of a user's file


@dataclass(frozen=True)
class EvalConfig:
    sets: tuple[str, ...]
    output_dir: Path
    samples: int = 3
    score: str = "sampled"  # or "expected"
    limit: int | None = None  # first N items (hhh: pairs) of each set
    label_field: str | None = None
    data_dir: str | None = None
    seed: int = 0
    resamples: int = 9999  # bootstrap resamples (scipy's default)
    confidence: float = 0.95
    settings: dict[str, Any] = field(default_factory=dict)  # model and sampling options


# --------------------------------------------------------------------------- the sets


def _shared(name: str, data_dir: str | None, limit: int | None) -> EvalSet:
    from .bench.data import absolute_items, find_data_dir, hhh_pairs

    file, kind = SHARED_SETS[name]
    folder = find_data_dir(data_dir)
    items: list[EvalItem] = []
    if kind == "pairs":
        for pair in hhh_pairs(folder)[:limit]:
            row = pair.id.rsplit(":", 1)[1]
            pid = f"{name}:{row}"
            for role, req in (("chosen", pair.chosen), ("rejected", pair.rejected)):
                item_id = f"{pid}:{role}"
                items.append(
                    EvalItem(item_id, name, _with_id(req, item_id), role, pid, pair.source)
                )
    else:
        for it in absolute_items(file, folder)[:limit]:
            item_id = f"{name}:{it.id.rsplit(':', 1)[1]}"
            label = it.gpt4 if kind == "correlation" else None
            items.append(EvalItem(item_id, name, _with_id(it.request, item_id), label))
    return EvalSet(name, kind, str(folder / file), tuple(items))


def _with_id(request: GradeRequest, item_id: str) -> GradeRequest:
    from dataclasses import replace

    return replace(request, id=item_id)


def _label_value(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    if isinstance(value, str):
        try:
            return _label_value(float(value))
        except ValueError:
            return None
    if isinstance(value, list) and value:
        parts = [_label_value(v) for v in value]
        if all(p is not None for p in parts):
            return sum(parts) / len(parts)  # type: ignore[arg-type]
    return None


def _user_set(path: Path, label_field: str | None, limit: int | None) -> EvalSet:
    """A user's labelled JSONL: items in the ``grade --input`` format plus a label."""
    if not path.is_file():
        known = ", ".join(SHARED_SETS)
        raise EvalError(f"unknown set {str(path)!r}: give one of {known}, or a JSONL file path")
    name = path.stem
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise EvalError(f"cannot read {path}: {e}") from None
    rows: list[tuple[int, str, dict[str, Any] | None]] = []
    for lineno, text in enumerate(lines, start=1):
        if text.strip():
            try:
                obj = json.loads(text)
            except json.JSONDecodeError:
                obj = None
            rows.append((lineno, text, obj if isinstance(obj, dict) else None))
    if label_field is None:
        first = next((obj for _, _, obj in rows if obj is not None), {})
        label_field = next((f for f in LABEL_FIELDS if f in first), None)
        if label_field is None:
            raise EvalError(
                f"{path}: no label field found (looked for {', '.join(LABEL_FIELDS)} in the "
                "first line); name it with --label-field FIELD (Feedback Collection rows: "
                "orig_score)"
            )
    elif not any(obj is not None and label_field in obj for _, _, obj in rows):
        raise EvalError(f"{path}: no line has the label field {label_field!r}; check --label-field")
    items: list[EvalItem] = []
    errors: list[dict[str, Any]] = []
    seen: set[str] = set()
    for lineno, text, obj in rows:
        if limit is not None and len(items) >= limit:
            break
        try:
            req = parse_line(text, lineno, "grade")
            label = _label_value((obj or {}).get(label_field))
            if label is None:
                raise BatchInputError(
                    f"line {lineno}, field {label_field!r}: expected a number (or a list of "
                    f"numbers, averaged), got {json.dumps((obj or {}).get(label_field))}"
                )
            item_id = f"{name}:{req.id}"
            if item_id in seen:
                raise BatchInputError(f"line {lineno}: duplicate id {req.id!r}; ids must be unique")
        except BatchInputError as e:
            errors.append({"line": lineno, "error": str(e)})
            continue
        seen.add(item_id)
        items.append(EvalItem(item_id, name, _with_id(req, item_id), label))
    return EvalSet(name, "correlation", str(path), tuple(items), label_field, tuple(errors))


def load_sets(
    names: Sequence[str],
    data_dir: str | None = None,
    *,
    limit: int | None = None,
    label_field: str | None = None,
) -> list[EvalSet]:
    """The sets named (shared names or JSONL paths), each cut to its first ``limit`` items."""
    if not names:
        raise EvalError(f"name at least one set: {', '.join(SHARED_SETS)} or a labelled JSONL")
    sets = [
        _shared(n, data_dir, limit) if n in SHARED_SETS else _user_set(Path(n), label_field, limit)
        for n in names
    ]
    dup = [n for n, c in Counter(s.name for s in sets).items() if c > 1]
    if dup:
        raise EvalError(f"set {dup[0]!r} is named twice; give each set once (files: rename one)")
    for s in sets:
        if not s.items:
            raise EvalError(f"set {s.name!r} has no usable items ({s.path})")
    return sets


# --------------------------------------------------------------------------- the run


@dataclass(frozen=True)
class _Job:
    id: str  # "<item id>#<sample>"
    item: EvalItem
    sample: int
    seed: int


def _record(job: _Job, result: Grade | Failure) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "id": job.id,
        "item": job.item.id,
        "set": job.item.set,
        "sample": job.sample,
        "seed": job.seed,
    }
    if isinstance(result, Failure):
        return {**rec, "error": result.error, "error_type": result.error_type}
    u = result.usage
    return {
        **rec,
        "score": result.score,
        "expected_score": result.expected_score,
        "probabilities": result.probabilities,
        "feedback": result.feedback,
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "latency_s": round(u.latency_s, 4),
        "finish": u.finish,
        "error": None,
        "error_type": None,
    }


def _judged(judge: Any, jobs: Sequence[_Job], sampled: bool) -> Iterator[tuple[_Job, Any]]:
    """(job, Grade or Failure) in job order, through ``judge.batch`` (its schedule follows
    the input only, so a rerun gives the same bits); sampled runs pass each sample's seed."""
    seeds = (j.seed for j in jobs) if sampled else None
    yield from zip(jobs, judge.batch((j.item.request for j in jobs), seeds=seeds), strict=True)


def _fingerprint(cfg: EvalConfig) -> dict[str, Any]:
    keep = (
        "model", "model_path", "model_bytes", "prompt_format", "n_ctx", "seed", "greedy",
        "temperature", "top_p", "repetition_penalty", "max_tokens", "truncate_response",
    )  # fmt: skip
    out = {k: cfg.settings.get(k) for k in keep}
    out.update(score=cfg.score, samples=cfg.samples, seed=cfg.seed)
    return out


def _check_run_file(out_dir: Path, fp: dict[str, Any], started: bool) -> None:
    """Refuse to mix settings: once ``samples.jsonl`` holds results (``started``), a rerun
    must use the settings in run.json; before that, run.json is (re)written."""
    path = out_dir / RUN
    if started and path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            raise EvalError(
                f"{path} is not valid JSON; delete it or choose another --output"
            ) from None
        diff = [k for k in sorted(set(old) | set(fp)) if old.get(k) != fp.get(k)]
        if diff:
            what = ", ".join(f"{k}: {old.get(k)!r} then, {fp.get(k)!r} now" for k in diff)
            raise EvalError(
                f"{out_dir} holds a run with other settings ({what}); rerun with the same "
                "settings to resume, or choose another --output"
            )
    else:
        path.write_text(json.dumps(fp, indent=1), encoding="utf-8")


def _read_samples(path: Path) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    if path.is_file():
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    rec = json.loads(line)
                    out[str(rec["id"])] = rec
    return out


def _progress_bar(total: int, enabled: bool) -> Any:
    if not enabled or total == 0:
        return None
    from tqdm import tqdm

    return tqdm(
        total=total, file=sys.stderr, unit="gen", desc="eval", mininterval=0.5,
        dynamic_ncols=True,
    )  # fmt: skip


def run_eval(
    cfg: EvalConfig,
    judge_factory: Callable[[], Any],
    *,
    progress: bool = True,
) -> dict[str, Any]:
    """Grade what is missing in ``cfg.output_dir``, then write results.json and results.md."""
    if cfg.score not in ("sampled", "expected"):
        raise EvalError(f"score must be 'sampled' or 'expected', not {cfg.score!r}")
    samples = 1 if cfg.score == "expected" else cfg.samples
    if samples < 1:
        raise EvalError("--samples must be at least 1")
    if _missing("scipy"):
        raise EvalError("eval needs scipy for its statistics: pip install 'prometheus-lite[eval]'")
    cfg = EvalConfig(**{**cfg.__dict__, "samples": samples})
    sets = load_sets(cfg.sets, cfg.data_dir, limit=cfg.limit, label_field=cfg.label_field)
    out_dir = Path(cfg.output_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EvalError(f"cannot create --output {out_dir}: {e.strerror}") from None
    fp = _fingerprint(cfg)
    done = read_done_ids(out_dir / SAMPLES)  # also trims a line torn by a killed run
    _check_run_file(out_dir, fp, started=bool(done))
    jobs = [
        _Job(f"{it.id}#{k}", it, k, cfg.seed + k)
        for s in sets
        for it in s.items
        for k in range(samples)
        if not done[f"{it.id}#{k}"]
    ]
    n_total = sum(len(s.items) for s in sets) * samples
    log.info("%d generations, %d already done, %d to run", n_total, n_total - len(jobs), len(jobs))
    transient = 0
    if jobs:
        bar = _progress_bar(len(jobs), progress)
        writer = _LineWriter(out_dir / SAMPLES)
        judge = None
        try:
            judge = judge_factory()
            for job, result in _judged(judge, jobs, cfg.score == "sampled"):
                if isinstance(result, Failure) and result.transient:
                    transient += 1  # not recorded: a rerun tries it again
                else:
                    writer.write(_record(job, result))
                if bar is not None:
                    bar.update(1)
        finally:
            writer.close()
            if bar is not None:
                bar.close()
            if judge is not None:
                judge.close()
    results = summarise(cfg, sets, _read_samples(out_dir / SAMPLES), fp)
    results["run"] = {
        "generations": n_total,
        "this_run": len(jobs),
        "transient_failures": transient,
    }
    (out_dir / "results.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    (out_dir / "results.md").write_text(format_table(results), encoding="utf-8")
    return results


def _missing(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is None


# --------------------------------------------------------------------------- results


def _item_record(it: EvalItem, recs: list[dict[str, Any] | None], score_mode: str) -> dict:
    rec: dict[str, Any] = {"id": it.id, "set": it.set, "label": it.label}
    if it.pair is not None:
        rec["pair"], rec["source"] = it.pair, it.source
    errors = [r for r in recs if r is not None and r.get("error")]
    if errors:
        too_long = any(r.get("error_type") == TOO_LONG for r in errors)
        rec.update(scores=[], score=None, skipped="too_long" if too_long else "error",
                   error=errors[0]["error"])  # fmt: skip
    elif any(r is None for r in recs):
        rec.update(scores=[r["score"] for r in recs if r], score=None, skipped="incomplete")
    else:
        key = "expected_score" if score_mode == "expected" else "score"
        scores = [r[key] for r in recs if r is not None]
        rec.update(scores=scores, score=sum(scores) / len(scores), skipped=None)
    return rec


def summarise(
    cfg: EvalConfig, sets: Sequence[EvalSet], done: Mapping[str, dict[str, Any]], fp: dict
) -> dict[str, Any]:
    """results.json from the sample records (also for a run that stopped half way)."""
    items: list[dict[str, Any]] = []
    metrics: dict[str, Any] = {}
    stats = {"n_resamples": cfg.resamples, "confidence": cfg.confidence, "seed": cfg.seed}
    for s in sets:
        recs = [
            _item_record(it, [done.get(f"{it.id}#{k}") for k in range(cfg.samples)], cfg.score)
            for it in s.items
        ]
        items += recs
        skipped = Counter(r["skipped"] for r in recs if r["skipped"])
        m: dict[str, Any] = {"kind": s.kind, "path": s.path}
        if s.kind == "pairs":
            by_pair: dict[str, dict[str, dict]] = {}
            for r in recs:
                by_pair.setdefault(r["pair"], {})[r["label"]] = r
            ok = [p for p in by_pair.values() if all(p[k]["skipped"] is None for k in p)]
            m.update(
                pair_metrics(
                    [p["chosen"]["score"] for p in ok],
                    [p["rejected"]["score"] for p in ok],
                    [p["chosen"]["source"] for p in ok],
                    n_resamples=cfg.resamples,
                    confidence=cfg.confidence,
                    seed=cfg.seed,
                )
            )
            m["pairs_skipped"] = len(by_pair) - len(ok)
        elif s.kind == "correlation":
            ok_items = [r for r in recs if r["skipped"] is None]
            m.update(
                correlation_metrics(
                    [r["score"] for r in ok_items],
                    [r["label"] for r in ok_items],
                    n_resamples=cfg.resamples,
                    confidence=cfg.confidence,
                    seed=cfg.seed,
                )
            )
            m["label_field"] = s.label_field or (
                "gpt4_score (mean of 3)" if s.name == "vicuna" else None
            )
        else:
            ok_items = [r for r in recs if r["skipped"] is None]
            m.update(
                score_summary(
                    [r["score"] for r in ok_items], [x for r in ok_items for x in r["scores"]]
                )
            )
            m["note"] = "no labels in the shared copy: graded and summarised, not correlated"
        m["items"] = len(recs)
        m["skipped_too_long"] = skipped.get("too_long", 0)
        m["skipped_error"] = skipped.get("error", 0)
        m["incomplete"] = skipped.get("incomplete", 0)
        if s.input_errors:
            m["input_errors"] = list(s.input_errors)
        metrics[s.name] = m
    path = fp.get("model_path") or ""
    model_name = str(cfg.settings.get("model_name") or fp.get("model") or Path(path).name)
    release = detect_release(f"{model_name} {Path(path).name}")
    names = {s.name for s in sets}
    return {
        "schema": SCHEMA,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": {"name": model_name, "path": path or None, "release": release},
        "embedded_model": bool(fp.get("embedded")) or bool(cfg.settings.get("embedded")),
        "settings": {
            **fp,
            "sets": [s.name for s in sets],
            "limit": cfg.limit,
            "bootstrap": {**stats, "method": "BCa (scipy.stats.bootstrap), items resampled"},
        },
        "protocol": (
            "the expected score of one greedy run"
            if cfg.score == "expected"
            else f"the mean of {cfg.samples} sampled scores"
        )
        + " per item; inputs over the context skipped and counted",
        "items": items,
        "metrics": metrics,
        "published": [p.__dict__ for p in PUBLISHED if p.set in names],
    }
