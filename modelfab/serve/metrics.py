"""Prometheus metrics in a private registry per app (two apps in one process never mix counters)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
GENERATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
TOKENS_PER_S_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)


class Metrics:
    """Requests, latencies, batch sizes, predictions per class, low-confidence and feedback counts;
    chat requests, tokens, time to first token and tokens/s; embedding requests."""

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
        self.chat_requests = Counter(
            "modelfab_chat_requests", "Chat completion requests by model and status (HTTP code, cancelled, error).",
            ["model", "status"], registry=r,
        )
        self.chat_prompt_tokens = Counter("modelfab_chat_prompt_tokens", "Prompt tokens of completed chat requests.",
                                          ["model"], registry=r)
        self.chat_completion_tokens = Counter("modelfab_chat_completion_tokens", "Generated tokens.", ["model"],
                                              registry=r)
        self.chat_ttft = Histogram(
            "modelfab_chat_time_to_first_token_seconds",
            "Seconds from a chat request's arrival to its first generated text (queueing included).", ["model"],
            buckets=GENERATION_BUCKETS, registry=r,
        )
        self.chat_generation = Histogram(
            "modelfab_chat_generation_seconds", "Seconds a chat model spent generating one completion.", ["model"],
            buckets=GENERATION_BUCKETS, registry=r,
        )
        self.chat_tokens_per_s = Histogram(
            "modelfab_chat_tokens_per_second", "Generated tokens per second of generation, per completion.", ["model"],
            buckets=TOKENS_PER_S_BUCKETS, registry=r,
        )
        self.chat_pending = Gauge("modelfab_chat_pending", "Chat and embedding requests running or queued.",
                                  registry=r)
        self.embedding_requests = Counter("modelfab_embedding_requests", "Embedding requests by model and status.",
                                          ["model", "status"], registry=r)
        self.embedding_inputs = Counter("modelfab_embedding_inputs", "Texts embedded.", ["model"], registry=r)

    def observe_batch(self, model: str, size: int, seconds: float) -> None:
        self.batch_size.labels(model).observe(size)
        self.inference_latency.labels(model).observe(seconds)

    def observe_generation(self, model: str, prompt_tokens: int, completion_tokens: int, first_token_s: float,
                           generation_s: float) -> None:
        """One finished chat completion: token counts, time to first token, generation time and tokens/s."""
        self.chat_prompt_tokens.labels(model).inc(prompt_tokens)
        self.chat_completion_tokens.labels(model).inc(completion_tokens)
        self.chat_ttft.labels(model).observe(first_token_s)
        self.chat_generation.labels(model).observe(generation_s)
        if completion_tokens > 0 and generation_s > 0:
            self.chat_tokens_per_s.labels(model).observe(completion_tokens / generation_s)

    def render(self) -> bytes:
        return generate_latest(self.registry)
