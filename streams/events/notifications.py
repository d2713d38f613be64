"""Topic ``notifications`` (key ``user_id``): one per (cycle_id, user_id)."""

from __future__ import annotations

from streams.events.base import Event, event_type


@event_type
class UserNotified(Event):
    cycle_id: str
    pair_key: str
    user_id: str
    partner_id: str
    group_id: str

    def key(self) -> str:
        return self.user_id
