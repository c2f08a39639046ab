"""GGUF metadata keys that prometheus-lite writes and reads (data only).

Keys under ``general.*``, ``llama.*`` and ``tokenizer.*`` are llama.cpp's own and
come from ``gguf.Keys``; the ones below are ours.
"""

from __future__ import annotations

# Which Prometheus prompt text and chat wrapping the model was trained on: "v1" or "v2".
# Written by ``prometheus-lite convert``; read by ``--prompt-format auto``.
PROMPT_FORMAT_KEY = "prometheus.prompt_format"

PROMPT_FORMAT_VALUES = ("v1", "v2")

# A synthetic model (``prometheus-lite convert --synthetic``): release-shaped, random weights,
# real tokenizer; for timings and memory only, its grades mean nothing. Bool, True when written.
SYNTHETIC_KEY = "prometheus.synthetic"
SYNTHETIC_RELEASE_KEY = "prometheus.synthetic.release"  # the release whose shape it has
SYNTHETIC_SEED_KEY = "prometheus.synthetic.seed"
SYNTHETIC_SOURCE_KEY = "prometheus.synthetic.source"  # which config.json and vocabulary
