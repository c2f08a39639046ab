"""`prometheus-lite eval`: metrics against hand-computed values and analytic intervals,
the sets, the published table against its source, and the pipeline on the embedded model
(a few items: the numbers mean nothing there, the pipeline is real)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from scipy import stats

from prometheus_lite.cli import main
from prometheus_lite.evaluate import (
    EvalError,
    bootstrap_ci,
    correlation_metrics,
    load_sets,
    pair_metrics,
    score_summary,
)
from prometheus_lite.published import PUBLISHED, RELEASE_LABELS, detect_release

# -- metrics --------------------------------------------------------------------------------


def test_pair_metrics_by_hand():
    chosen, rejected = [5, 3, 2, 4, 4.5], [4, 3, 3, 1, 4.0]
    m = pair_metrics(chosen, rejected, ["helpful", "helpful", "honest", "honest", "other"])
    assert (m["n"], m["right"], m["wrong"], m["ties"]) == (5, 3, 1, 1)
    assert m["accuracy"] == pytest.approx(3 / 5)  # a tie is not right (official script)
    assert m["accuracy_without_ties"] == pytest.approx(3 / 4)
    assert m["by_source"] == {
        "helpful": {"n": 2, "accuracy": 0.5},
        "honest": {"n": 2, "accuracy": 0.5},
        "other": {"n": 1, "accuracy": 1.0},
    }
    lo, hi = m["accuracy_ci"]
    assert 0 <= lo <= 0.6 <= hi <= 1


def test_correlation_metrics_by_hand():
    m = correlation_metrics([1, 2, 3, 4], [1, 3, 2, 4], n_resamples=200)
    assert m["n"] == 4
    assert m["pearson"] == pytest.approx(0.8)
    assert m["spearman"] == pytest.approx(0.8)
    assert m["kendall"] == pytest.approx(4 / 6)  # 5 concordant pairs, 1 discordant
    constant = correlation_metrics([3, 3, 3], [1, 2, 3], n_resamples=200)
    assert constant["pearson"] is None and constant["pearson_ci"] is None


def test_bootstrap_intervals_match_the_analytic_ones():
    """With many items the bootstrap interval approaches the textbook one: Fisher's z for
    Pearson's r, the normal approximation for a proportion."""
    rng = np.random.default_rng(7)
    n, rho = 400, 0.5
    x = rng.normal(size=n)
    y = rho * x + math.sqrt(1 - rho**2) * rng.normal(size=n)
    m = correlation_metrics(x, y, n_resamples=2000, seed=1)
    z, half = math.atanh(m["pearson"]), 1.959964 / math.sqrt(n - 3)
    assert m["pearson_ci"] == pytest.approx([math.tanh(z - half), math.tanh(z + half)], abs=0.02)
    assert m["pearson_ci"][0] < m["pearson"] < m["pearson_ci"][1]
    right = rng.random(n) < 0.7
    p = right.mean()
    wald = 1.959964 * math.sqrt(p * (1 - p) / n)
    ci = bootstrap_ci(lambda v: float(np.mean(v)), (right.astype(float),), n_resamples=2000)
    assert ci == pytest.approx([p - wald, p + wald], abs=0.01)
    again = bootstrap_ci(lambda v: float(np.mean(v)), (right.astype(float),), n_resamples=2000)
    assert again == ci  # fixed seed: the same interval every time
    assert bootstrap_ci(lambda v: float(np.mean(v)), ([1.0, 0.0],)) is None  # too few items


def test_score_summary():
    s = score_summary([3.0, 4.5, 5.0], [3, 3, 4, 5, 5, 5])
    assert s["n"] == 3 and s["mean_score"] == pytest.approx(12.5 / 3)
    assert s["std_score"] == pytest.approx(float(np.std([3.0, 4.5, 5.0], ddof=1)))
    assert s["sample_scores"] == {"1": 0, "2": 0, "3": 2, "4": 1, "5": 3}


# -- sets and published figures -------------------------------------------------------------


def test_shared_sets(shared_dir: Path):
    data = str(shared_dir / "data" / "prometheus-benchmarks")
    vicuna, hhh, mt = load_sets(["vicuna", "hhh", "mt_bench"], data, limit=3)
    rows = [json.loads(x) for x in (Path(data) / "vicuna_eval.jsonl").read_text().splitlines()]
    labels = [pytest.approx(sum(r["gpt4_score"]) / 3) for r in rows[:3]]
    assert [i.label for i in vicuna.items] == labels
    assert [i.id for i in vicuna.items] == ["vicuna:0", "vicuna:1", "vicuna:2"]
    assert len(hhh.items) == 6 and [i.label for i in hhh.items[:2]] == ["chosen", "rejected"]
    assert hhh.items[0].pair == hhh.items[1].pair == "hhh:0"
    assert hhh.items[0].request.instruction == hhh.items[1].request.instruction
    assert hhh.items[0].request.response != hhh.items[1].request.response
    assert mt.kind == "unlabelled" and all(i.label is None for i in mt.items)
    with pytest.raises(EvalError, match="unknown set"):
        load_sets(["vicunaa"], data)


