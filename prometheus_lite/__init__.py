"""prometheus-lite: a quantized, on-device Prometheus LLM judge.

    >>> from prometheus_lite import Judge
    >>> judge = Judge("prometheus-7b-v2.0.Q4_K_M.gguf")          # or Judge() for the demo model
    >>> g = judge.grade("What is 2+2?", "4", rubric="reasoning")
    >>> g.score, g.probabilities, g.feedback
"""

from __future__ import annotations

from .errors import (
    BatchInputError,
    InvalidModelFileError,
    ModelError,
    ModelNotFoundError,
    PrometheusLiteError,
    PromptError,
    PromptTooLongError,
    RubricError,
)
from .judge import Judge, render_prompt
from .llama import Sampling
from .prompts import Prompt, PromptFormat
from .results import CompareRequest, Comparison, Failure, Grade, GradeRequest, Usage
from .rubrics import PRESETS, Rubric, load_rubric

__version__ = "0.1.0"

__all__ = [
    "Judge",
    "Sampling",
    "render_prompt",
    "Rubric",
    "PRESETS",
    "load_rubric",
    "Prompt",
    "PromptFormat",
    "GradeRequest",
    "CompareRequest",
    "Grade",
    "Comparison",
    "Failure",
    "Usage",
    "PrometheusLiteError",
    "RubricError",
    "PromptError",
    "PromptTooLongError",
    "ModelError",
    "ModelNotFoundError",
    "InvalidModelFileError",
    "BatchInputError",
]
