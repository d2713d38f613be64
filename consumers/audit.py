"""The cycle audit: one row per (cycle, pair) with a flag per post-match step, plus one
status row per cycle.

It is the record of what is done, so the reconciler can find unfinished pairs and an
operator can see a cycle's progress. Column names are the seed plan's cycle audit table
(``pinecone_metadata_updated`` is set by whichever vector index is configured); the
extra columns say why a pair is stuck (``status`` = ``parked`` / ``dead_lettered`` with
``last_error``) and hold the Nakama group id next to the chat channel id clients open.

Writes never read first and never use lightweight transactions: the pair's identity
columns are plain upserts of the same values, and flags only ever go from null/false to
true, so any number of replays in any order converge on the same row. A cycle's rows are
spread over ``BUCKETS`` partitions (a 1M-user cycle holds 500k pairs: ~8k rows, about
2 MB, per partition) so no partition grows with the cycle. Rows expire 180 days after
their last write (the tables' ``default_time_to_live``, mosaic/migrations.py).
"""

from __future__ import annotations

import uuid
import zlib
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from typing import Any

from mosaic.cassandra import cassandra_call, write_batched
from mosaic.errors import ConfigError, ExternalServiceError
from mosaic.migrations import require

BUCKETS = 64

# Both tables (columns, keys, their 180-day TTL) are migrations 1 and 2 in
# mosaic/migrations.py, applied by `mosaic db migrate`; the store only checks the version.

PARKED, DEAD_LETTERED = "parked", "dead_lettered"
# Stands for an erased user in the rows that named them (``forget``, mosaic users erase).
ERASED = "erased"


def bucket_of(pair_key: str) -> int:
    return zlib.crc32(pair_key.encode()) % BUCKETS


@dataclass(frozen=True)
class AuditRow:
    cycle_id: str
    pair_key: str
    user1_id: str
    user2_id: str
    pinecone_metadata_updated: bool = False
    nakama_group_created: bool = False
    nakama_group_id: str | None = None
    nakama_channel_id: str | None = None
    user1_notified: bool = False
    user2_notified: bool = False
    last_attempt_timestamp: datetime | None = None
    matched_at: datetime | None = None
    status: str | None = None
    last_error: str | None = None

    @property
    def complete(self) -> bool:
        return (self.pinecone_metadata_updated and self.nakama_group_created
                and self.user1_notified and self.user2_notified)

    @property
    def settled(self) -> bool:
        """Nothing left to do: complete, or dead-lettered (it can never succeed)."""
        return self.complete or self.status == DEAD_LETTERED

    def notified(self, user_id: str) -> bool:
        return self.user1_notified if user_id == self.user1_id else self.user2_notified


@dataclass(frozen=True)
class PairRef:
    """What every write needs: which row, and who is in it (written by every step so a
    row is whole whichever agent gets there first)."""

    cycle_id: str
    pair_key: str
    user1_id: str
    user2_id: str


@dataclass(frozen=True)
class CycleRow:
    cycle_id: str
    pairs: int | None  # None until the cycle's CycleCompleted was recorded
    seekers: int
    committed_at: datetime | None
    finished_at: datetime | None
    last_activity: datetime | None = None


@dataclass(frozen=True)
class CycleStatus:
    """A cycle's post-match progress, counted from its audit rows."""

    cycle_id: str
    pairs: int | None  # from CycleCompleted; None when that event was not seen yet
    rows: int
    completed: int
    dead_lettered: int
    parked: int
    committed_at: datetime | None
    finished_at: datetime | None
    last_attempt: datetime | None

    @property
    def pending(self) -> int:
        expected = self.pairs if self.pairs is not None else self.rows
        return max(0, expected - self.completed - self.dead_lettered)

    @property
    def finished(self) -> bool:
        return self.pairs is not None and self.pending == 0


