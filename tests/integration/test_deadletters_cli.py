"""``mosaic deadletters list|replay`` on the real Kafka: what a consumer dead-lettered is
listed with its source coordinates and goes back, byte for byte, to its source topic."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from mosaic.settings import Settings
from stack.base import Service
from streams.deadletter import DeadLetterPublisher, RawRecord
from streams.kafka import make_consumer, make_producer, read_to_end
from streams.samples import sample_events
from streams.serde import encode
from streams.topics import TopicCatalog
from tests.support import own_topics, with_topic_prefix

pytestmark = pytest.mark.integration


@pytest.fixture
def own(settings: Settings, kafka_stack: Service, unique: str
        ) -> Iterator[tuple[Settings, TopicCatalog]]:
    mine = with_topic_prefix(settings, f"dl{unique}.")
    with own_topics(mine) as catalog:
        yield mine, catalog


def _mosaic(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MOSAIC_KAFKA__TOPIC_PREFIX": settings.kafka.topic_prefix,
           "MOSAIC_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers}
    return subprocess.run([sys.executable, "-c", "from app.cli import entry; entry()", *args],
                          env=env, capture_output=True, text=True, timeout=120, check=False)


def _records(settings: Settings, topic: str) -> list[tuple[bytes | None, bytes | None]]:
    consumer = make_consumer(settings, "test-deadletters-read")
    try:
        snapshot = read_to_end(consumer, topic, timeout_seconds=30)
    finally:
        consumer.close()
    return sorted((m.key(), m.value()) for m in snapshot.messages)


def test_list_then_replay_sends_the_original_record_back(
        own: tuple[Settings, TopicCatalog]) -> None:
    settings, catalog = own
    producer = make_producer(settings)
    letters = DeadLetterPublisher(producer, catalog.deadletter, consumer_group="g-test")
    bad = RawRecord(catalog.optin.name, 2, 41, b"user-x", b"\x00not avro")
    fixed_later = RawRecord(catalog.optin.name, 0, 7, b"user-y", encode(sample_events()[0]))
    other = RawRecord(catalog.pairs.name, 1, 3, b"pair-1", b"\x01\x02")
    for record, error in ((bad, "garbage"), (fixed_later, "index down"), (other, "bug")):
        letters.publish(record, error, attempts=5)

    listed = _mosaic(settings, "deadletters", "list", "--topic", catalog.optin.name)
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert {(r["source_partition"], r["source_offset"], r["key"]) for r in rows} == {
        (2, 41, "user-x"), (0, 7, "user-y")}
    assert all(r["consumer_group"] == "g-test" and r["attempts"] == 5 for r in rows)
    everything = _mosaic(settings, "deadletters", "list", "--limit", "1")
    assert len(everything.stdout.splitlines()) == 1

    # Only the one whose cause was fixed, by id; a dry run first sends nothing.
    wanted = next(r["event_id"] for r in rows if r["key"] == "user-y")
    dry = _mosaic(settings, "deadletters", "replay", "--source-topic", catalog.optin.name,
                  "--id", wanted, "--dry-run")
    assert dry.returncode == 0 and "would replay 1 record(s)" in dry.stdout
    assert _records(settings, catalog.optin.name) == []
    done = _mosaic(settings, "deadletters", "replay", "--source-topic", catalog.optin.name,
                   "--id", wanted)
    assert done.returncode == 0, done.stderr
    assert "replayed 1 record(s)" in done.stdout
    assert _records(settings, catalog.optin.name) == [(b"user-y", fixed_later.value)]

    # Everything from the source topic; the pairs topic's letter stays where it is.
    again = _mosaic(settings, "deadletters", "replay", "--source-topic", catalog.optin.name)
    assert "replayed 2 record(s)" in again.stdout
    assert _records(settings, catalog.optin.name) == sorted(
        [(b"user-y", fixed_later.value)] * 2 + [(b"user-x", bad.value)])
    assert _records(settings, catalog.pairs.name) == []

    unknown = _mosaic(settings, "deadletters", "replay", "--source-topic", catalog.optin.name,
                      "--id", "no-such-id")
    assert unknown.returncode == 1 and "no-such-id" in unknown.stdout
