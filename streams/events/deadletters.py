"""Topic ``deadletter`` (key = the failed record's key): records nobody could process."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar

from streams.events.base import Event


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
