"""Topic ``optin`` (key ``user_id``): what users ask for through the ingress."""

from __future__ import annotations

from datetime import datetime

from streams.events.base import Event, event_type

DEFAULT_POOL = "default"
DEFAULT_TOP_CHATS = 5


@event_type
class OptInRequested(Event):
    request_id: str
    user_id: str
    opted_in_at: datetime
    top_chats: int = DEFAULT_TOP_CHATS
    force_refresh: bool = False
    pool: str = DEFAULT_POOL

    def key(self) -> str:
        return self.user_id


@event_type
class OptOutRequested(Event):
    request_id: str
    user_id: str
    pool: str = DEFAULT_POOL

    def key(self) -> str:
        return self.user_id


@event_type
class BlockRequested(Event):
    request_id: str
    user_id: str
    blocked_user_id: str

    def key(self) -> str:
        return self.user_id
