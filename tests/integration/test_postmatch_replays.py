"""What a user did after the match survives a replay (issue 22, items 2 and 3), on the real
stack: Kafka, Cassandra and Nakama with the post-match agents and the reconciler.

- A member who left their match room is never put back: not by the rooms agent replaying
  ``pairs`` from the beginning in a fresh consumer group (an offset reset), not by the
  reconciler finishing an unsettled pair. When both members left, Nakama deleted the
  room; a replay must not create it again.
- A match notification the user deleted is never sent again by a replay of ``rooms`` or
  by the reconciler, while a notification that was never sent still is.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from consumers.chat import NakamaChat, NotifyRequest, RoomRequest
from consumers.postmatch.app import PostMatch, build_postmatch, reconcile, run_postmatch
from consumers.postmatch.handlers import pair_ref
from consumers.runner import RunStats
from mosaic.nakama_client import NakamaClient, Session
from mosaic.settings import Settings
from streams.events import CycleCompleted, PairMatched, derive_event_id, pair_key
from streams.kafka import make_consumer, make_producer, produce_and_wait
from tests.integration.test_nakama_rooms import Sql
from tests.support import own_keyspace, own_topics

pytestmark = pytest.mark.integration


@pytest.fixture
def app(settings: Settings, kafka_stack: object, cassandra_stack: object,
        nakama_stack: object) -> Iterator[PostMatch]:
    token = uuid.uuid4().hex[:10]
    with own_keyspace(settings.model_copy(update={
        "kafka": settings.kafka.model_copy(update={"topic_prefix": f"t{token}."}),
        "cassandra": settings.cassandra.model_copy(update={"keyspace": f"t_{token}"}),
    })) as own, own_topics(own):
        built = build_postmatch(own)
        yield built
        built.close()


class Users:
    """Real Nakama accounts, each with its own session (what the user's app does)."""

    def __init__(self, settings: Settings, count: int) -> None:
        self.client = NakamaClient(settings.nakama)
        subs = sorted(str(uuid.uuid4()) for _ in range(count))
        self.sessions: dict[str, Session] = {s: self.client.login(s) for s in subs}
        self.subs = subs
        self._http = httpx.Client(base_url=settings.nakama.url, timeout=15.0, trust_env=False)

    def _auth(self, sub: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.sessions[sub].token}"}

    def groups(self, sub: str) -> list[str]:
        return [g["id"] for g in self.client.groups(self.sessions[sub])]

    def notes(self, sub: str) -> list[dict[str, object]]:
        return [n for n in self.client.notifications(self.sessions[sub]) if n.get("code") == 101]

    def leave(self, sub: str, group_id: str) -> None:
        resp = self._http.post(f"/v2/group/{group_id}/leave", headers=self._auth(sub))
        assert resp.status_code == 200, resp.text

    def delete_notes(self, sub: str) -> None:
        ids = [str(n["id"]) for n in self.notes(sub)]
        assert ids, f"{sub} has no match notification to delete"
        resp = self._http.delete("/v2/notification", params={"ids": ids},
                                 headers=self._auth(sub))
        assert resp.status_code == 200, resp.text
        assert self.notes(sub) == []

    def close(self) -> None:
        self._http.close()
        self.client.close()


@pytest.fixture
def users(settings: Settings, nakama_stack: object) -> Iterator[Users]:
    made = Users(settings, 6)
    yield made
    made.close()


def _pair(cycle: str, a: str, b: str) -> PairMatched:
    """The pair's event, users in key order whatever order they come in (random ids)."""
    a, b = sorted((a, b))
    return PairMatched(event_id=derive_event_id("test", cycle, pair_key(a, b)),
                       occurred_at=datetime.now(UTC), cycle_id=cycle, pair_key=pair_key(a, b),
                       user_a=a, user_b=b, score=0.9, similarity=0.8)


def _run_cycle(app: PostMatch, pairs: list[PairMatched]) -> None:
    """Publish a cycle's pairs and run the agents until they are idle: all complete."""
    producer = make_producer(app.settings)
    for pair in pairs:
        produce_and_wait(producer, app.catalog.pairs, pair)
    cycle = pairs[0].cycle_id
    produce_and_wait(producer, app.catalog.cycles, CycleCompleted(
        event_id=derive_event_id("c", cycle), occurred_at=datetime.now(UTC), cycle_id=cycle,
        pairs=len(pairs), seekers=2 * len(pairs)))
    stats = run_postmatch(app, idle_seconds=6, max_seconds=120)
    rows = app.audit.rows(cycle)
    assert len(rows) == len(pairs) and all(r.complete for r in rows), (stats, rows)


def _replay(app: PostMatch, agent: str, records: int) -> None:
    """``agent`` again over its topics from the beginning, in a consumer group nobody used
    (what an offset reset does); it must have handled every record again."""
    group = f"{app.settings.kafka.topic_prefix}replay-{agent}-{uuid.uuid4().hex[:6]}"
    consumer = make_consumer(app.settings, group, app.topics(agent))
    stats: RunStats = app.runner(agent, consumer=consumer).run(idle_seconds=6,
                                                               max_seconds=90)
    assert (stats.handled, stats.dead_lettered, stats.parked) == (records, 0, 0), (
        f"replay of {agent} in group {group}: {stats}")


def _interrupted(app: PostMatch, pair: PairMatched) -> str:
    """A pair whose room exists and is recorded, nothing else (the agents died): the
    reconciler will finish it. Returns the group id."""
    (room,) = app.chat.create_rooms([RoomRequest(pair.cycle_id, pair.pair_key, pair.user_a,
                                                 pair.user_b)])
    assert room.ok, room
    app.audit.mark_rooms([(pair_ref(pair), room.group_id, room.channel_id)],
                         datetime.now(UTC))
    app.audit.record_cycle(pair.cycle_id, 1, 2, datetime.now(UTC) - timedelta(minutes=5))
    return room.group_id


def test_a_member_who_left_is_never_put_back(app: PostMatch, users: Users) -> None:
    a, b, c, d, e, f = users.subs
    cycle = f"default:{uuid.uuid4().hex[:8]}"
    one, two = _pair(cycle, a, b), _pair(cycle, c, d)
    _run_cycle(app, [one, two])
    room_one, room_two = users.groups(a), users.groups(c)
    assert len(room_one) == 1 and users.groups(b) == room_one and users.groups(d) == room_two
    users.leave(b, room_one[0])
    users.leave(c, room_two[0])
    users.leave(d, room_two[0])  # the last member: Nakama deletes the room

    _replay(app, "rooms", records=2)

    assert users.groups(b) == [], "the rooms replay put a member back into a room they left"
    assert users.groups(a) == room_one
    assert (users.groups(c), users.groups(d)) == ([], []), "the replay re-created a room"

    # The reconciler finishing a pair whose member left before the notifications went out.
    later = _pair(f"default:{uuid.uuid4().hex[:8]}", e, f)
    room = _interrupted(app, later)
    users.leave(f, room)
    assert reconcile(app, later.cycle_id).finished == 1
    assert users.groups(f) == [], "the reconciler put a member back into a room they left"
    assert users.groups(e) == [room]
    row = app.audit.get(later.cycle_id, later.pair_key)
    assert row is not None and row.complete and row.nakama_group_id == room


def test_a_deleted_notification_is_never_sent_again(app: PostMatch, users: Users) -> None:
    a, b, c, d, _, _ = users.subs
    cycle = f"default:{uuid.uuid4().hex[:8]}"
    _run_cycle(app, [_pair(cycle, a, b)])
    assert [len(users.notes(u)) for u in (a, b)] == [1, 1]
    users.delete_notes(a)

    _replay(app, "notifier", records=1)

    assert users.notes(a) == [], "the replay of rooms re-sent a deleted notification"
    assert len(users.notes(b)) == 1

    # The reconciler: c's notification went out and was deleted, d's never went out.
    later = _pair(f"default:{uuid.uuid4().hex[:8]}", c, d)
    room = _interrupted(app, later)
    row = app.audit.get(later.cycle_id, later.pair_key)
    assert row is not None and row.nakama_channel_id
    (sent,) = app.chat.notify_matches([NotifyRequest(later.cycle_id, later.pair_key, c, d,
                                                     room, row.nakama_channel_id)])
    assert sent.ok and sent.sent, sent
    users.delete_notes(c)
    assert reconcile(app, later.cycle_id).finished == 1
    assert users.notes(c) == [], "the reconciler re-sent a deleted notification"
    assert len(users.notes(d)) == 1, "the reconciler did not send a notification never sent"
    row = app.audit.get(later.cycle_id, later.pair_key)
    assert row is not None and row.complete


def test_dropped_replay_guards_are_recreated_before_the_next_batch(
        settings: Settings, users: Users) -> None:
    """Both guarantees rest on the triggers of nakama/modules/mosaic_once.lua: a batch of
    either RPC never runs without them (the module recreates them, or refuses)."""
    sql, chat = Sql(settings), NakamaChat(settings.nakama)
    a, b = users.subs[:2]
    cycle = f"default:{uuid.uuid4().hex[:8]}"
    guards = (("mosaic_room_done", "groups"), ("mosaic_notification_sent", "notification"))
    present = ("SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal AND tgname IN "
               "('mosaic_room_done', 'mosaic_notification_sent')")
    try:
        for trigger, table in guards:
            sql.rows(f"DROP TRIGGER IF EXISTS {trigger} ON {table}")
        assert sql.rows(present) == [["0"]]
        room_request = RoomRequest(cycle, pair_key(a, b), a, b)
        (room,) = chat.create_rooms([room_request])
        assert room.ok and room.created, room
        assert sql.rows(present) == [["2"]]
        notes = [NotifyRequest(cycle, pair_key(a, b), u, p, room.group_id, room.channel_id)
                 for u, p in ((a, b), (b, a))]
        assert [(r.ok, r.sent) for r in chat.notify_matches(notes)] == [(True, True)] * 2
        users.delete_notes(a)
        users.leave(b, room.group_id)

        assert chat.create_rooms([room_request])[0].group_id == room.group_id
        assert [(r.ok, r.sent) for r in chat.notify_matches(notes)] == [(True, False)] * 2
        assert (users.groups(a), users.groups(b)) == ([room.group_id], [])
        assert (len(users.notes(a)), len(users.notes(b))) == (0, 1)
    finally:
        chat.close()
