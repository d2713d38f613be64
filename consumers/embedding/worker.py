"""Build the embedding agent from settings and run it: the one place that wires it.

Programmatic use (demo, tests, bench)::

    report = run_embedding_worker(settings, stop_after_idle_seconds=5)   # blocks
    # or in a thread, stopped from outside:
    stop = threading.Event()
    threading.Thread(target=run_embedding_worker, args=(settings,),
                     kwargs={"stop": stop}).start(); ...; stop.set()

The CLI ``mosaic agents embedding`` runs the same function until SIGINT/SIGTERM.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from consumers.blocks import CassandraBlockStore
from consumers.embedding.agent import BatchHandler, attach_agent, build_app
from consumers.embedding.metrics import (
    QUOTA_SHARE,
    TimedEmbedder,
    TimedVectorIndex,
    throttle_counter,
)
from consumers.embedding.outputs import KafkaSeekerSink, StageRetry
from consumers.embedding.pipeline import EmbeddingPipeline
from consumers.embedding.traits import PrefetchingTraitsService
from mosaic.cassandra import cassandra_call
from mosaic.erasures import CassandraErasures
from mosaic.ratelimit import TokenBucket
from mosaic.settings import Settings
from mosaic.user_state import (
    PROFILE_UNAVAILABLE,
    CassandraRequestVersions,
    CassandraUserStateWriter,
    UserState,
    UserStateWriter,
)
from profiles.embedders import Embedder, LocalE5Embedder, VertexEmbedder, build_embedder
from profiles.index import VectorIndex
from profiles.insights import S3InsightStore
from profiles.pinecone_index import PineconeVectorIndex
from profiles.pipeline import ProfileIndexer
from profiles.traits import S3TraitsCache
from streams.deadletter import DeadLetterPublisher
from streams.kafka import make_producer
from streams.topics import build_catalog

log = logging.getLogger(__name__)
# Kafka group join + first fetch: faust's fetch waits up to 1.5 s on an empty partition.
MIN_IDLE_SECONDS = 3.0


@dataclass(frozen=True)
class WorkerReport:
    batches: int
    records: int
    outcomes: dict[str, int]
    seconds: float
    stop_reason: str  # idle | max_seconds | stop | fatal
    fatal: str | None = None
    # From the start of the first batch to the end of the last one (0 without batches):
    # the processing time, without group join and idle tail (what the bench divides by).
    active_seconds: float = 0.0


@dataclass
class Wiring:
    pipeline: EmbeddingPipeline
    closers: list[Callable[[], Any]] = field(default_factory=list)

    def close(self) -> None:
        for close in reversed(self.closers):
            try:
                close()
            except Exception as exc:  # noqa: BLE001 - closing must not hide the result
                log.warning("closing %r failed: %s", close, exc)


class RetryableStates(UserStateWriter):
    """Cassandra user_state writes with driver errors mapped to ExternalServiceError,
    so a Cassandra outage is retried by the agent instead of stopping it."""

    def __init__(self, inner: UserStateWriter) -> None:
        self.inner = inner

    def waiting(self, user_id: str, *, pool: str, waiting_since: datetime,
                missed_cycles: int, at: datetime) -> None:
        cassandra_call("user_state", lambda: self.inner.waiting(
            user_id, pool=pool, waiting_since=waiting_since, missed_cycles=missed_cycles,
            at=at))

    def profile_failed(self, user_id: str, *, reason: str, at: datetime,
                       code: str = PROFILE_UNAVAILABLE) -> None:
        cassandra_call("user_state", lambda: self.inner.profile_failed(
            user_id, reason=reason, at=at, code=code))

    def profile_delayed(self, user_id: str, *, at: datetime) -> None:
        cassandra_call("user_state", lambda: self.inner.profile_delayed(user_id, at=at))

    def requested(self, state: UserState) -> None:
        cassandra_call("user_state", lambda: self.inner.requested(state))

    def missed_cycle(self, user_id: str, *, cycle_id: str, missed_cycles: int,
                     at: datetime, reason: str | None = None, version: int = 0) -> None:
        cassandra_call("user_state", lambda: self.inner.missed_cycle(
            user_id, cycle_id=cycle_id, missed_cycles=missed_cycles, at=at, reason=reason,
            version=version))

    def matched(self, user_id: str, *, cycle_id: str, room_id: str | None,
                at: datetime, version: int = 0) -> None:
        cassandra_call("user_state", lambda: self.inner.matched(
            user_id, cycle_id=cycle_id, room_id=room_id, at=at, version=version))


class QuotaShare:
    """Keeps this worker's rate limiters at its share of the project's quotas: the share
    of the opt-in topic's partitions assigned to it, so all workers together stay within
    each quota (docs/embedding-pipeline.md, "Quotas"). Before an assignment, and with
    none, the share of one partition."""

    def __init__(self, buckets: Sequence[TokenBucket], topic: str, partitions: int) -> None:
        self.buckets, self.topic, self.partitions = list(buckets), topic, max(1, partitions)
        self.assigned = -1
        self.update(())

    def update(self, assignment: Iterable[Any]) -> None:
        count = sum(1 for tp in assignment if tp.topic == self.topic)
        if count == self.assigned:
            return
        self.assigned = count
        share = min(1.0, max(1, count) / self.partitions)
        for bucket in self.buckets:
            bucket.set_share(share)
        QUOTA_SHARE.set(share)
        if self.buckets:
            log.info("%d of %d %s partitions assigned: %.0f%% of the quota (%s/s)", count,
                     self.partitions, self.topic, share * 100,
                     ", ".join(f"{b.rate:g}" for b in self.buckets))


def quota_buckets(pipeline: EmbeddingPipeline) -> list[TokenBucket]:
    """The rate limiters of the pipeline's outside APIs that spend a project quota
    (Vertex requests per minute, Pinecone requests per second)."""
    embedder, index = pipeline.indexer.embedder, pipeline.indexer.index
    embedder = embedder.inner if isinstance(embedder, TimedEmbedder) else embedder
    index = index.inner if isinstance(index, TimedVectorIndex) else index
    buckets = [embedder.limiter] if isinstance(embedder, VertexEmbedder) else []
    return buckets + ([index.limiter] if isinstance(index, PineconeVectorIndex) else [])


def count_throttles(embedder: Embedder, index: VectorIndex) -> None:
    """Each 429 answer of Vertex or Pinecone counts in ``THROTTLED`` (metrics wrap the
    adapters: the Retrier's hook, not code inside them)."""
    if isinstance(embedder, VertexEmbedder):
        embedder.retrier.on_throttled = throttle_counter("vertex")
    if isinstance(index, PineconeVectorIndex):
        index.retrier.on_throttled = throttle_counter("pinecone")


def default_embedder(settings: Settings) -> Embedder:
    emb = settings.embedding
    if emb.backend == "local":
        return LocalE5Embedder(batch_size=emb.batch_size,
                               num_threads=settings.embedding_agent.local_num_threads)
    return build_embedder(settings)


def build_wiring(settings: Settings, *, embedder: Embedder | None = None,
                 session: Any = None, s3_client: Any = None) -> Wiring:
    """Every adapter from settings; pass clients to share them (tests, bench)."""
    from mosaic.cassandra import connect
    from mosaic.s3 import s3_client as make_s3_client
    from profiles.bootstrap import build_vector_index

    closers: list[Callable[[], Any]] = []
    if session is None:
        session = connect(settings.cassandra)
        closers.append(session.cluster.shutdown)
    s3 = s3_client or make_s3_client(settings.s3)
    raw_embedder = embedder or default_embedder(settings)
    emb = TimedEmbedder(raw_embedder)
    t, ttl = settings.traits, settings.s3.traits_cache_ttl_seconds
    traits = PrefetchingTraitsService(
        S3InsightStore(s3, settings.s3.insights_bucket),
        S3TraitsCache(s3, settings.s3.traits_cache_bucket), top_n=t.top_chats,
        ttl_seconds=ttl, half_life_seconds=t.recency_half_life_seconds,
        max_items=t.max_items_per_section)
    raw_index = build_vector_index(settings, dim=emb.dim, session=session)
    count_throttles(raw_embedder, raw_index)
    index = TimedVectorIndex(raw_index)
    producer = make_producer(settings)
    closers.append(lambda: producer.flush(10))
    catalog = build_catalog(settings)
    conf = settings.embedding_agent
    pipeline = EmbeddingPipeline(
        ProfileIndexer(traits, emb, index), CassandraBlockStore(session),
        RetryableStates(CassandraUserStateWriter(session, settings.cassandra.keyspace)),
        KafkaSeekerSink(producer, catalog.seekers),
        DeadLetterPublisher(producer, catalog.deadletter, consumer_group=conf.group_id),
        retry=StageRetry(backoff_seconds=conf.retry_backoff_seconds,
                         max_backoff_seconds=conf.retry_max_backoff_seconds),
        test_pause_after_publish_seconds=conf.test_pause_after_publish_seconds,
        erasures=CassandraErasures(session),
        versions=CassandraRequestVersions(session, settings.cassandra.keyspace),
        stale_request_seconds=conf.stale_request_seconds)
    return Wiring(pipeline, closers)


def run_embedding_worker(settings: Settings | None = None, *,
                         stop_after_idle_seconds: float | None = None,
                         max_seconds: float | None = None,
                         stop: threading.Event | None = None,
                         embedder: Embedder | None = None, session: Any = None,
                         s3_client: Any = None, pipeline: EmbeddingPipeline | None = None,
                         ) -> WorkerReport:
    """Run the agent until idle (no batch for that long once partitions are assigned;
    at least 3 s), ``max_seconds``, ``stop.set()`` or a fatal error. Blocking; safe to
    call from a thread (it runs its own event loop)."""
    settings = settings or Settings()
    wiring = Wiring(pipeline) if pipeline is not None else build_wiring(
        settings, embedder=embedder, session=session, s3_client=s3_client)
    idle = None if stop_after_idle_seconds is None else max(MIN_IDLE_SECONDS,
                                                            stop_after_idle_seconds)
    try:
        return asyncio.run(_serve(settings, wiring.pipeline, idle=idle,
                                  max_seconds=max_seconds, stop=stop or threading.Event()))
    finally:
        wiring.close()


async def _serve(settings: Settings, pipeline: EmbeddingPipeline, *, idle: float | None,
                 max_seconds: float | None, stop: threading.Event) -> WorkerReport:
    start = time.monotonic()
    pipeline.retry.stop.clear()  # a pipeline may serve several runs (tests, the demo)
    optin = build_catalog(settings).optin
    quota = QuotaShare(quota_buckets(pipeline), optin.name, optin.partitions)
    with tempfile.TemporaryDirectory(prefix="mosaic-faust-") as datadir:
        app = build_app(settings, datadir)
        handler = BatchHandler(app, pipeline)
        attach_agent(app, settings, handler)
        await app.start()
        try:
            reason = await _wait(app, handler, start=start, idle=idle,
                                 max_seconds=max_seconds, stop=stop, quota=quota)
        finally:
            pipeline.retry.stop.set()  # interrupts a stage waiting out an outage
            await app.stop()
    s = handler.stats
    active = (s.last_batch_done_at - s.first_batch_at
              if s.first_batch_at is not None and s.last_batch_done_at is not None else 0.0)
    return WorkerReport(s.batches, s.records, dict(s.outcomes), time.monotonic() - start,
                        reason, s.fatal, active)


async def _wait(app: Any, handler: BatchHandler, *, start: float, idle: float | None,
                max_seconds: float | None, stop: threading.Event, quota: QuotaShare) -> str:
    assigned = False
    while True:
        await asyncio.sleep(0.1)
        quota.update(app.consumer.assignment())
        now = time.monotonic()
        if handler.failed.is_set():
            return "fatal"
        if stop.is_set():
            return "stop"
        if max_seconds is not None and now - start >= max_seconds:
            return "max_seconds"
        if idle is None:
            continue
        if not assigned and app.consumer.assignment():
            assigned = True
            handler.last_activity = max(handler.last_activity, now)
        if assigned and not handler.busy and now - handler.last_activity >= idle:
            return "idle"
