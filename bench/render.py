"""report.md and report.png from the report dict that ``report.py`` builds (and saves as
report.json). Presentation only: every number shown is in report.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["write_markdown", "write_plot"]


def _f(x: Any, fmt: str = "{:.2f}", none: str = "n/a") -> str:
    return none if x is None else fmt.format(x)


def _threads(n: int) -> str:
    return f"{n} thread{'' if n == 1 else 's'}"


def _mb(n: float | None) -> str:
    return _f(None if n is None else n / 1e6, "{:.1f}")


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def write_markdown(report: dict[str, Any], path: Path) -> None:
    m, s, ref, ov = report["machine"], report["settings"], report["reference"], report["overhead"]
    bw = m["memory_bandwidth"]
    rows = report["models"]
    spread = "evenly spread over prompt lengths" if s["lengths"] == "spread" else "the shortest"
    L: list[str] = ["# prometheus-lite benchmark report", ""]
    L += [
        (
            f"Created {report['created']} in {report['duration_s']:.0f} s. "
            "Every number here is also in `report.json`; the plot is `report.png`."
        ),
        "",
        "## Machine",
        "",
        (
            f"- CPU: {m['cpu']}; {m['logical_cores']} logical cores ({m['usable_cores']} usable); "
            f"RAM {_f((m['ram_bytes'] or 0) / 2**30, '{:.1f}')} GiB; {m['os']}"
        ),
        f"- Threads used by llama.cpp: {m['threads_used']}",
        (
            f"- Memory read bandwidth: **{bw['gb_per_s']:.1f} GB/s** with "
            f"{_threads(bw['threads'])} ({bw['gb_per_s_one_thread']:.1f} GB/s with one), best of "
            f"{bw['passes']} passes over a {bw['buffer_mib']} MiB buffer ({bw['method']}), "
            f"before and after the models ({_f(bw.get('gb_per_s_before'), '{:.1f}')} / "
            f"{_f(bw.get('gb_per_s_after'), '{:.1f}')} GB/s)."
        ),
        "",
        "## Settings",
        "",
        (
            f"- {s['prompts']} prompts from {', '.join(s['prompt_files'])} "
            f"({spread}), "
            f"the same prompts for every file; {s['decoding']}, repetition penalty "
            f"{s['repetition_penalty']}; at most {s['max_new_tokens']} generated tokens; "
            f"context {s['n_ctx']} tokens."
        ),
        (
            f"- {s.get('device', 'CPU')}. Each file is measured in its own process (load time "
            "and peak memory are per file)."
        ),
        "",
    ]
    for w in report.get("warnings", []):
        L += [f"> **Warning:** {w}.", ""]
    L += ["## Size and speed", ""]
    L += _table(
        [
            "level",
            "file MB",
            "bits/weight",
            "load s",
            "prompt tok/s",
            "gen tok/s",
            "TTFT p50 s",
            "grade p50 s",
            "grade p95 s",
            "peak RSS MB",
        ],
        [
            [
                r["label"],
                _mb(r["file_size_bytes"]),
                _f(r["bits_per_weight"]),
                _f(r["load_s"]),
                _f(r["prompt_tokens_per_s"], "{:.0f}"),
                _f(r["generation_tokens_per_s"], "{:.1f}"),
                _f(r["ttft_s_p50"]),
                _f(r["latency_s_p50"]),
                _f(r["latency_s_p95"]),
                _mb(r["peak_rss_bytes"]),
            ]
            for r in rows
        ],
    )
    L += [
        "",
        (
            f"Mean prompt {rows[0]['mean_prompt_tokens']:.0f} tokens, of which "
            f"{rows[0]['mean_cached_prompt_tokens']:.0f} were reused from the previous prompt's "
            "KV cache (the shared template prefix); mean answer "
            f"{rows[0]['mean_completion_tokens']:.0f} tokens."
        ),
        "",
        "## Fidelity against the reference",
        "",
        (
            f"Reference: **{ref['label']}** (`{ref['file']}`, "
            f"{_f(ref['bits_per_weight'])} bits/weight): {ref['note']}."
        ),
        "",
    ]
    if ref.get("dequantized_source"):
        L += [
            (
                "> The source file was already quantized, so the reference is a **dequantized "
                "copy of it, not the original full-precision weights**. Drift shown here is on top "
                "of the source's own quantization error, which this report cannot see."
            ),
            "",
        ]
    tf = report.get("teacher_forced")
    L += (
        _forced_section(report)
        if tf
        else [
            "Teacher-forced fidelity was off (`--teacher-forced 0`).",
            "",
        ]
    )
    L += [
        "### Second view: fidelity under free greedy decoding",
        "",
        (
            f"Each file writes its own answer to the {s['prompts']} prompts above (greedy); "
            "the grades are compared with the reference's. One flipped near-tie token changes "
            "the rest of the feedback and so the grade: this view shows how often a user would "
            "see a different grade, mostly from that divergence, not the size of the "
            "quantization error (the teacher-forced view above measures that)."
        ),
        "",
    ]
    L += _table(
        [
            "level",
            "same feedback %",
            "score agreement %",
            "MAD expected",
            "KL mean (nats)",
            "KL max",
            "Pearson",
            "Spearman",
            "Kendall",
            "GPT-4 Pearson",
            "GPT-4 Spearman",
            "GPT-4 Kendall",
            "GPT-4 n",
        ],
        [
            [
                r["label"],
                _f(r["fidelity"].get("same_feedback_pct"), "{:.0f}"),
                _f(r["fidelity"]["agreement_pct"], "{:.0f}"),
                _f(r["fidelity"]["mad_expected"], "{:.3f}"),
                _f(r["fidelity"]["kl_mean"], "{:.4f}"),
                _f(r["fidelity"]["kl_max"], "{:.4f}"),
                _f(r["fidelity"]["pearson"], "{:.3f}"),
                _f(r["fidelity"]["spearman"], "{:.3f}"),
                _f(r["fidelity"]["kendall"], "{:.3f}"),
                _f(r["gpt4_correlation"]["pearson"], "{:.3f}"),
                _f(r["gpt4_correlation"]["spearman"], "{:.3f}"),
                _f(r["gpt4_correlation"]["kendall"], "{:.3f}"),
                str(r["gpt4_correlation"]["n"]),
            ]
            for r in rows
        ],
    )
    if tf:
        L += [""] + _quality_section(report)
    L += ["", "## The physical limit: memory bandwidth", ""]
    L += _table(
        [
            "level",
            "weights read/token MB",
            "KV read/token MB",
            "ceiling tok/s",
            "decode passes/s",
            "% of ceiling",
        ],
        [
            [
                r["label"],
                _mb(r["weight_bytes_read_per_token"]),
                _mb(r["bandwidth"]["kv_bytes_read_per_token"]),
                _f(r["bandwidth"]["ceiling_tokens_per_s"], "{:.1f}"),
                _f(r["bandwidth"].get("decode_passes_per_s"), "{:.1f}"),
                _f(r["bandwidth"]["percent_of_ceiling"], "{:.0f}"),
            ]
            for r in rows
        ],
    )
    L += [
        "",
        (
            "Ceiling = measured bandwidth / bytes read per generated token (every weight matrix "
            "once, the token-embedding table only when it doubles as the output matrix, plus the "
            "F16 KV cache at the mean context length). It is compared with decode passes per "
            "second (each `llama_decode` call while generating reads the weights once; the "
            "Judge's closing `[RESULT]` tokens share one pass). No decoder can beat it on this "
            "machine; the gap is compute, threading and per-token fixed costs. A value near or "
            "above 100 % means the bandwidth test itself was slowed by other work (it is a lower "
            "bound), or that part of the reads were served from the CPU caches."
        ),
        "",
        "## Overhead against raw llama.cpp",
        "",
        (
            f"**Ratio {_f(ov['ratio'], '{:.3f}')}** (raw llama.cpp time / Judge time for the same "
            f"prompts, pooled over all files; required >= {ov['min_required']}: "
            f"**{'PASS' if ov['passes'] else 'FAIL'}**). Generation phase alone: "
            f"{_f(ov['ratio_generation'], '{:.3f}')}."
        ),
        "",
    ]
    L += _table(
        [
            "level",
            "calls",
            "tokens",
            "same tokens",
            "raw s",
            "Judge s",
            "ratio",
            "ratio (generation)",
        ],
        [
            [
                r["label"],
                str(r["overhead"]["calls"]),
                str(r["overhead"]["generated_tokens"]),
                f"{r['overhead']['same_feedback_tokens']}/{r['overhead']['calls']}",
                _f(r["overhead"]["raw_s"]),
                _f(r["overhead"]["judge_s"]),
                _f(r["overhead"]["ratio"], "{:.3f}"),
                _f(r["overhead"]["ratio_generation"], "{:.3f}"),
            ]
            for r in rows
        ],
    )
    L += [
        "",
        (
            "Both sides get the same prompt tokens and produce the same number of tokens with the "
            "same decode calls (greedy, repetition penalty 1.03 over prompt and output, same "
            "context/batch/threads, KV prefix reused from the previous prompt), interleaved call "
            "by call. The raw side is llama.cpp's `examples/simple` loop (`llama_decode` + "
            "`llama_sampler_sample`) through llama-cpp-python's C bindings; the Judge side is "
            "`Judge.judge` with the output constraint on, including prompt rendering and "
            "tokenization. 'same tokens' counts calls where both wrote the same feedback tokens "
            "(the last, label token is constrained only on the Judge's side)."
        ),
        "",
        "## What the numbers mean, and caveats",
        "",
        (
            "- **Size and speed**: generation speed is bounded by memory bandwidth, so it should "
            "rise as files shrink; the % of ceiling shows how close each level gets. Prompt "
            "processing is compute-bound and depends less on the level."
        ),
        (
            "- **Teacher-forced fidelity** compares distributions on the same text, so it "
            "isolates the quantization error: KL(reference || level) of the label distribution "
            "(five scores, or A/B) at the label position, and over the whole vocabulary at every "
            "position of the reference's answer (llama.cpp's `perplexity --kl-divergence` "
            "measure). The label-position figures are what changes in a grade's probabilities "
            "and expected score when only the file changes."
        ),
        (
            "- **Free-decoding fidelity**: score agreement is the share of prompts where the "
            "level gives the "
            "same 1-5 score as the reference; MAD is the mean absolute difference of expected "
            "scores (sum of score x probability); KL is KL(reference || level) of the five-score "
            "distribution at the score position. Correlations are over the expected scores. With "
            "few prompts these are noisy: one disagreement in 10 prompts is 10 points of "
            "agreement. Under greedy decoding one flipped near-tie token makes the rest of the "
            "feedback, and so the grade, differ ('same feedback %' shows how often the whole "
            "answer is identical): drift includes this divergence, not only the score step."
        ),
        (
            "- **GPT-4 correlation** is the expected score against the mean of the three GPT-4 "
            "scores in the data; it measures a judge's quality and only means something for real "
            "Prometheus models."
        ),
        (
            "- **Latency** is one whole `Judge.judge` call (render, tokenize, prefill, generate); "
            "TTFT is the time until the first answer token's distribution is ready. Both reuse the "
            "previous prompt's shared prefix, as batch grading does."
        ),
        (
            "- **Peak RSS** is the measuring process's high-water mark while grading (Python, "
            "llama.cpp, the touched memory-mapped weights, KV cache); a bare process with the "
            f"libraries loaded was {_mb(rows[0]['baseline_rss_bytes'])} MB. Load time is with the "
            "file in the page cache (a cold disk is slower)."
        ),
        (
            "- Timings on a machine shared with other work are noisy; rerun on an idle machine for "
            "figures to quote."
        ),
    ]
    if report.get("embedded_model"):
        L += [
            (
                "- **The embedded model (SmolLM2-135M-Instruct) is a 135M-parameter smoke-test "
                "model, not a judge**: its grades mean nothing, and its correlations with the "
                "GPT-4 labels and its HHH accuracy (free-decoding and teacher-forced alike) are "
                "meaningless. Its small size also makes fixed per-token costs (Python, sampling) a "
                "larger share than with a 7B judge. The report shows that the pipeline runs end to "
                "end."
            ),
        ]
    L += ["", "## Files", ""]
    for r in rows:
        how = f" - {r['how_made']}" if r.get("how_made") else ""
        L.append(f"- {r['label']}: `{r['path']}`{how}")
    path.write_text("\n".join(L) + "\n", encoding="utf-8")


def _pct(x: float | None) -> str:
    return _f(None if x is None else 100.0 * x, "{:.1f}")


def _forced_section(report: dict[str, Any]) -> list[str]:
    """The teacher-forced table (the main fidelity view) and what it means."""
    tf, rows = report["teacher_forced"], report["models"]
    ref = report["reference"]["label"]
    skipped = tf["skipped"]
    skip_note = (
        f"; {len(skipped)} skipped: the reference could not grade them (see report.json)"
        if skipped
        else ""
    )
    L = [
        "### Teacher-forced fidelity (main view)",
        "",
        (
            f"{tf['items']} items ({tf['vicuna']} from vicuna_eval, {tf['mt_bench']} from "
            f"mt_bench_eval, {tf['hhh_pairs']} A/B pair{'' if tf['hhh_pairs'] == 1 else 's'} "
            "from hhh_alignment_eval, spread over "
            f"prompt lengths{skip_note}). The reference ({ref}) writes each answer once "
            "(greedy); then every file, the "
            "reference included, reads the same prompt plus that answer (prefill only, no "
            "decoding) and gives its distribution over the labels at the label position and over "
            "the vocabulary at every answer position."
        ),
        "",
    ]
    L += _table(
        [
            "level",
            "file MB",
            "KL mean",
            "KL p95",
            "KL max",
            "top-1 %",
            "MAD expected",
            "Spearman",
            "A/B KL mean",
            "A/B mean abs dP(A)",
            "A/B winner %",
            "token KL mean",
            "token KL p99",
            "token top-1 %",
        ],
        [
            [
                r["label"],
                _mb(r["file_size_bytes"]),
                _f(t["kl_mean"], "{:.2e}"),
                _f(t["kl_p95"], "{:.2e}"),
                _f(t["kl_max"], "{:.2e}"),
                _pct(t["top1_agreement"]),
                _f(t["expected_mad"], "{:.4f}"),
                _f(t["spearman"], "{:.3f}"),
                _f(t["relative"]["kl_mean"], "{:.2e}"),
                _f(t["relative"]["p_a_mad"], "{:.4f}"),
                _pct(t["relative"]["winner_agreement"]),
                _f(t["token_kl_mean"], "{:.2e}"),
                _f(t["token_kl_p99"], "{:.2e}"),
                _pct(t["token_top1_agreement"]),
            ]
            for r in rows
            for t in [r["teacher_forced"]]
        ],
    )
    n_pos = rows[0]["teacher_forced"]["n_positions"]
    L += [
        "",
        (
            "KL is KL(reference || level) in nats: over the five scores at the label position "
            "(mean, 95th percentile and maximum over the absolute items), over {A, B} for the "
            f"pairs, and over the whole vocabulary at each of the {n_pos} answer positions "
            "(token KL, pooled over all items). top-1 % is the share of items whose most "
            "probable score is the reference's; MAD the mean absolute difference of expected "
            "scores; Spearman their rank correlation with the reference's across items; "
            "token top-1 % the share of positions whose most probable token is the reference's."
        ),
        "",
        (
            f"**Deterministic**: {tf['determinism']}. "
            + (
                "Every worker's repeat check was bit-identical in this run."
                if tf["deterministic"]
                else "**A worker's repeat check differed in this run: these figures are not "
                "reproducible on this machine.**"
            )
        ),
        "",
        (
            f"Memory: {tf['storage']} ({_mb(tf['reference_logprobs_bytes'])} MB here); a "
            "worker holds one item's logits at a time."
        ),
        "",
    ]
    return L


def _quality_section(report: dict[str, Any]) -> list[str]:
    """Size, speed and grading quality per level in one table."""
    rows = report["models"]
    L = [
        "## Quantization against grading quality",
        "",
        (
            "What each level costs and what it changes in grading, in one place: size and "
            "speed (above), teacher-forced drift from the reference, and the teacher-forced "
            "expected scores correlated with the GPT-4 labels of vicuna_eval (mean of three "
            "GPT-4 scores), plus A/B accuracy against HHH Alignment's chosen response. Every "
            "level reads the reference's feedback, so these show what the file changes at the "
            "decision, given the same reasoning."
        ),
        "",
    ]
    if report.get("embedded_model"):
        L += [
            (
                "> **On the embedded model these correlations and accuracies are meaningless**: "
                "SmolLM2-135M is a smoke-test model, not a judge. Only the drift columns "
                "(KL, MAD) describe quantization; the label columns only show that the pipeline "
                "runs. For a real judge, run `prometheus-lite bench` on a Prometheus GGUF."
            ),
            "",
        ]
    L += _table(
        [
            "level",
            "file MB",
            "bits/weight",
            "gen tok/s",
            "grade p50 s",
            "KL mean",
            "MAD expected",
            "GPT-4 Pearson",
            "GPT-4 Spearman",
            "GPT-4 Kendall",
            "GPT-4 n",
            "HHH A/B acc %",
            "HHH n",
        ],
        [
            [
                r["label"],
                _mb(r["file_size_bytes"]),
                _f(r["bits_per_weight"]),
                _f(r["generation_tokens_per_s"], "{:.1f}"),
                _f(r["latency_s_p50"]),
                _f(t["kl_mean"], "{:.2e}"),
                _f(t["expected_mad"], "{:.4f}"),
                _f(t["labels"]["gpt4"]["pearson"], "{:.3f}"),
                _f(t["labels"]["gpt4"]["spearman"], "{:.3f}"),
                _f(t["labels"]["gpt4"]["kendall"], "{:.3f}"),
                str(t["labels"]["gpt4"]["n"]),
                _pct(t["labels"]["hhh_accuracy"]),
                str(t["labels"]["hhh_n"]),
            ]
            for r in rows
            for t in [r["teacher_forced"]]
        ],
    )
    L += [
        "",
        (
            "With few labelled items these correlations are noisy; for a judge's quality with "
            "confidence intervals and the published figures beside it, use "
            "`prometheus-lite eval` (sampled, three samples per item, as the paper)."
        ),
    ]
    return L


def write_plot(report: dict[str, Any], path: Path) -> None:
    """Size vs speed (with the bandwidth ceiling), size vs teacher-forced KL, and size vs
    free-decoding fidelity, one point per level.

    Each level has one colour and marker in all panels and one legend entry, so levels of
    nearly the same size stay readable (no overlapping text labels).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    rows = report["models"]
    colors = plt.get_cmap("tab10").colors
    markers = "osD^vP*Xhp"
    style = [(colors[i % 10], markers[i % len(markers)]) for i in range(len(rows))]
    size = [r["file_size_bytes"] / 1e6 for r in rows]
    fig, grid = plt.subplots(2, 2, figsize=(14, 10.5))
    axes = [grid[0][0], grid[1][0], grid[1][1], grid[0][1]]

    ax = axes[0]
    for x, r, (c, m) in zip(size, rows, style, strict=True):
        g, ceil = r["generation_tokens_per_s"], r["bandwidth"]["ceiling_tokens_per_s"]
        if g is not None and ceil is not None:
            ax.plot([x, x], [g, ceil], color=c, lw=1, ls=":", zorder=1)
        if g is not None:
            ax.scatter([x], [g], s=80, color=c, marker=m, zorder=3)
        if ceil is not None:
            ax.scatter([x], [ceil], s=80, facecolors="none", edgecolors=c, marker=m, zorder=3)
    ax.set(xlabel="file size (MB)", ylabel="tokens / s",
           title="Generation speed (filled) vs bandwidth ceiling (hollow)")  # fmt: skip

    ax = axes[3]
    ref_label = report["reference"]["label"]
    if report.get("teacher_forced"):
        # Log scale: the levels' KL spans orders of magnitude; the reference (KL 0) is left out.
        shown = 0
        for x, r, (c, m) in zip(size, rows, style, strict=True):
            t = r["teacher_forced"]
            if (t["kl_mean"] or 0) > 0:
                ax.scatter([x], [t["kl_mean"]], s=80, color=c, marker=m, zorder=3)
                shown += 1
            if (t["token_kl_mean"] or 0) > 0:
                ax.scatter([x], [t["token_kl_mean"]], s=80, facecolors="none", edgecolors=c,
                           marker=m, zorder=3)  # fmt: skip
                shown += 1
        if shown:
            ax.set_yscale("log")
        ax.set(xlabel="file size (MB)", ylabel="KL(reference || level), nats",
               title=f"Teacher-forced KL vs {ref_label} (not drawn): score label "
               "(filled), token mean (hollow)")  # fmt: skip
    else:
        ax.text(0.5, 0.5, "teacher-forced fidelity off", ha="center", va="center",
                transform=ax.transAxes)  # fmt: skip
        ax.set_axis_off()

    ax = axes[1]
    for x, r, (c, m) in zip(size, rows, style, strict=True):
        ax.scatter([x], [r["fidelity"]["agreement_pct"]], s=80, color=c, marker=m, zorder=3)
    ax.set(xlabel="file size (MB)", ylabel="% same score as the reference", ylim=(-5, 105),
           title=f"Free decoding: score agreement with {ref_label}")  # fmt: skip

    ax = axes[2]
    ax2 = ax.twinx()
    for x, r, (c, m) in zip(size, rows, style, strict=True):
        f = r["fidelity"]
        if f["mad_expected"] is not None:
            ax.scatter([x], [f["mad_expected"]], s=80, color=c, marker=m, zorder=3)
        if f["kl_mean"] is not None:
            ax2.scatter([x], [f["kl_mean"]], s=80, facecolors="none", edgecolors=c, marker=m)
    ax.set(xlabel="file size (MB)", ylabel="MAD of expected score (filled)",
           title="Free decoding: grade drift vs the reference (lower is better)")  # fmt: skip
    ax2.set_ylabel("mean KL(reference || level), nats (hollow)")
    for a in axes:
        a.grid(alpha=0.3)
        a.margins(x=0.12, y=0.1)
    axes[3].set_xlim(axes[0].get_xlim())  # the reference (KL 0) is not drawn on a log scale
    handles = [
        Line2D([], [], color=c, marker=m, ls="", markersize=9, label=r["label"])
        for r, (c, m) in zip(rows, style, strict=True)
    ]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(rows), 8), frameon=False,
               fontsize=10)  # fmt: skip
    note = (
        " - embedded SmolLM2-135M smoke-test model: not a judge"
        if report.get("embedded_model")
        else ""
    )
    fig.suptitle(
        f"prometheus-lite bench: {len(rows)} files, {report['settings']['prompts']} prompts "
        f"(free decoding), {report['settings'].get('teacher_forced_items', 0)} teacher-forced, "
        f"{_threads(report['machine']['threads_used'])}{note}",
        fontsize=11,
    )
    fig.tight_layout(rect=(0, 0.05, 1, 0.96))
    fig.savefig(path, dpi=110)
    plt.close(fig)
