"""The faust side of the embedding agent: consume the opt-in topic, batch, hand over.

At-least-once with manual acknowledgement, as far as faust allows it:

- ``stream.take_events(max, within)`` batches records; it acks the whole batch in a
  ``finally`` after the agent body, even when the body raised, and faust commits acked
  offsets on a task error. So the body never raises: each batch runs in a thread
  (blocking S3/embedder/Cassandra calls must not stall the event loop and its Kafka
  heartbeats), and every message gets one extra reference (``Message.incref``) for the
  duration. Only a finished batch drops it; a batch that failed or was interrupted keeps
  it, so faust's ack cannot reach zero, the offset is never committed and the records
  come back after a restart.
- Outages are retried inside the batch (``StageRetry``); a bug or a non-retryable error
  stops the worker with the batch unacknowledged (``WorkerReport.fatal``).
- faust reads ``read_uncommitted`` unless ``processing_guarantee="exactly_once"``
  (faust/transport/drivers/aiokafka.py), and its exactly-once is unreliable; the
  transport below only switches the consumer to ``read_committed``.
- ``topic_allow_declare=False`` and ``topic_disable_leader=True``: faust creates no
  topic (the catalog owns them); the web server is disabled; the data dir is a temp dir.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka

from consumers.embedding.metrics import FATAL, record_lag
from consumers.embedding.outputs import StopRequested
from consumers.embedding.pipeline import EmbeddingPipeline
from mosaic.settings import Settings
from streams.deadletter import RawRecord
from streams.kafka import faust_credentials

log = logging.getLogger(__name__)


class _ReadCommittedThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka reads this attribute when it starts its fetcher (after this call).
        consumer._isolation_level = "read_committed"
        return consumer


class _ReadCommittedConsumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> Any:
        return _ReadCommittedThread(self, loop=self.loop, beacon=self.beacon)


class ReadCommittedTransport(faust_aiokafka.Transport):
    """faust's own ``kafka://`` (aiokafka) driver, consumer isolation read_committed."""

    Consumer = _ReadCommittedConsumer


def broker_url(bootstrap_servers: str) -> str:
    return ";".join(f"kafka://{host.strip()}" for host in bootstrap_servers.split(","))


def build_app(settings: Settings, datadir: str) -> faust.App:
    agent = settings.embedding_agent
    app = faust.App(
        agent.group_id, broker=broker_url(settings.kafka.bootstrap_servers),
        broker_credentials=faust_credentials(settings),
        datadir=datadir, web_enabled=False, topic_allow_declare=False,
        topic_disable_leader=True, processing_guarantee="at_least_once",
        consumer_auto_offset_reset="earliest", broker_commit_every=1,
        broker_commit_interval=agent.commit_interval_seconds,
        # Commit what is acked on stop; an unacked (failed) batch must not be waited for.
        stream_wait_empty=False, autodiscover=False)
    app.transport = ReadCommittedTransport(app.conf.broker_consumer, app)
    return app


@dataclass
class WorkerStats:
    batches: int = 0
    records: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    fatal: str | None = None
    first_batch_at: float | None = None  # time.monotonic()
    last_batch_done_at: float | None = None


class BatchHandler:
    """What the agent body calls per batch; never raises except on cancellation."""

    def __init__(self, app: faust.App, pipeline: EmbeddingPipeline) -> None:
        self.app, self.pipeline = app, pipeline
        self.stats = WorkerStats()
        self.failed = asyncio.Event()
        self.last_activity = time.monotonic()
        self.busy = False

    async def __call__(self, events: Sequence[Any]) -> None:
        messages = [event.message for event in events]
        for message in messages:
            message.incref()  # released only when the batch succeeded (see module doc)
        records = [RawRecord(m.topic, m.partition, m.offset, m.key, m.value)
                   for m in messages]
        self.busy = True
        if self.stats.first_batch_at is None:
            self.stats.first_batch_at = time.monotonic()
        try:
            report = await asyncio.to_thread(self.pipeline.handle_batch, records)
        except StopRequested:
            log.info("stopping with a batch of %d records unacknowledged", len(records))
            await self._park()
        except Exception as exc:  # noqa: BLE001 - a bug must stop us, never ack the batch
            await self._fail(exc, records)
        else:
            for message in messages:
                message.decref()
            self._account(records, report.outcomes)
            self._record_lag(messages)
        finally:
            self.busy = False
            self.last_activity = time.monotonic()

    async def _fail(self, exc: BaseException, records: Sequence[RawRecord]) -> None:
        FATAL.inc()
        first = records[0]
        log.error("batch from %s[%d]@%d failed, stopping without acknowledging it",
                  first.topic, first.partition, first.offset, exc_info=exc)
        self.stats.fatal = f"{type(exc).__name__}: {exc}"
        self.failed.set()
        await self._park()

    async def _park(self) -> None:
        # Hold the batch (and its extra references) until the worker stops.
        await asyncio.Event().wait()

    def _account(self, records: Sequence[RawRecord], outcomes: list[tuple[str, str]]
                 ) -> None:
        self.stats.batches += 1
        self.stats.records += len(records)
        self.stats.last_batch_done_at = time.monotonic()
        for _, outcome in outcomes:
            self.stats.outcomes[outcome] = self.stats.outcomes.get(outcome, 0) + 1

    def _record_lag(self, messages: Sequence[Any]) -> None:
        last: dict[Any, int] = {}
        for m in messages:
            last[m.tp] = max(last.get(m.tp, -1), m.offset)
        for tp, offset in last.items():
            try:
                highwater = self.app.consumer.highwater(tp)
            except Exception as exc:  # noqa: BLE001 - metrics must not break processing
                log.debug("no high watermark for %s: %s", tp, exc)
                continue
            if highwater is not None:
                record_lag(tp.topic, tp.partition, highwater - offset - 1)


def attach_agent(app: faust.App, settings: Settings, handler: BatchHandler) -> None:
    """Register the agent on the catalog's opt-in topic (raw bytes; streams.serde decodes)."""
    from streams.topics import build_catalog

    conf = settings.embedding_agent
    # allow_empty: a null-value record must reach the agent (and the dead-letter topic)
    # instead of being skipped silently.
    topic = app.topic(build_catalog(settings).optin.name, key_serializer="raw",
                      value_serializer="raw", allow_empty=True)

    async def embedding(stream: Any) -> None:
        async for events in stream.take_events(conf.batch_max, within=conf.batch_within_seconds):
            await handler(events)

    app.agent(topic, name="embedding", concurrency=1)(embedding)
