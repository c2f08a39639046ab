"""The paper-layout tables of ``prometheus-lite eval`` (markdown, from results.json's content)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .published import RELEASE_LABELS

__all__ = ["format_table"]


def _num(x: float | None, ci: Sequence[float] | None = None, *, pct: bool = False) -> str:
    if x is None:
        return "n/a"
    k = 100.0 if pct else 1.0
    fmt = "{:.1f}" if pct else "{:.3f}"
    text = fmt.format(k * x) + (" %" if pct else "")
    if ci is not None:
        text += f" [{fmt.format(k * ci[0])}, {fmt.format(k * ci[1])}]"
    return text


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def format_table(results: Mapping[str, Any]) -> str:
    """The paper-layout tables (markdown) for results.json's content."""
    metrics, model = results["metrics"], results["model"]
    st = results["settings"]
    conf = int(round(100 * st["bootstrap"]["confidence"]))
    ours = f"this run: {model['name'] or model['path']}"
    release = model.get("release")
    pub = {(p["release"], p["set"], p["metric"]): p for p in results["published"]}
    L = [
        f"# prometheus-lite eval: {model['name'] or model['path']}",
        "",
        (
            f"Score per item: {results['protocol']}. Sampling: temperature "
            f"{st.get('temperature')}, top_p {st.get('top_p')}, repetition penalty "
            f"{st.get('repetition_penalty')}, at most {st.get('max_tokens')} new tokens"
            f"{' (greedy)' if st.get('greedy') or st.get('score') == 'expected' else ''}. "
            f"Brackets: {conf} % bootstrap confidence intervals (BCa, "
            f"{st['bootstrap']['n_resamples']} resamples of the items). Published figures "
            "are from the papers, as quoted in shared/reference/prometheus-format.md."
        ),
        "",
    ]
    if results.get("embedded_model"):
        L += [
            "> **The embedded SmolLM2-135M model is not a judge**: these numbers mean nothing; "
            "they show that the pipeline runs. Evaluate a Prometheus GGUF with --model.",
            "",
        ]
    corr = [n for n, m in metrics.items() if m["kind"] in ("correlation", "unlabelled")]
    if corr:
        L += ["## Absolute grading: correlation with the labels", ""]
        head = ["evaluator"]
        for n in corr:
            head += [f"{n} Pearson", f"{n} Spearman", f"{n} Kendall"]
        L += [_row(head), "|" + "---|" * len(head)]
        cells = [ours]
        for n in corr:
            m = metrics[n]
            if m["kind"] == "unlabelled":
                cells += ["no labels", "-", "-"]
            else:
                cells += [_num(m[k], m[f"{k}_ci"]) for k in ("pearson", "spearman", "kendall")]
        L.append(_row(cells))
        for rel, label in RELEASE_LABELS.items():
            vals = [pub.get((rel, n, "pearson")) for n in corr]
            if any(vals):
                mark = " (this model's release)" if rel == release else ""
                cells = [f"{label}, published{mark}"]
                for v in vals:
                    cells += [_num(v["value"]) if v else "-", "-", "-"]
                L.append(_row(cells))
        L.append("")
        for n in corr:
            m = metrics[n]
            L.append(
                f"- {n}: {m['n']} of {m['items']} items scored"
                + (f" (label: {m['label_field']})" if m.get("label_field") else "")
                + (
                    " - correlations undefined: the scores or the labels are all equal"
                    if m["kind"] == "correlation" and m["n"] >= 2 and m["pearson"] is None
                    else ""
                )
                + f"; {m['skipped_too_long']} skipped as too long for the context"
                + (f", {m['skipped_error']} with errors" if m["skipped_error"] else "")
                + (f", {m['incomplete']} incomplete (rerun to finish)" if m["incomplete"] else "")
                + (
                    f"; mean score {_num(m['mean_score'])}, sample scores "
                    + ", ".join(f"{k}: {v}" for k, v in m["sample_scores"].items())
                    if m["kind"] == "unlabelled"
                    else ""
                )
                + (
                    f"; {len(m['input_errors'])} input lines rejected"
                    if m.get("input_errors")
                    else ""
                )
                + "."
            )
        L.append("")
    pairs = [n for n, m in metrics.items() if m["kind"] == "pairs"]
    if pairs:
        L += ["## Pairwise accuracy from absolute scores", ""]
        for n in pairs:
            m = metrics[n]
            srcs = sorted(m.get("by_source", {}))
            head = ["evaluator", "accuracy", "ties", "accuracy without ties", *srcs]
            L += [_row(head), "|" + "---|" * len(head)]
            L.append(
                _row(
                    [
                        ours,
                        _num(m["accuracy"], m["accuracy_ci"], pct=True),
                        str(m["ties"]),
                        _num(m["accuracy_without_ties"], pct=True),
                    ]
                    + [_num(m["by_source"][s]["accuracy"], pct=True) for s in srcs]
                )
            )
            for rel, label in RELEASE_LABELS.items():
                v = pub.get((rel, n, "accuracy"))
                if v:
                    mark = " (this model's release)" if rel == release else ""
                    L.append(
                        _row(
                            [
                                f"{label}, published{mark}: {v['protocol']}",
                                _num(v["value"], pct=True),
                                "-",
                                "-",
                            ]
                            + ["-"] * len(srcs)
                        )
                    )
            L += [
                "",
                (
                    f"- {n}: {m['n']} pairs ({m['right']} right, {m['wrong']} wrong, {m['ties']} "
                    f"ties; ties count as not right); {m['pairs_skipped']} pairs skipped "
                    f"({m['skipped_too_long']} responses too long for the context)."
                ),
                "",
            ]
    return "\n".join(L) + "\n"
