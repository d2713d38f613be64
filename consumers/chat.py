"""The chat server seen by post-match consumers: a private room per pair and one match
notification per user, in batches. Nakama adapter over the server-to-server Lua RPCs of
nakama/modules/mosaic_rooms.lua (``mosaic_create_rooms``, ``mosaic_notify_matches``), and
the erasure of a user (``mosaic_erase_user``, nakama/modules/mosaic_erase.lua).

Both RPCs answer per item, so one bad pair never fails the others: ``ok`` items are done
(idempotently: a retry finds the same group, a delivered notification is not sent
again), failed items say whether they can ever succeed (``permanent``: the user was
deleted or banned). A failure of the whole call (Nakama down, a timeout) raises a
retryable :class:`ExternalServiceError`; the items are then simply retried.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx

from mosaic.errors import ExternalServiceError
from mosaic.settings import NakamaSettings


@dataclass(frozen=True)
class RoomRequest:
    cycle_id: str
    pair_key: str
    user_a: str
    user_b: str


@dataclass(frozen=True)
class NotifyRequest:
    cycle_id: str
    pair_key: str
    user: str
    partner: str
    group_id: str
    channel_id: str


@dataclass(frozen=True)
class ItemResult:
    """One item's outcome. ``ok`` with ``group_id``/``channel_id`` for rooms, ``sent``
    (False = delivered earlier) for notifications; else ``error`` and ``permanent``."""

    ok: bool
    group_id: str = ""
    channel_id: str = ""
    sent: bool = False
    created: bool = False
    permanent: bool = False
    error: str = ""


class ChatServer(ABC):
    @abstractmethod
    def create_rooms(self, rooms: Sequence[RoomRequest]) -> list[ItemResult]:
        """Create (or find) each pair's private room; results in input order."""

    @abstractmethod
    def notify_matches(self, notes: Sequence[NotifyRequest]) -> list[ItemResult]:
        """Deliver each match notification unless delivered before; input order."""


class NakamaChat(ChatServer):
    """Splits work into chunks sent concurrently: Nakama runs each RPC in its own Lua VM,
    so a few calls in flight keep its database busy while Python waits."""

    ROOMS_CHUNK = 150  # Nakama takes 500 per call; smaller calls spread over its Lua VMs
    NOTIFY_CHUNK = 300  # Nakama's 256 KB request limit holds ~700

    def __init__(self, settings: NakamaSettings, client: httpx.Client | None = None, *,
                 parallel: int = 4, timeout_seconds: float = 30.0) -> None:
        self._http_key = settings.http_key.get_secret_value()
        self._client = client or httpx.Client(
            base_url=settings.url, timeout=timeout_seconds,
            limits=httpx.Limits(max_connections=parallel * 2))
        self._parallel = parallel
        self._pool = ThreadPoolExecutor(parallel, thread_name_prefix="nakama")

    def close(self) -> None:
        self._pool.shutdown(wait=False)
        self._client.close()

    def _rpc(self, rpc_id: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            resp = self._client.post(
                f"/v2/rpc/{rpc_id}", params={"http_key": self._http_key, "unwrap": ""},
                content=json.dumps(body))
        except httpx.HTTPError as exc:
            raise ExternalServiceError(f"Nakama unreachable for {rpc_id}: {exc!r}") from exc
        if resp.status_code >= 300:
            # Whole-call failures: 5xx/429 are outages; 4xx means this client is wrong.
            retryable = resp.status_code >= 500 or resp.status_code == 429
            raise ExternalServiceError(
                f"Nakama {rpc_id} answered {resp.status_code}: {resp.text[:300]}",
                retryable=retryable)
        result: dict[str, Any] = resp.json()
        return result

    def _chunked(self, rpc_id: str, field: str, items: list[dict[str, str]],
                 limit: int) -> list[ItemResult]:
        # Even chunks, one per worker where the limit allows: 500 rooms go as 4 x 125,
        # not 100+100+100+100 and then a fifth call alone.
        size = max(1, min(limit, -(-len(items) // self._parallel)))
        chunks = [items[i:i + size] for i in range(0, len(items), size)]
        answers = list(self._pool.map(lambda c: self._rpc(rpc_id, {field: c}), chunks))
        results: list[ItemResult] = []
        for chunk, answer in zip(chunks, answers, strict=True):
            got = answer.get("results")
            if not isinstance(got, list) or len(got) != len(chunk):
                raise ExternalServiceError(f"Nakama {rpc_id}: malformed answer "
                                           f"{str(answer)[:200]}", retryable=False)
            results.extend(_item(r) for r in got)
        return results

    def create_rooms(self, rooms: Sequence[RoomRequest]) -> list[ItemResult]:
        items = [{"cycle_id": r.cycle_id, "pair_key": r.pair_key, "user_a": r.user_a,
                  "user_b": r.user_b} for r in rooms]
        return self._chunked("mosaic_create_rooms", "rooms", items, self.ROOMS_CHUNK)

    def notify_matches(self, notes: Sequence[NotifyRequest]) -> list[ItemResult]:
        items = [{"cycle_id": n.cycle_id, "pair_key": n.pair_key, "user": n.user,
                  "partner": n.partner, "group_id": n.group_id, "channel_id": n.channel_id}
                 for n in notes]
        return self._chunked("mosaic_notify_matches", "notifications", items,
                             self.NOTIFY_CHUNK)

    def erase_user(self, user: str, group_ids: Sequence[str]) -> dict[str, int]:
        """Delete ``user``'s Nakama account and the post-match rows kept for it
        (nakama/modules/mosaic_erase.lua): counts per kind, zeros when already gone."""
        answer = self._rpc("mosaic_erase_user", {"user": user, "group_ids": list(group_ids)})
        return {k: int(v) for k, v in answer.items()}


def _item(r: dict[str, Any]) -> ItemResult:
    if r.get("ok"):
        return ItemResult(ok=True, group_id=str(r.get("group_id") or ""),
                          channel_id=str(r.get("channel_id") or ""),
                          sent=bool(r.get("sent")), created=bool(r.get("created")))
    return ItemResult(ok=False, permanent=bool(r.get("permanent")),
                      error=str(r.get("error") or "unknown error"))
