"""What happens after the matcher published a cycle, as three idempotent handlers.

- rooms:       PairMatched  -> audit row, Nakama room, RoomCreated, users "matched"
- notifier:    RoomCreated  -> one match notification per user, UserNotified
- index-state: PairMatched / SeekerUnmatched -> vector-index metadata (matched / missed
               cycles), user state, audit flag

Each handler reads the audit row first and skips finished steps; the chat server makes
its own steps idempotent too, so a replay after a crash between a side effect and its
audit flag still does nothing twice. Event ids are derived from the cycle and pair, so a
replayed handler republishes the same event (consumers downstream dedupe by id).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from consumers.audit import AuditRow, AuditStore
from consumers.chat import ChatServer
from mosaic.errors import ValidationError
from mosaic.user_state import UserStateWriter
from profiles.index import VectorIndex
from streams.deadletter import RawRecord
from streams.events import (
    Event,
    PairMatched,
    RoomCreated,
    SeekerUnmatched,
    UserNotified,
    derive_event_id,
)

log = logging.getLogger(__name__)

Publish = Callable[[Event], None]
Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


class RoomsHandler:
    def __init__(self, audit: AuditStore, chat: ChatServer, states: UserStateWriter,
                 publish: Publish, clock: Clock = _utc_now) -> None:
        self._audit, self._chat, self._states = audit, chat, states
        self._publish, self._clock = publish, clock

    def __call__(self, event: Event, record: RawRecord) -> None:
        if not isinstance(event, PairMatched):
            raise ValidationError(f"rooms expects PairMatched, got {event.schema_name}")
        self.handle(event)

    def handle(self, pair: PairMatched) -> RoomCreated:
        now = self._clock()
        row = self._audit.record_pair(pair.cycle_id, pair.pair_key, pair.user_a, pair.user_b,
                                      now)
        group_id = row.nakama_group_id
        if not row.nakama_group_created or group_id is None:
            room = self._chat.create_room(pair.cycle_id, pair.pair_key, pair.user_a,
                                          pair.user_b)
            group_id = room.group_id
            self._audit.mark_room(pair.cycle_id, pair.pair_key, group_id, now)
        for user in (pair.user_a, pair.user_b):
            self._states.matched(user, cycle_id=pair.cycle_id, room_id=group_id,
                                 at=pair.occurred_at)
        created = RoomCreated(
            event_id=derive_event_id("room", pair.cycle_id, pair.pair_key),
            occurred_at=now, cycle_id=pair.cycle_id, pair_key=pair.pair_key,
            group_id=group_id, user_a=pair.user_a, user_b=pair.user_b,
            group_name=f"mm:{pair.cycle_id}:{pair.pair_key}",
        )
        self._publish(created)
        return created


class NotifierHandler:
    def __init__(self, audit: AuditStore, chat: ChatServer, publish: Publish,
                 clock: Clock = _utc_now) -> None:
        self._audit, self._chat = audit, chat
        self._publish, self._clock = publish, clock

    def __call__(self, event: Event, record: RawRecord) -> None:
        if not isinstance(event, RoomCreated):
            raise ValidationError(f"notifier expects RoomCreated, got {event.schema_name}")
        self.handle(event)

    def handle(self, room: RoomCreated) -> list[UserNotified]:
        row = self._audit.get(room.cycle_id, room.pair_key)
        if row is None:  # a room without an audit row: re-create the row, never skip
            row = self._audit.record_pair(room.cycle_id, room.pair_key, room.user_a,
                                          room.user_b, self._clock())
        sent: list[UserNotified] = []
        for user, partner in ((room.user_a, room.user_b), (room.user_b, room.user_a)):
            if row.notified(user):
                continue
            self._chat.notify_match(room.cycle_id, room.pair_key, user, partner, room.group_id)
            now = self._clock()
            self._audit.mark_notified(room.cycle_id, room.pair_key, user, now)
            event = UserNotified(
                event_id=derive_event_id("notified", room.cycle_id, room.pair_key, user),
                occurred_at=now, cycle_id=room.cycle_id, pair_key=room.pair_key,
                user_id=user, partner_id=partner, group_id=room.group_id,
            )
            self._publish(event)
            sent.append(event)
        return sent


class IndexStateHandler:
    def __init__(self, audit: AuditStore, index: VectorIndex, states: UserStateWriter,
                 clock: Clock = _utc_now) -> None:
        self._audit, self._index, self._states = audit, index, states
        self._clock = clock

    def __call__(self, event: Event, record: RawRecord) -> None:
        if isinstance(event, PairMatched):
            self.on_pair(event)
        elif isinstance(event, SeekerUnmatched):
            self.on_unmatched(event)
        else:
            raise ValidationError(f"index-state got unexpected {event.schema_name}")

    def on_pair(self, pair: PairMatched) -> AuditRow:
        now = self._clock()
        row = self._audit.record_pair(pair.cycle_id, pair.pair_key, pair.user_a, pair.user_b,
                                      now)
        if not row.index_metadata_updated:
            for user in (pair.user_a, pair.user_b):
                # False = no such record (opted out since): nothing left to mark.
                self._index.update_metadata(user, {"status": "matched",
                                                   "updated_at": now.timestamp()})
            self._audit.mark_index_updated(pair.cycle_id, pair.pair_key, now)
        return row

    def on_unmatched(self, event: SeekerUnmatched) -> None:
        self._index.update_metadata(event.user_id, {"missed_cycles": event.missed_cycles,
                                                    "updated_at": event.occurred_at.timestamp()})
        self._states.missed_cycle(event.user_id, cycle_id=event.cycle_id,
                                  missed_cycles=event.missed_cycles, at=event.occurred_at)
