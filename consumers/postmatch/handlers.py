"""What happens after the matcher published a cycle, as three idempotent batch handlers.

- rooms:       PairMatched  -> Nakama room, audit (room + channel), users "matched",
               RoomCreated
- notifier:    RoomCreated  -> one match notification per user, audit flags, UserNotified
- index-state: PairMatched / SeekerUnmatched / CycleCompleted -> vector-index metadata
               (matched / missed cycles), user state, audit flag, cycle status row

No handler reads the audit before acting: the chat server's steps are idempotent by
themselves (a room is found by its name and, once completed, never re-joined by a member
who left nor re-created; a notification sent once is never sent again, even after the
user deleted it: docs/postmatch.md),
audit writes only ever set flags, and event ids are derived from the cycle and pair, so
a replay after a crash anywhere repeats the same results. The runner
(consumers/runner.py) retries, parks and dead-letters items from what ``handle`` returns.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Histogram

from consumers.audit import DEAD_LETTERED, PARKED, AuditStore, PairRef
from consumers.chat import ChatServer, ItemResult, NotifyRequest, RoomRequest
from consumers.runner import Failure, Item
from mosaic.user_state import UserStateWriter
from profiles.index import VectorIndex
from streams.events import (
    CycleCompleted,
    Event,
    PairMatched,
    RoomCreated,
    SeekerUnmatched,
    UserNotified,
    derive_event_id,
)

log = logging.getLogger(__name__)

Publish = Callable[[Event], None]
INDEX_CHUNK = 200  # users per concurrent vector-index metadata call
Clock = Callable[[], datetime]

MATCH_TO_NOTIFIED = Histogram(
    "mosaic_match_to_notification_seconds",
    "Time from a pair's PairMatched event to its user's match notification.",
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600))


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _unexpected(item: Item, wanted: str) -> Failure:
    return Failure(f"expected {wanted}, got {item.event.schema_name}", permanent=True)


def pair_ref(event: PairMatched | RoomCreated) -> PairRef:
    return PairRef(event.cycle_id, event.pair_key, event.user_a, event.user_b)


def _parallel(pool: ThreadPoolExecutor, fn: Callable[..., Any],
              calls: Sequence[tuple[Any, ...]]) -> None:
    """Run blocking per-user writes concurrently; the first error propagates."""
    for future in [pool.submit(fn, *args) for args in calls]:
        future.result()


class _Base:
    def __init__(self, audit: AuditStore, clock: Clock) -> None:
        self._audit, self._clock = audit, clock

    def park(self, item: Item, error: str) -> None:
        self._note(item, PARKED, error)

    def gave_up(self, item: Item, error: str) -> None:
        self._note(item, DEAD_LETTERED, error)

    def _touch(self, events: Sequence[Event]) -> None:
        """Mark the batch's cycles as being worked on (the reconciler waits for quiet)."""
        cycles = {e.cycle_id for e in events if isinstance(e, PairMatched | RoomCreated)}
        if cycles:
            self._audit.touch_cycles(cycles, self._clock())

    def _note(self, item: Item, status: str, error: str) -> None:
        event = item.event
        if isinstance(event, PairMatched | RoomCreated):
            self._audit.mark_status(pair_ref(event), status, error, self._clock())


