"""Post-match batch handlers and the runner's item policy on in-memory fakes: every step
once, replays change nothing, one bad pair never holds up the others, a pair that keeps
failing is parked and one that can never succeed is dead-lettered."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from consumers.audit import DEAD_LETTERED, PARKED, CycleRow, summarize
from consumers.embedding.pipeline import STATE_DELAY
from consumers.postmatch.handlers import IndexStateHandler, NotifierHandler, RoomsHandler
from consumers.runner import BatchRunner, Failure, Item, RetryPolicy
from mosaic.settings import Settings
from profiles.index import VectorRecord
from streams.deadletter import RawRecord
from streams.events import (
    CycleCompleted,
    DeadLettered,
    Event,
    PairMatched,
    RoomCreated,
    SeekerUnmatched,
    UserNotified,
    derive_event_id,
    pair_key,
    to_millis,
)
from streams.kafka import BatchPublisher
from streams.serde import decode
from tests.fakes import InMemoryVectorIndex, MemoryAuditStore, MemoryChat, MemoryUserStateWriter

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
CYCLE = "default:c1"


def _pair(a: str, b: str, cycle: str = CYCLE) -> PairMatched:
    return PairMatched(event_id=derive_event_id("t", a, b), occurred_at=T0, cycle_id=cycle,
                       pair_key=pair_key(a, b), user_a=min(a, b), user_b=max(a, b),
                       score=0.9, similarity=0.85)


def _items(events: Sequence[Event]) -> list[Item]:
    return [Item(e, RawRecord("t", 0, i, None, b"")) for i, e in enumerate(events)]


class World:
    def __init__(self) -> None:
        self.audit = MemoryAuditStore()
        self.chat = MemoryChat()
        self.states = MemoryUserStateWriter()
        self.published: list[Event] = []
        self.rooms = RoomsHandler(self.audit, self.chat, self.states, self.published.append,
                                  clock=self.clock)
        self.notifier = NotifierHandler(self.audit, self.chat, self.published.append,
                                        clock=self.clock)
        self.ticks = 0

    def clock(self) -> datetime:
        self.ticks += 1
        return T0 + timedelta(seconds=self.ticks)

    def of(self, kind: type[Event]) -> list[Any]:
        return [e for e in self.published if isinstance(e, kind)]

    def cycle(self, pairs: Sequence[PairMatched]) -> tuple[list[Failure | None],
                                                            list[Failure | None]]:
        """Rooms for ``pairs``, then notifications for the rooms published."""
        before = len(self.of(RoomCreated))
        room_failures = self.rooms.handle(_items(pairs))
        rooms = self.of(RoomCreated)[before:]
        return room_failures, self.notifier.handle(_items(rooms))


def test_batch_gets_one_room_and_two_notifications_per_pair() -> None:
    w = World()
    pairs = [_pair(f"u{i}a", f"u{i}b") for i in range(5)]
    room_failures, note_failures = w.cycle(pairs)
    assert room_failures == [None] * 5 and note_failures == [None] * 5
    assert len(w.chat.rooms) == 5
    assert sorted(u for u, _, _ in w.chat.notifications) == sorted(
        u for p in pairs for u in (p.user_a, p.user_b))
    for p in pairs:
        row = w.audit.get(CYCLE, p.pair_key)
        assert row is not None and row.nakama_group_created and row.nakama_channel_id
        assert row.user1_notified and row.user2_notified and not row.complete  # index: other agent
        assert w.states.rows[p.user_a]["state"] == "matched"
        assert w.states.rows[p.user_b]["room_id"] == row.nakama_group_id
    assert {(n.user_id, n.partner_id) for n in w.of(UserNotified)} == {
        (p.user_a, p.user_b) for p in pairs} | {(p.user_b, p.user_a) for p in pairs}


def test_replaying_everything_changes_nothing() -> None:
    w = World()
    pairs = [_pair("alice", "bob"), _pair("carol", "dave")]
    for _ in range(3):
        w.cycle(pairs)
    assert len(w.chat.rooms) == 2
    assert len(w.chat.notifications) == 4
    assert len(w.of(RoomCreated)) == 6  # republished, each with one stable event id
    assert len({e.event_id for e in w.of(RoomCreated)}) == 2
    assert len({e.event_id for e in w.of(UserNotified)}) == 4


def test_a_duplicate_inside_one_batch_is_done_once_and_both_records_succeed() -> None:
    w = World()
    pair = _pair("alice", "bob")
    assert w.rooms.handle(_items([pair, pair])) == [None, None]
    assert len(w.of(RoomCreated)) == 1
    assert len(w.chat.rooms) == 1


def test_a_deleted_user_fails_only_their_pair_and_permanently() -> None:
    w = World()
    w.chat.gone.add("ghost")
    good, bad = _pair("alice", "bob"), _pair("carol", "ghost")
    failures = w.rooms.handle(_items([good, bad]))
    assert failures[0] is None
    assert failures[1] is not None and failures[1].permanent
    assert "ghost" in failures[1].error
    assert [r.pair_key for r in w.of(RoomCreated)] == [good.pair_key]


def test_a_notification_failure_fails_the_pair_and_a_permanent_one_wins() -> None:
    w = World()
    pair = _pair("alice", "bob")
    w.rooms.handle(_items([pair]))
    w.chat.flaky["alice"] = 1
    w.chat.gone.add("bob")
    (failure,) = w.notifier.handle(_items(w.of(RoomCreated)))
    assert failure is not None and failure.permanent
    row = w.audit.get(CYCLE, pair.pair_key)
    assert row is not None and not row.user1_notified and not row.user2_notified


def test_rooms_agent_passes_over_the_unmatched_seekers_it_shares_the_topic_with() -> None:
    """SeekerUnmatched shares the pairs topic with PairMatched: the rooms agent skips it
    (it was dead-lettered as unexpected, one dead letter per unmatched user per cycle)."""
    w = World()
    missed = SeekerUnmatched(event_id=derive_event_id("u"), occurred_at=T0, cycle_id=CYCLE,
                             user_id="carol", reason="odd_one_out", missed_cycles=1)
    other = CycleCompleted(event_id=derive_event_id("c"), occurred_at=T0, cycle_id=CYCLE,
                           pairs=1, seekers=3)
    failures = w.rooms.handle(_items([missed, _pair("alice", "bob"), other]))
    assert failures[0] is None and failures[1] is None
    assert failures[2] is not None and failures[2].permanent  # not a pairs-topic event
    assert [r.pair_key for r in w.of(RoomCreated)] == ["alice|bob"]


def test_index_state_marks_pairs_missed_cycles_and_records_the_cycle() -> None:
    audit, states, index = MemoryAuditStore(), MemoryUserStateWriter(), InMemoryVectorIndex(3)
    index.upsert([VectorRecord(u, np.array([1.0, 0.0, 0.0]),
                               {"status": "waiting", "missed_cycles": 0})
                  for u in ("alice", "bob", "carol")])
    handler = IndexStateHandler(audit, index, states, clock=lambda: T0)
    events: list[Event] = [
        _pair("alice", "bob"), _pair("alice", "bob"),
        SeekerUnmatched(event_id=derive_event_id("u"), occurred_at=T0, cycle_id=CYCLE,
                        user_id="carol", reason="odd_one_out", missed_cycles=2),
        CycleCompleted(event_id=derive_event_id("c"), occurred_at=T0, cycle_id=CYCLE,
                       pairs=1, seekers=3),
    ]
    assert handler.handle(_items(events)) == [None] * 4
    got = index.fetch(["alice", "bob", "carol"])
    assert got["alice"].metadata["status"] == "matched"
    assert got["carol"].metadata["missed_cycles"] == 2
    assert got["carol"].metadata["status"] == "waiting"
    row = audit.get(CYCLE, "alice|bob")
    assert row is not None and row.pinecone_metadata_updated and row.matched_at == T0
    assert states.rows["carol"]["missed_cycles"] == 2
    assert [(c.cycle_id, c.pairs, c.seekers) for c in audit.cycles()] == [(CYCLE, 1, 3)]


def test_states_of_a_cycle_follow_the_opt_in_they_belong_to() -> None:
    """An opt-in after the tick time (before the snapshot) is in the cycle: its waiting
    (event time + STATE_DELAY) must lose to the cycle's outcome written at the tick time,
    and the user's next opt-in, 1 ms later, must win over that outcome."""
    late = T0 + timedelta(seconds=30, milliseconds=250)  # the opt-ins' event time
    version = to_millis(late)
    w = World()
    for user in ("alice", "bob"):
        w.states.waiting(user, pool="default", waiting_since=late, missed_cycles=0,
                         at=late + STATE_DELAY)
    pair = replace(_pair("alice", "bob"), version_a=version, version_b=version)
    w.cycle([pair])
    assert [w.states.rows[u]["state"] for u in ("alice", "bob")] == ["matched", "matched"]
    w.states.waiting("alice", pool="default", waiting_since=late, missed_cycles=0,
                     at=late + timedelta(milliseconds=1) + STATE_DELAY)
    assert w.states.rows["alice"]["state"] == "waiting"

    index = InMemoryVectorIndex(3)
    handler = IndexStateHandler(MemoryAuditStore(), index, w.states, clock=lambda: T0)
    w.states.waiting("carol", pool="default", waiting_since=late, missed_cycles=0,
                     at=late + STATE_DELAY)
    missed = SeekerUnmatched(event_id=derive_event_id("u"), occurred_at=T0, cycle_id=CYCLE,
                             user_id="carol", reason="below_min_similarity",
                             missed_cycles=1, version=version)
    assert handler.handle(_items([missed])) == [None]
    carol = w.states.rows["carol"]
    assert (carol["state"], carol["missed_cycles"], carol["last_cycle_id"],
            carol["unmatched_reason"]) == ("waiting", 1, CYCLE, "below_min_similarity")


