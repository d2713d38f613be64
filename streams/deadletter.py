"""Bad input never crashes a consumer and is never lost.

:class:`ErrorPolicy` decides per failure whether to retry, dead-letter or raise;
consumers receive it injected. :class:`DeadLetterPublisher` writes the failed record
verbatim plus why and where from to the deadletter topic and counts it in
``mosaic_dead_letters_total{topic,reason_type}``. :func:`process_record` ties both
together for one record: decode, handle, and apply the policy on failure.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Literal

from confluent_kafka import Message, Producer
from prometheus_client import Counter

from mosaic.errors import ExternalServiceError, RecordError, SerializationError, ValidationError
from mosaic.retry import Backoff
from streams.events import DeadLettered, Event, derive_event_id
from streams.kafka import produce_and_wait, produce_event
from streams.serde import AvroSerde, default_serde
from streams.topics import Topic

log = logging.getLogger(__name__)

DEAD_LETTERS = Counter(
    "mosaic_dead_letters",
    "Records sent to the dead-letter topic, by source topic and error class.",
    ["topic", "reason_type"],
)


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class RawRecord:
    """A consumed record's coordinates and raw bytes, independent of the client."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None

    @classmethod
    def from_message(cls, message: Message) -> RawRecord:
        return cls(message.topic() or "", message.partition() or 0, message.offset() or 0,
                   message.key(), message.value())


class ErrorAction(StrEnum):
    RETRY = "retry"
    DEAD_LETTER = "dead_letter"
    RAISE = "raise"


@dataclass(frozen=True)
class ErrorPolicy:
    """What a consumer does when a record fails.

    Bad records (undecodable or invalid) are dead-lettered at once: retrying cannot fix
    them. Retryable outside failures are retried with exponential backoff, then handled
    as ``when_exhausted``. Anything else is a bug: raise and stop rather than skip.
    """

    on_bad_record: ErrorAction = ErrorAction.DEAD_LETTER
    on_retryable: ErrorAction = ErrorAction.RETRY
    on_other: ErrorAction = ErrorAction.RAISE
    when_exhausted: Literal[ErrorAction.DEAD_LETTER, ErrorAction.RAISE] = (
        ErrorAction.DEAD_LETTER
    )
    max_attempts: int = 5
    backoff_seconds: float = 0.2
    max_backoff_seconds: float = 10.0

    def decide(self, error: BaseException, attempt: int) -> ErrorAction:
        """The action after ``attempt`` (1-based) failed with ``error``."""
        if isinstance(error, SerializationError | ValidationError):
            action = self.on_bad_record
        elif isinstance(error, ExternalServiceError) and error.retryable:
            action = self.on_retryable
        else:
            action = self.on_other
        if action is ErrorAction.RETRY and attempt >= self.max_attempts:
            return self.when_exhausted
        return action

    def backoff(self, attempt: int) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1-based), no jitter."""
        return Backoff(self.backoff_seconds, self.max_backoff_seconds).delay(attempt)


RAISE_ALL = ErrorPolicy(ErrorAction.RAISE, ErrorAction.RAISE, ErrorAction.RAISE,
                        ErrorAction.RAISE, max_attempts=1)


class DeadLetterPublisher:
    """Publishes :class:`DeadLettered` events for failed records.

    ``wait=True`` blocks until the broker has the dead letter, so the caller may then
    commit the source offset. Inside a transaction use ``wait=False``: the commit
    delivers it atomically with the offsets.
    """

    def __init__(
        self,
        producer: Producer,
        topic: Topic | str,
        *,
        consumer_group: str = "",
        serde: AvroSerde | None = None,
        clock: Callable[[], datetime] = _utc_now,
        wait: bool = True,
        timeout_seconds: float = 30.0,
    ) -> None:
        self._producer = producer
        self._topic = topic
        self._group = consumer_group
        self._serde = serde or default_serde()
        self._clock = clock
        self._wait = wait
        self._timeout = timeout_seconds

    def build(self, record: RawRecord, error: BaseException | str, attempts: int = 1
              ) -> DeadLettered:
        reason = error if isinstance(error, str) else str(error) or type(error).__name__
        return DeadLettered(
            # One dead letter per source record, however often this runs.
            event_id=derive_event_id("dead-letter", record.topic, str(record.partition),
                                     str(record.offset)),
            occurred_at=self._clock(),
            reason=reason,
            error_type="str" if isinstance(error, str) else type(error).__name__,
            source_topic=record.topic,
            source_partition=record.partition,
            source_offset=record.offset,
            source_key=record.key,
            source_value=record.value,
            consumer_group=self._group,
            attempts=attempts,
        )

    def publish(self, record: RawRecord, error: BaseException | str, *, attempts: int = 1
                ) -> DeadLettered:
        letter = self.build(record, error, attempts)
        if self._wait:
            produce_and_wait(self._producer, self._topic, letter, serde=self._serde,
                             timeout_seconds=self._timeout)
        else:
            produce_event(self._producer, self._topic, letter, serde=self._serde,
                          timeout_seconds=self._timeout)
        DEAD_LETTERS.labels(topic=record.topic, reason_type=letter.error_type).inc()
        log.warning("dead-lettered %s[%d]@%d: %s: %s", record.topic, record.partition,
                    record.offset, letter.error_type, letter.reason,
                    extra={"topic": record.topic, "partition": record.partition,
                           "offset": record.offset, "event_id": letter.event_id,
                           "group": self._group or None})
        return letter


Outcome = Literal["handled", "dead_lettered"]
Handler = Callable[[Event, RawRecord], None]


def process_record(
    message: Message | RawRecord,
    handler: Handler,
    *,
    policy: ErrorPolicy,
    dead_letters: DeadLetterPublisher | None,
    serde: AvroSerde | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Outcome:
    """Decode one record and hand it to ``handler``, applying ``policy`` on failure.

    Returns what happened, so the caller commits the offset either way; raises
    :class:`RecordError` (with the record's coordinates) when the policy says raise.
    """
    record = message if isinstance(message, RawRecord) else RawRecord.from_message(message)
    codec = serde or default_serde()
    attempt = 1
    while True:
        try:
            handler(codec.decode(record.value), record)
            return "handled"
        # The policy, not this loop, decides which failures are fatal.
        except Exception as exc:
            action = policy.decide(exc, attempt)
            if action is ErrorAction.RETRY:
                log.info("retrying %s[%d]@%d after %s (attempt %d)", record.topic,
                         record.partition, record.offset, type(exc).__name__, attempt,
                         extra={"topic": record.topic, "partition": record.partition,
                                "offset": record.offset})
                sleep(policy.backoff(attempt))
                attempt += 1
                continue
            if action is ErrorAction.DEAD_LETTER and dead_letters is not None:
                dead_letters.publish(record, exc, attempts=attempt)
                return "dead_lettered"
            raise RecordError(str(exc) or type(exc).__name__, topic=record.topic,
                              partition=record.partition, offset=record.offset,
                              cause=exc) from exc
