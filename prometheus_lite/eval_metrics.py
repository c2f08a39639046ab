"""The statistics of ``prometheus-lite eval`` (pure functions over score lists): bootstrap
confidence intervals, correlations with the labels, pairwise accuracy, score summaries."""

from __future__ import annotations

import inspect
import math
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

__all__ = ["bootstrap_ci", "correlation_metrics", "pair_metrics", "score_summary"]


def _rng_kwargs(seed: int) -> dict[str, Any]:
    from scipy import stats

    params = inspect.signature(stats.bootstrap).parameters
    key = "rng" if "rng" in params else "random_state"  # scipy < 1.15 calls it random_state
    return {key: np.random.default_rng(seed)}


def bootstrap_ci(
    statistic: Callable[..., float | None],
    data: Sequence[Sequence[float]],
    *,
    n_resamples: int = 9999,
    confidence: float = 0.95,
    seed: int = 0,
) -> list[float] | None:
    """A BCa bootstrap confidence interval of ``statistic`` over items (the columns of
    ``data`` are resampled together); None where it is undefined (too few items, or a
    resample on which the statistic is undefined, e.g. all scores equal)."""
    from scipy import stats

    arrays = [np.asarray(d, dtype=np.float64) for d in data]
    if len(arrays[0]) < 3:
        return None

    def stat(*xs: np.ndarray) -> float:
        v = statistic(*xs)
        return math.nan if v is None else float(v)

    with warnings.catch_warnings():
        # a degenerate resample makes scipy warn and return NaN, which is checked below
        warnings.simplefilter("ignore")
        res = stats.bootstrap(
            tuple(arrays),
            stat,
            paired=True,
            vectorized=False,
            n_resamples=n_resamples,
            confidence_level=confidence,
            method="BCa",
            **_rng_kwargs(seed),
        )
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return [lo, hi] if math.isfinite(lo) and math.isfinite(hi) else None


def correlation_metrics(
    scores: Sequence[float],
    labels: Sequence[float],
    *,
    n_resamples: int = 9999,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Pearson, Spearman and Kendall's tau-b of scores against labels, each with its
    bootstrap interval (``<name>_ci``: [low, high] or None)."""
    from .bench import metrics

    out: dict[str, Any] = {"n": len(scores)}
    for name, fn in (
        ("pearson", metrics.pearson),
        ("spearman", metrics.spearman),
        ("kendall", metrics.kendall_tau_b),
    ):
        out[name] = fn(scores, labels) if len(scores) else None
        out[f"{name}_ci"] = (
            bootstrap_ci(
                fn, (scores, labels), n_resamples=n_resamples, confidence=confidence, seed=seed
            )
            if out[name] is not None
            else None
        )
    return out


def pair_metrics(
    chosen: Sequence[float],
    rejected: Sequence[float],
    sources: Sequence[str | None] | None = None,
    *,
    n_resamples: int = 9999,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Pairwise accuracy from absolute scores: right when the chosen response scores
    higher; ties (equal scores) count as not right and are reported separately."""
    c, r = np.asarray(chosen, dtype=np.float64), np.asarray(rejected, dtype=np.float64)
    right, ties = c > r, c == r
    n = len(c)
    out: dict[str, Any] = {
        "n": n,
        "right": int(right.sum()),
        "wrong": int((c < r).sum()),
        "ties": int(ties.sum()),
        "accuracy": float(right.mean()) if n else None,
        "accuracy_without_ties": (
            float(right.sum() / (n - ties.sum())) if n - ties.sum() else None
        ),
    }
    out["accuracy_ci"] = (
        bootstrap_ci(
            lambda x: float(np.mean(x)),
            (right.astype(np.float64),),
            n_resamples=n_resamples,
            confidence=confidence,
            seed=seed,
        )
        if n
        else None
    )
    if sources is not None:
        by: dict[str, list[bool]] = {}
        for s, ok in zip(sources, right, strict=True):
            by.setdefault(s or "", []).append(bool(ok))
        out["by_source"] = {s: {"n": len(v), "accuracy": sum(v) / len(v)} for s, v in by.items()}
    return out


def score_summary(scores: Sequence[float], samples: Iterable[float]) -> dict[str, Any]:
    """An unlabelled set: how its items were scored."""
    s = np.asarray(scores, dtype=np.float64)
    counts = Counter(str(int(round(v))) for v in samples)
    return {
        "n": len(s),
        "mean_score": float(s.mean()) if len(s) else None,
        "std_score": float(s.std(ddof=1)) if len(s) > 1 else None,
        "sample_scores": {k: counts.get(k, 0) for k in ("1", "2", "3", "4", "5")},
    }