class RoomsHandler(_Base):
    def __init__(self, audit: AuditStore, chat: ChatServer, states: UserStateWriter,
                 publish: Publish, *, clock: Clock = _utc_now) -> None:
        super().__init__(audit, clock)
        self._chat, self._states, self._publish = chat, states, publish

    def handle(self, items: Sequence[Item]) -> list[Failure | None]:
        out: list[Failure | None] = [None] * len(items)
        firsts: dict[tuple[str, str], int] = {}
        for i, item in enumerate(items):
            if isinstance(item.event, SeekerUnmatched):
                continue  # shares the pairs topic; the index-state agent's, not ours
            if not isinstance(item.event, PairMatched):
                out[i] = _unexpected(item, "PairMatched")
            else:
                firsts.setdefault((item.event.cycle_id, item.event.pair_key), i)
        pairs = [e for e in (items[i].event for i in firsts.values())
                 if isinstance(e, PairMatched)]
        if not pairs:
            return out
        self._touch(pairs)
        results = self._chat.create_rooms([
            RoomRequest(p.cycle_id, p.pair_key, p.user_a, p.user_b) for p in pairs])
        by_key = {(p.cycle_id, p.pair_key): f for p, f in self.finish(pairs, results)}
        for i, item in enumerate(items):
            if out[i] is None and isinstance(item.event, PairMatched):
                out[i] = by_key[(item.event.cycle_id, item.event.pair_key)]
        return out

    def finish(self, pairs: Sequence[PairMatched], results: Sequence[ItemResult]
               ) -> list[tuple[PairMatched, Failure | None]]:
        """Record the rooms Nakama confirmed and publish RoomCreated for each."""
        now = self._clock()
        ok = [(p, r) for p, r in zip(pairs, results, strict=True) if r.ok]
        self._audit.mark_rooms([(pair_ref(p), r.group_id, r.channel_id) for p, r in ok], now)
        self._states.matched_many([(u, p.cycle_id, r.group_id, p.occurred_at, v)
                                   for p, r in ok
                                   for u, v in ((p.user_a, p.version_a),
                                                (p.user_b, p.version_b))])
        for pair, room in ok:
            self._publish(room_created(pair, room))
        return [(p, None if r.ok else Failure(f"{r.error} (pair {p.pair_key})", r.permanent))
                for p, r in zip(pairs, results, strict=True)]


def room_created(pair: PairMatched, room: ItemResult) -> RoomCreated:
    # The pair's time, not now: a replay republishes the identical event, and the
    # notifier measures match -> notification from it.
    return RoomCreated(
        event_id=derive_event_id("room", pair.cycle_id, pair.pair_key),
        occurred_at=pair.occurred_at, cycle_id=pair.cycle_id, pair_key=pair.pair_key,
        group_id=room.group_id, user_a=pair.user_a, user_b=pair.user_b,
        channel_id=room.channel_id)


class NotifierHandler(_Base):
    def __init__(self, audit: AuditStore, chat: ChatServer, publish: Publish,
                 clock: Clock = _utc_now) -> None:
        super().__init__(audit, clock)
        self._chat, self._publish = chat, publish

    def handle(self, items: Sequence[Item]) -> list[Failure | None]:
        out: list[Failure | None] = [None] * len(items)
        firsts: dict[tuple[str, str], int] = {}
        for i, item in enumerate(items):
            if not isinstance(item.event, RoomCreated):
                out[i] = _unexpected(item, "RoomCreated")
            else:
                firsts.setdefault((item.event.cycle_id, item.event.pair_key), i)
        rooms = [e for e in (items[i].event for i in firsts.values())
                 if isinstance(e, RoomCreated)]
        self._touch(rooms)
        failures = self.notify(rooms)
        for i, item in enumerate(items):
            if out[i] is None and isinstance(item.event, RoomCreated):
                out[i] = failures.get((item.event.cycle_id, item.event.pair_key))
        return out

    def notify(self, rooms: Sequence[RoomCreated]) -> dict[tuple[str, str], Failure]:
        """Notify both users of every room; the failures by (cycle, pair)."""
        notes = [(room, user, partner) for room in rooms
                 for user, partner in ((room.user_a, room.user_b), (room.user_b, room.user_a))]
        if not notes:
            return {}
        results = self._chat.notify_matches([
            NotifyRequest(r.cycle_id, r.pair_key, u, p, r.group_id, r.channel_id)
            for r, u, p in notes])
        now = self._clock()
        delivered = [(note, res) for note, res in zip(notes, results, strict=True) if res.ok]
        self._audit.mark_notified([(pair_ref(room), user) for (room, user, _), _ in delivered],
                                  now)
        for (room, user, partner), res in delivered:
            if res.sent:
                MATCH_TO_NOTIFIED.observe(max(0.0, (now - room.occurred_at).total_seconds()))
            self._publish(UserNotified(
                event_id=derive_event_id("notified", room.cycle_id, room.pair_key, user),
                occurred_at=now, cycle_id=room.cycle_id, pair_key=room.pair_key,
                user_id=user, partner_id=partner, group_id=room.group_id))
        failures: dict[tuple[str, str], Failure] = {}
        for (room, user, _), res in zip(notes, results, strict=True):
            if not res.ok:
                key = (room.cycle_id, room.pair_key)
                # A pair fails as a whole; a permanent failure of either user wins.
                prior = failures.get(key)
                if prior is None or (res.permanent and not prior.permanent):
                    failures[key] = Failure(f"{res.error} (user {user})", res.permanent)
        return failures


