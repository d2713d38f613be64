"""Producing through the project's factories on the real broker: transactions are
atomic for read_committed consumers, fencing stops a zombie, offsets ride along."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest

from mosaic.settings import Settings
from stack.base import Service
from streams.events import CycleCompleted, Event, PairMatched, derive_event_id
from streams.kafka import (
    KafkaOperationError,
    make_consumer,
    make_producer,
    make_transactional_producer,
    produce_and_wait,
    produce_event,
    read_to_end,
    send_offsets,
    transaction,
)
from streams.samples import sample_events
from streams.serde import decode
from streams.topics import TopicCatalog
from tests.support import own_topics, with_topic_prefix

pytestmark = pytest.mark.integration

PAIR = next(e for e in sample_events() if isinstance(e, PairMatched))
SUMMARY = next(e for e in sample_events() if isinstance(e, CycleCompleted))


@pytest.fixture
def catalog(settings: Settings, kafka_stack: Service, unique: str) -> Iterator[TopicCatalog]:
    """The whole catalog under the prefix ``t<unique>.``, deleted afterwards."""
    with own_topics(with_topic_prefix(settings, f"t{unique}.")) as own:
        yield own


def _pair(cycle: str) -> PairMatched:
    return dataclasses.replace(PAIR, cycle_id=cycle,
                               event_id=derive_event_id("pair", cycle, PAIR.pair_key))


def _committed_events(settings: Settings, topic: str, group: str) -> list[Event]:
    consumer = make_consumer(settings, group)
    try:
        return [decode(m.value()) for m in read_to_end(consumer, topic).messages]
    finally:
        consumer.close()


def test_read_committed_sees_committed_never_aborted(
    settings: Settings, catalog: TopicCatalog, unique: str
) -> None:
    producer = make_transactional_producer(settings, f"test-tx-{unique}")
    with transaction(producer):
        produce_event(producer, catalog.pairs, _pair("c1"))
        produce_event(producer, catalog.cycles, dataclasses.replace(SUMMARY, cycle_id="c1"))

    with pytest.raises(RuntimeError, match="matcher crashed"), transaction(producer):
        produce_event(producer, catalog.pairs, _pair("c2"))
        produce_event(producer, catalog.cycles, dataclasses.replace(SUMMARY, cycle_id="c2"))
        producer.flush(10)  # the aborted records really are in the log
        raise RuntimeError("matcher crashed")

    pairs = _committed_events(settings, catalog.pairs.name, f"read-{unique}")
    cycles = _committed_events(settings, catalog.cycles.name, f"read-{unique}")
    assert pairs == [_pair("c1")]
    assert [c.cycle_id for c in cycles if isinstance(c, CycleCompleted)] == ["c1"]


def test_a_newer_instance_fences_the_zombie(
    settings: Settings, catalog: TopicCatalog, unique: str
) -> None:
    zombie = make_transactional_producer(settings, f"test-fence-{unique}")
    with pytest.raises(KafkaOperationError) as info, transaction(zombie):
        produce_event(zombie, catalog.pairs, _pair("zombie"))
        zombie.flush(10)
        # A restarted matcher with the same transactional.id takes over mid-cycle.
        successor = make_transactional_producer(settings, f"test-fence-{unique}")
        with transaction(successor):
            produce_event(successor, catalog.pairs, _pair("successor"))
    assert info.value.fatal
    assert not info.value.retryable
    assert "fenced" in str(info.value).lower()
    pairs = _committed_events(settings, catalog.pairs.name, f"read-{unique}")
    assert [p.cycle_id for p in pairs if isinstance(p, PairMatched)] == ["successor"]


def test_consumed_offsets_commit_with_the_transaction(
    settings: Settings, catalog: TopicCatalog, unique: str
) -> None:
    tick_producer = make_producer(settings)
    tick = next(e for e in sample_events() if e.schema_name == "CycleTick")
    delivered = produce_and_wait(tick_producer, catalog.ticks, tick)
    assert (delivered.topic, delivered.partition) == (catalog.ticks.name, 0)

    group = f"matcher-{unique}"
    consumer = make_consumer(settings, group, [catalog.ticks])
    message = None
    for _ in range(100):
        message = consumer.poll(0.3)
        if message is not None and message.error() is None:
            break
    assert message is not None
    assert decode(message.value()) == tick

    producer = make_transactional_producer(settings, f"test-offsets-{unique}")
    with transaction(producer):
        produce_event(producer, catalog.pairs, _pair("from-tick"))
        send_offsets(producer, consumer, [message])
    committed = consumer.committed([*consumer.assignment()], timeout=10)
    consumer.close()
    assert [(tp.partition, tp.offset) for tp in committed] == [(0, delivered.offset + 1)]


def test_every_event_round_trips_through_its_topic(
    settings: Settings, catalog: TopicCatalog, unique: str
) -> None:
    producer = make_producer(settings)
    events = sample_events()
    for event in events:
        delivered = produce_and_wait(producer, catalog.for_event(event), event)
        assert delivered.topic == catalog.for_event(event).name
    consumer = make_consumer(settings, f"all-{unique}")
    try:
        seen = [decode(m.value()) for topic in catalog
                for m in read_to_end(consumer, topic).messages]
    finally:
        consumer.close()
    assert sorted(seen, key=lambda e: e.schema_name) == sorted(events,
                                                               key=lambda e: e.schema_name)
