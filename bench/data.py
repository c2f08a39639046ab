"""Benchmark prompts: real Prometheus evaluation items with their GPT-4 labels.

The items come from the v1 authors' evaluation sets (``prometheus-benchmarks/``:
``vicuna_eval.jsonl`` carries three GPT-4 scores per row, ``mt_bench_eval.jsonl`` none).
Each rendered prompt is parsed back into a :class:`GradeRequest` with
``parse_rendered_absolute``, so the judge renders it for the model under test in that
model's own prompt format.

The folder is found, in order: the ``data_dir`` argument (``--data``), the
``PROMETHEUS_LITE_BENCH_DATA`` environment variable, then ``shared/data/prometheus-benchmarks``
beside or above the current directory. The installed package never assumes a repository
layout.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from prometheus_lite.errors import PrometheusLiteError
from prometheus_lite.prompts import parse_rendered_absolute
from prometheus_lite.results import GradeRequest

__all__ = ["DATA_ENV", "DEFAULT_FILES", "BenchItem", "find_data_dir", "load_items"]

DATA_ENV = "PROMETHEUS_LITE_BENCH_DATA"
SUBDIR = Path("shared") / "data" / "prometheus-benchmarks"
# Files with absolute-grading prompts, labelled ones first (see SOURCE.md of the data).
DEFAULT_FILES = ("vicuna_eval.jsonl",)
KNOWN_FILES = ("vicuna_eval.jsonl", "mt_bench_eval.jsonl")
# Every rendered prompt ends with this artifact after "###Feedback: " (SOURCE.md).
ARTIFACT = '",\n'


class BenchDataError(PrometheusLiteError):
    """The benchmark prompts cannot be found or read."""


@dataclass(frozen=True)
class BenchItem:
    """One benchmark prompt."""

    id: str  # "<file>:<row>"
    request: GradeRequest
    gpt4: float | None  # mean of the three GPT-4 scores; None where the file has none
    chars: int  # length of the rendered v1 prompt, for choosing varied lengths


def find_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The folder holding the evaluation sets (see the module docstring for the order)."""
    if data_dir is not None:
        candidates = [Path(data_dir)]
    elif os.environ.get(DATA_ENV):
        candidates = [Path(os.environ[DATA_ENV])]
    else:
        here = Path.cwd().resolve()
        candidates = [p / SUBDIR for p in (here, *here.parents)]
    for c in candidates:
        if (c / DEFAULT_FILES[0]).is_file():
            return c
        if (c / SUBDIR / DEFAULT_FILES[0]).is_file():  # pointed at the shared/ folder's parent
            return c / SUBDIR
        if (c / "data" / "prometheus-benchmarks" / DEFAULT_FILES[0]).is_file():  # at shared/
            return c / "data" / "prometheus-benchmarks"
    where = ", ".join(str(c) for c in candidates[:3])
    raise BenchDataError(
        f"benchmark prompts not found (looked for {DEFAULT_FILES[0]} in {where}"
        f"{' ...' if len(candidates) > 3 else ''}). Pass --data DIR (the prometheus-benchmarks "
        f"folder) or set {DATA_ENV}."
    )


def _read_rows(path: Path) -> list[dict]:
    try:
        with open(path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    except (OSError, ValueError) as e:
        raise BenchDataError(f"cannot read {path}: {e}") from e


def _label(row: dict) -> float | None:
    scores = row.get("gpt4_score")
    if not scores:
        return None
    vals = [float(s) for s in (scores if isinstance(scores, list) else [scores])]
    return sum(vals) / len(vals)


def load_items(
    n: int,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    files: tuple[str, ...] = DEFAULT_FILES,
    lengths: str = "spread",
    max_chars: int | None = None,
) -> list[BenchItem]:
    """``n`` benchmark items, deterministic.

    ``lengths="spread"`` picks items at evenly spaced quantiles of prompt length (shortest to
    longest), so latency percentiles cover short and long prompts; ``"shortest"`` takes the
    ``n`` shortest (for smoke tests). ``max_chars`` drops longer prompts first. Items are
    returned in file order (not sorted by length), so consecutive prompts differ in length.
    """
    if n < 1:
        raise BenchDataError("the number of prompts must be at least 1")
    if lengths not in ("spread", "shortest"):
        raise BenchDataError(f"lengths must be 'spread' or 'shortest', not {lengths!r}")
    folder = find_data_dir(data_dir)
    pool: list[tuple[str, int, str, float | None]] = []
    for name in files:
        for row_no, row in enumerate(_read_rows(folder / name)):
            text = row.get("instruction", "")
            if not text.endswith("###Feedback: " + ARTIFACT):
                continue
            text = text[: -len(ARTIFACT)]
            if max_chars is None or len(text) <= max_chars:
                pool.append((f"{name}:{row_no}", row_no, text, _label(row)))
    if len(pool) < n:
        raise BenchDataError(f"asked for {n} prompts but {folder} has only {len(pool)} usable")
    by_len = sorted(range(len(pool)), key=lambda i: (len(pool[i][2]), i))
    if lengths == "shortest":
        chosen = by_len[:n]
    else:
        chosen = [by_len[round(q)] for q in np.linspace(0, len(pool) - 1, n)]
    items = []
    for i in sorted(set(chosen)):
        item_id, _, text, label = pool[i]
        parts = parse_rendered_absolute(text)
        request = GradeRequest(
            parts["instruction"],
            parts["response"],
            parts["rubric"],
            parts["reference_answer"],
            id=item_id,
        )
        items.append(BenchItem(item_id, request, label, len(text)))
    return items
