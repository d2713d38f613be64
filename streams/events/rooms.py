"""Topic ``rooms`` (key ``pair_key``): a pair's private chat group exists."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar

from streams.events.base import Event, check_pair


@dataclass(frozen=True, kw_only=True, slots=True)
class RoomCreated(Event):
    schema_name: ClassVar[str] = "RoomCreated"
    event_id: str
    occurred_at: datetime
    cycle_id: str
    pair_key: str
    group_id: str
    user_a: str
    user_b: str
    group_name: str = ""
    channel_id: str = ""

    def __post_init__(self) -> None:
        Event.__post_init__(self)
        check_pair(self.schema_name, self.pair_key, self.user_a, self.user_b)

    def key(self) -> str:
        return self.pair_key
