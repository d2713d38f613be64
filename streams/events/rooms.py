"""Topic ``rooms`` (key ``pair_key``): a pair's private chat group exists."""

from __future__ import annotations

from streams.events.base import Event, check_pair, event_type


@event_type
class RoomCreated(Event):
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
