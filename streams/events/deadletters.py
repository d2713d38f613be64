"""Topic ``deadletter`` (key = the failed record's key): records nobody could process."""

from __future__ import annotations

from streams.events.base import Event, event_type


@event_type
class DeadLettered(Event):
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