class IndexStateHandler(_Base):
    def __init__(self, audit: AuditStore, index: VectorIndex, states: UserStateWriter,
                 *, clock: Clock = _utc_now, pool: ThreadPoolExecutor | None = None) -> None:
        super().__init__(audit, clock)
        self._index, self._states = index, states
        self._pool = pool or ThreadPoolExecutor(16, thread_name_prefix="index-io")

    def handle(self, items: Sequence[Item]) -> list[Failure | None]:
        out: list[Failure | None] = [None] * len(items)
        pairs: dict[tuple[str, str], PairMatched] = {}
        unmatched: list[SeekerUnmatched] = []
        for i, item in enumerate(items):
            event = item.event
            if isinstance(event, PairMatched):
                pairs.setdefault((event.cycle_id, event.pair_key), event)
            elif isinstance(event, SeekerUnmatched):
                unmatched.append(event)
            elif isinstance(event, CycleCompleted):
                self._audit.record_cycle(event.cycle_id, event.pairs, event.seekers,
                                         event.occurred_at)
            else:
                out[i] = _unexpected(item, "PairMatched, SeekerUnmatched or CycleCompleted")
        self._touch(list(pairs.values()))
        self.on_pairs(list(pairs.values()))
        _parallel(self._pool, self.on_unmatched, [(e,) for e in unmatched])
        return out

    def on_pairs(self, pairs: Sequence[PairMatched]) -> None:
        if not pairs:
            return
        now = self._clock()
        fields = {"status": "matched", "updated_at": now.timestamp()}
        users = [u for p in pairs for u in (p.user_a, p.user_b)]
        # In concurrent chunks: one call reads and writes its ids in sequence, and this
        # agent was the slowest of the three once rooms took one transaction per call.
        # False per user = no such record (opted out since): nothing left to mark.
        _parallel(self._pool, self._index.update_metadata_many,
                  [(users[i:i + INDEX_CHUNK], fields)
                   for i in range(0, len(users), INDEX_CHUNK)])
        for matched_at, group in _by_time(pairs).items():
            self._audit.mark_index_updated([pair_ref(p) for p in group], now,
                                           matched_at=matched_at)

    def on_unmatched(self, event: SeekerUnmatched) -> None:
        self._index.update_metadata(event.user_id, {"missed_cycles": event.missed_cycles,
                                                    "updated_at": event.occurred_at.timestamp()})
        self._states.missed_cycle(event.user_id, cycle_id=event.cycle_id,
                                  missed_cycles=event.missed_cycles, at=event.occurred_at,
                                  reason=event.reason, version=event.version)


def _by_time(pairs: Sequence[PairMatched]) -> dict[datetime, list[PairMatched]]:
    groups: dict[datetime, list[PairMatched]] = {}
    for pair in pairs:
        groups.setdefault(pair.occurred_at, []).append(pair)
    return groups
