"""In-memory stand-ins for the post-match unit tests (pure logic only): an audit store
and a chat server with the same idempotency contract as the real adapters."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from consumers.audit import AuditRow, AuditStore, CycleRow, PairRef
from consumers.chat import ChatServer, ItemResult, NotifyRequest, RoomRequest


class MemoryAuditStore(AuditStore):
    def __init__(self) -> None:
        self._rows: dict[tuple[str, str], AuditRow] = {}
        self._cycles: dict[str, CycleRow] = {}
        self._lock = threading.Lock()

    def _set(self, pair: PairRef, at: datetime, **fields: Any) -> None:
        with self._lock:
            key = (pair.cycle_id, pair.pair_key)
            row = self._rows.get(key) or AuditRow(pair.cycle_id, pair.pair_key,
                                                  pair.user1_id, pair.user2_id)
            self._rows[key] = replace(row, last_attempt_timestamp=at, **fields)

    def mark_rooms(self, rooms: Sequence[tuple[PairRef, str, str]], at: datetime,
                   matched_at: datetime | None = None) -> None:
        for pair, group, channel in rooms:
            self._set(pair, at, nakama_group_created=True, nakama_group_id=group,
                      nakama_channel_id=channel)

    def mark_notified(self, pairs: Sequence[tuple[PairRef, str]], at: datetime) -> None:
        for pair, user in pairs:
            field = "user1_notified" if user == pair.user1_id else "user2_notified"
            self._set(pair, at, **{field: True})

    def mark_index_updated(self, pairs: Sequence[PairRef], at: datetime,
                           matched_at: datetime | None = None) -> None:
        extra = {} if matched_at is None else {"matched_at": matched_at}
        for pair in pairs:
            self._set(pair, at, pinecone_metadata_updated=True, **extra)

    def mark_status(self, pair: PairRef, status: str, error: str, at: datetime) -> None:
        self._set(pair, at, status=status, last_error=error)

    def get(self, cycle_id: str, pair_key: str) -> AuditRow | None:
        return self._rows.get((cycle_id, pair_key))

    def rows(self, cycle_id: str) -> list[AuditRow]:
        return sorted((r for (c, _), r in self._rows.items() if c == cycle_id),
                      key=lambda r: r.pair_key)

    def record_cycle(self, cycle_id: str, pairs: int, seekers: int,
                     committed_at: datetime) -> None:
        old = self._cycles.get(cycle_id)
        self._cycles[cycle_id] = CycleRow(cycle_id, pairs, seekers, committed_at, None,
                                          old.last_activity if old else None)

    def mark_cycle_finished(self, cycle_id: str, at: datetime) -> None:
        self._cycles[cycle_id] = replace(self._cycles[cycle_id], finished_at=at)

    def touch_cycles(self, cycle_ids: Any, at: datetime) -> None:
        for cycle_id in set(cycle_ids):
            row = self._cycles.get(cycle_id) or CycleRow(cycle_id, None, 0, None, None)
            self._cycles[cycle_id] = replace(row, last_activity=at)

    def cycles(self) -> list[CycleRow]:
        return list(self._cycles.values())


class MemoryChat(ChatServer):
    """Rooms by (cycle, pair), notifications once per (cycle, pair, user). ``gone`` users
    fail permanently; ``flaky`` users fail transiently ``flaky[user]`` more times."""

    def __init__(self) -> None:
        self.rooms: dict[tuple[str, str], tuple[str, str]] = {}
        self.notifications: list[tuple[str, str, str]] = []
        self._sent: set[tuple[str, str, str]] = set()
        self.gone: set[str] = set()
        self.flaky: dict[str, int] = {}
        self.calls = 0

    def _fail(self, *users: str) -> ItemResult | None:
        for user in users:
            if user in self.gone:
                return ItemResult(ok=False, permanent=True, error=f"unknown user: {user}")
            if self.flaky.get(user, 0) > 0:
                self.flaky[user] -= 1
                return ItemResult(ok=False, error=f"transient failure for {user}")
        return None

    def create_rooms(self, rooms: Sequence[RoomRequest]) -> list[ItemResult]:
        self.calls += 1
        out = []
        for r in rooms:
            failed = self._fail(r.user_a, r.user_b)
            if failed:
                out.append(failed)
                continue
            key = (r.cycle_id, r.pair_key)
            created = key not in self.rooms
            self.rooms.setdefault(key, (r.user_a, r.user_b))
            group = f"g-{r.cycle_id}-{r.pair_key}"
            out.append(ItemResult(ok=True, group_id=group, channel_id=f"3.{group}..",
                                  created=created))
        return out

    def notify_matches(self, notes: Sequence[NotifyRequest]) -> list[ItemResult]:
        self.calls += 1
        out = []
        for n in notes:
            failed = self._fail(n.user)
            if failed:
                out.append(failed)
                continue
            claim = (n.cycle_id, n.pair_key, n.user)
            sent = claim not in self._sent
            if sent:
                self._sent.add(claim)
                self.notifications.append((n.user, n.partner, n.group_id))
            out.append(ItemResult(ok=True, sent=sent))
        return out
