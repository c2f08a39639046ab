"""GGUF metadata keys that prometheus-lite writes and reads (data only).

Keys under ``general.*``, ``llama.*`` and ``tokenizer.*`` are llama.cpp's own and
come from ``gguf.Keys``; the ones below are ours.
"""

from __future__ import annotations

# Which Prometheus prompt text and chat wrapping the model was trained on: "v1" or "v2".
# Written by ``prometheus-lite convert``; read by ``--prompt-format auto``.
PROMPT_FORMAT_KEY = "prometheus.prompt_format"

PROMPT_FORMAT_VALUES = ("v1", "v2")
