"""Checkpoint to GGUF conversion (installed as prometheus_lite.convert)."""
