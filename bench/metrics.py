"""Fidelity statistics: how far a quantized judge's grades drift from a reference judge.

Correlations come from ``scipy.stats`` (Spearman on average ranks, Kendall's tau-b, as
the paper's evaluation uses). A statistic that is undefined (fewer than two items, or a
constant input) is ``None``, never NaN, so the JSON report stays valid and scipy is not
asked for what it would only answer with a warning.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = [
    "agreement",
    "correlations",
    "fidelity",
    "kendall_tau_b",
    "kl_divergence",
    "mean_abs_diff",
    "pearson",
    "percentile",
    "spearman",
]

LABELS = ("1", "2", "3", "4", "5")
# Probability floor for KL: a label the compared judge gives 0 (it never does with softmax,
# but probabilities are rounded in transit) would make KL infinite.
KL_EPS = 1e-9


def _pair(x: Sequence[float], y: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"expected two 1-D sequences of equal length, got {a.shape} and {b.shape}")
    return a, b


def _stats():  # scipy is the `bench` extra's; importing it lazily keeps the CLI light
    from scipy import stats

    return stats


def _defined(a: np.ndarray, b: np.ndarray) -> bool:
    """Correlation needs two items and variation in both inputs."""
    return len(a) >= 2 and np.ptp(a) > 0 and np.ptp(b) > 0


def pearson(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Pearson's r; None if undefined."""
    a, b = _pair(x, y)
    return float(_stats().pearsonr(a, b).statistic) if _defined(a, b) else None


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rho (average ranks for ties); None if undefined."""
    a, b = _pair(x, y)
    return float(_stats().spearmanr(a, b).statistic) if _defined(a, b) else None


def kendall_tau_b(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Kendall's tau-b (ties in either variable corrected for); None if undefined."""
    a, b = _pair(x, y)
    return float(_stats().kendalltau(a, b, variant="b").statistic) if _defined(a, b) else None


def correlations(x: Sequence[float], y: Sequence[float]) -> dict[str, float | None]:
    """Pearson, Spearman and Kendall (tau-b) together, plus n."""
    return {
        "pearson": pearson(x, y),
        "spearman": spearman(x, y),
        "kendall": kendall_tau_b(x, y),
        "n": len(x),
    }


def agreement(a: Sequence[int], b: Sequence[int]) -> float | None:
    """Share of items with the same score, in percent."""
    if len(a) != len(b):
        raise ValueError("score lists differ in length")
    if not a:
        return None
    return 100.0 * sum(int(x) == int(y) for x, y in zip(a, b, strict=True)) / len(a)


def mean_abs_diff(x: Sequence[float], y: Sequence[float]) -> float | None:
    a, b = _pair(x, y)
    return float(np.mean(np.abs(a - b))) if len(a) else None


def kl_divergence(p: Mapping[str, float], q: Mapping[str, float]) -> float:
    """KL(p || q) in nats over the score labels; p is the reference distribution.

    Both are renormalised over LABELS after flooring at KL_EPS.
    """
    pv = np.array([max(float(p.get(k, 0.0)), KL_EPS) for k in LABELS])
    qv = np.array([max(float(q.get(k, 0.0)), KL_EPS) for k in LABELS])
    pv, qv = pv / pv.sum(), qv / qv.sum()
    return float(np.sum(pv * np.log(pv / qv)))


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (linear interpolation, numpy's default); None if empty."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if len(values) else None


def fidelity(
    ref_scores: Sequence[int],
    ref_expected: Sequence[float],
    ref_probs: Sequence[Mapping[str, float]],
    scores: Sequence[int],
    expected: Sequence[float],
    probs: Sequence[Mapping[str, float]],
) -> dict[str, float | int | None]:
    """Every fidelity statistic of one judge against the reference, on the same items."""
    kls = [kl_divergence(p, q) for p, q in zip(ref_probs, probs, strict=True)]
    corr = correlations(ref_expected, expected)
    return {
        "n": len(scores),
        "agreement_pct": agreement(ref_scores, scores),
        "mad_expected": mean_abs_diff(ref_expected, expected),
        "kl_mean": float(np.mean(kls)) if kls else None,
        "kl_max": float(np.max(kls)) if kls else None,
        "pearson": corr["pearson"],
        "spearman": corr["spearman"],
        "kendall": corr["kendall"],
    }
