"""Post-match handlers on fakes: every step once, replays change nothing, a crash between
a side effect and its audit flag is healed without doing the side effect twice."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from consumers.audit import MemoryAuditStore
from consumers.chat import MemoryChat, Room
from consumers.postmatch import IndexStateHandler, NotifierHandler, RoomsHandler
from mosaic.errors import ValidationError
from profiles.index import InMemoryVectorIndex, VectorRecord
from streams.deadletter import RawRecord
from streams.events import (
    Event,
    PairMatched,
    RoomCreated,
    SeekerUnmatched,
    derive_event_id,
    pair_key,
)
from tests.fakes import MemoryUserStateWriter

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
RAW = RawRecord("t", 0, 0, None, b"")


def _pair(a: str = "alice", b: str = "bob", cycle: str = "default:c1") -> PairMatched:
    return PairMatched(event_id=derive_event_id("t", a, b), occurred_at=T0, cycle_id=cycle,
                       pair_key=pair_key(a, b), user_a=min(a, b), user_b=max(a, b),
                       score=0.9, similarity=0.85)


class World:
    def __init__(self) -> None:
        self.audit = MemoryAuditStore()
        self.chat = MemoryChat()
        self.states = MemoryUserStateWriter()
        self.published: list[Event] = []
        self.clock_ticks = 0
        self.rooms = RoomsHandler(self.audit, self.chat, self.states, self.published.append,
                                  clock=self.clock)
        self.notifier = NotifierHandler(self.audit, self.chat, self.published.append,
                                        clock=self.clock)

    def clock(self) -> datetime:
        self.clock_ticks += 1
        return T0 + timedelta(seconds=self.clock_ticks)

    def of(self, kind: type[Event]) -> list[Event]:
        return [e for e in self.published if isinstance(e, kind)]


def test_pair_gets_one_room_and_two_notifications() -> None:
    w = World()
    room = w.rooms.handle(_pair())
    sent = w.notifier.handle(room)
    assert len(w.chat.rooms) == 1
    assert sorted(u for u, _, _ in w.chat.notifications) == ["alice", "bob"]
    assert [(n.user_id, n.partner_id) for n in sent] == [("alice", "bob"), ("bob", "alice")]
    row = w.audit.get("default:c1", "alice|bob")
    assert row is not None and row.nakama_group_created and row.user1_notified
    assert row.user2_notified and not row.complete  # index step is another consumer's
    assert w.states.rows["alice"]["state"] == "matched"
    assert w.states.rows["bob"]["room_id"] == room.group_id


def test_replaying_everything_changes_nothing() -> None:
    w = World()
    for _ in range(3):
        room = w.rooms.handle(_pair())
        w.notifier.handle(room)
    assert len(w.chat.rooms) == 1
    assert len(w.chat.notifications) == 2
    assert len(w.of(RoomCreated)) == 3  # republished, with one stable event id
    assert len({e.event_id for e in w.of(RoomCreated)}) == 1


def test_crash_after_notify_before_audit_flag_sends_no_second_notification() -> None:
    w = World()
    room = w.rooms.handle(_pair())
    # The chat server already delivered to alice, but the audit never heard of it.
    w.chat.notify_match(room.cycle_id, room.pair_key, "alice", "bob", room.group_id)
    w.notifier.handle(room)
    assert sorted(u for u, _, _ in w.chat.notifications) == ["alice", "bob"]
    row = w.audit.get(room.cycle_id, room.pair_key)
    assert row is not None and row.user1_notified and row.user2_notified


def test_crash_after_room_before_audit_flag_reuses_the_room() -> None:
    w = World()
    pair = _pair()
    first: Room = w.chat.create_room(pair.cycle_id, pair.pair_key, pair.user_a, pair.user_b)
    room = w.rooms.handle(pair)
    assert room.group_id == first.group_id
    assert len(w.chat.rooms) == 1


def test_room_without_audit_row_still_notifies() -> None:
    w = World()
    room = RoomCreated(event_id=derive_event_id("r"), occurred_at=T0, cycle_id="c9", pair_key="a|b",
                       group_id="g", user_a="a", user_b="b")
    assert len(w.notifier.handle(room)) == 2


def test_wrong_event_type_is_a_validation_error() -> None:
    w = World()
    with pytest.raises(ValidationError):
        w.notifier(_pair(), RAW)
    with pytest.raises(ValidationError):
        w.rooms(RoomCreated(event_id=derive_event_id("r"), occurred_at=T0, cycle_id="c",
                            pair_key="a|b", group_id="g", user_a="a", user_b="b"), RAW)


def test_index_state_marks_pairs_and_missed_cycles_once() -> None:
    audit, states, index = MemoryAuditStore(), MemoryUserStateWriter(), InMemoryVectorIndex(3)
    index.upsert([VectorRecord(u, np.array([1.0, 0.0, 0.0]),
                               {"status": "waiting", "missed_cycles": 0})
                  for u in ("alice", "bob", "carol")])
    handler = IndexStateHandler(audit, index, states, clock=lambda: T0)
    handler(_pair(), RAW)
    handler(_pair(), RAW)
    handler(SeekerUnmatched(event_id=derive_event_id("u"), occurred_at=T0, cycle_id="default:c1",
                            user_id="carol", reason="odd_one_out", missed_cycles=2), RAW)
    got = index.fetch(["alice", "bob", "carol"])
    assert got["alice"].metadata["status"] == "matched"
    assert got["carol"].metadata["missed_cycles"] == 2
    assert got["carol"].metadata["status"] == "waiting"
    row = audit.get("default:c1", "alice|bob")
    assert row is not None and row.index_metadata_updated
    assert states.rows["carol"]["missed_cycles"] == 2
