"""Commands -> the events of the optin topic (streams.events.optin)."""

from __future__ import annotations

from datetime import datetime

from producers.domain import BlockUser, Command, OptIn, OptOut
from streams.events import BlockRequested, Event, OptInRequested, OptOutRequested


def to_event(command: Command, event_id: str, occurred_at: datetime) -> Event:
    ids = {"event_id": event_id, "request_id": command.request_id, "user_id": command.user_id}
    if isinstance(command, OptIn):
        return OptInRequested(**ids, occurred_at=occurred_at, opted_in_at=command.received_at,
                              top_chats=command.top_chats,
                              force_refresh=command.force_refresh, pool=command.pool)
    if isinstance(command, OptOut):
        return OptOutRequested(**ids, occurred_at=occurred_at, pool=command.pool)
    if isinstance(command, BlockUser):
        return BlockRequested(**ids, occurred_at=occurred_at,
                              blocked_user_id=command.blocked_user_id)
    raise TypeError(f"unknown command {command!r}")
