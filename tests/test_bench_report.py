"""The `bench` command: fidelity statistics (free-decoding and teacher-forced), prompt
loading, the machine probes, teacher-forced determinism, and one end-to-end run on the
embedded model (source Q4_1 + a Q8_0 requantization)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from prometheus_lite.bench import metrics
from prometheus_lite.bench.data import BenchDataError, find_data_dir, load_items, load_pairs
from prometheus_lite.bench.forced import (
    MAX_ITEMS,
    _token_stats,
    forced_items,
    measure_forced,
    split_counts,
)
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


def _rec(item_id, mode, probs, kl, same=0, gpt4=None, chosen=None):
    return {
        "id": item_id, "mode": mode, "label_probs": probs, "token_kl": kl,
        "n_positions": len(kl), "token_top1_same": same, "gpt4": gpt4, "chosen": chosen,
    }  # fmt: skip


def test_forced_fidelity_by_hand():
    u = dict.fromkeys(metrics.LABELS, 0.2)
    ref = [
        _rec("a", "absolute", {"1": 0.5, "2": 0.5, "3": 0, "4": 0, "5": 0}, [0, 0], 2, gpt4=2.0),
        _rec("b", "absolute", u, [0], 1, gpt4=4.0),
        _rec("c", "absolute", {"1": 0, "2": 0, "3": 0, "4": 0, "5": 1.0}, [0], 1),
        _rec("p", "relative", {"A": 0.8, "B": 0.2}, [0, 0, 0], 3, chosen="B"),
    ]
    new = [
        _rec("a", "absolute", {"1": 0.25, "2": 0.75, "3": 0, "4": 0, "5": 0}, [0.1, 0.3], 1,
             gpt4=2.0),
        _rec("b", "absolute", u, [0.2], 1, gpt4=4.0),
        _rec("c", "absolute", {"1": 0, "2": 0, "3": 0, "4": 0.5, "5": 0.5}, [0.0], 1),
        _rec("p", "relative", {"A": 0.4, "B": 0.6}, [0.0, 0.4, 0.0], 2, chosen="B"),
    ]  # fmt: skip
    f = metrics.forced_fidelity(ref, new)
    kls = [0.5 * math.log(2) + 0.5 * math.log(2 / 3), 0.0, math.log(2)]
    assert f["n_items"] == 4 and f["n_absolute"] == 3
    assert f["kl_mean"] == pytest.approx(sum(kls) / 3, abs=1e-6)
    assert f["kl_max"] == pytest.approx(math.log(2), abs=1e-6)
    assert f["kl_p95"] == pytest.approx(float(np.percentile(kls, 95)), abs=1e-6)
    # top-1: a 1 (tie 1/2 -> first label) vs 2; b 1 vs 1; c 5 vs 4 (tie 4/5 -> first)
    assert f["top1_agreement"] == pytest.approx(1 / 3)
    e_ref, e_new = [1.5, 3.0, 5.0], [1.75, 3.0, 4.5]
    assert f["expected_mad"] == pytest.approx((0.25 + 0 + 0.5) / 3)
    assert f["spearman"] == pytest.approx(stats.spearmanr(e_ref, e_new).statistic)
    rel = f["relative"]
    assert rel["n"] == 1 and rel["p_a_mad"] == pytest.approx(0.4)
    assert rel["kl_mean"] == pytest.approx(stats.entropy([0.8, 0.2], [0.4, 0.6]), abs=1e-6)
    assert rel["winner_agreement"] == 0.0
    assert f["n_positions"] == 7
    assert f["token_kl_mean"] == pytest.approx((0.1 + 0.3 + 0.2 + 0.4) / 7)
    assert f["token_kl_max"] == pytest.approx(0.4)
    assert f["token_top1_agreement"] == pytest.approx(5 / 7)
    assert f["labels"]["gpt4"]["n"] == 2 and f["labels"]["gpt4"]["pearson"] == pytest.approx(1)
    assert f["labels"]["hhh_accuracy"] == 1.0  # this file prefers B, HHH's choice
    same = metrics.forced_fidelity(ref, ref)
    assert same["kl_mean"] == same["token_kl_mean"] == same["expected_mad"] == 0.0
    assert same["top1_agreement"] == same["relative"]["winner_agreement"] == 1.0
    with pytest.raises(ValueError, match="different items"):
        metrics.forced_fidelity(ref, new[:3])


def test_token_stats_against_scipy_entropy():
    from scipy.special import log_softmax

    rng = np.random.default_rng(3)
    a = log_softmax(rng.normal(size=(4, 50)), axis=-1).astype(np.float32)
    b = log_softmax(rng.normal(size=(4, 50)), axis=-1).astype(np.float32)
    b[1] = a[1]
    kl, same = _token_stats(a, b)
    want = [stats.entropy(np.exp(x.astype(np.float64)), np.exp(y.astype(np.float64)))
            for x, y in zip(a, b, strict=True)]  # fmt: skip
    assert kl == pytest.approx(want, rel=1e-6, abs=1e-9)
    assert kl[1] == 0.0
    assert same == int(np.sum(a.argmax(1) == b.argmax(1)))
    assert _token_stats(a, a) == ([0.0] * 4, 4)


def test_forced_items(shared_dir: Path):
    assert split_counts(100) == (50, 25, 25)
    assert split_counts(4) == (2, 1, 1) and split_counts(2) == (1, 0, 1)
    assert split_counts(1) == (1, 0, 0) and split_counts(0) == (0, 0, 0)
    assert split_counts(MAX_ITEMS)[0] == 320 and split_counts(MAX_ITEMS + 1)[0] > 320
    data = str(shared_dir / "data" / "prometheus-benchmarks")
    items = forced_items(8, data)
    assert [i.mode for i in items] == ["absolute"] * 6 + ["relative"] * 2
    assert sum(i.id.startswith("vicuna") for i in items) == 4
    assert all(i.gpt4 is not None for i in items[:4]) and items[4].gpt4 is None
    pairs = load_pairs(2, data)
    a, b = items[6:]
    assert a.chosen == "A" and b.chosen == "B"  # the chosen response alternates position
    assert a.request.response_a == pairs[0].chosen.response
    assert b.request.response_b == pairs[1].chosen.response
    assert b.request.response_a == pairs[1].rejected.response


@pytest.mark.slow
def test_teacher_forced_is_deterministic(tmp_path: Path, shared_dir: Path):
    """Two complete teacher-forced computations (the reference's answers, then a level over
    them) give identical records, bit for bit. The level here is the reference file itself,
    so it must match the reference exactly: zero KL at every position checks that each item
    reads its own rows of the streamed log-probability file. (Each run also repeats its
    items: ``repeat_bit_identical``; the end-to-end bench test below runs it again.)"""
    from prometheus_lite.hub import resolve_model

    data = str(shared_dir / "data" / "prometheus-benchmarks")
    store = tmp_path / "store"
    store.mkdir()
    spec = {"model": str(resolve_model(None)), "n_items": 2, "data_dir": data,
            "store": str(store), "threads": 1, "n_ctx": None, "max_new_tokens": 12, "seed": 0,
            "lengths": "shortest"}  # fmt: skip
    quiet = lambda done, total: None  # noqa: E731
    ref = measure_forced({**spec, "role": "reference"}, quiet)
    lvl = measure_forced({**spec, "role": "level"}, quiet)
    assert ref["repeat_bit_identical"] and lvl["repeat_bit_identical"]
    assert [r["mode"] for r in ref["items"]] == ["absolute", "relative"]
    assert lvl["items"] == ref["items"]  # label probabilities and per-position KLs alike
    assert all(k == 0.0 for r in lvl["items"] for k in r["token_kl"])
    assert all(r["token_top1_same"] == r["n_positions"] > 0 for r in lvl["items"])
    assert sum(r["n_positions"] for r in ref["items"]) <= 2 * 12


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
    lines: list[str] = []
    code, peak, _ = run_child(
        [sys.executable, "-P", "-c", "import numpy as np; a = np.ones(200 * 2**20, np.uint8); "
         "from prometheus_lite.bench.system import rss_bytes; print(rss_bytes()[1])"],
        lines.append,
    )
    own = int(lines[-1])  # the child's own high-water mark (VmHWM)
    # ru_maxrss is an upper bound: Linux carries the forking parent's RSS into it.
    assert code == 0 and 200 * 2**20 <= own < 2**30 and peak >= own


# -- end to end -----------------------------------------------------------------------------

REQUIRED = [
    "file_size_bytes", "load_s", "prompt_tokens_per_s", "generation_tokens_per_s",
    "ttft_s_p50", "latency_s_p50", "latency_s_p95", "peak_rss_bytes", "fidelity",
    "gpt4_correlation", "bandwidth", "overhead", "bits_per_weight",
]  # fmt: skip
FORCED = [
    "n_items", "kl_mean", "kl_p95", "kl_max", "top1_agreement", "expected_mad",
    "token_kl_mean", "token_top1_agreement", "n_positions",
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
        "--teacher-forced", "2", "--quiet",
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
    tf = report["teacher_forced"]
    assert tf["items"] == 2 and tf["hhh_pairs"] == 1 and tf["deterministic"]
    assert tf["reference_logprobs_bytes"] > 0
    for r in rows:
        t = r["teacher_forced"]
        assert all(t.get(k) is not None for k in FORCED), [k for k in FORCED if t.get(k) is None]
        assert t["n_items"] == 2 and t["relative"]["n"] == 1 and t["repeat_bit_identical"]
        assert [i["mode"] for i in t["items"]] == ["absolute", "relative"]
    assert rows[1]["teacher_forced"]["kl_mean"] == 0.0  # the reference against itself
    assert rows[1]["teacher_forced"]["token_kl_mean"] == 0.0
    assert rows[0]["teacher_forced"]["token_kl_mean"] > 0
    assert rows[0]["file_size_bytes"] < rows[1]["file_size_bytes"]
    ratio = report["overhead"]["ratio"]
    assert isinstance(ratio, float) and ratio > 0
    md = (out / "report.md").read_text()
    for text in ("gen tok/s", "peak RSS MB", "score agreement %", "% of ceiling",
                 "Overhead against raw llama.cpp", "not the original full-precision weights",
                 "not a judge", "Teacher-forced fidelity (main view)", "Second view",
                 "Quantization against grading quality", "these correlations and accuracies "
                 "are meaningless", "Deterministic"):  # fmt: skip
        assert text in md
