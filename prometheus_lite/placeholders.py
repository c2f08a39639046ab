"""``{name}`` templates: filled in one pass, and cut back into their values (pure Python).

:func:`fill` is how every prompt text is made (``prompts.py``, ``family_prompts.py``):
one-pass replacement, never ``str.format``, since graded text contains braces. The
recognisers (``recognize.py`` for Prometheus prompts, ``recognize_families.py`` for
Selene and Flow-Judge) read a prompt a caller already rendered. Graded text may contain
the template's own literal text, so a filled template can have several readings:
:func:`fillings` returns every one (up to a bound) and the caller decides which are
plausible, refusing the prompt when more than one remains.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from .errors import PromptError

__all__ = ["MAX_SPLITS", "PLACEHOLDER", "ambiguous", "fill", "fillings", "split_template"]

PLACEHOLDER = re.compile(r"\{([A-Za-z0-9_]+)\}")
MAX_SPLITS = 64  # past this many ways to cut a text, it is refused as ambiguous anyway


def fill(template: str, values: Mapping[str, str]) -> str:
    """Replace every ``{name}`` in one pass; replaced text is never scanned again. The
    values must name exactly the template's placeholders (else a bug, not a user error)."""
    names = set(PLACEHOLDER.findall(template))
    if names != set(values):
        raise AssertionError(f"template placeholders {sorted(names)} != {sorted(values)}")
    return PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


def split_template(template: str) -> tuple[list[str], list[str]]:
    """(literals, placeholder names): ``len(literals) == len(names) + 1``."""
    parts = PLACEHOLDER.split(template)
    return parts[0::2], parts[1::2]


def fillings(template: str, text: str) -> list[dict[str, str]]:
    """Every assignment of placeholder values that fills ``template`` to exactly ``text``
    (at most MAX_SPLITS + 1 of them); empty when the text is not this template filled."""
    lits, names = split_template(template)
    head, foot = lits[0], lits[-1]
    if len(text) < len(head) + len(foot) or not (text.startswith(head) and text.endswith(foot)):
        return []
    body = text[len(head) : len(text) - len(foot)]
    return [dict(zip(names, values, strict=True)) for values in _splits(body, lits[1:-1])]


def _splits(body: str, seps: list[str]) -> list[list[str]]:
    """Every way to cut ``body`` at the separators in order (the values between them)."""
    out: list[list[str]] = []

    def cut(start: int, k: int, values: list[str]) -> None:
        if k == len(seps):
            out.append([*values, body[start:]])
            return
        i = body.find(seps[k], start)
        while i >= 0 and len(out) <= MAX_SPLITS:
            cut(i + len(seps[k]), k + 1, [*values, body[start:i]])
            i = body.find(seps[k], i + 1)

    cut(0, 0, [])
    return out


def ambiguous(template: str, a: dict[str, str], b: dict[str, str]) -> PromptError:
    """The error for a text that fills ``template`` two ways (``a`` and ``b``): it names
    the section header the graded text repeats and the values it blurs."""
    lits, names = split_template(template)
    seps = lits[1:-1]
    k = next(i for i, n in enumerate(names) if a[n] != b[n])
    sep = seps[min(k, len(seps) - 1)]
    lines = [ln.strip() for ln in sep.split("\n") if ln.strip() not in ("", "```")]
    header = lines[0] if lines else sep.strip()  # the line a reader knows, not a fence
    inside = [n for n in names if a[n] != b[n]]
    return PromptError(
        f"the graded text contains the template's own section header {header!r}, so "
        f"where {' and '.join(repr(n) for n in inside)} begin and end cannot be told "
        "apart; send the parts as JSON instead (POST /v1/grade or /v1/compare, or "
        "Judge.grade / Judge.compare), or remove that header line from the text"
    )
