"""Measuring prometheus-lite: latency, memory and grading fidelity.

Installed as ``prometheus_lite.bench``; the ``test_*.py`` files here are pytest-benchmark suites.
"""
