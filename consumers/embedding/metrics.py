"""Prometheus metrics of the embedding agent, and timing wrappers around its seams.

Metrics wrap the interfaces (embedder, vector index, traits service) instead of living
inside them, so the adapters stay metric-free. Base units: seconds, counts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from prometheus_client import Counter, Gauge, Histogram

from profiles.embedders import Embedder, Vectors
from profiles.index import Condition, Match, MetaValue, Vector, VectorIndex, VectorRecord

EVENTS = Counter(
    "mosaic_embedding_events",
    "Opt-in topic records by event type and outcome (indexed, unchanged, removed, "
    "blocked, profile_failed, superseded, dead_lettered).",
    ["type", "outcome"],
)
STAGE_SECONDS = Histogram(
    "mosaic_embedding_stage_seconds",
    "Time per stage call: traits (one user), embed, index, publish, state (one batch).",
    ["stage"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
BATCH_SIZE = Histogram(
    "mosaic_embedding_batch_records", "Records per batch taken from the opt-in topic.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
RETRIES = Counter(
    "mosaic_embedding_retries",
    "Batch stages retried after an outage (S3, embedder, index, Kafka, Cassandra).",
    ["stage"],
)
CONSUMER_LAG = Gauge(
    "mosaic_embedding_consumer_lag_records",
    "Records behind the partition's high watermark after the last batch.",
    ["topic", "partition"],
)
THROTTLED = Counter(
    "mosaic_embedding_throttled_calls",
    "Calls to an external API answered 429 (quota exhausted), by API (vertex, pinecone).",
    ["api"],
)
QUOTA_SHARE = Gauge(
    "mosaic_embedding_quota_share_ratio",
    "This worker's share of the project quota: its assigned opt-in partitions / all.",
)
FATAL = Counter(
    "mosaic_embedding_fatal_errors",
    "Batches that stopped the worker (a bug or a non-retryable configuration error).",
)


@contextmanager
def timed(stage: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        STAGE_SECONDS.labels(stage=stage).observe(time.perf_counter() - start)


class TimedEmbedder(Embedder):
    def __init__(self, inner: Embedder) -> None:
        self.inner, self.model, self.dim = inner, inner.model, inner.dim
        self.batch_size = inner.batch_size

    def _embed(self, texts: list[str]) -> Vectors:
        with timed("embed"):
            return self.inner.embed(texts)


class TimedVectorIndex(VectorIndex):
    """Delegates to ``inner``'s adapter methods (validation already happened here)."""

    def __init__(self, inner: VectorIndex) -> None:
        self.inner, self.dim = inner, inner.dim

    def _upsert(self, records: list[VectorRecord]) -> None:
        with timed("index"):
            self.inner._upsert(records)

    def _fetch(self, ids: list[str]) -> dict[str, VectorRecord]:
        with timed("index"):
            return self.inner._fetch(ids)

    def _query(self, vector: Vector, top_k: int, conditions: tuple[Condition, ...],
               include_vectors: bool) -> list[Match]:
        with timed("index"):
            return self.inner._query(vector, top_k, conditions, include_vectors)

    def _update_metadata(self, record_id: str, fields: dict[str, MetaValue]) -> bool:
        with timed("index"):
            return self.inner._update_metadata(record_id, fields)

    def _delete(self, ids: list[str]) -> None:
        with timed("index"):
            self.inner._delete(ids)

    def list_ids(self) -> list[str]:
        return self.inner.list_ids()

    def count(self) -> int:
        return self.inner.count()


def throttle_counter(api: str) -> Callable[[str], None]:
    """A ``Retrier.on_throttled`` hook counting 429 answers of ``api``."""
    counter = THROTTLED.labels(api=api)
    return lambda _what: counter.inc()


def record_lag(topic: str, partition: int, lag: int) -> None:
    CONSUMER_LAG.labels(topic=topic, partition=str(partition)).set(max(lag, 0))


def count_events(items: Sequence[tuple[str, str]]) -> None:
    """``items``: (event type, outcome) per record."""
    for kind, outcome in items:
        EVENTS.labels(type=kind, outcome=outcome).inc()


