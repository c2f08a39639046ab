"""GGUF metadata keys that prometheus-lite writes and reads (data only).

Keys under ``general.*``, ``llama.*`` and ``tokenizer.*`` are llama.cpp's own and
come from ``gguf.Keys``; the ones below are ours.
"""

from __future__ import annotations

# Which prompt text and wrapping the model was trained on: "v1" or "v2" (Prometheus
# wrappers), "chat" (Prometheus 2 text in the model's own chat template: M-Prometheus),
# "selene" or "flow-judge". Written by ``prometheus-lite convert``; read by
# ``--prompt-format auto``.
PROMPT_FORMAT_KEY = "prometheus.prompt_format"

PROMPT_FORMAT_VALUES = ("v1", "v2", "chat", "selene", "flow-judge")

# Which judge family the model belongs to (prompt templates, output format, label sets:
# ``prometheus_lite.families.FAMILIES``). Written by ``prometheus-lite convert``.
FAMILY_KEY = "prometheus.family"

FAMILY_VALUES = ("prometheus", "m-prometheus", "selene", "flow-judge")