def test_user_set(tmp_path: Path):
    rubric = {
        "orig_criteria": "Is it right?",
        **{f"orig_score{k}_description": f"level {k}" for k in range(1, 6)},
    }
    lines = [
        {"orig_instruction": "2+2?", "orig_response": "4", "orig_score": 5, **rubric},
        {"orig_instruction": "3+3?", "orig_response": "7", "orig_score": "2", **rubric},
        {"orig_instruction": "1+1?", "orig_response": "2", "orig_score": "high", **rubric},
        {"orig_instruction": "5+5?", "orig_response": "9", "orig_score": [1, 2], **rubric},
    ]
    path = tmp_path / "mine.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\nnot json\n")
    (s,) = load_sets([str(path)])
    assert s.name == "mine" and s.label_field == "orig_score"
    assert [(i.id, i.label) for i in s.items] == [("mine:1", 5.0), ("mine:2", 2.0), ("mine:4", 1.5)]
    assert s.items[0].request.rubric.criteria == "Is it right?"
    assert [e["line"] for e in s.input_errors] == [3, 5]
    assert "expected a number" in s.input_errors[0]["error"]
    with pytest.raises(EvalError, match="--label-field"):
        load_sets([str(path)], label_field="gpt4")
    bare = tmp_path / "bare.jsonl"
    bare.write_text(json.dumps({"instruction": "x", "response": "y", "rubric": "helpfulness"}))
    with pytest.raises(EvalError, match="no label field"):
        load_sets([str(bare)])


def test_published_figures_match_their_source(shared_dir: Path):
    text = (shared_dir / "reference" / "prometheus-format.md").read_text()
    line = {
        "vicuna": re.search(r"Vicuna Bench (\d\.\d+) \(7B\) / (\d\.\d+) \(8x7B\)", text),
        "mt_bench": re.search(r"MT Bench (\d\.\d+) / (\d\.\d+)", text),
        "feedback_bench": re.search(r"Feedback Bench (\d\.\d+) / (\d\.\d+)", text),
    }
    v1 = re.search(r"v1 13B on the same: (\d\.\d+), (\d\.\d+), (\d\.\d+)", text)
    hhh = re.search(r"HHH Alignment (\d+\.\d+) %", text)
    assert all(line.values()) and v1 and hhh
    want = {}
    for i, name in enumerate(["vicuna", "mt_bench", "feedback_bench"]):
        m = line[name]
        assert m is not None
        want[("prometheus-7b-v2.0", name)] = float(m.group(1))
        want[("prometheus-8x7b-v2.0", name)] = float(m.group(2))
        want[("prometheus-13b-v1.0", name)] = float(v1.group(1 + i))
    want[("prometheus-8x7b-v2.0", "hhh")] = float(hhh.group(1)) / 100
    assert {(p.release, p.set): p.value for p in PUBLISHED} == want
    assert {p.release for p in PUBLISHED} <= set(RELEASE_LABELS)
    assert detect_release("prometheus-7b-v2.0.Q4_K_M.gguf") == "prometheus-7b-v2.0"
    assert detect_release("Prometheus-8x7B-v2.0") == "prometheus-8x7b-v2.0"
    assert detect_release("SmolLM2-135M-Instruct.Q4_1.gguf") is None


# -- the pipeline on the embedded model -----------------------------------------------------

FAST = ["--threads", "1", "--max-tokens", "16", "--resamples", "200", "--no-progress"]


def _items_file(tmp_path: Path, n: int) -> Path:
    rows = [
        {"id": f"q{k}", "instruction": f"What is {k} + {k}?", "response": str(2 * k + k % 2),
         "reference_answer": str(2 * k), "rubric": "factual_validity", "label": 1 + k % 5}
        for k in range(n)
    ]  # fmt: skip
    path = tmp_path / "mine.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _recompute(results: dict, name: str) -> dict:
    items = [i for i in results["items"] if i["set"] == name and i["skipped"] is None]
    x, y = [i["score"] for i in items], [i["label"] for i in items]
    return {
        "pearson": stats.pearsonr(x, y).statistic,
        "spearman": stats.spearmanr(x, y).statistic,
        "kendall": stats.kendalltau(x, y).statistic,
    }


