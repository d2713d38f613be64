"""Error policy, dead-letter publishing and client defaults, with a fake producer."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client import REGISTRY

from mosaic.errors import ExternalServiceError, RecordError, SerializationError
from mosaic.settings import Settings
from streams.deadletter import (
    RAISE_ALL,
    DeadLetterPublisher,
    ErrorAction,
    ErrorPolicy,
    RawRecord,
    process_record,
)
from streams.events import DeadLettered, Event, OptInRequested
from streams.kafka import consumer_config, producer_config
from streams.samples import sample_events
from streams.serde import decode, encode
from streams.topics import build_catalog

pytestmark = pytest.mark.unit

NOW = datetime(2025, 2, 1, 12, 0, tzinfo=UTC)
CATALOG = build_catalog(Settings())
OPTIN = next(e for e in sample_events() if isinstance(e, OptInRequested))


class FakeMessage:
    def __init__(self, topic: str, partition: int, offset: int,
                 key: bytes | None = None, value: bytes | None = None) -> None:
        self._coords = (topic, partition, offset)
        self._key, self._value = key, value

    def topic(self) -> str:
        return self._coords[0]

    def partition(self) -> int:
        return self._coords[1]

    def offset(self) -> int:
        return self._coords[2]

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value


class FakeProducer:
    """Acknowledges every record on the next poll, like a healthy broker."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes]] = []
        self._pending: list[Callable[[], None]] = []

    def produce(self, topic: str, value: bytes, key: Any = None,
                on_delivery: Callable[[Any, Any], None] | None = None) -> None:
        raw_key = key.encode() if isinstance(key, str) else key
        self.sent.append((topic, raw_key, value))
        if on_delivery is not None:
            message = FakeMessage(topic, 0, len(self.sent) - 1, raw_key, value)
            self._pending.append(lambda: on_delivery(None, message))

    def poll(self, _timeout: float = 0) -> int:
        pending, self._pending = self._pending, []
        for callback in pending:
            callback()
        return len(pending)


def _publisher(producer: FakeProducer) -> DeadLetterPublisher:
    return DeadLetterPublisher(producer, CATALOG.deadletter,  # type: ignore[arg-type]
                               consumer_group="g1", clock=lambda: NOW)


def _count(topic: str, reason: str) -> float:
    labels = {"topic": topic, "reason_type": reason}
    return REGISTRY.get_sample_value("mosaic_dead_letters_total", labels) or 0.0


# -- ErrorPolicy ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "attempt", "expected"),
    [
        (SerializationError("bad"), 1, ErrorAction.DEAD_LETTER),
        (ExternalServiceError("down"), 1, ErrorAction.RETRY),
        (ExternalServiceError("down"), 5, ErrorAction.DEAD_LETTER),
        (ExternalServiceError("denied", retryable=False), 1, ErrorAction.RAISE),
        (KeyError("bug"), 1, ErrorAction.RAISE),
    ],
    ids=["bad-record", "transient", "exhausted", "permanent-external", "bug"],
)
def test_default_policy(error: Exception, attempt: int, expected: ErrorAction) -> None:
    assert ErrorPolicy().decide(error, attempt) is expected


def test_backoff_grows_and_is_capped() -> None:
    policy = ErrorPolicy(backoff_seconds=1.0, max_backoff_seconds=5.0)
    assert [policy.backoff(n) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 5.0]


# -- process_record + DeadLetterPublisher ------------------------------------------------------


def test_good_record_is_handled() -> None:
    seen: list[Event] = []
    msg = FakeMessage(CATALOG.optin.name, 1, 7, b"u", encode(OPTIN))
    outcome = process_record(msg, lambda e, _r: seen.append(e),  # type: ignore[arg-type]
                             policy=ErrorPolicy(), dead_letters=None)
    assert outcome == "handled"
    assert seen == [OPTIN]


