"""Wire models of the ingress API (request and response bodies). Unknown fields are refused."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mosaic.user_state import (
    DELAY_MESSAGES,
    REASON_MESSAGES,
    State,
    UserState,
    reason_message,
)
from producers.domain import (
    MAX_TOP_CHATS,
    POOL_PATTERN,
    REQUEST_ID_PATTERN,
    USER_ID_PATTERN,
)
from producers.errors import InvalidRequest
from streams.events import DEFAULT_POOL, DEFAULT_TOP_CHATS

_STRICT = ConfigDict(extra="forbid", frozen=True, strict=True)

RequestId = Field(default=None, pattern=REQUEST_ID_PATTERN,
                  description="Client-chosen id; a retry with the same id is not applied twice.")


def new_request_id() -> str:
    return uuid.uuid4().hex


class OptInBody(BaseModel):
    model_config = _STRICT
    request_id: str | None = RequestId
    top_chats: int = Field(default=DEFAULT_TOP_CHATS, ge=1, le=MAX_TOP_CHATS,
                           description="How many top chats to aggregate into traits.")
    force_refresh: bool = Field(default=False, description="Rebuild cached traits.")
    pool: str = Field(default=DEFAULT_POOL, pattern=POOL_PATTERN,
                      description="Matching pool, e.g. 'eu:en' (region:language).")


class OptOutBody(BaseModel):
    model_config = _STRICT
    request_id: str | None = RequestId
    pool: str = Field(default=DEFAULT_POOL, pattern=POOL_PATTERN)


class BlockBody(BaseModel):
    model_config = _STRICT
    request_id: str | None = RequestId
    blocked_user_id: str = Field(pattern=USER_ID_PATTERN)

    def checked_blocked(self, user_id: str) -> str:
        if self.blocked_user_id == user_id:
            raise InvalidRequest("a user cannot block themselves")
        return self.blocked_user_id


class AcceptedBody(BaseModel):
    status: Literal["accepted"] = "accepted"
    event_id: str
    request_id: str
    duplicate: bool = False


class ErrorBody(BaseModel):
    error: str
    message: str


class StatusBody(BaseModel):
    """The status answer: the user's user_state row in mosaic/user_state.py's vocabulary
    (every state a stage can write is one status can answer), minus the raw ``detail``:
    a failure shows as ``reason_code`` and a fixed ``message`` only."""

    user_id: str
    state: State
    opted_in_at: datetime | None = None
    waiting_since: datetime | None = None
    missed_cycles: int | None = None
    cycle_id: str | None = None
    room_id: str | None = None
    pool: str | None = None
    updated_at: datetime | None = None
    last_cycle_id: str | None = Field(
        default=None, description="The last cycle the user took part in.")
    unmatched_reason: str | None = Field(
        default=None, description="The matcher's reason code when that cycle did not "
                                  "match the user (they keep their place in line).")
    reason_code: str | None = Field(
        default=None, description="profile_failed: one of " + ", ".join(REASON_MESSAGES)
        + "; preparing_profile: " + ", ".join(DELAY_MESSAGES) + " (delayed, not failed)")
    message: str | None = Field(default=None,
                                description="profile_failed or a delayed "
                                            "preparing_profile: fixed text for the user.")


def status_body(state: UserState) -> dict[str, Any]:
    """``state`` as the JSON object ``GET /user/{id}/status`` answers."""
    code, message = reason_message(state)
    fields = {name: getattr(state, name) for name in StatusBody.model_fields
              if name not in ("reason_code", "message")}
    body = StatusBody(**fields, reason_code=code, message=message)
    answer: dict[str, Any] = body.model_dump(mode="json")
    return answer