class AuditStore(ABC):
    """Batch-first: every method takes many pairs so agents pay one round trip's latency
    per batch, not per pair."""

    @abstractmethod
    def mark_rooms(self, rooms: Sequence[tuple[PairRef, str, str]], at: datetime,
                   matched_at: datetime | None = None) -> None:
        """(pair, group_id, channel_id) per room created."""

    @abstractmethod
    def mark_notified(self, pairs: Sequence[tuple[PairRef, str]], at: datetime) -> None:
        """(pair, user_id) per notification delivered."""

    @abstractmethod
    def mark_index_updated(self, pairs: Sequence[PairRef], at: datetime,
                           matched_at: datetime | None = None) -> None: ...

    @abstractmethod
    def mark_status(self, pair: PairRef, status: str, error: str, at: datetime) -> None:
        """``parked`` (retries exhausted, the reconciler tries again) or
        ``dead_lettered`` (can never succeed). A parked pair that completes later
        counts as complete: the flags win over the status."""

    @abstractmethod
    def get(self, cycle_id: str, pair_key: str) -> AuditRow | None: ...

    @abstractmethod
    def rows(self, cycle_id: str) -> list[AuditRow]: ...

    @abstractmethod
    def record_cycle(self, cycle_id: str, pairs: int, seekers: int,
                     committed_at: datetime) -> None: ...

    @abstractmethod
    def mark_cycle_finished(self, cycle_id: str, at: datetime) -> None: ...

    @abstractmethod
    def touch_cycles(self, cycle_ids: Iterable[str], at: datetime) -> None:
        """Agents worked on these cycles at ``at`` (one write per cycle per batch)."""

    @abstractmethod
    def cycles(self) -> list[CycleRow]: ...

    def cycle(self, cycle_id: str) -> CycleRow | None:
        return next((c for c in self.cycles() if c.cycle_id == cycle_id), None)

    def incomplete(self, cycle_id: str) -> list[AuditRow]:
        return [r for r in self.rows(cycle_id) if not r.settled]

    def cycle_status(self, cycle_id: str) -> CycleStatus:
        return summarize(cycle_id, self.rows(cycle_id), self.cycle(cycle_id))


def summarize(cycle_id: str, rows: Iterable[AuditRow], meta: CycleRow | None) -> CycleStatus:
    rows = list(rows)
    stamps = [r.last_attempt_timestamp for r in rows if r.last_attempt_timestamp]
    return CycleStatus(
        cycle_id=cycle_id, pairs=meta.pairs if meta else None, rows=len(rows),
        completed=sum(r.complete for r in rows),
        dead_lettered=sum(r.status == DEAD_LETTERED and not r.complete for r in rows),
        parked=sum(r.status == PARKED and not r.complete for r in rows),
        committed_at=meta.committed_at if meta else None,
        finished_at=meta.finished_at if meta else None,
        last_attempt=max(stamps) if stamps else None,
    )


_COLUMNS = ("cycle_id, pair_key, user1_id, user2_id, pinecone_metadata_updated, "
            "nakama_group_created, nakama_group_id, nakama_channel_id, user1_notified, "
            "user2_notified, last_attempt_timestamp, matched_at, status, last_error")
_IDENTITY = "user1_id = ?, user2_id = ?, last_attempt_timestamp = ?"
_WHERE = "WHERE cycle_id = ? AND bucket = ? AND pair_key = ?"


def _driver_errors() -> tuple[type[BaseException], ...]:
    from cassandra import DriverException
    from cassandra.cluster import NoHostAvailable

    return (DriverException, NoHostAvailable, OSError)


