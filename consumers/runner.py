"""An at-least-once consumer loop on confluent-kafka for the post-match agents.

Per record: decode, hand to the handler, commit. Bad records go to the dead-letter topic
(then commit: they can never succeed); outages are retried by the injected policy and,
when they outlast it, the loop seeks back and tries again later without committing past
the record, so nothing is lost. Any other error is a bug: the loop stops and raises.
Handlers must be idempotent (replays happen after a crash between handle and commit).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition
from prometheus_client import Counter, Histogram

from mosaic.errors import ExternalServiceError, RecordError
from mosaic.settings import Settings
from streams.deadletter import (
    DeadLetterPublisher,
    ErrorAction,
    ErrorPolicy,
    Handler,
    process_record,
)
from streams.kafka import commit, make_consumer, make_producer
from streams.topics import Topic, build_catalog

log = logging.getLogger(__name__)

RECORDS = Counter("mosaic_agent_records", "Records processed by agent and outcome.",
                  ["agent", "outcome"])
HANDLE_SECONDS = Histogram("mosaic_agent_handle_seconds", "Time to handle one record.",
                           ["agent"])

# Retry outages a few times in place, then back off through the loop (never skip them).
DEFAULT_POLICY = ErrorPolicy(when_exhausted=ErrorAction.RAISE, max_attempts=4)


@dataclass
class RunStats:
    handled: int = 0
    dead_lettered: int = 0
    stalls: int = 0
    by_topic: dict[str, int] = field(default_factory=dict)


class AgentRunner:
    """Runs one handler over ``topics`` in consumer group ``group_id``."""

    def __init__(self, settings: Settings, name: str, topics: list[Topic], handler: Handler,
                 *, policy: ErrorPolicy = DEFAULT_POLICY, stall_seconds: float = 2.0,
                 consumer: Consumer | None = None) -> None:
        self.name = name
        self._handler = handler
        self._policy = policy
        self._stall_seconds = stall_seconds
        self._consumer = consumer or make_consumer(settings, f"mosaic-{name}", topics)
        self._dead_letters = DeadLetterPublisher(
            make_producer(settings), build_catalog(settings).deadletter,
            consumer_group=f"mosaic-{name}")
        self.stats = RunStats()

    def run(self, *, stop: Callable[[], bool] = lambda: False,
            idle_seconds: float | None = None, max_seconds: float | None = None) -> RunStats:
        """Consume until ``stop()``, ``idle_seconds`` without records, or ``max_seconds``."""
        started = last_record = time.monotonic()
        try:
            while not stop():
                now = time.monotonic()
                if max_seconds is not None and now - started > max_seconds:
                    break
                if idle_seconds is not None and now - last_record > idle_seconds:
                    break
                message = self._consumer.poll(0.2)
                if message is None or self._skip(message):
                    continue
                last_record = time.monotonic()
                self._one(message)
        finally:
            self._consumer.close()
        return self.stats

    def _skip(self, message: Message) -> bool:
        error = message.error()
        if error is None:
            return False
        if error.code() != KafkaError._PARTITION_EOF:
            log.warning("%s: consumer error %s", self.name, error.str())
        return True

    def _one(self, message: Message) -> None:
        with HANDLE_SECONDS.labels(self.name).time():
            try:
                outcome = process_record(message, self._handler, policy=self._policy,
                                         dead_letters=self._dead_letters)
            except RecordError as exc:
                if not (isinstance(exc.cause, ExternalServiceError) and exc.cause.retryable):
                    raise
                self._stall(message, exc)
                return
        commit(self._consumer, [message])
        RECORDS.labels(self.name, outcome).inc()
        self.stats.handled += outcome == "handled"
        self.stats.dead_lettered += outcome == "dead_lettered"
        topic = message.topic() or ""
        self.stats.by_topic[topic] = self.stats.by_topic.get(topic, 0) + 1

    def _stall(self, message: Message, exc: RecordError) -> None:
        """An outage outlasted the policy: rewind to this record and try again later."""
        RECORDS.labels(self.name, "stalled").inc()
        self.stats.stalls += 1
        log.warning("%s: %s; will retry from offset %d", self.name, exc, exc.offset)
        self._consumer.seek(TopicPartition(message.topic() or "", message.partition() or 0,
                                           message.offset() or 0))
        time.sleep(self._stall_seconds)
