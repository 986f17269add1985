"""Metrics: a private registry per app, the counters and histograms the issue lists."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from modelfab.serve.metrics import Metrics


def samples(m: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(m.render().decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_private_registries_do_not_mix() -> None:
    a, b = Metrics(), Metrics()
    a.predictions.labels("m", "ok").inc(3)
    a.low_confidence.labels("m").inc()
    a.observe_batch("m", 8, 0.02)
    a.observe_batch("m", 1, 0.004)
    sa, sb = samples(a), samples(b)
    assert sa[("modelfab_predictions_total", (("label", "ok"), ("model", "m")))] == 3
    assert sa[("modelfab_low_confidence_total", (("model", "m"),))] == 1
    assert sa[("modelfab_batch_size_count", (("model", "m"),))] == 2
    assert sa[("modelfab_batch_size_sum", (("model", "m"),))] == 9
    assert sa[("modelfab_batch_size_bucket", (("le", "4.0"), ("model", "m")))] == 1
    assert sa[("modelfab_inference_latency_seconds_count", (("model", "m"),))] == 2
    assert not any(name == "modelfab_predictions_total" for name, _ in sb)


def test_request_metrics() -> None:
    m = Metrics()
    m.requests.labels("/v1/models/{name}:predict", "POST", "200").inc()
    m.request_latency.labels("/v1/models/{name}:predict").observe(0.01)
    m.ready.set(1)
    s = samples(m)
    assert s[("modelfab_requests_total", (("method", "POST"), ("route", "/v1/models/{name}:predict"),
                                          ("status", "200")))] == 1
    assert s[("modelfab_ready", ())] == 1
