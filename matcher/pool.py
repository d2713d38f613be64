"""The matcher's view of the log, as plain state: the waiting pool folded from the
compacted ``seekers`` changelog, and the recent cycles and their pairs.

Nothing here talks to Kafka: records come in as :class:`LogRecord` (coordinates + raw
bytes), so folding, snapshots and constraints are unit-tested without a broker.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

import numpy as np

from matcher.core.model import Constraints, FloatArray, PoolSnapshot, RecentPairing
from mosaic.errors import MosaicError, SerializationError
from streams.events import CycleCompleted, Event, PairMatched, SeekerRemoved, SeekerUpdated
from streams.events.seekers import STATUS_WAITING
from streams.serde import HEADER_SIZE, MAGIC, AvroSerde, decode_record, default_serde

log = logging.getLogger(__name__)

REASON_INVALID_VECTOR = "invalid_vector"

_E = TypeVar("_E", CycleCompleted, PairMatched)


@dataclass(frozen=True)
class LogRecord:
    """One committed record, independent of the Kafka client."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int = 0


@dataclass(frozen=True, eq=False)
class Seeker:
    """A waiting user's latest record. The vector is kept as float32 (a quarter of the
    memory of a tuple of floats) and ``record`` carries everything else."""

    record: SeekerUpdated  # with vector=()
    vector: FloatArray
    partition: int
    offset: int

    @property
    def user_id(self) -> str:
        return self.record.user_id

    def event(self) -> SeekerUpdated:
        """The record as it was published (float32 values round-trip exactly)."""
        return dataclasses.replace(self.record, vector=tuple(self.vector.tolist()))


class PoolState:
    """Latest record per user from the seekers changelog: ``SeekerUpdated`` keeps the user,
    ``SeekerRemoved`` or a tombstone (null value) drops them. Apply records in offset
    order per partition (the order Kafka delivers them)."""

    def __init__(self, serde: AvroSerde | None = None) -> None:
        self._serde = serde or default_serde()
        self._seekers: dict[str, Seeker] = {}
        self.bad_records = 0

    def __len__(self) -> int:
        return len(self._seekers)

    def apply(self, record: LogRecord) -> None:
        if record.value is None:
            if record.key is not None:
                self._seekers.pop(record.key.decode("utf-8", "replace"), None)
            return
        try:
            event, vector = self._decode(record.value)
        except SerializationError as exc:
            # Not ours to dead-letter (the seekers writer owns the topic): skip, count.
            self.bad_records += 1
            log.warning("skipping seekers[%d]@%d: %s", record.partition, record.offset, exc)
            return
        if isinstance(event, SeekerRemoved):
            self._seekers.pop(event.user_id, None)
        elif isinstance(event, SeekerUpdated) and vector is not None:
            self._seekers[event.user_id] = Seeker(event, vector, record.partition,
                                                  record.offset)
        else:
            self.bad_records += 1
            log.warning("skipping %s on seekers[%d]@%d", event.schema_name,
                        record.partition, record.offset)

    def _decode(self, value: bytes) -> tuple[Event, FloatArray | None]:
        """Decode a record; a ``SeekerUpdated`` comes back with ``vector=()`` and its
        vector as float32. The vector skips the per-float checks of ``from_dict``
        (numpy does them at once): start-up folds the whole topic, ~5x faster so."""
        if self._serde.schema_name(value) != SeekerUpdated.schema_name:
            return self._serde.decode(value), None
        writer = self._serde.registry.writer(value[len(MAGIC):HEADER_SIZE])
        reader = self._serde.registry.current(writer.name)
        fields = decode_record(writer, reader, value[HEADER_SIZE:])
        try:
            vector = np.asarray(fields.pop("vector"), dtype=np.float32)
        except (KeyError, TypeError, ValueError) as exc:
            raise SerializationError(f"SeekerUpdated.vector: {exc}") from exc
        if vector.ndim != 1 or not np.isfinite(vector).all():
            raise SerializationError("SeekerUpdated.vector: not a finite 1-d vector")
        vector.flags.writeable = False
        try:
            return SeekerUpdated.from_dict({**fields, "vector": []}), vector
        except MosaicError as exc:  # e.g. a bad event id: the record is invalid
            raise SerializationError(f"invalid SeekerUpdated: {exc}") from exc

    def apply_all(self, records: Iterable[LogRecord]) -> None:
        for record in records:
            self.apply(record)

    def waiting(self, pool: str) -> list[Seeker]:
        """Users waiting in ``pool``, sorted by user id (a deterministic row order)."""
        return sorted((s for s in self._seekers.values()
                       if s.record.pool == pool and s.record.status == STATUS_WAITING),
                      key=lambda s: s.user_id)

    def changed_since(self, user_ids: Iterable[str], ends: Mapping[int, int]) -> set[str]:
        """Users whose latest record is at or past ``ends`` (a snapshot's end offsets):
        they changed (opted out, paused, re-embedded) after the snapshot was taken."""
        changed = set()
        for user in user_ids:
            seeker = self._seekers.get(user)
            if seeker is None or seeker.offset >= ends.get(seeker.partition, 0):
                changed.add(user)
        return changed


@dataclass(frozen=True)
class CycleInput:
    """What the core sees for one cycle, plus who was left out before it."""

    seekers: tuple[Seeker, ...]  # row i of the snapshot is seekers[i]
    snapshot: PoolSnapshot
    invalid: tuple[Seeker, ...]  # vectors the core cannot use (zero, wrong dimension)


