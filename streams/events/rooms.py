"""Topic ``rooms`` (key ``pair_key``): a pair's private chat group exists."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Self

from streams.events.base import Event, FieldReader, check_pair, to_millis


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

    def to_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "occurred_at": to_millis(self.occurred_at),
            "cycle_id": self.cycle_id,
            "pair_key": self.pair_key,
            "group_id": self.group_id,
            "group_name": self.group_name,
            "channel_id": self.channel_id,
            "user_a": self.user_a,
            "user_b": self.user_b,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        r = FieldReader(cls.schema_name, data)
        return cls(
            event_id=r.string("event_id"),
            occurred_at=r.time("occurred_at"),
            cycle_id=r.string("cycle_id"),
            pair_key=r.string("pair_key"),
            group_id=r.string("group_id"),
            group_name=r.string("group_name", ""),
            channel_id=r.string("channel_id", ""),
            user_a=r.string("user_a"),
            user_b=r.string("user_b"),
        )
