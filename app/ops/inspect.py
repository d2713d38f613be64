"""Look inside the topics: one dead letter in full, and the decoded records of a topic.

Every record becomes one JSON object. A record that does not decode (not Avro, an unknown
schema, a tombstone) becomes an object with ``error`` and its raw bytes, never a crash.
"""

from __future__ import annotations

import base64
import dataclasses
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from typing import Any

from confluent_kafka import KafkaError, Message
from confluent_kafka import TopicPartition as KafkaTopicPartition

from app.ops.deadletters import key_text
from mosaic.errors import ConfigError, MosaicError
from mosaic.settings import Settings
from streams.events import Event
from streams.kafka import KafkaOperationError, make_consumer, watermarks
from streams.serde import default_serde
from streams.topics import Topic, build_catalog


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON types: times as ISO 8601, bytes as base64, events as dicts."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return "base64:" + base64.b64encode(bytes(value)).decode()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    return value


def raw_bytes(raw: bytes | None) -> dict[str, Any] | None:
    """Bytes as base64 and hex (None stays None)."""
    if raw is None:
        return None
    return {"bytes": len(raw), "base64": base64.b64encode(raw).decode(), "hex": raw.hex()}


def decode_value(raw: bytes | None) -> dict[str, Any]:
    """``{"event": name, "value": {...}}`` when ``raw`` decodes, else ``{"error": ...,
    "raw": {base64, hex}}``."""
    try:
        event: Event = default_serde().decode(raw)
    except MosaicError as exc:
        return {"error": f"{type(exc).__name__}: {exc}", "raw": raw_bytes(raw)}
    return {"event": event.schema_name, "value": jsonable(event)}




def show_letter(settings: Settings, event_id: str, *, timeout_seconds: float = 30.0
                ) -> dict[str, Any] | None:
    """One dead letter in full (None if no dead letter has this event id): its listing
    fields plus the source key and the source record, decoded when it decodes."""
    from app.ops.deadletters import read_letters

    letters = read_letters(settings, ids={event_id}, timeout_seconds=timeout_seconds)
    if not letters:
        return None
    letter = letters[-1]
    shown = letter.as_json()
    shown["source_key"] = raw_bytes(letter.event.source_key)
    shown["source_record"] = decode_value(letter.event.source_value)
    return shown


def resolve_topic(settings: Settings, name: str) -> Topic:
    """A catalog topic by full name (``mosaic.optin``) or logical name (``optin``)."""
    catalog = build_catalog(settings)
    for topic in catalog:
        if name in (topic.name, topic.spec.logical):
            return topic
    names = ", ".join(t.spec.logical for t in catalog)
    raise ConfigError(f"{name!r} is not in the topic catalog (one of: {names})")


def record_json(message: Message) -> dict[str, Any]:
    """One consumed record as a JSON object (decoded, or with ``error``)."""
    kind, millis = message.timestamp()
    row: dict[str, Any] = {
        "topic": message.topic(), "partition": message.partition(),
        "offset": message.offset(), "timestamp_ms": millis if kind else None,
        "key": key_text(message.key()),
    }
    row.update(decode_value(message.value()))
    return row


def tail(settings: Settings, topic: Topic, *, from_beginning: bool = False, limit: int = 10,
         follow: bool = False, stop: Callable[[], bool] = lambda: False,
         timeout_seconds: float = 30.0) -> Iterator[dict[str, Any]]:
    """The records of ``topic`` as JSON objects.

    Starts at the beginning, or else at the last ``limit`` records of each partition
    (``limit`` 0: the beginning). Without ``follow`` it ends at the end offsets taken at
    the start, or after ``limit`` records; with ``follow`` it goes on with new records
    until ``stop()`` is true. Reads committed records only, by assignment (no group
    offsets are used or committed).
    """
    probe = make_consumer(settings, "mosaic-topics-tail")
    try:
        marks = watermarks(probe, topic.name, timeout_seconds)
    finally:
        probe.close()
    starts = {p: low if from_beginning or limit <= 0 else max(low, high - limit)
              for p, (low, high) in marks.items()}
    ends = {p: high for p, (_, high) in marks.items()}
    consumer = make_consumer(settings, "mosaic-topics-tail")
    consumer.assign([KafkaTopicPartition(topic.name, p, off) for p, off in starts.items()])
    printed = 0
    deadline = time.monotonic() + timeout_seconds
    try:
        while not stop():
            if not follow:
                if limit > 0 and printed >= limit:
                    return
                done = consumer.position([KafkaTopicPartition(topic.name, p) for p in ends])
                if all(ends[tp.partition] <= starts[tp.partition]
                       or tp.offset >= ends[tp.partition] for tp in done):
                    return
                if time.monotonic() > deadline:
                    raise KafkaOperationError(f"reading {topic.name} to {ends} timed out "
                                              "(an open transaction?)", retryable=True)
            message = consumer.poll(0.2)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    continue
                raise KafkaOperationError(f"reading {topic.name}: {error.str()}",
                                          retryable=error.retriable(), fatal=error.fatal())
            if not follow and (message.offset() or 0) >= ends[message.partition() or 0]:
                continue
            printed += 1
            yield record_json(message)
    finally:
        consumer.close()
