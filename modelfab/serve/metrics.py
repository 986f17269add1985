"""Prometheus metrics in a private registry per app (two apps in one process never mix counters)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    """Requests, latencies, batch sizes, predictions per class, low-confidence and feedback counts."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "modelfab_requests", "HTTP requests by route template, method and status.", ["route", "method", "status"],
            registry=r,
        )
        self.request_latency = Histogram(
            "modelfab_request_latency_seconds", "HTTP request latency by route template.", ["route"],
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.inference_latency = Histogram(
            "modelfab_inference_latency_seconds", "Seconds per model batch (the runtime call).", ["model"],
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.batch_size = Histogram(
            "modelfab_batch_size", "Inputs per model batch.", ["model"], buckets=BATCH_BUCKETS, registry=r
        )
        self.predictions = Counter(
            "modelfab_predictions", "Predictions by model and predicted class.", ["model", "label"], registry=r
        )
        self.low_confidence = Counter(
            "modelfab_low_confidence", "Predictions below the confidence threshold (kept for review).", ["model"],
            registry=r,
        )
        self.feedback = Counter("modelfab_feedback", "Feedback received by model and kind.", ["model", "kind"],
                                registry=r)
        self.queue_depth = Gauge("modelfab_queue_depth", "Inputs waiting for a batch.", ["model"], registry=r)
        self.ready = Gauge("modelfab_ready", "1 once every model is loaded and warmed up.", registry=r)

    def observe_batch(self, model: str, size: int, seconds: float) -> None:
        self.batch_size.labels(model).observe(size)
        self.inference_latency.labels(model).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