@pytest.mark.slow
def test_eval_sampled_resumes_and_refuses_other_settings(tmp_path: Path, shared_dir: Path):
    data = str(shared_dir / "data" / "prometheus-benchmarks")
    mine = _items_file(tmp_path, 2)
    long = tmp_path / "long.jsonl"  # one item far over the 4096-token context
    long.write_text(json.dumps({"instruction": "Hi", "response": "word " * 6000,
                                "rubric": "helpfulness", "label": 3}) + "\n")  # fmt: skip
    out = tmp_path / "run"

    def args(limit: int) -> list[str]:
        return ["eval", "vicuna", "hhh", str(mine), str(long), "--limit", str(limit),
                "--samples", "2", "--data", data, "-o", str(out), *FAST]  # fmt: skip

    first = CliRunner().invoke(main, args(1))
    assert first.exit_code == 0, first.output + repr(first.exception)
    assert "| this run" in first.output and "Prometheus 2 7B, published" in first.output
    results = json.loads((out / "results.json").read_text())
    assert results["run"]["this_run"] == 10  # (1 vicuna + 2 hhh + 1 mine + 1 long) x 2 samples
    by_id = {i["id"]: i for i in results["items"]}
    assert set(by_id) == {"vicuna:0", "hhh:0:chosen", "hhh:0:rejected", "mine:q0", "long:1"}
    for i in by_id.values():
        if i["skipped"] is None:
            assert len(i["scores"]) == 2 and all(s in range(1, 6) for s in i["scores"])
            assert i["score"] == pytest.approx(sum(i["scores"]) / 2)
    assert by_id["long:1"]["skipped"] == "too_long" and by_id["long:1"]["score"] is None
    assert results["metrics"]["long"]["skipped_too_long"] == 1
    assert by_id["hhh:0:chosen"]["pair"] == by_id["hhh:0:rejected"]["pair"] == "hhh:0"
    h = results["metrics"]["hhh"]
    c, r = by_id["hhh:0:chosen"]["score"], by_id["hhh:0:rejected"]["score"]
    assert (h["right"], h["ties"]) == (int(c > r), int(c == r))
    assert results["metrics"]["vicuna"]["n"] == 1 and results["embedded_model"]
    seeds = [json.loads(x)["seed"] for x in (out / "samples.jsonl").read_text().splitlines()]
    assert sorted(set(seeds)) == [0, 1]  # sample k uses seed + k
    # resume: nothing left to do, same figures; a larger --limit runs only the new items
    again = CliRunner().invoke(main, args(1))
    assert again.exit_code == 0, again.output
    resumed = json.loads((out / "results.json").read_text())
    assert resumed["run"]["this_run"] == 0 and resumed["items"] == results["items"]
    more = CliRunner().invoke(main, args(2))
    assert more.exit_code == 0, more.output
    extended = json.loads((out / "results.json").read_text())
    assert extended["run"]["this_run"] == 2 * (1 + 2 + 1)  # long.jsonl has only one item
    assert [i for i in extended["items"] if i["id"] in by_id] == results["items"]
    other = CliRunner().invoke(main, [*args(2), "--temperature", "0.7"])
    assert other.exit_code == 1 and "other settings" in other.output


@pytest.mark.slow
def test_eval_expected_score_correlations(tmp_path: Path):
    mine = _items_file(tmp_path, 5)
    runs = []
    for name in ("a", "b"):
        out = tmp_path / name
        res = CliRunner().invoke(
            main, ["eval", str(mine), "--score", "expected", "-o", str(out), *FAST]
        )
        assert res.exit_code == 0, res.output + repr(res.exception)
        runs.append(json.loads((out / "results.json").read_text()))
    results = runs[0]
    assert [i["score"] for i in results["items"]] == [i["score"] for i in runs[1]["items"]]
    samples = [json.loads(x) for x in (tmp_path / "a" / "samples.jsonl").read_text().splitlines()]
    for item, rec in zip(results["items"], samples, strict=True):
        assert item["scores"] == [rec["expected_score"]] and item["score"] == rec["expected_score"]
        assert item["label"] == 1 + int(item["id"][-1]) % 5
    m = results["metrics"]["mine"]
    assert m["n"] == 5 and m["label_field"] == "label"
    want = _recompute(results, "mine")
    for k in ("pearson", "spearman", "kendall"):
        assert m[k] == pytest.approx(want[k], abs=1e-12)
    assert results["settings"]["score"] == "expected" and results["settings"]["greedy"]
    bad = CliRunner().invoke(main, ["eval", str(mine), "--score", "expected", "--samples", "3",
                                    "-o", str(tmp_path / "c")])  # fmt: skip
    assert bad.exit_code == 2 and "--samples" in bad.output
