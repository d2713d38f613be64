"""Readers first (docs/operations.md, "Schema evolution"), on the real stack: a record
written by a producer deployed before its readers (a schema this code does not know) is
dead-lettered by the consumer that owns its progress, with a reason naming the unknown
fingerprint, never crashes it and never holds back the records behind it; a reader that only
scans the topic (the reconciler) says what it skipped instead of dropping it silently."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import pytest

from consumers.postmatch.app import PostMatch, cycle_pairs
from mosaic.nakama_client import NakamaClient
from schemas import load_current, load_history
from streams.events import DeadLettered, Event
from streams.kafka import make_consumer, make_producer, produce_and_wait, read_to_end
from streams.serde import AvroSerde, SchemaRegistry, decode, fingerprint
from tests.integration.test_embedding_agent import (  # noqa: F401 - fixtures used here
    Env,
    env,
    keyspace,
    opt_in,
    standin,
)
from tests.integration.test_postmatch_replays import _pair, app  # noqa: F401 - a fixture

pytestmark = pytest.mark.integration


def newer_writer(name: str) -> tuple[AvroSerde, str]:
    """A producer one schema version ahead of this code: ``name`` with one more field
    (with a default, as the policy requires). Returns its serde and its fingerprint (hex)."""
    current = dict(load_current())
    schema = {**current[name], "fields": [*current[name]["fields"], {
        "name": "added_later", "type": "string", "default": "",
        "doc": "A field this code does not know yet."}]}
    registry = SchemaRegistry({**current, name: schema}, load_history())
    return AvroSerde(registry), fingerprint(schema).hex()


def _letters(settings: Any, topic: Any) -> list[DeadLettered]:
    consumer = make_consumer(settings, f"reader-{uuid.uuid4().hex[:8]}")
    try:
        found = [decode(m.value()) for m in read_to_end(consumer, topic).messages]
    finally:
        consumer.close()
    return [x for x in found if isinstance(x, DeadLettered)]


def test_the_embedding_agent_dead_letters_a_newer_writers_record(env: Env  # noqa: F811
                                                                 ) -> None:
    writer, unknown = newer_writer("OptInRequested")
    early, late = env.user("early"), env.user("late")
    env.seed(late)
    producer = make_producer(env.settings)
    newer = writer.encode(opt_in(early, 1))
    producer.produce(env.catalog.optin.name, key=early.encode(), value=newer)
    assert producer.flush(30) == 0
    env.produce(opt_in(late, 2))  # behind it on its partition or another: handled

    report = env.run()

    assert report.fatal is None, report
    assert report.outcomes == {"dead_lettered": 1, "indexed": 1}, report
    (letter,) = _letters(env.settings, env.catalog.deadletter)
    assert unknown in letter.reason and letter.error_type == "SerializationError", letter
    assert letter.source_value == newer and letter.source_topic == env.catalog.optin.name
    assert env.seekers().keys() == {late}


def _publish(into: PostMatch, writer: AvroSerde, event: Event) -> bytes:
    value, key = writer.encode(event), event.key()
    assert isinstance(key, str)
    producer = make_producer(into.settings)
    producer.produce(into.catalog.pairs.name, key=key.encode(), value=value)
    assert producer.flush(30) == 0
    return value


def test_post_match_agents_dead_letter_a_newer_writers_pair(app: PostMatch  # noqa: F811
                                                            ) -> None:
    writer, unknown = newer_writer("PairMatched")
    cycle = f"default:{uuid.uuid4().hex[:8]}"
    newer = _publish(app, writer, _pair(cycle, "a-" + cycle, "b-" + cycle))
    nakama = NakamaClient(app.settings.nakama)
    c, d = (nakama.login(str(uuid.uuid4())).custom_id for _ in range(2))
    nakama.close()
    produce_and_wait(make_producer(app.settings), app.catalog.pairs,
                     _pair(cycle, c, d))  # behind it: handled

    for agent in ("rooms", "index-state"):
        # Until both records are settled (an idle limit counted from the start gave up
        # while the group was still joining after the fault tests' broker restarts).
        runner = app.runner(agent)
        stats = runner.run(stop=lambda r=runner: r.stats.dead_lettered + r.stats.handled >= 2,
                           max_seconds=90)
        assert (stats.dead_lettered, stats.handled) == (1, 1), (
            f"{agent} on {app.catalog.pairs.name} after 90 s: {stats}")
    letters = _letters(app.settings, app.catalog.deadletter)
    assert len(letters) == 2 and all(unknown in x.reason and x.source_value == newer
                                     for x in letters), letters


def test_the_reconciler_says_which_pair_it_cannot_read(app: PostMatch,  # noqa: F811
                                                       caplog: pytest.LogCaptureFixture
                                                       ) -> None:
    writer, unknown = newer_writer("PairMatched")
    cycle = f"default:{uuid.uuid4().hex[:8]}"
    _publish(app, writer, _pair(cycle, "a-" + cycle, "b-" + cycle))
    readable = _pair(cycle, "c-" + cycle, "d-" + cycle)
    produce_and_wait(make_producer(app.settings), app.catalog.pairs, readable)

    with caplog.at_level(logging.WARNING, logger="consumers.postmatch.app"):
        assert [p.pair_key for p in cycle_pairs(app, cycle)] == [readable.pair_key]

    said = [r.getMessage() for r in caplog.records if unknown in r.getMessage()]
    assert said and app.catalog.pairs.name in said[0], caplog.text
