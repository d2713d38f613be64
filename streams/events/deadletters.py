"""Topic ``deadletter`` (key = the failed record's key): records nobody could process."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Self

from streams.events.base import Event, FieldReader, to_millis


@dataclass(frozen=True, kw_only=True, slots=True)
class DeadLettered(Event):
    schema_name: ClassVar[str] = "DeadLettered"
    event_id: str
    occurred_at: datetime
    reason: str
    error_type: str
    source_topic: str
    source_partition: int
    source_offset: int
    source_key: bytes | None = None
    source_value: bytes | None = None
    consumer_group: str = ""
    attempts: int = 1

    def key(self) -> bytes | None:
        # Same key as the source record, so one entity's dead letters stay in order.
        return self.source_key

    def to_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "occurred_at": to_millis(self.occurred_at),
            "reason": self.reason,
            "error_type": self.error_type,
            "source_topic": self.source_topic,
            "source_partition": self.source_partition,
            "source_offset": self.source_offset,
            "source_key": self.source_key,
            "source_value": self.source_value,
            "consumer_group": self.consumer_group,
            "attempts": self.attempts,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        r = FieldReader(cls.schema_name, data)
        return cls(
            event_id=r.string("event_id"),
            occurred_at=r.time("occurred_at"),
            reason=r.string("reason"),
            error_type=r.string("error_type"),
            source_topic=r.string("source_topic"),
            source_partition=r.integer("source_partition"),
            source_offset=r.integer("source_offset"),
            source_key=r.opt_bytes("source_key"),
            source_value=r.opt_bytes("source_value"),
            consumer_group=r.string("consumer_group", ""),
            attempts=r.integer("attempts", 1),
        )
