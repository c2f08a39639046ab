"""The judge families' own output parsers, loaded from the authors' files in shared/.

Nothing is copied: each parser is executed from ``shared/reference/judges/`` (see its
SOURCES.md), so a test that runs them checks our answers against the real parsers.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

JUDGES = ("reference", "judges")


def _exec(path: Path) -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": f"reference_{path.stem}"}
    exec(compile(path.read_text(encoding="utf-8"), str(path), "exec"), namespace)  # noqa: S102
    return namespace


def prometheus_parser(shared: Path) -> Callable[[str, str], tuple[Any, Any]]:
    """prometheus-eval parser.py ``parse_output(output, mode)`` -> (output, result)."""
    return _exec(shared.joinpath(*JUDGES, "m-prometheus", "prometheus-eval", "parser.py"))[
        "parse_output"
    ]


def flow_parser(shared: Path) -> Callable[..., Any]:
    """flow-judge eval_data_types.py ``EvalOutput.parse(response, fail_on_parse_error)``."""
    ns = _exec(shared.joinpath(*JUDGES, "flow-judge", "flow-judge_main", "eval_data_types.py"))
    return ns["EvalOutput"].parse


def selene_parsers(shared: Path) -> tuple[Callable[[str], Any], Callable[[str], Any]]:
    """The cookbooks' ``parse_atla_response``: (absolute: int score, hallucination: str)."""
    cells = shared.joinpath(*JUDGES, "selene-mini", "cookbooks", "extracted_cells")
    absolute = _exec(cells / "HF_Quickstart_Absolute_Scoring__cell32__parse_atla_response.py")
    labels = _exec(cells / "HF_Quickstart_Hallucination__cell31__parse_atla_response.py")
    return absolute["parse_atla_response"], labels["parse_atla_response"]
