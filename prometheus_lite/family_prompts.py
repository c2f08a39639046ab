"""Fill the Selene-1-Mini and Flow-Judge-v0.1 templates (pure Python; no llama_cpp).

The texts are data in ``family_templates.py``; this module maps a grade or compare item
onto each family's variables exactly as the family's own code does, and says which
scales each family grades on. ``prompts.build_prompt`` wraps the result in the model's
chat template (one user message, no system prompt, as both families' libraries send it).
Values are inserted with one-pass replacement, never ``str.format``: graded text
contains braces.
"""

from __future__ import annotations

from . import family_templates as FT
from .errors import PromptError
from .families import FAMILIES
from .placeholders import fill
from .rubrics import Rubric

__all__ = ["check_scale", "render_flow_judge", "render_selene", "selene_template"]

def check_scale(family: str, mode: str, rubric: Rubric) -> None:
    """Raise a PromptError saying what to do when ``family`` cannot grade this way."""
    fam = FAMILIES[family]
    if mode == "relative":
        if not fam.pairwise:
            raise PromptError(
                f"{family} models grade one response at a time; they have no pairwise "
                "(compare) prompt. Use a Prometheus 2, M-Prometheus or Selene model to compare"
            )
        return
    if rubric.scale not in fam.scales:
        able = [f.name for f in FAMILIES.values() if rubric.scale in f.scales]
        raise PromptError(
            f"the rubric's scale is '{rubric.scale}', but {family} models grade on "
            f"{' or '.join(fam.scales)}; use a rubric on one of those scales, or a model of "
            f"a family that supports '{rubric.scale}' ({', '.join(able) or 'none'})"
        )


def selene_template(mode: str, rubric: Rubric, with_reference: bool) -> str:
    """The Selene template for this item: pairwise, classification (yes-no) or absolute."""
    if mode == "relative":
        return FT.SELENE_PAIRWISE  # Selene's pairwise template has no reference slot
    if rubric.scale == "yes-no":
        if with_reference:
            return FT.SELENE_CLASSIFICATION_WITH_REFERENCE
        return FT.SELENE_CLASSIFICATION
    return FT.SELENE_ABSOLUTE_WITH_REFERENCE if with_reference else FT.SELENE_ABSOLUTE


def render_selene(
    mode: str,
    instruction: str,
    responses: tuple[str, ...],
    rubric: Rubric,
    reference_answer: str | None,
) -> str:
    """The filled Selene template (``responses``: one for absolute, A and B for relative).

    A relative item's reference answer is not shown: Selene's pairwise template has none.
    """
    check_scale("selene", mode, rubric)
    values = {"user_input": instruction, "rubric_objective": rubric.criteria}
    if mode == "relative":
        values["assistant_response_a"], values["assistant_response_b"] = responses
    else:
        values["assistant_response"] = responses[0]
        if rubric.scale == "yes-no":
            values["rubric_yes_description"] = rubric.yes_description
            values["rubric_no_description"] = rubric.no_description
        else:
            for label, text in rubric.descriptions().items():
                values[f"rubric_score_{label}_description"] = text
        if reference_answer is not None:
            values["reference_response"] = reference_answer
    template = selene_template(mode, rubric, reference_answer is not None)
    return fill(template, values)


def format_vars(variables: list[tuple[str, str]]) -> str:
    """flow-judge ``format_vars``: ``<key>\\nvalue\\n</key>`` per variable, joined by newlines."""
    parts = []
    for key, value in variables:
        tag = key.lower().replace(" ", "_")
        parts.append(fill(FT.FLOW_VARIABLE.replace("{tag}", tag), {"value": value}))
    return "\n".join(parts)


def format_rubric(rubric: Rubric) -> str:
    """flow-judge ``format_rubric``: ``- Score N: description`` lines, lowest score first."""
    items = sorted(rubric.descriptions().items(), key=lambda kv: int(kv[0]))
    return "\n".join(
        fill(FT.FLOW_RUBRIC_LINE, {"score": label, "description": text}) for label, text in items
    )


def render_flow_judge(
    instruction: str, response: str, rubric: Rubric, reference_answer: str | None
) -> str:
    """The filled Flow-Judge template, variables named as its response-evaluation presets
    name them (``query``, ``reference_answer``; output ``response``). An empty
    instruction without a reference has no inputs: the library's no-inputs template."""
    check_scale("flow-judge", "absolute", rubric)
    inputs: list[tuple[str, str]] = []
    if instruction or reference_answer is not None:
        inputs.append(("query", instruction))
    if reference_answer is not None:
        inputs.append(("reference_answer", reference_answer))
    values = {
        "OUTPUT": format_vars([("response", response)]),
        "EVALUATION_CRITERIA": rubric.criteria,
        "RUBRIC": format_rubric(rubric),
    }
    if not inputs:
        return fill(FT.FLOW_JUDGE_PROMPT_NO_INPUTS, values)
    values["INPUTS"] = format_vars(inputs)
    return fill(FT.FLOW_JUDGE_PROMPT, values)
