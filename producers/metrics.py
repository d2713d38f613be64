"""Prometheus metrics of the ingress (``mosaic_ingress_*``), in base units, on a registry
per app instance; its ``/metrics`` also shows the default registry (process metrics).

Publisher metrics wrap the EventPublisher port instead of living inside the adapter.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import Metric

from producers.publisher import EventPublisher, PublishFailed

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True)
class IngressMetrics:
    registry: CollectorRegistry
    requests: Counter
    request_seconds: Histogram
    rejections: Counter
    publish_seconds: Histogram
    publish_failures: Counter
    nonce_entries: Gauge
    state_writes_dropped: Counter
    state_write_failures: Counter

    @classmethod
    def create(cls) -> IngressMetrics:
        reg = CollectorRegistry()
        reg.register(_DefaultRegistry())
        return cls(
            registry=reg,
            requests=Counter("mosaic_ingress_requests_total", "HTTP requests by route and status",
                             ["route", "status"], registry=reg),
            request_seconds=Histogram("mosaic_ingress_request_duration_seconds", "Request latency",
                                      ["route"], buckets=_LATENCY_BUCKETS, registry=reg),
            rejections=Counter("mosaic_ingress_rejections_total", "Refused requests by reason",
                               ["reason"], registry=reg),
            publish_seconds=Histogram("mosaic_ingress_publish_duration_seconds",
                                      "Produce to broker confirmation", buckets=_LATENCY_BUCKETS,
                                      registry=reg),
            publish_failures=Counter("mosaic_ingress_publish_failures_total",
                                     "Events the broker did not confirm", registry=reg),
            nonce_entries=Gauge("mosaic_ingress_nonce_cache_entries", "Remembered nonces",
                                registry=reg),
            state_writes_dropped=Counter("mosaic_ingress_state_writes_dropped_total",
                                         "requests refused (503): user_state projection full",
                                         registry=reg),
            state_write_failures=Counter("mosaic_ingress_state_write_failures_total",
                                         "user_state batches the store refused", registry=reg),
        )


class _DefaultRegistry:
    """The process-wide default registry (process_*, python_*, dead letters) inside an
    app's own registry, so one scrape of the ingress shows both."""

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()


class MeteredPublisher:
    """EventPublisher wrapper that times each publish and counts failures."""

    def __init__(self, inner: EventPublisher, metrics: IngressMetrics) -> None:
        self._inner = inner
        self._metrics = metrics

    async def publish(self, topic: str, key: str, event: object) -> None:
        started = time.perf_counter()
        try:
            await self._inner.publish(topic, key, event)
        except PublishFailed:
            self._metrics.publish_failures.inc()
            raise
        self._metrics.publish_seconds.observe(time.perf_counter() - started)

    def healthy(self) -> bool:
        return self._inner.healthy()

    async def close(self) -> None:
        await self._inner.close()
