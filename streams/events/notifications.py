"""Topic ``notifications`` (key ``user_id``): one per (cycle_id, user_id)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar

from streams.events.base import Event


@dataclass(frozen=True, kw_only=True, slots=True)
class UserNotified(Event):
    schema_name: ClassVar[str] = "UserNotified"
    event_id: str
    occurred_at: datetime
    cycle_id: str
    pair_key: str
    user_id: str
    partner_id: str
    group_id: str

    def key(self) -> str:
        return self.user_id
