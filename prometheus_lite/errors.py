"""Every error prometheus-lite raises on purpose.

Library code raises these; only the CLI turns them into messages and exit codes
(set ``PROMETHEUS_LITE_DEBUG=1`` to see the traceback instead). Each message says
what was wrong and how to fix it.
"""

from __future__ import annotations

__all__ = [
    "check_unicode",
    "PrometheusLiteError",
    "RubricError",
    "PromptError",
    "PromptTooLongError",
    "ModelError",
    "ModelNotFoundError",
    "InvalidModelFileError",
    "DecodeError",
    "BatchInputError",
    "ClusterError",
    "ConversionError",
    "QuantizationError",
]


class PrometheusLiteError(Exception):
    """Base class: anything prometheus-lite reports to the user."""


class RubricError(PrometheusLiteError, ValueError):
    """A rubric is unknown, incomplete or malformed."""


class PromptError(PrometheusLiteError, ValueError):
    """A prompt cannot be built from the given inputs (bad field, unknown format)."""


class PromptTooLongError(PromptError):
    """The rendered prompt does not fit the model's context window."""

    def __init__(self, message: str, *, prompt_tokens: int, n_ctx: int, needed: int) -> None:
        super().__init__(message)
        self.prompt_tokens = prompt_tokens
        self.n_ctx = n_ctx
        self.needed = needed


class ModelError(PrometheusLiteError):
    """A model cannot be resolved, read or loaded."""


class ModelNotFoundError(ModelError, FileNotFoundError):
    """The model path or hub reference does not resolve to a file."""


class InvalidModelFileError(ModelError, ValueError):
    """The file exists but is not a usable GGUF (wrong format, truncated, corrupt)."""


class DecodeError(ModelError):
    """llama.cpp failed to decode (out of memory, no room in the KV cache).

    Transient: the item itself is fine and may succeed on a retry, so a batch never
    records it as that item's final result.
    """


class BatchInputError(PrometheusLiteError, ValueError):
    """A batch input line is malformed (reported per line; the run goes on)."""


class ClusterError(PrometheusLiteError):
    """A Ray cluster cannot be reached, or a distributed job failed past its retries."""


class ConversionError(PrometheusLiteError):
    """A checkpoint cannot be converted to GGUF."""


class QuantizationError(PrometheusLiteError):
    """A tensor or file cannot be quantized."""


def check_unicode(what: str, text: str, error: type[PrometheusLiteError]) -> None:
    """Raise ``error`` if ``text`` cannot be written as UTF-8 (a lone surrogate, e.g. from a
    ``"\\ud800"`` escape in JSON input), naming ``what`` and the character."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise error(
            f"{what} is not valid Unicode: {text[exc.start]!r} at character {exc.start} is "
            "half of a surrogate pair (the input was mis-encoded); fix that text"
        ) from None
