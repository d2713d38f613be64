"""Topic ``ticks`` (exactly one partition, key ``pool``): when to run a cycle."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar

from streams.events.base import Event
from streams.events.optin import DEFAULT_POOL


@dataclass(frozen=True, kw_only=True, slots=True)
class CycleTick(Event):
    schema_name: ClassVar[str] = "CycleTick"
    event_id: str
    occurred_at: datetime
    cycle_id: str
    slot_start: datetime
    pool: str = DEFAULT_POOL

    def key(self) -> str:
        return self.pool