def build_snapshot(seekers: Sequence[Seeker], at: datetime) -> CycleInput:
    """A :class:`PoolSnapshot` of ``seekers`` at ``at`` (the tick's time, not the clock).

    Vectors must share one dimension: a user embedded by another model (a rollout in
    progress) is set aside with :data:`REASON_INVALID_VECTOR` instead of failing the cycle.
    """
    dims = Counter(len(s.vector) for s in seekers if np.any(s.vector))
    dim = max(dims.items(), key=lambda kv: (kv[1], kv[0]))[0] if dims else 0
    usable = tuple(s for s in seekers if len(s.vector) == dim and np.any(s.vector))
    invalid = tuple(s for s in seekers if not (len(s.vector) == dim and np.any(s.vector)))
    if invalid:
        log.warning("%d seekers with unusable vectors (pool dimension %d)", len(invalid), dim)
    vectors = (np.stack([s.vector for s in usable]) if usable
               else np.zeros((0, dim), dtype=np.float32))
    wait = np.array([max(0.0, (at - s.record.opted_in_at).total_seconds()) for s in usable],
                    dtype=np.float64)
    missed = np.array([s.record.missed_cycles for s in usable], dtype=np.int64)
    snapshot = PoolSnapshot(tuple(s.user_id for s in usable), vectors, wait, missed)
    return CycleInput(usable, snapshot, invalid)


def build_constraints(seekers: Sequence[Seeker], blocked: Iterable[tuple[str, str]],
                      recent: Iterable[RecentPairing]) -> Constraints:
    """Blocks from the block store and from the seeker records; recent pairings from the
    cycle history and from the records' ``recent_partner_ids`` (treated as last cycle).
    Only pairs inside the pool are kept, sorted, so equal inputs give equal constraints."""
    members = {s.user_id for s in seekers}
    blocks = set(blocked)
    blocks.update((s.user_id, other) for s in seekers for other in s.record.blocked_user_ids)
    pairings = {(r.user_a, r.user_b): r.cycles_ago for r in recent}
    for seeker in seekers:
        for partner in seeker.record.recent_partner_ids:
            key = (seeker.user_id, partner)
            pairings[key] = min(pairings.get(key, 1), 1)
    return Constraints(
        blocks=tuple(sorted(b for b in blocks if b[0] in members and b[1] in members)),
        recent=tuple(RecentPairing(a, b, ago) for (a, b), ago in sorted(pairings.items())
                     if a in members and b in members),
    )


@dataclass(frozen=True)
class _Cycle:
    cycle_id: str
    timestamp_ms: int


class CycleHistory:
    """Completed cycles (from ``cycles``) and the pairs of each pool's last
    ``history_cycles`` cycles (from ``pairs``). Feed cycles before pairs: a cycle's pairs
    commit in the same transaction as its summary, so once the summary is known every
    pair read later that belongs to an older, forgotten cycle can be dropped."""

    def __init__(self, history_cycles: int, serde: AvroSerde | None = None) -> None:
        self._serde = serde or default_serde()
        self._keep = max(0, history_cycles)
        self._completed: set[str] = set()
        self._recent: dict[str, deque[_Cycle]] = {}
        self._pairs: dict[str, list[tuple[str, str]]] = {}
        self.bad_records = 0

    def is_completed(self, cycle_id: str) -> bool:
        return cycle_id in self._completed

    def apply_cycle(self, record: LogRecord) -> None:
        event = self._decode(record, CycleCompleted)
        if event is None or event.cycle_id in self._completed:
            return
        self._completed.add(event.cycle_id)
        recent = self._recent.setdefault(event.pool, deque())
        recent.append(_Cycle(event.cycle_id, record.timestamp_ms))
        while len(recent) > self._keep:
            self._pairs.pop(recent.popleft().cycle_id, None)

    def apply_pair(self, record: LogRecord) -> None:
        if record.value is None or self._serde.schema_name(record.value) != "PairMatched":
            return  # SeekerUnmatched shares the topic; skip it without decoding the body
        event = self._decode(record, PairMatched)
        if event is None:
            return
        if event.cycle_id in self._completed and not self._is_recent(event):
            return
        self._pairs.setdefault(event.cycle_id, []).append((event.user_a, event.user_b))

    def _is_recent(self, event: PairMatched) -> bool:
        return any(c.cycle_id == event.cycle_id for c in self._recent.get(event.pool, ()))

    def recent(self, pool: str) -> tuple[RecentPairing, ...]:
        """Pairings of the pool's last cycles; ``cycles_ago`` 1 is the latest cycle."""
        cycles = list(self._recent.get(pool, ()))
        return tuple(RecentPairing(a, b, len(cycles) - i)
                     for i, cycle in enumerate(cycles)
                     for a, b in self._pairs.get(cycle.cycle_id, ()))

    def oldest_recent_timestamp_ms(self) -> int | None:
        """When the oldest remembered cycle was written: pairs older than that (less the
        transaction time) are not needed, so a fresh start can skip them."""
        stamps = [c.timestamp_ms for cycles in self._recent.values() for c in cycles]
        return min(stamps) if stamps and self._keep else None

    def _decode(self, record: LogRecord, kind: type[_E]) -> _E | None:
        try:
            return self._serde.decode_as(record.value, kind)
        except SerializationError as exc:
            self.bad_records += 1
            log.warning("skipping record @%d/%d: %s", record.partition, record.offset, exc)
            return None
