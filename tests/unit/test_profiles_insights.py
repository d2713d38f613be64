"""Insight documents and the user chat index, on the in-memory store (same code as S3)."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta

import pytest

from mosaic.errors import ValidationError
from profiles.errors import BlobConflictError, MalformedInsightError
from profiles.insights import (
    ChatInsights,
    ChatRef,
    InMemoryInsightStore,
    ParticipantInsight,
    insights_key,
    parse_chat_insights,
    parse_user_index,
    user_index_key,
)

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def chat(chat_hash: str, *users: str) -> ChatInsights:
    return ChatInsights(chat_hash, T0, users, {
        u: ParticipantInsight(("curious",), ("jazz",), ("honesty",), "brief") for u in users})


def test_round_trip_through_the_store() -> None:
    store = InMemoryInsightStore()
    store.put_chat_insights(chat("chat-0001", "alice", "bob"), T0)
    store.put_chat_insights(chat("chat-0002", "alice"), T0 + timedelta(days=1))
    assert [r.chat_hash for r in store.user_chats("alice")] == ["chat-0002", "chat-0001"]
    assert [r.chat_hash for r in store.user_chats("bob")] == ["chat-0001"]
    got = store.chat_insights("chat-0001")
    assert got is not None and got.participants == ("alice", "bob")
    assert got.for_user("bob") == ParticipantInsight(("curious",), ("jazz",), ("honesty",),
                                                     "brief")
    assert got.updated_at == T0


def test_layout_keys_are_the_documented_ones() -> None:
    store = InMemoryInsightStore()
    store.put_chat_insights(chat("chat-0001", "alice"), T0)
    assert store.blobs.keys() == ["chat-0001/insights.json",  # type: ignore[attr-defined]
                                  "users/alice/chats.json"]


def test_unknown_user_has_no_chats_and_missing_chat_is_none() -> None:
    store = InMemoryInsightStore()
    assert store.user_chats("nobody") == []
    assert store.chat_insights("chat-9999") is None


def test_index_keeps_newest_activity_and_orders_ties_by_hash() -> None:
    store = InMemoryInsightStore()
    store.record_chat("alice", ChatRef("chat-bbbb", T0))
    store.record_chat("alice", ChatRef("chat-aaaa", T0))
    store.record_chat("alice", ChatRef("chat-cccc", T0 + timedelta(hours=1)))
    store.record_chat("alice", ChatRef("chat-cccc", T0 - timedelta(days=9)))  # older: ignored
    assert [r.chat_hash for r in store.user_chats("alice")] == ["chat-cccc", "chat-aaaa",
                                                                "chat-bbbb"]


def test_concurrent_index_writers_lose_nothing() -> None:
    store = InMemoryInsightStore()
    store._max_index_retries = 100  # many threads on one key collide a lot

    def add(i: int) -> None:
        store.record_chat("alice", ChatRef(f"chat-{i:04d}", T0 + timedelta(minutes=i)))

    threads = [threading.Thread(target=add, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(store.user_chats("alice")) == 20


def test_conditional_put_detects_a_lost_update() -> None:
    store = InMemoryInsightStore()
    store.record_chat("alice", ChatRef("chat-0001", T0))
    blob = store.blobs.get(user_index_key("alice"))
    assert blob is not None
    store.record_chat("alice", ChatRef("chat-0002", T0))
    with pytest.raises(BlobConflictError):
        store.blobs.put(user_index_key("alice"), b"{}", if_match=blob.etag)


def doc(**overrides: object) -> bytes:
    base: dict[str, object] = {
        "schema_version": 1, "chat_hash": "chat-0001", "updated_at": "2026-11-01T12:00:00Z",
        "participants": ["alice"], "insights": {"alice": {"traits": ["warm"]}}}
    base.update(overrides)
    return json.dumps(base).encode()


@pytest.mark.parametrize(("data", "reason"), [
    (b"{not json", "not JSON"),
    (b"[1, 2]", "top level is not an object"),
    (doc(schema_version=2), "unsupported schema_version"),
    (doc(chat_hash="chat-0002"), "!= key"),
    (doc(participants=[]), "participants"),
    (doc(participants=["bad id!"]), "participants"),
    (doc(updated_at="yesterday"), "not ISO-8601"),
    (doc(updated_at="2026-11-01T12:00:00"), "no time zone"),
    (doc(insights=[]), "insights must be an object"),
    (doc(insights={"mallory": {}}), "non-participants"),
    (doc(insights={"alice": {"traits": "warm"}}), "list of strings"),
    (doc(insights={"alice": {"traits": [1]}}), "list of strings"),
    (doc(insights={"alice": {"communication_style": 3}}), "not a string"),
    (doc(insights={"alice": "warm"}), "is not an object"),
    (b" " * (1 << 20) + b"{}", "larger than"),
])
def test_malformed_insights_name_the_reason(data: bytes, reason: str) -> None:
    with pytest.raises(MalformedInsightError) as info:
        parse_chat_insights("chat-0001", data)
    assert reason in info.value.reason
    assert info.value.key == insights_key("chat-0001")
    assert isinstance(info.value, ValidationError)


def test_missing_optional_fields_default_to_empty() -> None:
    parsed = parse_chat_insights("chat-0001", doc(insights={"alice": {}}))
    assert parsed.for_user("alice") == ParticipantInsight()
    assert parsed.for_user("alice").empty  # type: ignore[union-attr]


@pytest.mark.parametrize(("index", "reason"), [
    ({"schema_version": 1, "user_id": "bob", "chats": []}, "!= key"),
    ({"schema_version": 1, "user_id": "alice", "chats": {}}, "chats must be a list"),
    ({"schema_version": 1, "user_id": "alice", "chats": [{"chat_hash": "x/y"}]}, "invalid"),
    ({"schema_version": 1, "user_id": "alice",
      "chats": [{"chat_hash": "chat-0001", "last_activity": 5}]}, "ISO-8601"),
])
def test_malformed_user_index(index: dict[str, object], reason: str) -> None:
    with pytest.raises(MalformedInsightError, match=reason):
        parse_user_index("alice", json.dumps(index).encode())


def test_store_rejects_bad_ids_instead_of_building_odd_keys() -> None:
    store = InMemoryInsightStore()
    with pytest.raises(ValidationError):
        store.user_chats("../etc")
    with pytest.raises(MalformedInsightError):
        store.chat_insights("../../x")


def test_writer_refuses_documents_it_could_not_read_back() -> None:
    store = InMemoryInsightStore()
    bad = ChatInsights("chat-0001", T0, ("alice",), {"mallory": ParticipantInsight()})
    with pytest.raises(MalformedInsightError):
        store.put_chat_insights(bad, T0)
    assert store.chat_insights("chat-0001") is None