def test_undecodable_record_is_dead_lettered_and_counted() -> None:
    producer = FakeProducer()
    record = RawRecord(CATALOG.optin.name, 3, 42, b"user-1", b"garbage-bytes")
    before = _count(record.topic, "SerializationError")
    outcome = process_record(record, lambda e, r: None, policy=ErrorPolicy(),
                             dead_letters=_publisher(producer))
    assert outcome == "dead_lettered"
    ((topic, key, value),) = producer.sent
    assert (topic, key) == (CATALOG.deadletter.name, b"user-1")
    letter = decode(value)
    assert isinstance(letter, DeadLettered)
    assert (letter.source_topic, letter.source_partition, letter.source_offset) == (
        record.topic, 3, 42)
    assert (letter.source_key, letter.source_value) == (b"user-1", b"garbage-bytes")
    assert letter.error_type == "SerializationError"
    assert "no Avro single-object marker" in letter.reason
    assert (letter.consumer_group, letter.occurred_at, letter.attempts) == ("g1", NOW, 1)
    assert _count(record.topic, "SerializationError") == before + 1


def test_dead_letter_ids_are_one_per_source_record() -> None:
    publisher = _publisher(FakeProducer())
    record = RawRecord("t", 0, 1, None, None)
    assert publisher.build(record, "x").event_id == publisher.build(record, "y").event_id
    assert publisher.build(record, "x").event_id != publisher.build(
        RawRecord("t", 0, 2, None, None), "x").event_id


def test_transient_failure_is_retried_then_succeeds() -> None:
    sleeps: list[float] = []
    calls = iter([ExternalServiceError("503"), ExternalServiceError("503"), None])

    def flaky(_e: Event, _r: RawRecord) -> None:
        error = next(calls)
        if error is not None:
            raise error

    record = RawRecord("t", 0, 1, None, encode(OPTIN))
    outcome = process_record(record, flaky, policy=ErrorPolicy(backoff_seconds=0.5),
                             dead_letters=None, sleep=sleeps.append)
    assert outcome == "handled"
    assert sleeps == [0.5, 1.0]


def test_exhausted_retries_dead_letter_with_attempt_count() -> None:
    producer = FakeProducer()

    def down(_e: Event, _r: RawRecord) -> None:
        raise ExternalServiceError("nakama down")

    record = RawRecord("t", 0, 9, None, encode(OPTIN))
    outcome = process_record(record, down, policy=ErrorPolicy(max_attempts=3),
                             dead_letters=_publisher(producer), sleep=lambda _s: None)
    assert outcome == "dead_lettered"
    letter = decode(producer.sent[0][2])
    assert isinstance(letter, DeadLettered)
    assert (letter.attempts, letter.error_type) == (3, "ExternalServiceError")


def test_raise_policy_carries_coordinates() -> None:
    record = RawRecord("mosaic.optin", 2, 5, None, b"garbage")
    with pytest.raises(RecordError) as info:
        process_record(record, lambda e, r: None, policy=RAISE_ALL, dead_letters=None)
    assert (info.value.topic, info.value.partition, info.value.offset) == ("mosaic.optin", 2, 5)
    assert isinstance(info.value.cause, SerializationError)
    assert "offset=5" in str(info.value)


def test_bug_in_handler_is_raised_not_skipped() -> None:
    def buggy(_e: Event, _r: RawRecord) -> None:
        raise KeyError("oops")

    record = RawRecord("t", 0, 1, None, encode(OPTIN))
    with pytest.raises(RecordError):
        process_record(record, buggy, policy=ErrorPolicy(), dead_letters=_publisher(FakeProducer()))


# -- client defaults ---------------------------------------------------------------------------


def test_producer_defaults_are_safe() -> None:
    config = producer_config(Settings())
    assert config["enable.idempotence"] is True
    assert config["acks"] == "all"
    assert 0 < config["linger.ms"] <= 20


def test_consumer_defaults_are_safe() -> None:
    config = consumer_config(Settings(), "g")
    assert config["isolation.level"] == "read_committed"
    assert config["enable.auto.commit"] is False
    assert config["auto.offset.reset"] == "earliest"
    assert consumer_config(Settings(), "g", {"auto.offset.reset": "latest"})[
        "auto.offset.reset"] == "latest"
