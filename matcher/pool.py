"""The matcher's view of the log, as plain state: the waiting pool folded from the
compacted ``seekers`` changelog, and the recent cycles and their pairs.

Nothing here talks to Kafka: records come in as :class:`LogRecord` (coordinates + raw
bytes), so folding, snapshots and constraints are unit-tested without a broker.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import numpy as np

from matcher.core.model import (
    Constraints,
    FloatArray,
    RecentPairing,
)
from matcher.pool_store import VectorRows
from mosaic.errors import MosaicError, SerializationError
from streams.events import (
    CycleCompleted,
    Event,
    PairMatched,
    SeekerRemoved,
    SeekerUpdated,
    derive_event_id,
)
from streams.events.seekers import STATUS_WAITING
from streams.serde import (
    HEADER_SIZE,
    MAGIC,
    AvroSerde,
    decode_record,
    default_serde,
    flat_reader,
)

log = logging.getLogger(__name__)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_E = TypeVar("_E", CycleCompleted, PairMatched)
# A waiting user as the pool keeps them: (record without its vector, partition, offset,
# poison).
Entry = tuple[SeekerUpdated, int, int, str | None]
# Fields of SeekerUpdated that most records share a value of.
_SHARED_VALUES = ("pool", "model", "status", "cycle_id")


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
    """A waiting user's latest record. The vector is float32 (a quarter of the memory of
    a tuple of floats) and ``record`` carries everything else. From :class:`PoolState`
    the vector is a view into its store: it stays this user's until a record of this
    user is applied (then the row may be rewritten or given to another user). A cycle's
    set-aside seekers get copies (see :mod:`matcher.snapshot`)."""

    record: SeekerUpdated  # with vector=()
    vector: FloatArray
    partition: int
    offset: int
    # Why the user's latest record cannot be used (it did not decode); the record is then
    # the user's last decodable one (or a stand-in) and the vector is empty.
    poison: str | None = None

    @property
    def user_id(self) -> str:
        return self.record.user_id

    def event(self) -> SeekerUpdated:
        """The record as it was published (float32 values round-trip exactly)."""
        return dataclasses.replace(self.record, vector=tuple(self.vector.tolist()))


class PoolState:
    """Latest state per user from the seekers changelog, in the order the records' versions
    give (offset order only among unversioned records):

    - ``SeekerUpdated`` written for a request (``cycle_id`` null) applies when its
      ``version`` is higher than the user's latest version: a replayed or duplicated
      opt-in never brings back a user matched or opted out since;
    - a ``SeekerRemoved`` applies when its version is at least the user's latest: it ends
      that episode (an opt-out, a failed profile, a match);
    - the matcher's carry-over ``SeekerUpdated`` (``cycle_id`` set) applies only while the
      user still waits with the same version: it can never undo a newer opt-out or
      overwrite a re-embedding, whatever the offsets;
    - a null tombstone forgets the user; a record that does not decode makes the user
      unusable (``poison``) until a newer record arrives.

    Version 0 (older writers) applies in offset order, as before versions existed.

    Memory: the vectors live in one columnar store (:class:`VectorRows`); per user
    only the record without its vector and the record's coordinates are kept.

    With ``pools``, only users of those pools are kept (a matcher per pool holds only its
    pool's vectors); a user whose latest record names another pool leaves, and the
    versions of every user are still tracked, so the guards above hold across pools.
    """

    def __init__(self, serde: AvroSerde | None = None,
                 pools: frozenset[str] | None = None) -> None:
        self._serde = serde or default_serde()
        self._pools = pools
        # Per writer fingerprint: the flat reader of the current SeekerUpdated schema, or
        # None (an older writer: fastavro resolves it into the current shape).
        self._fast: dict[bytes, Callable[[bytes], dict[str, Any]] | None] = {}
        self._entries: dict[str, Entry] = {}  # per waiting user
        self._vectors = VectorRows()
        self._versions: dict[str, int] = {}
        self.bad_records = 0
        self.stale_records = 0  # ignored: older than the user's latest version

    def __len__(self) -> int:
        return len(self._entries)

    def __getstate__(self) -> dict[str, Any]:
        """For a checkpoint (matcher/checkpoint.py): the folded state, without the codec."""
        return {k: v for k, v in self.__dict__.items() if k not in ("_serde", "_fast")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._serde, self._fast = default_serde(), {}

    @property
    def pools(self) -> frozenset[str] | None:
        return self._pools

    def _forget(self, user: str) -> None:
        if self._entries.pop(user, None) is not None:
            self._vectors.drop(user)

    def _seeker(self, user: str) -> Seeker:
        record, partition, offset, poison = self._entries[user]
        return Seeker(record, self._vectors.vector(user), partition, offset, poison)

    def apply(self, record: LogRecord) -> None:
        user = record.key.decode("utf-8", "replace") if record.key is not None else None
        if record.value is None:
            if user is not None:
                self._forget(user)
                self._versions.pop(user, None)
            return
        try:
            event, vector = self._decode(record.value)
        except SerializationError as exc:
            # Not ours to dead-letter (the seekers writer owns the topic): the user is set
            # aside (reported as invalid_vector by the next cycle of their pool).
            self.bad_records += 1
            log.warning("undecodable seekers[%d]@%d (key %r): %s", record.partition,
                        record.offset, user, exc)
            if user is not None:
                self._poison(user, record, str(exc))
            return
        if isinstance(event, SeekerRemoved):
            self._remove(event, record)
        elif isinstance(event, SeekerUpdated) and vector is not None:
            self._update(event, vector, record)
        else:
            self.bad_records += 1
            log.warning("skipping %s on seekers[%d]@%d", event.schema_name,
                        record.partition, record.offset)

    def _remove(self, event: SeekerRemoved, record: LogRecord) -> None:
        latest = self._versions.get(event.user_id, 0)
        if event.version and event.version < latest:
            self.stale_records += 1
            return
        self._forget(event.user_id)
        self._versions[event.user_id] = max(latest, event.version)

    def _update(self, event: SeekerUpdated, vector: FloatArray, record: LogRecord) -> None:
        user = event.user_id
        current = self._entries.get(user)
        if event.cycle_id is not None:  # the matcher's carry-over of a waiting record
            if (current is None or current[3] is not None
                    or current[0].version != event.version):
                self.stale_records += 1
                return
        elif event.version and event.version <= self._versions.get(user, 0):
            self.stale_records += 1
            return
        self._versions[user] = max(self._versions.get(user, 0), event.version)
        if self._pools is not None and event.pool not in self._pools:
            self._forget(user)  # now waiting in a pool another matcher serves
            return
        self._entries[user] = (event, record.partition, record.offset, None)
        self._vectors.put(user, vector)

    def _poison(self, user: str, record: LogRecord, reason: str) -> None:
        previous = self._entries.get(user)
        base = previous[0] if previous is not None else SeekerUpdated(
            event_id=derive_event_id("poison", user), occurred_at=_EPOCH, user_id=user,
            opted_in_at=_EPOCH, vector=(), model="", traits_hash="")
        self._entries[user] = (base, record.partition, record.offset, reason)
        self._vectors.put(user, np.zeros(0, dtype=np.float32))

    def _decode(self, value: bytes) -> tuple[Event, FloatArray | None]:
        """Decode a record; a ``SeekerUpdated`` comes back with ``vector=()`` and its
        vector as float32. The vector skips the per-float checks of ``from_dict``
        (numpy does them at once): start-up folds the whole topic, ~5x faster so."""
        if self._serde.schema_name(value) != SeekerUpdated.schema_name:
            return self._serde.decode(value), None
        writer = self._serde.registry.writer(value[len(MAGIC):HEADER_SIZE])
        reader = self._serde.registry.current(writer.name)
        if writer.fingerprint not in self._fast:
            self._fast[writer.fingerprint] = (
                flat_reader(writer) if writer.fingerprint == reader.fingerprint else None)
        fast = self._fast[writer.fingerprint]
        body = value[HEADER_SIZE:]
        fields = fast(body) if fast is not None else decode_record(writer, reader, body)
        try:
            vector = np.asarray(fields.pop("vector"), dtype=np.float32)
        except (KeyError, TypeError, ValueError) as exc:
            raise SerializationError(f"SeekerUpdated.vector: {exc}") from exc
        if vector.ndim != 1 or not np.isfinite(vector).all():
            raise SerializationError("SeekerUpdated.vector: not a finite 1-d vector")
        vector.flags.writeable = False
        try:
            if fast is None:
                return SeekerUpdated.from_dict({**fields, "vector": []}), vector
            # The flat reader already gave every field the schema's type: skip from_dict's
            # per-field checks (a third of the start-up), keep the event's own.
            values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v
                                      for k, v in fields.items()}
            for name in _SHARED_VALUES:  # one string object for the whole pool, not one each
                if isinstance(values.get(name), str):
                    values[name] = sys.intern(values[name])
            return SeekerUpdated(**values, vector=()), vector
        except MosaicError as exc:  # e.g. a bad event id: the record is invalid
            raise SerializationError(f"invalid SeekerUpdated: {exc}") from exc

    def apply_all(self, records: Iterable[LogRecord]) -> None:
        for record in records:
            self.apply(record)

    def waiting(self, pool: str) -> list[Seeker]:
        """Users waiting in ``pool``, sorted by user id (a deterministic row order).
        Users whose latest record did not decode are included (``poison`` set), with
        the pool of their last decodable record, so the cycle reports them."""
        return [self._seeker(u) for u in self._waiting_users(pool)]

    def _waiting_users(self, pool: str) -> list[str]:
        return sorted(u for u, (record, *_) in self._entries.items()
                      if record.pool == pool and record.status == STATUS_WAITING)

    def waiting_rows(self, pool: str) -> tuple[list[Entry], FloatArray, dict[int, FloatArray]]:
        """Users waiting in ``pool`` sorted by user id, as :meth:`waiting` gives them,
        but their vectors copied out of the store at once: row i of the matrix, or
        ``others[i]`` for a vector of another length (see :meth:`VectorRows.rows`)."""
        users = self._waiting_users(pool)
        matrix, others = self._vectors.rows(users)
        return [self._entries[u] for u in users], matrix, others

    def adopt(self, user_ids: Sequence[str], matrix: FloatArray) -> bool:
        """Keep ``matrix`` (a snapshot's) as these users' vectors: see
        :meth:`VectorRows.adopt`. A user's vector is then its row, as the snapshot left
        it, until the user's next record."""
        return self._vectors.adopt(user_ids, matrix)

    def get(self, user_id: str) -> Seeker | None:
        return self._seeker(user_id) if user_id in self._entries else None

    def vector_bytes(self) -> int:
        """What the pool's vectors take (the store's blocks as allocated)."""
        return self._vectors.bytes_used()

    def changed_since(self, user_ids: Iterable[str], ends: Mapping[int, int]) -> set[str]:
        """Users whose latest record is at or past ``ends`` (a snapshot's end offsets):
        they changed (opted out, paused, re-embedded) after the snapshot was taken."""
        changed = set()
        for user in user_ids:
            entry = self._entries.get(user)
            if entry is None or entry[2] >= ends.get(entry[1], 0):
                changed.add(user)
        return changed


def late_changes(records: Iterable[LogRecord], seekers: Mapping[str, Seeker],
                 serde: AvroSerde | None = None) -> set[str]:
    """Users of ``seekers`` (a cycle's snapshot records) that ``records`` (seekers records
    written after the snapshot, read uncommitted) change: any record of theirs that was
    not written by a matcher (``cycle_id`` set) and is not a stale replay (a request
    ``SeekerUpdated`` whose version is not newer than the snapshot's)."""
    codec = serde or default_serde()
    changed: set[str] = set()
    for record in records:
        user = record.key.decode("utf-8", "replace") if record.key is not None else None
        if user is None or user not in seekers or user in changed:
            continue
        if record.value is None:
            changed.add(user)
            continue
        try:
            event = codec.decode(record.value)
        except MosaicError:  # undecodable or invalid: the user's record is no longer usable
            changed.add(user)
            continue
        if isinstance(event, SeekerRemoved | SeekerUpdated) and event.cycle_id is not None:
            continue  # a matcher's own record (this cycle, or an aborted attempt)
        snapshot = seekers[user].record.version
        if (isinstance(event, SeekerUpdated) and event.version and snapshot
                and event.version <= snapshot):
            continue  # a replayed opt-in: the fold ignores it too
        changed.add(user)
    return changed


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
