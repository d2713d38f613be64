"""``mosaic deadletters show`` and ``mosaic topics tail`` on the real Kafka: records come
out decoded as JSON, and records that do not decode come out with their error and bytes."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from app.cli import main
from app.ops.inspect import tail
from mosaic.settings import Settings
from stack.base import Service
from streams.deadletter import DeadLetterPublisher, RawRecord
from streams.events import DeadLettered
from streams.kafka import make_consumer, make_producer, produce_and_wait, read_to_end
from streams.samples import sample_events
from streams.serde import default_serde, encode
from streams.topics import TopicCatalog
from tests.support import own_topics, with_topic_prefix

pytestmark = pytest.mark.integration


@pytest.fixture
def own(settings: Settings, kafka_stack: Service, unique: str, monkeypatch: pytest.MonkeyPatch
        ) -> Iterator[tuple[Settings, TopicCatalog]]:
    mine = with_topic_prefix(settings, f"insp{unique}.")
    monkeypatch.setenv("MOSAIC_KAFKA__TOPIC_PREFIX", mine.kafka.topic_prefix)
    monkeypatch.setenv("MOSAIC_KAFKA__BOOTSTRAP_SERVERS", mine.kafka.bootstrap_servers)
    with own_topics(mine) as catalog:
        yield mine, catalog


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(list(args))
    return code, capsys.readouterr().out


def test_show_prints_one_dead_letter_with_its_source_record(
        own: tuple[Settings, TopicCatalog], capsys: pytest.CaptureFixture[str]) -> None:
    settings, catalog = own
    letters = DeadLetterPublisher(make_producer(settings), catalog.deadletter,
                                  consumer_group="g-show")
    event = sample_events()[0]
    good = RawRecord(catalog.optin.name, 0, 7, b"user-y", encode(event))
    bad = RawRecord(catalog.optin.name, 2, 41, b"user-x", b"\x00not avro")
    for record, error in ((good, "index down"), (bad, "garbage")):
        letters.publish(record, error, attempts=3)
    consumer = make_consumer(settings, "test-inspect-read")
    try:
        snapshot = read_to_end(consumer, catalog.deadletter, timeout_seconds=30)
    finally:
        consumer.close()
    decoded = [default_serde().decode_as(m.value(), DeadLettered) for m in snapshot.messages]
    ids = {d.source_offset: d.event_id for d in decoded}

    code, out = _run(capsys, "deadletters", "show", ids[7])
    assert code == 0
    shown = json.loads(out)
    assert shown["reason"] and shown["error_type"]
    assert (shown["source_topic"], shown["source_partition"], shown["source_offset"]) == (
        catalog.optin.name, 0, 7)
    assert shown["consumer_group"] == "g-show" and shown["attempts"] == 3
    assert shown["source_record"]["event"] == event.schema_name
    assert shown["source_record"]["value"]["event_id"] == event.event_id

    code, out = _run(capsys, "deadletters", "show", ids[41])
    record = json.loads(out)["source_record"]
    assert code == 0 and "error" in record
    assert base64.b64decode(record["raw"]["base64"]) == b"\x00not avro"
    assert record["raw"]["hex"] == b"\x00not avro".hex()

    code, out = _run(capsys, "deadletters", "show", "no-such-id")
    assert code == 1 and "no-such-id" in out


def test_tail_prints_decoded_events_and_undecodable_records(
        own: tuple[Settings, TopicCatalog], capsys: pytest.CaptureFixture[str]) -> None:
    settings, catalog = own
    producer = make_producer(settings)
    events = [e for e in sample_events() if catalog.optin.carries(e)]
    for event in events:
        produce_and_wait(producer, catalog.optin, event)
    producer.produce(catalog.optin.name, key=b"k-bad", value=b"\x00garbage", partition=0)
    producer.flush(30)

    code, out = _run(capsys, "topics", "tail", "optin", "--from-beginning", "--limit", "0")
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert sorted(r["value"]["event_id"] for r in rows if "event" in r) == sorted(
        e.event_id for e in events)
    (broken,) = [r for r in rows if "error" in r]
    assert broken["key"] == "k-bad" and broken["raw"]["hex"] == b"\x00garbage".hex()
    assert all(r["topic"] == catalog.optin.name for r in rows)

    code, out = _run(capsys, "topics", "tail", catalog.optin.name, "--limit", "1")
    assert code == 0 and len(out.splitlines()) == 1

    code, out = _run(capsys, "topics", "tail", "cycles")  # empty: ends at once
    assert code == 0 and out == ""


def test_tail_follow_prints_new_records(own: tuple[Settings, TopicCatalog]) -> None:
    settings, catalog = own
    seen: list[dict[str, Any]] = []
    stop = threading.Event()

    def read() -> None:
        for row in tail(settings, catalog.optin, follow=True, stop=stop.is_set):
            seen.append(row)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    event = next(e for e in sample_events() if catalog.optin.carries(e))
    try:
        produce_and_wait(make_producer(settings), catalog.optin, event)
        deadline = time.monotonic() + 20
        while not seen and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        stop.set()
        reader.join(10)
    assert [r["value"]["event_id"] for r in seen] == [event.event_id]
