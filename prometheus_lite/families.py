"""The judge families: their output formats, score scales and prompt formats (data only).

A *family* is what a judge model was trained to read and write. ``models.py`` decides a
model's family (the one place that maps a model to its judge); ``constraint.py`` turns an
:class:`OutputFormat` into the token constraint that guarantees the answer; ``prompts.py``
fills the family's templates (``templates.py`` for Prometheus, ``family_templates.py``
for Selene and Flow-Judge).

Sources (copies in ``shared/reference/judges/``, see its SOURCES.md):

* Prometheus 2 / M-Prometheus: prometheus-eval @dcfb442 ``prompts.py`` (the format line
  "(write a feedback for criteria) [RESULT] (an integer number between 1 and 5)") and
  ``parser.py`` (``[RESULT]`` then the score, or A/B).
* Selene-1-Mini: atla-ai/selene-mini @1425d20 ``prompt-templates/*.yaml`` ("**Reasoning:**
  <Your feedback>", a blank line, "**Result:** <an integer between 1 and 5>" / "<Yes or
  No>" / "<A or B>") and the cookbooks' ``parse_atla_response`` (lines starting with
  ``**Reasoning:**`` / ``**Result:**``).
* Flow-Judge-v0.1: flowaicom/flow-judge @9865fc0 ``prompt_formatter.py`` ("Write the
  verbal feedback inside <feedback> tags", "Write the numeric score inside <score> tags
  ... always after the feedback") and ``eval_data_types.py`` (the regexes
  ``<feedback>\\s*(.*?)\\s*</feedback>`` and ``<score>\\s*(\\d+)\\s*</score>``).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

__all__ = [
    "FAMILIES",
    "FLOW_JUDGE_OUTPUT",
    "PROMETHEUS_OUTPUT",
    "SCALES",
    "SELENE_OUTPUT",
    "WINNER_LABELS",
    "Family",
    "OutputFormat",
    "Scale",
]


@dataclass(frozen=True)
class OutputFormat:
    """How a family writes its answer: ``opener FEEDBACK closer ws* marker prefix LABEL suffix``.

    The feedback may not contain ``closer`` (or, without a closer, ``marker``) nor any
    of ``forbidden``; the first one ends it. ``suffix`` is text the answer needs after
    the label (Flow-Judge's ``</score>``): appended when the result is built, not decoded.
    """

    name: str
    opener: bytes  # written first, exactly
    closer: bytes  # ends the feedback; b"" when the marker itself ends it
    marker: bytes  # introduces the label
    label_prefixes: tuple[bytes, ...]  # what may stand between the marker and the label
    close_prefix: bytes  # the label prefix written when the budget closes the feedback
    suffix: str = ""
    forbidden: tuple[bytes, ...] = ()
    # The marker counts only at the start of a line (spaces/tabs before it allowed); a
    # marker in mid-line is plain feedback text (the parser reads whole lines).
    marker_at_line_start: bool = False
    # Text written before the closer/marker when the budget closes the feedback in the
    # middle of a line ("" = nothing; see constraint.closing).
    close_separator: bytes = b" "
    # The feedback's first line must say something (the parser keeps that line).
    first_line_content: bool = False


# prometheus-eval parser.py: "[RESULT]" then optional whitespace then the label at the end.
PROMETHEUS_OUTPUT = OutputFormat(
    name="prometheus",
    opener=b"",
    closer=b"",
    marker=b"[RESULT]",
    label_prefixes=(b"", b" "),
    close_prefix=b" ",
)

# Selene: "**Reasoning:** <feedback>\n\n**Result:** <label>"; parse_atla_response keeps the
# stripped line starting "**Reasoning:**" as the critique and the one starting
# "**Result:**" as the score (int() for absolute scoring).
SELENE_OUTPUT = OutputFormat(
    name="selene",
    opener=b"**Reasoning:** ",
    closer=b"",
    marker=b"**Result:**",
    label_prefixes=(b" ", b""),
    close_prefix=b" ",
    marker_at_line_start=True,
    close_separator=b"\n\n",
    first_line_content=True,
)

# Flow-Judge: "<feedback>...</feedback>\n<score>N</score>" (the library's unit-test mock);
# the parser takes the first <score>\s*(\d+)\s*</score>, so "<score>" may not appear in the
# feedback.
FLOW_JUDGE_OUTPUT = OutputFormat(
    name="flow-judge",
    opener=b"<feedback>",
    closer=b"</feedback>",
    marker=b"<score>",
    label_prefixes=(b"", b" ", b"\n"),
    close_prefix=b"",
    suffix="</score>",
    forbidden=(b"<score>",),
    close_separator=b"",
)


@dataclass(frozen=True)
class Scale:
    """A score scale: its labels (lowest first) and the rubric fields describing them."""

    name: str
    labels: tuple[str, ...]
    fields: tuple[str, ...]  # rubric description field per label
    aliases: tuple[str, ...] = ()
    values: tuple[float, ...] = ()  # numeric value per label (expected score); default int()


SCALES = MappingProxyType(
    {
        # Prometheus, M-Prometheus, Selene absolute, Flow-Judge 5-point Likert.
        "1-5": Scale(
            "1-5",
            ("1", "2", "3", "4", "5"),
            tuple(f"score{i}_description" for i in range(1, 6)),
            aliases=("5-point", "5point", "likert-5"),
        ),
        # Flow-Judge 3-point Likert (presets *_3POINT).
        "1-3": Scale(
            "1-3",
            ("1", "2", "3"),
            tuple(f"score{i}_description" for i in range(1, 4)),
            aliases=("3-point", "3point", "likert-3"),
        ),
        # Flow-Judge binary (presets *_BINARY: scores 0 and 1).
        "0-1": Scale(
            "0-1",
            ("0", "1"),
            ("score0_description", "score1_description"),
            aliases=("binary", "pass-fail"),
        ),
        # Selene classification (classification*.yaml: "**Result:** <Yes or No>").
        "yes-no": Scale(
            "yes-no",
            ("No", "Yes"),
            ("no_description", "yes_description"),
            aliases=("yes/no", "yesno", "classification"),
            values=(0.0, 1.0),
        ),
    }
)

# Pairwise labels (Prometheus 2 relative, Selene pairwise).
WINNER_LABELS = ("A", "B")


@dataclass(frozen=True)
class Family:
    """A judge family: what its models read (prompt format) and write (output format)."""

    name: str
    output: OutputFormat
    scales: tuple[str, ...]  # keys of SCALES its absolute grading supports
    pairwise: bool  # compares two responses (A/B)
    prompt_formats: tuple[str, ...]  # prompt formats its models speak (first: the default)
    source: str


FAMILIES = MappingProxyType(
    {
        "prometheus": Family(
            "prometheus", PROMETHEUS_OUTPUT, ("1-5",), True, ("v2", "v1", "chat"),
            "prometheus-eval/prometheus-eval @dcfb442 prompts.py, parser.py",
        ),
        # M-Prometheus "can be prompted in the same way as Prometheus-2" (Unbabel model cards);
        # Qwen2.5-based, so the v2 text goes in its own (ChatML) chat template.
        "m-prometheus": Family(
            "m-prometheus", PROMETHEUS_OUTPUT, ("1-5",), True, ("chat", "v2"),
            "Unbabel/M-Prometheus-{3B,7B,14B} model cards; arXiv 2504.04953",
        ),
        "selene": Family(
            "selene", SELENE_OUTPUT, ("1-5", "yes-no"), True, ("selene",),
            "atla-ai/selene-mini @1425d20 prompt-templates/",
        ),
        "flow-judge": Family(
            "flow-judge", FLOW_JUDGE_OUTPUT, ("0-1", "1-3", "1-5"), False, ("flow-judge",),
            "flowaicom/flow-judge @9865fc0 prompt_formatter.py, eval_data_types.py",
        ),
    }
)
