"""The chat server seen by post-match consumers: a private room per pair and one match
notification per user. Nakama adapter over its server-to-server RPC API, plus an
in-memory fake with the same idempotency contract for unit tests."""

from __future__ import annotations

import json
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import httpx

from mosaic.errors import ExternalServiceError
from mosaic.settings import NakamaSettings


@dataclass(frozen=True)
class Room:
    group_id: str
    created: bool


class ChatServer(ABC):
    @abstractmethod
    def create_room(self, cycle_id: str, pair_key: str, user_a: str, user_b: str) -> Room:
        """Create (or find) the pair's private room; safe to call again."""

    @abstractmethod
    def notify_match(self, cycle_id: str, pair_key: str, user: str, partner: str,
                     group_id: str) -> bool:
        """Send the match notification unless already sent; True if sent by this call."""


class NakamaChat(ChatServer):
    """Calls the Lua RPCs of nakama/modules/mosaic_rooms.lua with the runtime http_key."""

    def __init__(self, settings: NakamaSettings, client: httpx.Client | None = None) -> None:
        self._http_key = settings.http_key.get_secret_value()
        self._client = client or httpx.Client(base_url=settings.url, timeout=10.0)

    def _rpc(self, rpc_id: str, body: dict[str, str]) -> dict[str, Any]:
        try:
            resp = self._client.post(
                f"/v2/rpc/{rpc_id}", params={"http_key": self._http_key, "unwrap": ""},
                content=json.dumps(body),
            )
        except httpx.HTTPError as exc:
            raise ExternalServiceError(f"Nakama unreachable for {rpc_id}: {exc}") from exc
        if resp.status_code >= 300:
            retryable = resp.status_code >= 500 or resp.status_code == 429
            raise ExternalServiceError(
                f"Nakama {rpc_id} answered {resp.status_code}: {resp.text[:300]}",
                retryable=retryable,
            )
        result: dict[str, Any] = resp.json()
        return result

    def create_room(self, cycle_id: str, pair_key: str, user_a: str, user_b: str) -> Room:
        out = self._rpc("mosaic_create_room", {
            "cycle_id": cycle_id, "pair_key": pair_key, "user_a": user_a, "user_b": user_b})
        return Room(group_id=str(out["group_id"]), created=bool(out["created"]))

    def notify_match(self, cycle_id: str, pair_key: str, user: str, partner: str,
                     group_id: str) -> bool:
        out = self._rpc("mosaic_notify_match", {
            "cycle_id": cycle_id, "pair_key": pair_key, "user": user, "partner": partner,
            "group_id": group_id})
        return bool(out["sent"])


class MemoryChat(ChatServer):
    """Fake for unit tests: remembers rooms by name and notifications by claim."""

    def __init__(self) -> None:
        self.rooms: dict[str, tuple[str, str]] = {}
        self.notifications: list[tuple[str, str, str]] = []
        self._claims: set[tuple[str, str, str]] = set()
        self._lock = threading.Lock()

    def create_room(self, cycle_id: str, pair_key: str, user_a: str, user_b: str) -> Room:
        name = f"mm:{cycle_id}:{pair_key}"
        with self._lock:
            created = name not in self.rooms
            self.rooms.setdefault(name, (user_a, user_b))
        return Room(group_id=name, created=created)

    def notify_match(self, cycle_id: str, pair_key: str, user: str, partner: str,
                     group_id: str) -> bool:
        claim = (cycle_id, pair_key, user)
        with self._lock:
            if claim in self._claims:
                return False
            self._claims.add(claim)
            self.notifications.append((user, partner, group_id))
        return True
