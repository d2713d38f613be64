"""In-memory fakes of runtime interfaces, for unit tests of pure logic only."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import numpy as np

from consumers.audit import AuditRow, AuditStore, CycleRow, PairRef
from consumers.blocks import BlockStore, sorted_pair
from consumers.chat import ChatServer, ItemResult, NotifyRequest, RoomRequest
from consumers.embedding.outputs import SeekerSink
from mosaic.user_state import (
    MATCHED_STEP,
    PROFILE_DELAYED,
    PROFILE_UNAVAILABLE,
    LastRequest,
    UserState,
    UserStateWriter,
    missed_step,
    stage_time,
)
from producers.errors import Unavailable
from profiles.embedders import Embedder, Vectors, hashed_embedding
from profiles.index import Condition, Match, MetaValue, Vector, VectorIndex, VectorRecord, unit
from streams.deadletter import RawRecord
from streams.events import DeadLettered, Event, derive_event_id


class MemoryUserStateWriter(UserStateWriter):
    """Keeps the latest fields per user; per field the newest write wins (as in Cassandra)."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}

    def _write(self, user_id: str, at: datetime, **fields: Any) -> None:
        row = self.rows.setdefault(user_id, {})
        for name, value in fields.items():
            if row.get(f"_{name}_at", at) <= at:
                row[name], row[f"_{name}_at"] = value, at

    def waiting(self, user_id: str, *, pool: str, waiting_since: datetime,
                missed_cycles: int, at: datetime) -> None:
        self._write(user_id, at, state="waiting", pool=pool, waiting_since=waiting_since,
                    missed_cycles=missed_cycles, detail=None, reason_code=None)

    def profile_failed(self, user_id: str, *, reason: str, at: datetime,
                       code: str = PROFILE_UNAVAILABLE) -> None:
        self._write(user_id, at, state="profile_failed", detail=reason, reason_code=code)

    def profile_delayed(self, user_id: str, *, at: datetime) -> None:
        self._write(user_id, at, reason_code=PROFILE_DELAYED)

    def requested(self, state: UserState) -> None:
        assert state.updated_at is not None
        # The ingress' write: it starts an episode, so the later stages' columns go.
        self._write(state.user_id, state.updated_at, state=state.state,
                    opted_in_at=state.opted_in_at, pool=state.pool, detail=None,
                    reason_code=None, waiting_since=None, missed_cycles=None, cycle_id=None,
                    room_id=None, last_cycle_id=None, unmatched_reason=None)

    def missed_cycle(self, user_id: str, *, cycle_id: str, missed_cycles: int,
                     at: datetime, reason: str | None = None, version: int = 0) -> None:
        when = stage_time(version, at, missed_step(missed_cycles))
        self._write(user_id, when, state="waiting", missed_cycles=missed_cycles,
                    last_cycle_id=cycle_id, unmatched_reason=reason)

    def matched(self, user_id: str, *, cycle_id: str, room_id: str | None,
                at: datetime, version: int = 0) -> None:
        fields: dict[str, Any] = {"state": "matched", "cycle_id": cycle_id,
                                  "last_cycle_id": cycle_id, "unmatched_reason": None}
        if room_id is not None:
            fields["room_id"] = room_id
        self._write(user_id, stage_time(version, at, MATCHED_STEP), **fields)


class FakeEmbedder(Embedder):
    """Deterministic, instant, dependency-free: for unit tests of code above the seam."""

    def __init__(self, dim: int = 16, model: str = "fake-hash") -> None:
        self.dim, self.model = dim, model
        self.calls: list[list[str]] = []

    def _embed(self, texts: list[str]) -> Vectors:
        self.calls.append(list(texts))
        return np.stack([hashed_embedding(t, self.dim, self.model) for t in texts])


