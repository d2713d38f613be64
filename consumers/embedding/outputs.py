"""Outputs of the embedding agent and how it waits out outages.

``SeekerSink`` publishes ``SeekerUpdated`` / ``SeekerRemoved`` to the compacted seekers
topic and returns only once the broker confirmed every record. ``StageRetry`` repeats
one stage of a batch on retryable failures with capped exponential backoff, forever,
until it succeeds or the worker stops: an outage must never skip a record, and the
batch is acknowledged only after all of its stages succeeded.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

from confluent_kafka import KafkaError, Message, Producer

from consumers.embedding.metrics import RETRIES, timed
from mosaic.errors import MosaicError
from mosaic.retry import Backoff, is_retryable, retry_after_seconds
from streams.deadletter import RawRecord
from streams.events import DeadLettered, Event
from streams.kafka import KafkaOperationError, produce_event
from streams.topics import Topic

log = logging.getLogger(__name__)
T = TypeVar("T")


class StopRequested(MosaicError):
    """The worker is stopping while a stage waits to retry: the batch stays unacked."""


class StageRetry:
    """Runs a stage until it succeeds; ``stop`` interrupts the backoff sleep."""

    def __init__(self, *, backoff_seconds: float = 0.5, max_backoff_seconds: float = 30.0,
                 stop: threading.Event | None = None) -> None:
        self.backoff_seconds = backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.stop = stop or threading.Event()
        self.retries = 0

    def run(self, stage: str, call: Callable[[], T], *,
            on_retry: Callable[[Exception], None] | None = None) -> T:
        """``on_retry`` hears each retryable failure before the pause (the opt-in stage
        marks its users delayed). The pause is never shorter than the service's
        ``Retry-After`` (``ExternalServiceError.retry_after_seconds``)."""
        attempt = 0
        while True:
            if self.stop.is_set():
                raise StopRequested(f"stopping before stage {stage} finished")
            try:
                return call()
            except Exception as exc:
                if not is_retryable(exc):
                    raise
                attempt += 1
                self.retries += 1
                RETRIES.labels(stage=stage).inc()
                if on_retry is not None:
                    on_retry(exc)
                pause = max(Backoff(self.backoff_seconds, self.max_backoff_seconds)
                            .delay(attempt), retry_after_seconds(exc) or 0.0)
                log.warning("stage %s failed (attempt %d), retrying in %.1fs: %s",
                            stage, attempt, pause, exc)
                self.stop.wait(pause)


class SeekerSink(ABC):
    @abstractmethod
    def publish(self, events: Sequence[Event]) -> None:
        """Deliver all ``events`` in order (or raise ExternalServiceError)."""


class KafkaSeekerSink(SeekerSink):
    """Queues every event, then flushes once: one round trip per batch, not per event.
    The idempotent producer keeps per-key order across its internal retries."""

    def __init__(self, producer: Producer, topic: Topic, *, timeout_seconds: float = 30.0
                 ) -> None:
        self._producer, self._topic, self._timeout = producer, topic, timeout_seconds

    def publish(self, events: Sequence[Event]) -> None:
        if not events:
            return
        failures: list[KafkaError] = []

        def on_delivery(error: KafkaError | None, _message: Message | None) -> None:
            if error is not None:
                failures.append(error)

        with timed("publish"):
            for event in events:
                produce_event(self._producer, self._topic, event, on_delivery=on_delivery,
                              timeout_seconds=self._timeout)
            pending = self._producer.flush(self._timeout)
        if pending or failures:
            fatal = any(f.fatal() for f in failures)
            raise KafkaOperationError(
                f"{len(failures)} of {len(events)} records to {self._topic.name} failed, "
                f"{pending} unconfirmed: {failures[:1]}", retryable=not fatal, fatal=fatal)

    def tombstone(self, user_ids: Sequence[str]) -> int:
        """A null value per user (``mosaic users erase``): compaction then drops every
        earlier record of the key, and the tombstone itself after ``delete.retention.ms``.
        Returns how many were written."""
        failures: list[KafkaError] = []

        def on_delivery(error: KafkaError | None, _message: Message | None) -> None:
            if error is not None:
                failures.append(error)

        for user_id in user_ids:
            self._producer.produce(self._topic.name, key=user_id.encode(), value=None,
                                   on_delivery=on_delivery)
        pending = self._producer.flush(self._timeout)
        if pending or failures:
            raise KafkaOperationError(f"tombstones to {self._topic.name}: {pending} "
                                      f"unconfirmed, failed: {failures[:1]}", retryable=True)
        return len(user_ids)


class DeadLetters(Protocol):
    """What :class:`streams.deadletter.DeadLetterPublisher` offers (waits for the ack)."""

    def publish(self, record: RawRecord, error: BaseException | str, *,
                attempts: int = 1) -> DeadLettered: ...
