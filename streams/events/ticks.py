"""Topic ``ticks`` (exactly one partition, key ``pool``): when to run a cycle."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Self

from streams.events.base import Event, FieldReader, to_millis
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

    def to_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "occurred_at": to_millis(self.occurred_at),
            "cycle_id": self.cycle_id,
            "pool": self.pool,
            "slot_start": to_millis(self.slot_start),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        r = FieldReader(cls.schema_name, data)
        return cls(
            event_id=r.string("event_id"),
            occurred_at=r.time("occurred_at"),
            cycle_id=r.string("cycle_id"),
            pool=r.string("pool", DEFAULT_POOL),
            slot_start=r.time("slot_start"),
        )
