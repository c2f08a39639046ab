"""Measuring prometheus-lite: latency, memory and grading fidelity (installed as prometheus_lite.bench)."""
