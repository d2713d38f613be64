"""Topic ``optin`` (key ``user_id``): what users ask for through the ingress."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar

from streams.events.base import Event

DEFAULT_POOL = "default"
DEFAULT_TOP_CHATS = 5


@dataclass(frozen=True, kw_only=True, slots=True)
class OptInRequested(Event):
    schema_name: ClassVar[str] = "OptInRequested"
    event_id: str
    occurred_at: datetime
    request_id: str
    user_id: str
    opted_in_at: datetime
    top_chats: int = DEFAULT_TOP_CHATS
    force_refresh: bool = False
    pool: str = DEFAULT_POOL

    def key(self) -> str:
        return self.user_id


@dataclass(frozen=True, kw_only=True, slots=True)
class OptOutRequested(Event):
    schema_name: ClassVar[str] = "OptOutRequested"
    event_id: str
    occurred_at: datetime
    request_id: str
    user_id: str
    pool: str = DEFAULT_POOL

    def key(self) -> str:
        return self.user_id


@dataclass(frozen=True, kw_only=True, slots=True)
class BlockRequested(Event):
    schema_name: ClassVar[str] = "BlockRequested"
    event_id: str
    occurred_at: datetime
    request_id: str
    user_id: str
    blocked_user_id: str

    def key(self) -> str:
        return self.user_id
