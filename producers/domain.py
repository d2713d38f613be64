"""Commands the ingress accepts and the rules that turn them into events.

Commands are imperative (OptIn); they become the optin topic's events (OptInRequested).
The event id is derived from (kind, user, request id), so a retried request yields the
same event id and consumers can drop the copy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from streams.events import DEFAULT_POOL, DEFAULT_TOP_CHATS, derive_event_id

USER_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{5,127}$"
REQUEST_ID_PATTERN = r"^[A-Za-z0-9_-]{8,64}$"
POOL_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,31}(:[a-z0-9][a-z0-9_-]{0,31})?$"
MAX_TOP_CHATS = 50

_USER_ID_RE = re.compile(USER_ID_PATTERN)


def valid_user_id(value: str) -> bool:
    return _USER_ID_RE.fullmatch(value) is not None  # not .match: "$" allows a final "\n"


def event_id_for(kind: str, user_id: str, request_id: str) -> str:
    return derive_event_id("ingress", kind, user_id, request_id)


@dataclass(frozen=True)
class OptIn:
    user_id: str
    request_id: str
    received_at: datetime
    top_chats: int = DEFAULT_TOP_CHATS
    force_refresh: bool = False
    pool: str = DEFAULT_POOL

    kind = "opt_in"

    def fingerprint(self) -> tuple[object, ...]:
        return (self.kind, self.top_chats, self.force_refresh, self.pool)


@dataclass(frozen=True)
class OptOut:
    user_id: str
    request_id: str
    received_at: datetime
    pool: str = DEFAULT_POOL

    kind = "opt_out"

    def fingerprint(self) -> tuple[object, ...]:
        return (self.kind, self.pool)


@dataclass(frozen=True)
class BlockUser:
    user_id: str
    blocked_user_id: str
    request_id: str
    received_at: datetime

    kind = "block"

    def fingerprint(self) -> tuple[object, ...]:
        return (self.kind, self.blocked_user_id)


Command = OptIn | OptOut | BlockUser


@dataclass(frozen=True)
class GetStatus:
    user_id: str


@dataclass(frozen=True)
class Accepted:
    """The broker confirmed the event; ``duplicate`` when a retry found it already done."""

    event_id: str
    request_id: str
    duplicate: bool = False