class CassandraAuditStore(AuditStore):
    """Cassandra adapter: prepared statements run concurrently per batch. Driver errors
    (a node down, a timeout) surface as retryable :class:`ExternalServiceError`."""

    CONCURRENCY = 64

    def __init__(self, session: Any) -> None:
        self._session = session
        require(session)  # no DDL here: fails clearly unless `mosaic db migrate` ran
        columns = {c.column_name for c in session.execute(
            "SELECT column_name FROM system_schema.columns WHERE keyspace_name = %s "
            "AND table_name = 'cycle_audit'", (session.keyspace,))}
        if "bucket" not in columns:
            raise ConfigError(
                f"{session.keyspace}.cycle_audit has the old layout (no bucket column); "
                "drop it or wipe the local stack (`mosaic stack down --wipe cassandra`)")
        p = session.prepare
        self._room = p(f"UPDATE cycle_audit SET {_IDENTITY}, nakama_group_created = true, "
                       f"nakama_group_id = ?, nakama_channel_id = ? {_WHERE}")
        self._room_at = p(f"UPDATE cycle_audit SET {_IDENTITY}, nakama_group_created = true, "
                          f"nakama_group_id = ?, nakama_channel_id = ?, matched_at = ? {_WHERE}")
        self._notified = {
            f: p(f"UPDATE cycle_audit SET {_IDENTITY}, {f} = true {_WHERE}")
            for f in ("user1_notified", "user2_notified")}
        self._index = p(f"UPDATE cycle_audit SET {_IDENTITY}, pinecone_metadata_updated = true "
                        f"{_WHERE}")
        self._index_at = p(f"UPDATE cycle_audit SET {_IDENTITY}, "
                           f"pinecone_metadata_updated = true, matched_at = ? {_WHERE}")
        self._status = p(f"UPDATE cycle_audit SET {_IDENTITY}, status = ?, last_error = ? "
                         f"{_WHERE}")
        self._select = p(f"SELECT {_COLUMNS} FROM cycle_audit {_WHERE}")
        self._select_bucket = p(f"SELECT {_COLUMNS} FROM cycle_audit "
                                "WHERE cycle_id = ? AND bucket = ?")
        self._cycle = p("INSERT INTO cycle_status (cycle_id, pairs, seekers, committed_at) "
                        "VALUES (?, ?, ?, ?)")
        self._cycle_done = p("UPDATE cycle_status SET finished_at = ? WHERE cycle_id = ?")
        self._touch = p("UPDATE cycle_status SET last_activity = ? WHERE cycle_id = ?")
        cycle_columns = "cycle_id, pairs, seekers, committed_at, finished_at, last_activity"
        self._cycles = p(f"SELECT {cycle_columns} FROM cycle_status")
        self._one_cycle = p(f"SELECT {cycle_columns} FROM cycle_status WHERE cycle_id = ?")

    def _run(self, statement: Any, params: list[tuple[Any, ...]]) -> list[Any]:
        from cassandra.concurrent import execute_concurrent_with_args

        if not params:
            return []
        try:
            results = execute_concurrent_with_args(self._session, statement, params,
                                                   concurrency=self.CONCURRENCY,
                                                   raise_on_first_error=True)
        except _driver_errors() as exc:
            raise ExternalServiceError(f"Cassandra audit write failed: {exc}") from exc
        return [r.result_or_exc for r in results]

    def _write(self, statement: Any, params: list[tuple[Any, ...]]) -> None:
        """Row writes (their params end with cycle_id, bucket, pair_key) in one unlogged
        batch per partition: ~10x the rate of single statements (mosaic/cassandra.py)."""
        write_batched(self._session, statement, params, partition=lambda row: row[-3:-1],
                      size=50)

    @staticmethod
    def _ids(pair: PairRef, at: datetime) -> tuple[Any, ...]:
        return (pair.user1_id, pair.user2_id, at)

    @staticmethod
    def _key(pair: PairRef) -> tuple[Any, ...]:
        return (pair.cycle_id, bucket_of(pair.pair_key), pair.pair_key)

    def mark_rooms(self, rooms: Sequence[tuple[PairRef, str, str]], at: datetime,
                   matched_at: datetime | None = None) -> None:
        if matched_at is None:
            self._write(self._room, [(*self._ids(p, at), g, c, *self._key(p))
                                   for p, g, c in rooms])
        else:
            self._write(self._room_at, [(*self._ids(p, at), g, c, matched_at, *self._key(p))
                                      for p, g, c in rooms])

    def mark_notified(self, pairs: Sequence[tuple[PairRef, str]], at: datetime) -> None:
        for field in ("user1_notified", "user2_notified"):
            self._write(self._notified[field], [
                (*self._ids(p, at), *self._key(p)) for p, user in pairs
                if (user == p.user1_id) == (field == "user1_notified")])

    def mark_index_updated(self, pairs: Sequence[PairRef], at: datetime,
                           matched_at: datetime | None = None) -> None:
        if matched_at is None:
            self._write(self._index, [(*self._ids(p, at), *self._key(p)) for p in pairs])
        else:
            self._write(self._index_at, [(*self._ids(p, at), matched_at, *self._key(p))
                                       for p in pairs])

    def mark_status(self, pair: PairRef, status: str, error: str, at: datetime) -> None:
        self._write(self._status, [(*self._ids(pair, at), status, error[:500], *self._key(pair))])

    def get(self, cycle_id: str, pair_key: str) -> AuditRow | None:
        try:
            found = self._session.execute(self._select,
                                          (cycle_id, bucket_of(pair_key), pair_key)).one()
        except _driver_errors() as exc:
            raise ExternalServiceError(f"Cassandra audit read failed: {exc}") from exc
        return _row(found) if found is not None else None

    def rows(self, cycle_id: str) -> list[AuditRow]:
        results = self._run(self._select_bucket, [(cycle_id, b) for b in range(BUCKETS)])
        rows = [_row(r) for result in results for r in result]
        return sorted(rows, key=lambda r: r.pair_key)

    def record_cycle(self, cycle_id: str, pairs: int, seekers: int,
                     committed_at: datetime) -> None:
        self._run(self._cycle, [(cycle_id, pairs, seekers, committed_at)])

    def mark_cycle_finished(self, cycle_id: str, at: datetime) -> None:
        self._run(self._cycle_done, [(at, cycle_id)])

    def touch_cycles(self, cycle_ids: Iterable[str], at: datetime) -> None:
        self._run(self._touch, [(at, c) for c in sorted(set(cycle_ids))])

    def _read_cycles(self, statement: Any, params: tuple[Any, ...] = ()) -> list[CycleRow]:
        try:
            found = list(self._session.execute(statement, params))
        except _driver_errors() as exc:
            raise ExternalServiceError(f"Cassandra cycle status read failed: {exc}") from exc
        return [CycleRow(r.cycle_id, r.pairs, r.seekers or 0, _utc(r.committed_at),
                         _utc(r.finished_at), _utc(r.last_activity)) for r in found]

    def cycles(self) -> list[CycleRow]:
        return sorted(self._read_cycles(self._cycles),
                      key=lambda c: (c.committed_at.timestamp() if c.committed_at else 0.0,
                                     c.cycle_id))

    def cycle(self, cycle_id: str) -> CycleRow | None:
        found = self._read_cycles(self._one_cycle, (cycle_id,))
        return found[0] if found else None


    def rows_of(self, user_id: str) -> list[AuditRow]:
        """Every row naming ``user_id``: a filtered scan of the table (erasure only)."""
        found: list[AuditRow] = []
        for column in ("user1_id", "user2_id"):
            query = f"SELECT {_COLUMNS} FROM cycle_audit WHERE {column} = %s ALLOW FILTERING"
            rows = cassandra_call("Cassandra audit",
                                  partial(self._session.execute, query, (user_id,)))
            found += [_row(r) for r in rows]
        return found

    def forget(self, user_id: str) -> int:
        """Rewrite every row naming ``user_id`` without them (mosaic users erase): the
        pair key becomes ``erased:<random>``, their id :data:`ERASED`, the Nakama ids and
        the error go; the partner, the step flags and times stay. A row not settled is
        marked dead-lettered, so the reconciler leaves it. Returns how many rows."""
        rows = self.rows_of(user_id)
        for row in rows:
            kept = replace(
                row, pair_key=f"{ERASED}:{uuid.uuid4().hex}", nakama_group_id=None,
                nakama_channel_id=None, last_error=ERASED if row.last_error else None,
                user1_id=ERASED if row.user1_id == user_id else row.user1_id,
                user2_id=ERASED if row.user2_id == user_id else row.user2_id,
                status=row.status if row.settled else DEAD_LETTERED)
            cassandra_call("Cassandra audit",
                           partial(self._session.execute, _INSERT, _insert_values(kept)))
            cassandra_call("Cassandra audit", partial(
                self._session.execute, _DELETE, (row.cycle_id, bucket_of(row.pair_key),
                                                 row.pair_key)))
        return len(rows)


