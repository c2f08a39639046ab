"""What a judge is asked and what it answers (plain data, no llama.cpp)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from .rubrics import Rubric

__all__ = [
    "GradeRequest",
    "CompareRequest",
    "Request",
    "Usage",
    "Grade",
    "Comparison",
    "Failure",
    "Result",
]


@dataclass(frozen=True)
class GradeRequest:
    """Absolute grading: score one response 1-5 against a rubric."""

    instruction: str
    response: str
    rubric: Rubric
    reference_answer: str | None = None
    id: str | None = None


@dataclass(frozen=True)
class CompareRequest:
    """Relative grading: which of two responses is better (A or B)."""

    instruction: str
    response_a: str
    response_b: str
    rubric: Rubric
    reference_answer: str | None = None
    id: str | None = None


Request = GradeRequest | CompareRequest


@dataclass(frozen=True)
class Usage:
    """Token counts and timing of one judgement."""

    prompt_tokens: int
    completion_tokens: int
    cached_prompt_tokens: int  # prompt tokens reused from the previous prompt's KV cache
    latency_s: float
    # How the feedback ended: "model" when the model wrote [RESULT] itself, "budget" when
    # the feedback budget ran out and decoding was steered to close it.
    finish: Literal["model", "budget"]
    truncated_response_tokens: int = 0  # >0 only when the caller asked to truncate
    queue_s: float = 0.0  # waiting for a free slot of the engine
    prefill_s: float = 0.0  # from taking a slot to the first sampled token
    decode_s: float = 0.0  # from then to the end


@dataclass(frozen=True)
class Grade:
    """An absolute grade: feedback, the score and the model's distribution over the
    rubric's scale (1-5 by default; 1-3, 0-1 or yes-no where the judge family has them)."""

    feedback: str
    # The label as a number: "1".."5" -> 1..5, "0"/"1" -> 0/1; yes-no: "No" -> 0, "Yes" -> 1.
    score: int
    probabilities: dict[str, float]  # one key per label of the scale ("1".."5"), sums to 1
    expected_score: float  # on the scale's numbers (yes-no: P(Yes))
    usage: Usage
    model: str
    prompt_format: str
    id: str | None = None
    raw_output: str = field(default="", repr=False)  # exactly what the model generated
    # The generated token ids (for teacher-forced comparisons between quantization levels).
    output_tokens: tuple[int, ...] = field(default=(), repr=False, compare=False)
    # The answer as the family's own parser reads it: raw_output plus any text the format
    # needs after the label (Flow-Judge's "</score>").
    raw: str = field(default="", repr=False)
    label: str = ""  # the label as written ("4", "Yes")
    scale: str = "1-5"  # families.SCALES key
    family: str = "prometheus"  # families.FAMILIES key: whose format the answer is in

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Comparison:
    """A relative grade: feedback, the winner and P(A), P(B)."""

    feedback: str
    winner: Literal["A", "B"]
    probabilities: dict[str, float]  # keys "A", "B", sums to 1
    usage: Usage
    model: str
    prompt_format: str
    id: str | None = None
    raw_output: str = field(default="", repr=False)
    output_tokens: tuple[int, ...] = field(default=(), repr=False, compare=False)
    raw: str = field(default="", repr=False)  # as in Grade
    family: str = "prometheus"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Failure:
    """One item of a batch that could not be judged; the batch goes on."""

    error: str
    error_type: str
    id: str | None = None
    # True when the failure says nothing about the item (a llama.cpp decode failure):
    # a batch file does not record it, so a rerun tries the item again.
    transient: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


Result = Grade | Comparison | Failure
