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

# A synthetic model (``prometheus-lite convert --synthetic``): release-shaped, random weights,
# real tokenizer; for timings and memory only, its grades mean nothing. Bool, True when written.
SYNTHETIC_KEY = "prometheus.synthetic"
SYNTHETIC_RELEASE_KEY = "prometheus.synthetic.release"  # the release whose shape it has
SYNTHETIC_SEED_KEY = "prometheus.synthetic.seed"
SYNTHETIC_SOURCE_KEY = "prometheus.synthetic.source"  # which config.json and vocabulary
