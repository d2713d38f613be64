"""One contract for each post-match adapter, run against the in-memory fake (unit) and
the real server (integration): the audit store on Cassandra, the chat server on Nakama."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from consumers.audit import AuditStore, CassandraAuditStore, MemoryAuditStore
from consumers.chat import ChatServer, MemoryChat, NakamaChat
from mosaic.nakama_client import NakamaClient, Session
from mosaic.settings import Settings

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
    from mosaic.cassandra import connect

    session = connect(settings.cassandra, keyspace=f"test_audit_{uuid.uuid4().hex[:8]}")
    yield CassandraAuditStore(session)
    session.execute(f"DROP KEYSPACE IF EXISTS {session.keyspace}")
    session.cluster.shutdown()


def test_record_pair_first_writer_wins(audit: AuditStore) -> None:
    first = audit.record_pair("c1", "a|b", "a", "b", NOW)
    again = audit.record_pair("c1", "a|b", "b", "a", NOW)
    assert again == first
    assert (first.user1_id, first.user2_id) == ("a", "b")
    assert not first.complete


def test_steps_complete_a_row(audit: AuditStore) -> None:
    audit.record_pair("c1", "a|b", "a", "b", NOW)
    audit.record_pair("c1", "c|d", "c", "d", NOW)
    audit.mark_room("c1", "a|b", "g1", NOW)
    audit.mark_notified("c1", "a|b", "b", NOW)
    row = audit.get("c1", "a|b")
    assert row is not None
    assert row.nakama_group_id == "g1" and row.nakama_group_created
    assert row.notified("b") and not row.notified("a")
    audit.mark_notified("c1", "a|b", "a", NOW)
    audit.mark_index_updated("c1", "a|b", NOW)
    assert [r.pair_key for r in audit.incomplete("c1")] == ["c|d"]
    assert [r.pair_key for r in audit.rows("c1")] == ["a|b", "c|d"]
    assert audit.get("c2", "a|b") is None


@pytest.fixture(params=[
    pytest.param("memory", marks=pytest.mark.unit),
    pytest.param("nakama", marks=pytest.mark.integration),
])
def chat(request: pytest.FixtureRequest, settings: Settings) -> ChatServer:
    if request.param == "memory":
        return MemoryChat()
    request.getfixturevalue("nakama_stack")
    return NakamaChat(settings.nakama)


def _users(chat: ChatServer, settings: Settings) -> tuple[str, str, dict[str, Session]]:
    a, b = f"sub-{uuid.uuid4()}", f"sub-{uuid.uuid4()}"
    sessions = {}
    if isinstance(chat, NakamaChat):
        client = NakamaClient(settings.nakama)
        sessions = {a: client.login(a), b: client.login(b)}
    return a, b, sessions


def test_room_is_created_once(chat: ChatServer, settings: Settings) -> None:
    a, b, _ = _users(chat, settings)
    cycle = f"cyc-{uuid.uuid4().hex[:6]}"
    first = chat.create_room(cycle, f"{a}|{b}", a, b)
    second = chat.create_room(cycle, f"{a}|{b}", a, b)
    assert first.created and not second.created
    assert first.group_id == second.group_id


def test_notification_sent_exactly_once(chat: ChatServer, settings: Settings) -> None:
    a, b, tokens = _users(chat, settings)
    cycle = f"cyc-{uuid.uuid4().hex[:6]}"
    room = chat.create_room(cycle, f"{a}|{b}", a, b)
    sent = [chat.notify_match(cycle, f"{a}|{b}", a, b, room.group_id) for _ in range(3)]
    assert sent == [True, False, False]
    if tokens:  # what the user's client really sees on Nakama
        client = NakamaClient(settings.nakama)
        notes = client.notifications(tokens[a])
        assert len(notes) == 1, notes  # no system "added to group" notice either
        assert notes[0]["code"] == 101
        listed = client.groups(tokens[b])
        assert [g["id"] for g in listed] == [room.group_id]
        assert listed[0]["open"] is False and listed[0]["edge_count"] == 2


@pytest.mark.integration
def test_unknown_user_is_a_clear_error(settings: Settings, nakama_stack: object) -> None:
    from mosaic.errors import ExternalServiceError

    chat = NakamaChat(settings.nakama)
    with pytest.raises(ExternalServiceError, match="unknown user"):
        chat.create_room("c", "x|y", f"nobody-{uuid.uuid4()}", f"nobody-{uuid.uuid4()}")
