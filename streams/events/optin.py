"""Topic ``optin`` (key ``user_id``): what users ask for through the ingress."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Self

from streams.events.base import Event, FieldReader, to_millis

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

    def to_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "occurred_at": to_millis(self.occurred_at),
            "request_id": self.request_id,
            "user_id": self.user_id,
            "opted_in_at": to_millis(self.opted_in_at),
            "top_chats": self.top_chats,
            "force_refresh": self.force_refresh,
            "pool": self.pool,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        r = FieldReader(cls.schema_name, data)
        return cls(
            event_id=r.string("event_id"),
            occurred_at=r.time("occurred_at"),
            request_id=r.string("request_id"),
            user_id=r.string("user_id"),
            opted_in_at=r.time("opted_in_at"),
            top_chats=r.integer("top_chats", DEFAULT_TOP_CHATS),
            force_refresh=r.boolean("force_refresh", False),
            pool=r.string("pool", DEFAULT_POOL),
        )


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

    def to_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "occurred_at": to_millis(self.occurred_at),
            "request_id": self.request_id,
            "user_id": self.user_id,
            "pool": self.pool,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        r = FieldReader(cls.schema_name, data)
        return cls(
            event_id=r.string("event_id"),
            occurred_at=r.time("occurred_at"),
            request_id=r.string("request_id"),
            user_id=r.string("user_id"),
            pool=r.string("pool", DEFAULT_POOL),
        )


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

    def to_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "occurred_at": to_millis(self.occurred_at),
            "request_id": self.request_id,
            "user_id": self.user_id,
            "blocked_user_id": self.blocked_user_id,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        r = FieldReader(cls.schema_name, data)
        return cls(
            event_id=r.string("event_id"),
            occurred_at=r.time("occurred_at"),
            request_id=r.string("request_id"),
            user_id=r.string("user_id"),
            blocked_user_id=r.string("blocked_user_id"),
        )
