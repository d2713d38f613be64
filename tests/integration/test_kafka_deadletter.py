"""A bad record on a real topic ends up, verbatim and explained, on the dead-letter
topic; the consumer moves on and the counter goes up."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from confluent_kafka import Message
from prometheus_client import REGISTRY

from mosaic.settings import Settings
from stack.base import Service
from streams.deadletter import DeadLetterPublisher, ErrorPolicy, process_record
from streams.events import DeadLettered, Event
from streams.kafka import commit, make_consumer, make_producer, read_to_end
from streams.samples import sample_events
from streams.serde import decode, encode
from streams.topics import TopicCatalog
from tests.support import own_topics, with_topic_prefix

pytestmark = pytest.mark.integration


@pytest.fixture
def catalog(settings: Settings, kafka_stack: Service, unique: str) -> Iterator[TopicCatalog]:
    with own_topics(with_topic_prefix(settings, f"t{unique}.")) as own:
        yield own


def _dead_letter_count(topic: str) -> float:
    labels = {"topic": topic, "reason_type": "SerializationError"}
    return REGISTRY.get_sample_value("mosaic_dead_letters_total", labels) or 0.0


def _consume(settings: Settings, catalog: TopicCatalog, group: str, count: int,
             process: Callable[[Message], str]) -> list[str]:
    """Process ``count`` optin records like a consumer would, committing each."""
    consumer = make_consumer(settings, group, [catalog.optin])
    outcomes: list[str] = []
    try:
        while len(outcomes) < count:
            message = consumer.poll(0.5)
            if message is None or message.error() is not None:
                continue
            outcomes.append(process(message))
            commit(consumer, [message])
    finally:
        consumer.close()
    return outcomes


def test_bad_record_is_dead_lettered_and_consumer_moves_on(
    settings: Settings, catalog: TopicCatalog, unique: str
) -> None:
    good = sample_events()[0]
    producer = make_producer(settings)
    producer.produce(catalog.optin.name, value=b"\x00not avro", key=b"user-x")
    producer.produce(catalog.optin.name, value=encode(good), key=b"user-x")
    assert producer.flush(30) == 0

    group = f"embedder-{unique}"
    publisher = DeadLetterPublisher(producer, catalog.deadletter, consumer_group=group)
    before = _dead_letter_count(catalog.optin.name)
    handled: list[Event] = []
    outcomes = _consume(settings, catalog, group, 2,
                        lambda m: process_record(m, lambda e, _r: handled.append(e),
                                                 policy=ErrorPolicy(), dead_letters=publisher))

    assert outcomes == ["dead_lettered", "handled"]
    assert handled == [good]
    assert _dead_letter_count(catalog.optin.name) == before + 1

    reader = make_consumer(settings, f"audit-{unique}")
    try:
        (message,) = read_to_end(reader, catalog.deadletter).messages
    finally:
        reader.close()
    assert message.key() == b"user-x"
    letter = decode(message.value())
    assert isinstance(letter, DeadLettered)
    assert letter.source_topic == catalog.optin.name
    assert letter.source_value == b"\x00not avro"
    assert letter.source_key == b"user-x"
    assert letter.source_offset == 0
    assert letter.error_type == "SerializationError"
    assert letter.consumer_group == group
    assert "marker" in letter.reason