def test_wrong_event_type_is_a_permanent_failure() -> None:
    w = World()
    room = RoomCreated(event_id=derive_event_id("r"), occurred_at=T0, cycle_id="c",
                       pair_key="a|b", group_id="g", user_a="a", user_b="b")
    (failure,) = w.rooms.handle(_items([room]))
    assert failure is not None and failure.permanent
    (failure,) = w.notifier.handle(_items([_pair("a", "b")]))
    assert failure is not None and failure.permanent


class _Producer:
    def __init__(self) -> None:
        self.records: list[tuple[str, bytes]] = []

    def produce(self, topic: str, value: bytes, key: Any = None, on_delivery: Any = None
                ) -> None:
        self.records.append((topic, value))

    def poll(self, _timeout: float) -> int:
        return 0

    def flush(self, _timeout: float) -> int:
        return 0


def _runner(w: World, attempts: int = 3) -> tuple[BatchRunner, _Producer]:
    producer = _Producer()
    runner = BatchRunner(Settings(), "rooms", [], w.rooms,
                         BatchPublisher(producer),  # type: ignore[arg-type]
                         retry=RetryPolicy(base_seconds=0.0, max_item_attempts=attempts),
                         consumer=object())  # type: ignore[arg-type]
    return runner, producer


def test_runner_retries_a_flaky_item_parks_a_stuck_one_and_dead_letters_a_lost_one() -> None:
    w = World()
    w.chat.flaky.update({"flaky": 2, "stuck": 99})
    w.chat.gone.add("ghost")
    ok, flaky, stuck, lost = (_pair("alice", "bob"), _pair("flaky", "x1"),
                              _pair("stuck", "x2"), _pair("ghost", "x3"))
    runner, producer = _runner(w)

    outcomes = runner._items(_items([ok, flaky, stuck, lost]))

    assert [o for _, o in outcomes].count("handled") == 2
    assert [o for _, o in outcomes].count("parked") == 1
    assert [o for _, o in outcomes].count("dead_lettered") == 1
    stuck_row = w.audit.get(CYCLE, stuck.pair_key)
    assert stuck_row is not None and stuck_row.status == PARKED
    lost_row = w.audit.get(CYCLE, lost.pair_key)
    assert lost_row is not None and lost_row.status == DEAD_LETTERED
    assert "ghost" in (lost_row.last_error or "")
    letters = [decode(v) for t, v in producer.records if t.endswith("deadletter")]
    assert len(letters) == 1 and isinstance(letters[0], DeadLettered)
    assert "ghost" in letters[0].reason
    assert {r.pair_key for r in w.of(RoomCreated)} == {ok.pair_key, flaky.pair_key}


def test_cycle_summary_counts_settled_parked_and_pending() -> None:
    w = World()
    w.chat.flaky["stuck"] = 99
    w.chat.gone.add("ghost")
    pairs = [_pair("alice", "bob"), _pair("stuck", "x2"), _pair("ghost", "x3")]
    runner, _ = _runner(w, attempts=1)
    runner._items(_items(pairs))
    w.notifier.handle(_items(w.of(RoomCreated)))
    IndexStateHandler(w.audit, InMemoryVectorIndex(3), w.states,
                      clock=lambda: T0).on_pairs(pairs)
    meta = CycleRow(CYCLE, 3, 6, T0, None)
    status = summarize(CYCLE, w.audit.rows(CYCLE), meta)
    assert (status.completed, status.parked, status.dead_lettered, status.pending) == (1, 1, 1, 1)
    assert not status.finished
