"""Benchmark prompts: real Prometheus evaluation items with their GPT-4 labels.

The items come from the v1 authors' evaluation sets (``prometheus-benchmarks/``:
``vicuna_eval.jsonl`` carries three GPT-4 scores per row, ``mt_bench_eval.jsonl`` none,
``hhh_alignment_eval.json`` pairs of a chosen and a rejected response). Each rendered
prompt is parsed back into a :class:`GradeRequest` with ``parse_rendered_absolute``, so
the judge renders it for the model under test in that model's own prompt format.

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

__all__ = [
    "DATA_ENV",
    "DEFAULT_FILES",
    "HHH_FILE",
    "BenchItem",
    "BenchPair",
    "absolute_items",
    "find_data_dir",
    "hhh_pairs",
    "load_items",
    "load_pairs",
]

DATA_ENV = "PROMETHEUS_LITE_BENCH_DATA"
SUBDIR = Path("shared") / "data" / "prometheus-benchmarks"
# Files with absolute-grading prompts, labelled ones first (see SOURCE.md of the data).
DEFAULT_FILES = ("vicuna_eval.jsonl",)
KNOWN_FILES = ("vicuna_eval.jsonl", "mt_bench_eval.jsonl")
# Pairs: {"source", "chosen_instruction", "rejected_instruction"}, one JSON list (SOURCE.md).
HHH_FILE = "hhh_alignment_eval.json"
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


@dataclass(frozen=True)
class BenchPair:
    """One HHH Alignment pair: the same instruction and rubric, a chosen and a rejected
    response (both rendered as absolute prompts without a reference answer)."""

    id: str  # "hhh_alignment_eval.json:<row>"
    source: str  # helpful, harmless, honest or other
    chosen: GradeRequest
    rejected: GradeRequest
    chars: int  # length of the longer rendered prompt


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


def _request(text: str, item_id: str) -> GradeRequest:
    parts = parse_rendered_absolute(text)
    return GradeRequest(
        parts["instruction"],
        parts["response"],
        parts["rubric"],
        parts["reference_answer"],
        id=item_id,
    )


def _pool(folder: Path, name: str) -> list[tuple[str, str, float | None]]:
    """(id, clean rendered prompt, label) of every usable row of one absolute file."""
    pool = []
    for row_no, row in enumerate(_read_rows(folder / name)):
        text = row.get("instruction", "")
        if text.endswith("###Feedback: " + ARTIFACT):
            pool.append((f"{name}:{row_no}", text[: -len(ARTIFACT)], _label(row)))
    return pool


def absolute_items(name: str, data_dir: str | os.PathLike[str] | None = None) -> list[BenchItem]:
    """Every usable row of one absolute-grading file (``vicuna_eval.jsonl``,
    ``mt_bench_eval.jsonl``), in file order."""
    folder = find_data_dir(data_dir)
    return [
        BenchItem(item_id, _request(text, item_id), label, len(text))
        for item_id, text, label in _pool(folder, name)
    ]


def hhh_pairs(data_dir: str | os.PathLike[str] | None = None) -> list[BenchPair]:
    """Every HHH Alignment pair, in file order."""
    folder = find_data_dir(data_dir)
    path = folder / HHH_FILE
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise BenchDataError(f"cannot read {path}: {e}") from e
    pairs = []
    for row_no, row in enumerate(rows):
        texts = [row.get(k, "") for k in ("chosen_instruction", "rejected_instruction")]
        if not all(t.endswith("###Feedback: " + ARTIFACT) for t in texts):
            continue
        chosen, rejected = (t[: -len(ARTIFACT)] for t in texts)
        pair_id = f"{HHH_FILE}:{row_no}"
        pairs.append(
            BenchPair(
                pair_id,
                str(row.get("source", "")),
                _request(chosen, f"{pair_id}:chosen"),
                _request(rejected, f"{pair_id}:rejected"),
                max(len(chosen), len(rejected)),
            )
        )
    return pairs


def _pick(lengths_of: list[int], n: int, lengths: str) -> list[int]:
    """Indices of ``n`` items: evenly spaced quantiles of length, or the shortest."""
    if lengths not in ("spread", "shortest"):
        raise BenchDataError(f"lengths must be 'spread' or 'shortest', not {lengths!r}")
    by_len = sorted(range(len(lengths_of)), key=lambda i: (lengths_of[i], i))
    if lengths == "shortest":
        return sorted(by_len[:n])
    return sorted({by_len[round(q)] for q in np.linspace(0, len(lengths_of) - 1, n)})


def load_pairs(
    n: int, data_dir: str | os.PathLike[str] | None = None, *, lengths: str = "spread"
) -> list[BenchPair]:
    """``n`` HHH pairs chosen like :func:`load_items` (deterministic, file order)."""
    if n < 1:
        raise BenchDataError("the number of pairs must be at least 1")
    pairs = hhh_pairs(data_dir)
    if len(pairs) < n:
        raise BenchDataError(f"asked for {n} pairs but {HHH_FILE} has only {len(pairs)}")
    return [pairs[i] for i in _pick([p.chars for p in pairs], n, lengths)]


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
    pool = [
        entry
        for name in files
        for entry in _pool(folder, name)
        if max_chars is None or len(entry[1]) <= max_chars
    ]
    if len(pool) < n:
        raise BenchDataError(f"asked for {n} prompts but {folder} has only {len(pool)} usable")
    items = []
    for i in _pick([len(text) for _, text, _ in pool], n, lengths):
        item_id, text, label = pool[i]
        items.append(BenchItem(item_id, _request(text, item_id), label, len(text)))
    return items
