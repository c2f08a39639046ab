"""prometheus-lite: a quantized, on-device Prometheus LLM judge."""
