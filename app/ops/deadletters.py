"""List dead letters and replay them to their source topic.

A dead letter (:class:`streams.events.DeadLettered`, written by
:mod:`streams.deadletter`) carries the failed record verbatim: key, value, source topic,
partition and offset. Replay produces that key and value again to the source topic, once
the cause is fixed; consumers are idempotent (event ids), so a record that was in fact
handled, or a replay run twice, changes nothing downstream.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from confluent_kafka import Message

from mosaic.errors import SerializationError
from mosaic.settings import Settings
from streams.events import DeadLettered
from streams.kafka import make_consumer, make_producer, read_to_end
from streams.serde import default_serde
from streams.topics import build_catalog

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Letter:
    """A dead letter and where it sits on the dead-letter topic."""

    event: DeadLettered
    partition: int
    offset: int

    def as_json(self) -> dict[str, Any]:
        e = self.event
        return {
            "event_id": e.event_id, "occurred_at": e.occurred_at.isoformat(),
            "source_topic": e.source_topic, "source_partition": e.source_partition,
            "source_offset": e.source_offset, "error_type": e.error_type, "reason": e.reason,
            "consumer_group": e.consumer_group, "attempts": e.attempts,
            "key": key_text(e.source_key), "value_bytes": len(e.source_value or b""),
            "deadletter_partition": self.partition, "deadletter_offset": self.offset,
        }


def read_letters(settings: Settings, *, source_topic: str | None = None,
                 since: datetime | None = None, ids: Collection[str] = (),
                 timeout_seconds: float = 30.0) -> list[Letter]:
    """Every dead letter on the topic (oldest first per partition), filtered."""
    catalog = build_catalog(settings)
    consumer = make_consumer(settings, "mosaic-deadletters-cli")  # assign only, no commits
    try:
        snapshot = read_to_end(consumer, catalog.deadletter, timeout_seconds=timeout_seconds)
    finally:
        consumer.close()
    return [letter for letter in _decode(snapshot.messages)
            if (source_topic is None or letter.event.source_topic == source_topic)
            and (since is None or letter.event.occurred_at >= since)
            and (not ids or letter.event.event_id in ids)]


def _decode(messages: list[Message]) -> Iterator[Letter]:
    serde = default_serde()
    for message in sorted(messages, key=lambda m: (m.timestamp()[1], m.partition() or 0,
                                                   m.offset() or 0)):
        try:
            event = serde.decode_as(message.value(), DeadLettered)
        except SerializationError as exc:
            log.warning("dead-letter topic record %s@%s is not a DeadLettered: %s",
                        message.partition(), message.offset(), exc)
            continue
        yield Letter(event, message.partition() or 0, message.offset() or 0)


def replay(settings: Settings, letters: list[Letter], *, timeout_seconds: float = 30.0
           ) -> int:
    """Produce each letter's original key and value to its source topic; returns how many
    the broker confirmed (raises if any was not)."""
    from confluent_kafka import KafkaError, KafkaException

    producer = make_producer(settings)
    failures: list[str] = []

    def delivered(error: KafkaError | None, message: Message) -> None:
        if error is not None:
            failures.append(f"{message.topic()}: {error.str()}")

    for letter in letters:
        e = letter.event
        producer.produce(e.source_topic, key=e.source_key, value=e.source_value,
                         on_delivery=delivered)
        producer.poll(0)
    left = producer.flush(timeout_seconds)
    if left or failures:
        raise KafkaException(f"replay: {left} unconfirmed, failures: {failures[:5]}")
    return len(letters)


def key_text(raw: bytes | None) -> str | None:
    """A record key as text, or ``base64:...`` when it is not UTF-8."""
    if raw is None:
        return None
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(raw).decode()
