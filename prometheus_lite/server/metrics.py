"""Prometheus metrics of the service (prometheus-client, one registry per app).

Token throughput is exposed as counters, the Prometheus way: tokens per second is
``rate(prometheus_lite_generated_tokens_total[1m])``.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["LATENCY_BUCKETS", "Metrics"]

# Seconds: a cached short grade on a GPU up to a long feedback on a CPU.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)


class Metrics:
    """Every metric the service exports, registered in its own ``registry``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "prometheus_lite_requests",
            "HTTP requests by endpoint and outcome.",
            ["endpoint", "outcome"],
            registry=r,
        )
        self.request_latency = Histogram(
            "prometheus_lite_request_duration_seconds",
            "HTTP request latency (to the last byte) by endpoint.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.judgement_latency = Histogram(
            "prometheus_lite_judgement_duration_seconds",
            "Time from submission to result of one judgement, queueing included, by mode.",
            ["mode"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.judgements = Counter(
            "prometheus_lite_judgements",
            "Judgements by mode and outcome (ok, invalid, transient, timeout, cancelled).",
            ["mode", "outcome"],
            registry=r,
        )
        self.prompt_tokens = Counter(
            "prometheus_lite_prompt_tokens", "Prompt tokens of finished judgements.", registry=r
        )
        self.cached_prompt_tokens = Counter(
            "prometheus_lite_cached_prompt_tokens",
            "Prompt tokens reused from the KV cache (not recomputed).",
            registry=r,
        )
        self.generated_tokens = Counter(
            "prometheus_lite_generated_tokens", "Generated tokens (feedback + result).", registry=r
        )
        self.queue_depth = Gauge(
            "prometheus_lite_queue_depth", "Judgements in the engine's queue, waiting for a slot.",
            registry=r,
        )
        self.busy_slots = Gauge(
            "prometheus_lite_busy_slots", "Engine slots running a judgement.", registry=r
        )
        self.slots = Gauge("prometheus_lite_slots", "Engine slots (judge.n_parallel).", registry=r)
        self.queue_capacity = Gauge(
            "prometheus_lite_queue_capacity",
            "Judgements admitted at once (slots + --max-queue); past it, 429.",
            registry=r,
        )
        self.ready = Gauge("prometheus_lite_ready", "1 when the model is loaded.", registry=r)

    def watch(self, engine: Any) -> None:
        """Read the engine's live state at every scrape: its busy slots and queue, and
        its KV cache cells where the engine reports them."""
        self.busy_slots.set_function(lambda: engine.busy)
        self.queue_depth.set_function(lambda: engine.queue_depth)
        for attr, help_text in (
            ("kv_cells_total", "KV cache cells of the context (all sequences)."),
            ("kv_cells_used", "KV cache cells in use (running jobs and the prefix cache)."),
        ):
            if getattr(engine, attr, None) is not None:
                gauge = Gauge(f"prometheus_lite_{attr}", help_text, registry=self.registry)
                gauge.set_function(lambda a=attr: getattr(engine, a))
