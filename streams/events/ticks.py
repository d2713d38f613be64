"""Topic ``ticks`` (exactly one partition, key ``pool``): when to run a cycle."""

from __future__ import annotations

from datetime import datetime

from streams.events.base import Event, event_type
from streams.events.optin import DEFAULT_POOL


@event_type
class CycleTick(Event):
    cycle_id: str
    slot_start: datetime
    pool: str = DEFAULT_POOL

    def key(self) -> str:
        return self.pool