def _insert_values(row: AuditRow) -> tuple[Any, ...]:
    return (row.cycle_id, bucket_of(row.pair_key), row.pair_key, row.user1_id, row.user2_id,
            row.pinecone_metadata_updated, row.nakama_group_created, row.user1_notified,
            row.user2_notified, row.last_attempt_timestamp, row.matched_at, row.status,
            row.last_error)


_INSERT = ("INSERT INTO cycle_audit (cycle_id, bucket, pair_key, user1_id, user2_id, "
           "pinecone_metadata_updated, nakama_group_created, user1_notified, user2_notified, "
           "last_attempt_timestamp, matched_at, status, last_error) "
           "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)")
_DELETE = "DELETE FROM cycle_audit WHERE cycle_id = %s AND bucket = %s AND pair_key = %s"


def _utc(value: datetime | None) -> datetime | None:
    """The driver returns naive UTC datetimes."""
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def _row(r: Any) -> AuditRow:
    return AuditRow(
        cycle_id=r.cycle_id, pair_key=r.pair_key, user1_id=r.user1_id or "",
        user2_id=r.user2_id or "",
        pinecone_metadata_updated=bool(r.pinecone_metadata_updated),
        nakama_group_created=bool(r.nakama_group_created), nakama_group_id=r.nakama_group_id,
        nakama_channel_id=r.nakama_channel_id,
        user1_notified=bool(r.user1_notified), user2_notified=bool(r.user2_notified),
        last_attempt_timestamp=_utc(r.last_attempt_timestamp), matched_at=_utc(r.matched_at),
        status=r.status, last_error=r.last_error,
    )
