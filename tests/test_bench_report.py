"""The `bench` command: fidelity statistics, prompt loading, the machine
probes, and one end-to-end run on the embedded model (source Q4_1 + a Q8_0 requantization)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from prometheus_lite.bench import metrics
from prometheus_lite.bench.data import BenchDataError, find_data_dir, load_items
from prometheus_lite.bench.system import memory_bandwidth, run_child
from scipy import stats

# -- metrics --------------------------------------------------------------------------------


def test_correlations_by_hand():
    """Known values, ties included (the formulas, not scipy, are the reference here)."""
    x, y = [1, 2, 3, 4], [1, 3, 2, 4]
    assert metrics.pearson(x, y) == pytest.approx(0.8)
    assert metrics.spearman(x, y) == pytest.approx(0.8)
    assert metrics.kendall_tau_b(x, y) == pytest.approx((5 - 1) / 6)  # 5 concordant, 1 not
    # tau-b with ties: x has one tied pair, y one; (C - D) / sqrt((6 - 1) * (6 - 1)) = 4 / 5
    assert metrics.kendall_tau_b([1, 2, 2, 3], [1, 1, 2, 3]) == pytest.approx(4 / 5)
    assert metrics.spearman([1, 2, 3, 4, 5, 6], [6, 5, 4, 3, 2, 1]) == pytest.approx(-1.0)


def test_undefined_statistics_are_none():
    assert metrics.pearson([3, 3, 3], [1, 2, 3]) is None  # constant input
    assert metrics.correlations([5, 5], [1, 2]) == {
        "pearson": None,
        "spearman": None,
        "kendall": None,
        "n": 2,
    }
    assert metrics.spearman([1], [2]) is None
    assert metrics.kendall_tau_b([2, 2], [1, 2]) is None
    assert metrics.agreement([], []) is None


def test_hand_computed_fidelity():
    ref_p = [{"1": 0.5, "2": 0.5}, {"5": 1.0}]
    new_p = [{"1": 0.25, "2": 0.75}, {"4": 0.5, "5": 0.5}]
    f = metrics.fidelity([1, 5], [1.5, 5.0], ref_p, [2, 5], [1.75, 4.5], new_p)
    assert f["agreement_pct"] == 50.0
    assert f["mad_expected"] == pytest.approx((0.25 + 0.5) / 2)
    # KL(ref || new) of the first item, by hand: 0.5 ln(0.5/0.25) + 0.5 ln(0.5/0.75)
    kl0 = 0.5 * math.log(2) + 0.5 * math.log(2 / 3)
    assert metrics.kl_divergence(ref_p[0], new_p[0]) == pytest.approx(kl0, abs=1e-6)
    assert metrics.kl_divergence(ref_p[1], new_p[1]) == pytest.approx(math.log(2), abs=1e-6)
    p, q = [0.1, 0.2, 0.3, 0.2, 0.2], [0.2, 0.2, 0.2, 0.2, 0.2]
    as_dict = lambda v: dict(zip(metrics.LABELS, v, strict=True))  # noqa: E731
    assert metrics.kl_divergence(as_dict(p), as_dict(q)) == pytest.approx(stats.entropy(p, q))
    assert metrics.kl_divergence(as_dict(p), as_dict(p)) == pytest.approx(0.0, abs=1e-12)
    assert metrics.percentile([1, 2, 3, 4], 50) == 2.5


# -- data and machine -----------------------------------------------------------------------


def test_load_items(shared_dir: Path):
    data = shared_dir / "data" / "prometheus-benchmarks"
    spread = load_items(6, data)
    assert len(spread) == 6 and len({i.id for i in spread}) == 6
    assert max(i.chars for i in spread) > 2 * min(i.chars for i in spread)  # varied lengths
    short = load_items(2, data, lengths="shortest")
    assert all(i.chars <= 2600 for i in short)
    row = json.loads((data / "vicuna_eval.jsonl").read_text().splitlines()[271])
    item = next(i for i in load_items(3, data, lengths="shortest") if i.id.endswith(":271"))
    assert item.gpt4 == pytest.approx(sum(row["gpt4_score"]) / 3)
    assert item.request.reference_answer and item.request.response
    with pytest.raises(BenchDataError, match="--data"):
        find_data_dir(data / "nowhere")


def test_memory_bandwidth_and_child_peak_rss():
    bw = memory_bandwidth(32, threads=1, passes=2)
    assert bw["gb_per_s"] > 0.1 and bw["threads"] == 1
    code, peak, _ = run_child(
        [sys.executable, "-P", "-c", "import numpy as np; a = np.ones(200 * 2**20, np.uint8)"]
    )
    assert code == 0 and 200 * 2**20 <= peak < 2**30


# -- end to end -----------------------------------------------------------------------------

REQUIRED = [
    "file_size_bytes", "load_s", "prompt_tokens_per_s", "generation_tokens_per_s",
    "ttft_s_p50", "latency_s_p50", "latency_s_p95", "peak_rss_bytes", "fidelity",
    "gpt4_correlation", "bandwidth", "overhead", "bits_per_weight",
]  # fmt: skip
FIDELITY = [
    "same_feedback_pct", "agreement_pct", "mad_expected", "kl_mean", "pearson", "spearman",
    "kendall",
]  # fmt: skip


@pytest.mark.slow
def test_bench_command_end_to_end(tmp_path: Path, shared_dir: Path):
    from prometheus_lite.bench.cli import bench_command

    out = tmp_path / "rep"
    args = [
        "--quant", "Q8_0", "--report", str(out), "-n", "2", "--shortest", "--max-tokens", "8",
        "--threads", "1", "--overhead-prompts", "1", "--overhead-rounds", "1",
        "--bandwidth-mb", "64", "--data", str(shared_dir / "data" / "prometheus-benchmarks"),
        "--quiet",
    ]  # fmt: skip
    result = CliRunner().invoke(bench_command, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "overhead ratio" in result.output
    for name in ("report.md", "report.json", "report.png"):
        assert (out / name).stat().st_size > 0
    report = json.loads((out / "report.json").read_text())
    rows = report["models"]
    assert [r["label"] for r in rows] == ["Q4_1 (source)", "Q8_0"]
    assert report["reference"]["label"] == "Q8_0" and report["reference"]["dequantized_source"]
    assert report["machine"]["memory_bandwidth"]["gb_per_s"] > 0
    for r in rows:
        assert all(r.get(k) is not None for k in REQUIRED), [
            k for k in REQUIRED if r.get(k) is None
        ]
        assert all(k in r["fidelity"] for k in FIDELITY)
        assert r["bandwidth"]["ceiling_tokens_per_s"] > 0
        assert (
            r["bandwidth"]["percent_of_ceiling"] > 0 and r["bandwidth"]["decode_passes_per_s"] > 0
        )
        assert len(r["items"]) == 2
        # the overhead comparison does the same work on both sides
        runs = r["overhead"]["runs"]
        assert runs and all(o["judge_cached"] == o["raw_cached"] for o in runs)
        assert all(o["same_length"] for o in runs)
    ref = rows[1]["fidelity"]
    assert ref["agreement_pct"] == 100.0 and ref["mad_expected"] == 0.0
    assert rows[0]["file_size_bytes"] < rows[1]["file_size_bytes"]
    ratio = report["overhead"]["ratio"]
    assert isinstance(ratio, float) and ratio > 0
    md = (out / "report.md").read_text()
    for text in ("gen tok/s", "peak RSS MB", "score agreement %", "% of ceiling",
                 "Overhead against raw llama.cpp", "not the original full-precision weights",
                 "not a judge"):  # fmt: skip
        assert text in md
