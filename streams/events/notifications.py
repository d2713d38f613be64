"""Topic ``notifications`` (key ``user_id``): one per (cycle_id, user_id)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Self

from streams.events.base import Event, FieldReader, to_millis


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

    def to_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "occurred_at": to_millis(self.occurred_at),
            "cycle_id": self.cycle_id,
            "pair_key": self.pair_key,
            "user_id": self.user_id,
            "partner_id": self.partner_id,
            "group_id": self.group_id,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        r = FieldReader(cls.schema_name, data)
        return cls(
            event_id=r.string("event_id"),
            occurred_at=r.time("occurred_at"),
            cycle_id=r.string("cycle_id"),
            pair_key=r.string("pair_key"),
            user_id=r.string("user_id"),
            partner_id=r.string("partner_id"),
            group_id=r.string("group_id"),
        )