class InMemoryVectorIndex(VectorIndex):
    """Exact brute-force cosine; the fake for unit tests and single-process demos."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._records: dict[str, VectorRecord] = {}
        self._lock = threading.Lock()

    def _upsert(self, records: list[VectorRecord]) -> None:
        with self._lock:
            for r in records:
                self._records[r.id] = VectorRecord(r.id, r.vector.copy(), dict(r.metadata))

    def _fetch(self, ids: list[str]) -> dict[str, VectorRecord]:
        with self._lock:
            return {i: self._records[i] for i in ids if i in self._records}

    def _query(self, vector: Vector, top_k: int, conditions: tuple[Condition, ...],
               include_vectors: bool) -> list[Match]:
        with self._lock:
            pool = [r for r in self._records.values()
                    if all(c.test(r.metadata) for c in conditions)]
        q = unit(vector)
        scored = sorted(((float(unit(r.vector) @ q), r) for r in pool),
                        key=lambda sr: (-sr[0], sr[1].id))[:top_k]
        return [Match(r.id, s, dict(r.metadata), r.vector.copy() if include_vectors else None)
                for s, r in scored]

    def _update_metadata(self, record_id: str, fields: dict[str, MetaValue]) -> bool:
        with self._lock:
            old = self._records.get(record_id)
            if old is None:
                return False
            self._records[record_id] = VectorRecord(old.id, old.vector,
                                                    {**old.metadata, **fields})
            return True

    def _delete(self, ids: list[str]) -> None:
        with self._lock:
            for i in ids:
                self._records.pop(i, None)

    def list_ids(self) -> list[str]:
        with self._lock:
            return sorted(self._records)

    def count(self) -> int:
        with self._lock:
            return len(self._records)


class MemorySeekerSink(SeekerSink):
    def __init__(self) -> None:
        self.events: list[Event] = []

    def publish(self, events: Sequence[Event]) -> None:
        self.events.extend(events)


class MemoryDeadLetters:
    def __init__(self) -> None:
        self.letters: list[tuple[RawRecord, str]] = []

    def publish(self, record: RawRecord, error: BaseException | str, *,
                attempts: int = 1) -> DeadLettered:
        reason = str(error)
        self.letters.append((record, reason))
        return DeadLettered(
            event_id=derive_event_id("dead-letter", record.topic, str(record.partition),
                                     str(record.offset)),
            occurred_at=datetime.now(UTC), reason=reason,
            error_type=type(error).__name__, source_topic=record.topic,
            source_partition=record.partition, source_offset=record.offset,
            source_key=record.key, source_value=record.value, attempts=attempts)


class MemoryErasures:
    """``mosaic.erasures.CassandraErasures`` in memory (the embedding agent's check)."""

    def __init__(self) -> None:
        self.erased: dict[str, datetime] = {}

    def record(self, user_id: str, at: datetime) -> None:
        self.erased[user_id] = at

    def erased_at(self, user_ids: Iterable[str]) -> dict[str, datetime]:
        return {u: self.erased[u] for u in set(user_ids) if u in self.erased}


class MemoryRequestVersions:
    """``mosaic.user_state.CassandraRequestVersions`` in memory (the embedding agent's)."""

    def __init__(self) -> None:
        self.rows: dict[str, LastRequest] = {}

    def last(self, user_ids: Iterable[str]) -> dict[str, LastRequest]:
        return {u: self.rows[u] for u in set(user_ids) if u in self.rows}

    def record(self, rows: Mapping[str, LastRequest]) -> None:
        for user_id, last in rows.items():
            old = self.rows.get(user_id)
            if old is None or old.version <= last.version:  # as the write time does
                self.rows[user_id] = last


class MemoryBlockStore(BlockStore):
    def __init__(self) -> None:
        self._blocks: dict[str, dict[str, datetime]] = {}
        self._lock = threading.Lock()

    def add(self, blocker: str, blocked: str, at: datetime) -> None:
        sorted_pair(blocker, blocked)
        with self._lock:
            self._blocks.setdefault(blocker, {}).setdefault(blocked, at)

    def blocked_by(self, blocker: str) -> set[str]:
        with self._lock:
            return set(self._blocks.get(blocker, {}))


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


class MemorySharedNonces:
    """``producers.nonces.SharedNonces`` in memory: what other instances claimed is in
    ``claimed``; ``down`` makes every claim fail like an unreachable store."""

    def __init__(self) -> None:
        self.claimed: set[tuple[int, str]] = set()
        self.calls = 0
        self.down = False

    async def claim(self, timestamp: int, nonce: str) -> bool:
        self.calls += 1
        if self.down:
            raise Unavailable("nonce store unavailable: fake", retry_after_seconds=5)
        if (timestamp, nonce) in self.claimed:
            return False
        self.claimed.add((timestamp, nonce))
        return True


class BlockingConsumer:
    """A consumer whose ``consume`` blocks until ``release`` is set (a call that never
    comes back, as librdkafka's synchronous commit did after a broker restart)."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def consume(self, _n: int, _timeout: float) -> list[Any]:
        self.release.wait(60)
        return []

    def assignment(self) -> list[Any]:
        return []

    def position(self, partitions: list[Any]) -> list[Any]:
        return partitions

    def list_topics(self, timeout: float = -1) -> None:
        return None

    def poll(self, _timeout: float) -> None:
        return None

    def close(self) -> None:
        self.release.set()
