"""One contract for each post-match adapter, run against the in-memory fake (unit) and
the real server (integration): the audit store on Cassandra, the chat server on Nakama."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from consumers.audit import BUCKETS, DEAD_LETTERED, PARKED, AuditStore, CassandraAuditStore, PairRef
from consumers.chat import ChatServer, NakamaChat, NotifyRequest, RoomRequest
from mosaic.nakama_client import NakamaClient, Session
from mosaic.settings import Settings
from tests.fakes import MemoryAuditStore, MemoryChat

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


@pytest.fixture(params=[
    pytest.param("memory", marks=pytest.mark.unit),
    pytest.param("cassandra", marks=pytest.mark.integration),
])
def audit(request: pytest.FixtureRequest, settings: Settings) -> Iterator[AuditStore]:
    if request.param == "memory":
        yield MemoryAuditStore()
        return
    request.getfixturevalue("cassandra_stack")
    from tests.support import migrated_session

    session = migrated_session(settings, f"test_audit_{uuid.uuid4().hex[:8]}")
    yield CassandraAuditStore(session)
    session.execute(f"DROP KEYSPACE IF EXISTS {session.keyspace}")
    session.cluster.shutdown()


def _ref(i: int = 0, cycle: str = "c1") -> PairRef:
    return PairRef(cycle, f"a{i:04d}|b{i:04d}", f"a{i:04d}", f"b{i:04d}")


def test_steps_in_any_order_complete_a_row_and_replays_change_nothing(
        audit: AuditStore) -> None:
    pair = _ref()
    for round_ in range(2):  # the second round is a replay
        audit.mark_notified([(pair, "b0000")], NOW)
        audit.mark_index_updated([pair], NOW, matched_at=NOW - timedelta(seconds=5))
        row = audit.get("c1", pair.pair_key)
        assert row is not None and row.complete == (round_ == 1)
        audit.mark_rooms([(pair, "g1", "3.g1..")], NOW)
        audit.mark_notified([(pair, "a0000")], NOW)
    row = audit.get("c1", pair.pair_key)
    assert row is not None and row.complete
    assert (row.user1_id, row.user2_id) == ("a0000", "b0000")
    assert (row.nakama_group_id, row.nakama_channel_id) == ("g1", "3.g1..")
    assert row.matched_at == NOW - timedelta(seconds=5)
    assert audit.incomplete("c1") == []


def test_a_cycle_spread_over_buckets_reads_back_whole(audit: AuditStore) -> None:
    pairs = [_ref(i) for i in range(3 * BUCKETS)]
    audit.mark_rooms([(p, f"g{i}", f"3.g{i}..") for i, p in enumerate(pairs)], NOW)
    audit.mark_index_updated(pairs[:10], NOW)
    rows = audit.rows("c1")
    assert [r.pair_key for r in rows] == sorted(p.pair_key for p in pairs)
    assert audit.rows("another-cycle") == []
    assert len(audit.incomplete("c1")) == len(pairs)


def test_status_settles_dead_letters_and_completion_beats_parked(audit: AuditStore) -> None:
    parked, dead = _ref(1), _ref(2)
    audit.mark_status(parked, PARKED, "nakama timed out", NOW)
    audit.mark_status(dead, DEAD_LETTERED, "unknown user: b0002", NOW)
    audit.record_cycle("c1", 2, 4, NOW)
    status = audit.cycle_status("c1")
    assert (status.pairs, status.parked, status.dead_lettered, status.pending) == (2, 1, 1, 1)
    assert [r.pair_key for r in audit.incomplete("c1")] == [parked.pair_key]
    # The reconciler finishes the parked pair later: the flags win over the status.
    audit.mark_rooms([(parked, "g", "3.g..")], NOW)
    audit.mark_notified([(parked, "a0001"), (parked, "b0001")], NOW)
    audit.mark_index_updated([parked], NOW)
    status = audit.cycle_status("c1")
    assert (status.completed, status.parked, status.pending, status.finished) == (1, 0, 0, True)
    audit.mark_cycle_finished("c1", NOW)
    assert [c.finished_at for c in audit.cycles()] == [NOW]


@pytest.fixture(params=[
    pytest.param("memory", marks=pytest.mark.unit),
    pytest.param("nakama", marks=pytest.mark.integration),
])
def chat(request: pytest.FixtureRequest, settings: Settings) -> Iterator[ChatServer]:
    if request.param == "memory":
        yield MemoryChat()
        return
    request.getfixturevalue("nakama_stack")
    server = NakamaChat(settings.nakama)
    yield server
    server.close()


def _users(chat: ChatServer, settings: Settings, n: int = 2) -> tuple[list[str],
                                                                       dict[str, Session]]:
    users = sorted(f"sub-{uuid.uuid4()}" for _ in range(n))
    sessions = {}
    if isinstance(chat, NakamaChat):
        client = NakamaClient(settings.nakama)
        sessions = {u: client.login(u) for u in users}
    return users, sessions


def test_rooms_are_created_once_per_pair(chat: ChatServer, settings: Settings) -> None:
    users, _ = _users(chat, settings, 4)
    cycle = f"cyc-{uuid.uuid4().hex[:6]}"
    rooms = [RoomRequest(cycle, f"{a}|{b}", a, b) for a, b in (users[:2], users[2:])]
    first = chat.create_rooms(rooms)
    second = chat.create_rooms(rooms)
    assert [r.ok and r.created for r in first] == [True, True]
    assert [r.ok and not r.created for r in second] == [True, True]
    assert [r.group_id for r in first] == [r.group_id for r in second]
    assert len({r.group_id for r in first}) == 2
    assert all(r.channel_id for r in first)


def test_notification_sent_exactly_once(chat: ChatServer, settings: Settings) -> None:
    (a, b), sessions = _users(chat, settings)
    cycle = f"cyc-{uuid.uuid4().hex[:6]}"
    (room,) = chat.create_rooms([RoomRequest(cycle, f"{a}|{b}", a, b)])
    note = NotifyRequest(cycle, f"{a}|{b}", a, b, room.group_id, room.channel_id)
    sent = [chat.notify_matches([note])[0] for _ in range(3)]
    assert [(r.ok, r.sent) for r in sent] == [(True, True), (True, False), (True, False)]
    if sessions:  # what the user's client really sees on Nakama
        client = NakamaClient(settings.nakama)
        notes = client.notifications(sessions[a])
        assert len(notes) == 1, notes  # no system "added to group" notice either
        assert notes[0]["code"] == 101
        listed = client.groups(sessions[b])
        assert [g["id"] for g in listed] == [room.group_id]
        assert listed[0]["open"] is False and listed[0]["edge_count"] == 2


def test_an_unknown_user_fails_only_their_item_for_good(chat: ChatServer,
                                                       settings: Settings) -> None:
    (a, b), _ = _users(chat, settings)
    ghost = f"nobody-{uuid.uuid4()}"
    if isinstance(chat, MemoryChat):
        chat.gone.add(ghost)
    cycle = f"cyc-{uuid.uuid4().hex[:6]}"
    good, bad = chat.create_rooms([RoomRequest(cycle, f"{a}|{b}", a, b),
                                   RoomRequest(cycle, f"{a}|{ghost}", a, ghost)])
    assert good.ok
    assert not bad.ok and bad.permanent and bad.error
