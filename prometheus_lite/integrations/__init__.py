"""Integrations with the tools Prometheus users already run.

- ``prometheus_lite.integrations.prometheus_eval``: ``GGUF``, a local model for the official
  ``prometheus-eval`` library (``pip install "prometheus-lite[integrations]"``).
- ``prometheus_lite.integrations.ray``: batch grading across a Ray cluster with Ray Data.

Neither module is imported here: each pulls in its (optional) library only when used.
"""
