"""Published evaluation results of the Prometheus releases (data only).

Every figure here is copied from ``shared/reference/prometheus-format.md`` ("Headline
results"), which quotes the Prometheus 2 paper (arXiv 2405.01535): absolute grading,
Pearson correlation with the GPT-4 scores on Vicuna Bench and MT Bench (the v1 13B judge
measured on the same sets in that paper), and the 8x7B judge's relative-grading accuracy
on HHH Alignment. ``tests/test_evaluate.py`` checks that this table and that page agree.
Add an entry only with its source.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PUBLISHED", "RELEASE_LABELS", "Published", "detect_release"]

SOURCE = "shared/reference/prometheus-format.md, Headline results (Prometheus 2, arXiv 2405.01535)"


@dataclass(frozen=True)
class Published:
    """One published figure of one release on one evaluation set."""

    release: str  # the short name in releases.py
    set: str  # the `prometheus-lite eval` set name
    metric: str  # "pearson" or "accuracy"
    value: float
    protocol: str  # how it was measured, when it differs from what `eval` runs
    source: str = SOURCE


ABS = "absolute grading, Pearson with the GPT-4 scores"
REL = "relative grading (A/B); eval's hhh accuracy comes from absolute scores instead"

PUBLISHED: tuple[Published, ...] = (
    Published("prometheus-13b-v1.0", "vicuna", "pearson", 0.492, ABS),
    Published("prometheus-13b-v1.0", "mt_bench", "pearson", 0.404, ABS),
    Published("prometheus-13b-v1.0", "feedback_bench", "pearson", 0.860, ABS),
    Published("prometheus-7b-v2.0", "vicuna", "pearson", 0.642, ABS),
    Published("prometheus-7b-v2.0", "mt_bench", "pearson", 0.543, ABS),
    Published("prometheus-7b-v2.0", "feedback_bench", "pearson", 0.878, ABS),
    Published("prometheus-8x7b-v2.0", "vicuna", "pearson", 0.685, ABS),
    Published("prometheus-8x7b-v2.0", "mt_bench", "pearson", 0.665, ABS),
    Published("prometheus-8x7b-v2.0", "feedback_bench", "pearson", 0.898, ABS),
    Published("prometheus-8x7b-v2.0", "hhh", "accuracy", 0.855, REL),
)

# Display names, in the order the tables list them.
RELEASE_LABELS: dict[str, str] = {
    "prometheus-13b-v1.0": "Prometheus 13B v1.0",
    "prometheus-7b-v2.0": "Prometheus 2 7B",
    "prometheus-8x7b-v2.0": "Prometheus 2 8x7B",
}


def detect_release(name: str) -> str | None:
    """The release a model name or file name belongs to (``prometheus-7b-v2.0.Q4_K_M.gguf``
    -> ``prometheus-7b-v2.0``), or None."""
    low = name.lower().replace("_", "-")
    for release in sorted(RELEASE_LABELS, key=len, reverse=True):
        if release in low:
            return release
    return None
