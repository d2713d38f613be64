"""Post-match agents on the real stack: PairMatched on Kafka -> a private Nakama room and
exactly one notification per user, audit rows complete in Cassandra, a poison record on
the dead-letter topic while the next good one is processed, and the reconciler finishing a
pair whose notification step never ran."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from consumers.postmatch_app import PostMatch, build_postmatch, reconcile, run_postmatch
from mosaic.nakama_client import NakamaClient
from mosaic.settings import Settings
from streams.events import DeadLettered, PairMatched, UserNotified, derive_event_id, pair_key
from streams.kafka import make_consumer, make_producer, produce_and_wait, read_to_end
from streams.serde import decode
from tests.support import own_topics

pytestmark = pytest.mark.integration


@pytest.fixture
def app(settings: Settings, kafka_stack: object, cassandra_stack: object,
        nakama_stack: object, unique: str) -> Iterator[PostMatch]:
    own = settings.model_copy(update={
        "kafka": settings.kafka.model_copy(update={"topic_prefix": f"t{unique}."}),
        "cassandra": settings.cassandra.model_copy(update={"keyspace": f"t_{unique}"}),
    })
    with own_topics(own):
        built = build_postmatch(own)
        yield built
        built.close()


def _pair(cycle: str, a: str, b: str) -> PairMatched:
    key = pair_key(a, b)
    ua, ub = key.split("|")
    return PairMatched(event_id=derive_event_id("test", cycle, key),
                       occurred_at=datetime.now(UTC), cycle_id=cycle, pair_key=key,
                       user_a=ua, user_b=ub, score=0.9, similarity=0.8)


def test_pairs_become_rooms_and_single_notifications(app: PostMatch) -> None:
    settings = app.settings
    users = [str(uuid.uuid4()) for _ in range(4)]
    nakama = NakamaClient(settings.nakama)
    sessions = {u: nakama.login(u) for u in users}
    cycle = f"default:{uuid.uuid4().hex[:8]}"
    producer = make_producer(settings)
    first, second = _pair(cycle, users[0], users[1]), _pair(cycle, users[2], users[3])
    produce_and_wait(producer, app.catalog.pairs, first)
    producer.produce(app.catalog.pairs.name, key=b"junk", value=b"\x00not avro")
    producer.flush(10)
    produce_and_wait(producer, app.catalog.pairs, second)
    produce_and_wait(producer, app.catalog.pairs, first)  # a duplicate delivery

    stats = run_postmatch(app, idle_seconds=6, max_seconds=90)

    assert stats["rooms"].dead_lettered == 1 and stats["rooms"].handled == 3
    for user in users:
        notes = nakama.notifications(sessions[user])
        assert len(notes) == 1, (user, notes)
    rows = app.audit.rows(cycle)
    assert [r.pair_key for r in rows] == sorted([first.pair_key, second.pair_key])
    assert all(r.complete for r in rows), rows
    notified = _read(app, app.catalog.notifications.name)
    assert sorted({e.user_id for e in notified if isinstance(e, UserNotified)}) == sorted(users)
    letters = [e for e in _read(app, app.catalog.deadletter.name)
               if isinstance(e, DeadLettered)]
    assert {(d.source_topic, d.source_value) for d in letters} == {
        (app.catalog.pairs.name, b"\x00not avro")}


def test_reconcile_finishes_an_interrupted_pair(app: PostMatch) -> None:
    settings = app.settings
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    nakama = NakamaClient(settings.nakama)
    sessions = {u: nakama.login(u) for u in (a, b)}
    cycle = f"default:{uuid.uuid4().hex[:8]}"
    pair = _pair(cycle, a, b)
    produce_and_wait(make_producer(settings), app.catalog.pairs, pair)
    # Interrupted cycle: the room exists, nobody was notified, the index never updated.
    row = app.audit.record_pair(cycle, pair.pair_key, pair.user_a, pair.user_b,
                                datetime.now(UTC))
    room = app.chat.create_room(cycle, pair.pair_key, pair.user_a, pair.user_b)
    app.audit.mark_room(cycle, pair.pair_key, room.group_id, datetime.now(UTC))
    assert not row.complete

    first = reconcile(app, cycle)
    again = reconcile(app, cycle)

    assert (first.pairs, first.finished, again.already_complete) == (1, 1, 1)
    done = app.audit.get(cycle, pair.pair_key)
    assert done is not None and done.complete and done.nakama_group_id == room.group_id
    assert [len(nakama.notifications(sessions[u])) for u in (a, b)] == [1, 1]


def _read(app: PostMatch, topic: str) -> list[object]:
    consumer = make_consumer(app.settings, f"reader-{uuid.uuid4().hex[:6]}")
    try:
        snapshot = read_to_end(consumer, topic)
    finally:
        consumer.close()
    return [decode(m.value()) for m in snapshot.messages]
