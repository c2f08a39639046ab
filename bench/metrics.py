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
    "forced_fidelity",
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


def kl_divergence(
    p: Mapping[str, float], q: Mapping[str, float], labels: Sequence[str] = LABELS
) -> float:
    """KL(p || q) in nats over ``labels`` (the scores 1-5 by default); p is the reference.

    Both are renormalised over ``labels`` after flooring at KL_EPS.
    """
    pv = np.array([max(float(p.get(k, 0.0)), KL_EPS) for k in labels])
    qv = np.array([max(float(q.get(k, 0.0)), KL_EPS) for k in labels])
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


def _top(probs: Mapping[str, float]) -> str:
    """The most probable label (the first in label order on an exact tie)."""
    return max(sorted(probs), key=lambda k: probs[k])


def _spread(values: Sequence[float]) -> dict[str, float | None]:
    if not len(values):
        return {"mean": None, "p95": None, "max": None}
    v = np.asarray(values, dtype=np.float64)
    return {"mean": float(np.mean(v)), "p95": percentile(v, 95), "max": float(np.max(v))}


def forced_fidelity(ref_items: Sequence[Mapping], items: Sequence[Mapping]) -> dict[str, object]:
    """Teacher-forced fidelity of one file against the reference, item by item.

    Both lists hold the records of ``bench/forced.py`` (``id``, ``mode``, ``label_probs``,
    ``token_kl`` per answer position, ``token_top1_same``, ``gpt4``, ``chosen``) for the
    same items. Absolute items give KL over the five scores, top-1 agreement (share of
    items whose most probable score is the reference's), the expected scores' mean
    absolute difference and rank correlation; A/B items the same KL over {A, B}, the
    mean |P(A) difference| and winner agreement; every position of every answer the
    token-level KL over the whole vocabulary. ``labels`` correlates this file's expected
    scores with the GPT-4 labels and gives its A/B accuracy against HHH's choice.
    """
    ref = {r["id"]: r for r in ref_items}
    if sorted(ref) != sorted(r["id"] for r in items):
        raise ValueError("teacher-forced results cover different items than the reference's")
    absolute = [(ref[r["id"]], r) for r in items if r["mode"] == "absolute"]
    relative = [(ref[r["id"]], r) for r in items if r["mode"] == "relative"]

    def expected(probs: Mapping[str, float]) -> float:
        return sum(int(k) * v for k, v in probs.items())

    kl_abs = [kl_divergence(a["label_probs"], b["label_probs"]) for a, b in absolute]
    e_ref = [expected(a["label_probs"]) for a, _ in absolute]
    e_new = [expected(b["label_probs"]) for _, b in absolute]
    kl_rel = [kl_divergence(a["label_probs"], b["label_probs"], ("A", "B")) for a, b in relative]
    pa_ref = [float(a["label_probs"]["A"]) for a, _ in relative]
    pa_new = [float(b["label_probs"]["A"]) for _, b in relative]
    tok = [k for r in items for k in r["token_kl"]]
    n_pos = sum(r["n_positions"] for r in items)
    spread_abs, spread_rel, spread_tok = _spread(kl_abs), _spread(kl_rel), _spread(tok)
    gpt4 = [
        (e, b["gpt4"]) for e, (_, b) in zip(e_new, absolute, strict=True) if b["gpt4"] is not None
    ]
    corr = correlations([e for e, _ in gpt4], [g for _, g in gpt4])
    return {
        "n_items": len(items),
        "n_absolute": len(absolute),
        "kl_mean": spread_abs["mean"],
        "kl_p95": spread_abs["p95"],
        "kl_max": spread_abs["max"],
        "top1_agreement": (
            sum(_top(a["label_probs"]) == _top(b["label_probs"]) for a, b in absolute)
            / len(absolute)
            if absolute
            else None
        ),
        "expected_mad": mean_abs_diff(e_ref, e_new),
        "expected_max_abs_diff": (
            float(np.max(np.abs(np.subtract(e_ref, e_new)))) if absolute else None
        ),
        "spearman": spearman(e_ref, e_new),
        "pearson": pearson(e_ref, e_new),
        "relative": {
            "n": len(relative),
            "kl_mean": spread_rel["mean"],
            "kl_p95": spread_rel["p95"],
            "kl_max": spread_rel["max"],
            "p_a_mad": mean_abs_diff(pa_ref, pa_new),
            "winner_agreement": (
                sum(_top(a["label_probs"]) == _top(b["label_probs"]) for a, b in relative)
                / len(relative)
                if relative
                else None
            ),
        },
        "token_kl_mean": spread_tok["mean"],
        "token_kl_median": float(np.median(tok)) if tok else None,
        "token_kl_p95": spread_tok["p95"],
        "token_kl_p99": percentile(tok, 99),
        "token_kl_max": spread_tok["max"],
        "token_top1_agreement": (
            sum(r["token_top1_same"] for r in items) / n_pos if n_pos else None
        ),
        "n_positions": n_pos,
        "labels": {
            "gpt4": corr,
            "hhh_accuracy": (
                sum(_top(b["label_probs"]) == b["chosen"] for _, b in relative) / len(relative)
                if relative
                else None
            ),
            "hhh_n": len(relative),
        },
    }
