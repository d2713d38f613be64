"""Post-match agents on the real stack: PairMatched on Kafka -> a private Nakama room and
exactly one notification per user, audit rows complete in Cassandra, a poison record and
a pair with a deleted user on the dead-letter topic while the others are processed, the
cycle's status, and the reconciler finishing a pair whose notification step never ran."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from consumers.audit import DEAD_LETTERED
from consumers.chat import RoomRequest
from consumers.postmatch.app import (
    PostMatch,
    Reconciler,
    build_postmatch,
    reconcile,
    run_postmatch,
)
from consumers.postmatch.handlers import pair_ref
from mosaic.nakama_client import NakamaClient
from mosaic.settings import Settings
from streams.events import (
    CycleCompleted,
    DeadLettered,
    PairMatched,
    UserNotified,
    derive_event_id,
    pair_key,
)
from streams.kafka import make_consumer, make_producer, produce_and_wait, read_to_end
from streams.serde import decode
from tests.support import own_keyspace, own_topics

pytestmark = pytest.mark.integration


@pytest.fixture
def app(settings: Settings, kafka_stack: object, cassandra_stack: object,
        nakama_stack: object, unique: str) -> Iterator[PostMatch]:
    with own_keyspace(settings.model_copy(update={
        "kafka": settings.kafka.model_copy(update={"topic_prefix": f"t{unique}."}),
        "cassandra": settings.cassandra.model_copy(update={"keyspace": f"t_{unique}"}),
    })) as own, own_topics(own):
        built = build_postmatch(own)
        yield built
        built.close()


def _pair(cycle: str, a: str, b: str) -> PairMatched:
    key = pair_key(a, b)
    ua, ub = key.split("|")
    return PairMatched(event_id=derive_event_id("test", cycle, key),
                       occurred_at=datetime.now(UTC), cycle_id=cycle, pair_key=key,
                       user_a=ua, user_b=ub, score=0.9, similarity=0.8)


def test_pairs_become_rooms_and_single_notifications(
        app: PostMatch, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    settings = app.settings
    users = [str(uuid.uuid4()) for _ in range(4)]
    ghost = str(uuid.uuid4())  # never logged in: no Nakama account (a deleted user)
    nakama = NakamaClient(settings.nakama)
    sessions = {u: nakama.login(u) for u in users}
    cycle = f"default:{uuid.uuid4().hex[:8]}"
    producer = make_producer(settings)
    first, second = _pair(cycle, users[0], users[1]), _pair(cycle, users[2], users[3])
    lost = _pair(cycle, users[0], ghost)
    produce_and_wait(producer, app.catalog.pairs, first)
    producer.produce(app.catalog.pairs.name, key=b"junk", value=b"\x00not avro")
    producer.flush(10)
    produce_and_wait(producer, app.catalog.pairs, lost)
    produce_and_wait(producer, app.catalog.pairs, second)
    produce_and_wait(producer, app.catalog.pairs, first)  # a duplicate delivery
    produce_and_wait(producer, app.catalog.cycles, CycleCompleted(
        event_id=derive_event_id("c", cycle), occurred_at=datetime.now(UTC), cycle_id=cycle,
        pairs=3, seekers=5))

    stats = run_postmatch(app, idle_seconds=6, max_seconds=90)

    assert stats["rooms"].dead_lettered == 2 and stats["rooms"].handled == 3
    for user in users:
        notes = nakama.notifications(sessions[user])
        assert len(notes) == 1, (user, notes)
    rows = {r.pair_key: r for r in app.audit.rows(cycle)}
    assert sorted(rows) == sorted([first.pair_key, second.pair_key, lost.pair_key])
    assert rows[first.pair_key].complete and rows[second.pair_key].complete
    assert rows[first.pair_key].nakama_channel_id
    assert rows[lost.pair_key].status == DEAD_LETTERED
    assert ghost in (rows[lost.pair_key].last_error or "")
    notified = _read(app, app.catalog.notifications.name)
    assert sorted({e.user_id for e in notified if isinstance(e, UserNotified)}) == sorted(users)
    letters = [e for e in _read(app, app.catalog.deadletter.name)
               if isinstance(e, DeadLettered)]
    assert {d.source_value for d in letters if d.source_key == b"junk"} == {b"\x00not avro"}
    assert any(ghost in d.reason for d in letters)
    status = app.audit.cycle_status(cycle)
    assert (status.pairs, status.completed, status.dead_lettered, status.finished) == (
        3, 2, 1, True)
    Reconciler(app).sweep()  # the agents were busy on it just now: left alone
    assert app.audit.cycle(cycle).finished_at is None  # type: ignore[union-attr]
    later = datetime.now(UTC) + timedelta(minutes=1)
    Reconciler(app, clock=lambda: later).sweep()
    assert app.audit.cycle(cycle).finished_at is not None  # type: ignore[union-attr]

    from app.cli import main

    monkeypatch.setenv("MOSAIC_CASSANDRA__KEYSPACE", settings.cassandra.keyspace)
    monkeypatch.setenv("MOSAIC_KAFKA__TOPIC_PREFIX", settings.kafka.topic_prefix)
    assert main(["cycle", "status", cycle]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith(cycle))
    assert line.split()[1:7] == ["3", "2", "1", "0", "0", "finished"]
    assert line.split()[-1] != "-"  # the finish time


def test_reconcile_finishes_an_interrupted_pair(app: PostMatch) -> None:
    settings = app.settings
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    nakama = NakamaClient(settings.nakama)
    sessions = {u: nakama.login(u) for u in (a, b)}
    cycle = f"default:{uuid.uuid4().hex[:8]}"
    pair = _pair(cycle, a, b)
    produce_and_wait(make_producer(settings), app.catalog.pairs, pair)
    # Interrupted cycle: the room exists, nobody was notified, the index never updated.
    (room,) = app.chat.create_rooms([RoomRequest(cycle, pair.pair_key, pair.user_a,
                                                 pair.user_b)])
    app.audit.mark_rooms([(pair_ref(pair), room.group_id, room.channel_id)],
                         datetime.now(UTC))
    app.audit.record_cycle(cycle, 1, 2, datetime.now(UTC) - timedelta(minutes=5))

    first = reconcile(app, cycle)
    again = reconcile(app, cycle)

    assert (first.pairs, first.finished, again.already_complete) == (1, 1, 1)
    done = app.audit.get(cycle, pair.pair_key)
    assert done is not None and done.complete and done.nakama_group_id == room.group_id
    assert [len(nakama.notifications(sessions[u])) for u in (a, b)] == [1, 1]


def test_the_reconciler_finds_a_stale_cycle_by_itself(app: PostMatch) -> None:
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    nakama = NakamaClient(app.settings.nakama)
    sessions = {u: nakama.login(u) for u in (a, b)}
    cycle = f"default:{uuid.uuid4().hex[:8]}"
    pair = _pair(cycle, a, b)
    # The agents never ran: only the topic and the cycle's status row know the pair.
    produce_and_wait(make_producer(app.settings), app.catalog.pairs, pair)
    app.audit.record_cycle(cycle, 1, 2, datetime.now(UTC) - timedelta(minutes=5))

    results = Reconciler(app, grace=timedelta(seconds=30)).sweep()

    assert [(r.cycle_id, r.finished) for r in results] == [(cycle, 1)]
    row = app.audit.get(cycle, pair.pair_key)
    assert row is not None and row.complete
    assert [len(nakama.notifications(sessions[u])) for u in (a, b)] == [1, 1]
    Reconciler(app).sweep()  # settles it
    assert app.audit.cycle_status(cycle).finished_at is not None


def _read(app: PostMatch, topic: str) -> list[object]:
    consumer = make_consumer(app.settings, f"reader-{uuid.uuid4().hex[:6]}")
    try:
        snapshot = read_to_end(consumer, topic)
    finally:
        consumer.close()
    return [decode(m.value()) for m in snapshot.messages]


def test_the_reconciler_records_a_cycle_count_the_agents_never_saw(app: PostMatch) -> None:
    # After a broker restart the index-state agent may never reach CycleCompleted: the
    # cycle has audit rows and activity but no pair count. The reconciler reads the count
    # from the cycles topic instead of skipping the cycle for good.
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    nakama = NakamaClient(app.settings.nakama)
    sessions = {u: nakama.login(u) for u in (a, b)}
    cycle = f"default:{uuid.uuid4().hex[:8]}"
    pair = _pair(cycle, a, b)
    earlier = datetime.now(UTC) - timedelta(minutes=5)
    producer = make_producer(app.settings)
    produce_and_wait(producer, app.catalog.pairs, pair)
    produce_and_wait(producer, app.catalog.cycles, CycleCompleted(
        event_id=derive_event_id("test-cycle", cycle), occurred_at=earlier, cycle_id=cycle,
        pairs=1, seekers=2))
    app.audit.mark_index_updated([pair_ref(pair)], earlier)  # one step ran, then nothing
    app.audit.touch_cycles([cycle], earlier)
    assert app.audit.cycle(cycle).pairs is None  # type: ignore[union-attr]

    results = Reconciler(app, grace=timedelta(seconds=30)).sweep()

    assert [(r.cycle_id, r.finished) for r in results] == [(cycle, 1)]
    assert app.audit.cycle(cycle).pairs == 1  # type: ignore[union-attr]
    row = app.audit.get(cycle, pair.pair_key)
    assert row is not None and row.complete
    assert [len(nakama.notifications(sessions[u])) for u in (a, b)] == [1, 1]
