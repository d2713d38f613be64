"""Who blocked whom, so the matcher never pairs two users when either blocked the other.

The embedding agent records each ``BlockRequested``; the matcher harness asks
``blocked_pairs(pool_user_ids)`` once per cycle and drops those pairs. A block is
one-directional on the wire but symmetric for matching: the answer is the set of sorted
``(a, b)`` tuples where a blocked b or b blocked a, both in the pool.

Cassandra table (in the session's keyspace; created by migration 1 in mosaic/migrations.py)::

    blocks (blocker_id text, blocked_id text, blocked_at timestamp,
            PRIMARY KEY ((blocker_id), blocked_id))

One partition per blocker. ``blocked_pairs`` reads the partitions of every pool member
(``IN`` queries of ``IN_CHUNK`` partitions, ``READ_CONCURRENCY`` in flight), or for a pool
of ``SCAN_MIN_USERS`` or more, the whole table when it holds no more blocks than the pool
has members (a scan of few rows beats a lookup per member): each block
between two pool members is found in its blocker's partition, so no second (reverse)
table is needed. Writes are idempotent (same key, same values on replay).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from functools import partial
from typing import Any, TypeVar

from mosaic.cassandra import cassandra_call, read_concurrent
from mosaic.migrations import require
from streams.events import pair_key as make_pair_key
from streams.events import split_pair_key

Pair = tuple[str, str]
T = TypeVar("T")

# Partitions per SELECT ... IN (...): bounded so one query never fans out too widely.
IN_CHUNK = 50
# Such queries in flight at once: the pool's partitions are read in a few round trips
# (serially, 100,000 users took 10.5 s of a cycle).
READ_CONCURRENCY = 32
# From this many pool members on, the table is scanned first, up to one row per member;
# only a table with more blocks than that falls back to reading the members' partitions.
SCAN_MIN_USERS = 2_000


def sorted_pair(user_1: str, user_2: str) -> Pair:
    """``(a, b)`` with ``a < b``; raises ValidationError for a self-block or bad ids."""
    return split_pair_key(make_pair_key(user_1, user_2))


class BlockStore(ABC):
    @abstractmethod
    def add(self, blocker: str, blocked: str, at: datetime) -> None:
        """Record that ``blocker`` blocked ``blocked`` (idempotent)."""

    @abstractmethod
    def blocked_by(self, blocker: str) -> set[str]:
        """Everyone ``blocker`` has blocked."""

    def blocked_pairs(self, user_ids: Iterable[str]) -> set[Pair]:
        """Sorted pairs among ``user_ids`` where either user blocked the other."""
        pool = set(user_ids)
        return {sorted_pair(blocker, blocked)
                for blocker, blocked in self._edges(pool) if blocked in pool}

    def _edges(self, blockers: set[str]) -> Iterator[Pair]:
        for blocker in sorted(blockers):
            for blocked in self.blocked_by(blocker):
                yield blocker, blocked



class CassandraBlockStore(BlockStore):
    """``session`` from :func:`mosaic.cassandra.connect` (its keyspace is used)."""

    def __init__(self, session: Any, *, table: str = "blocks", check: bool = True,
                 concurrency: int = READ_CONCURRENCY,
                 scan_min_users: int = SCAN_MIN_USERS) -> None:
        self._session = session
        self.table = table
        self.concurrency, self.scan_min_users = concurrency, scan_min_users
        if check:  # no DDL here: `mosaic db migrate` creates the table
            self._run(lambda: require(session))
        # First block wins the timestamp: a replay must not move blocked_at.
        self._insert = session.prepare(
            f"INSERT INTO {table} (blocker_id, blocked_id, blocked_at) VALUES (?, ?, ?) "
            "USING TIMESTAMP ?")
        self._select_one = session.prepare(
            f"SELECT blocked_id FROM {table} WHERE blocker_id = ?")
        self._select_many = session.prepare(
            f"SELECT blocker_id, blocked_id FROM {table} WHERE blocker_id IN ?")
        self._scan_all = session.prepare(
            f"SELECT blocker_id, blocked_id FROM {table} LIMIT ?")

    def add(self, blocker: str, blocked: str, at: datetime) -> None:
        sorted_pair(blocker, blocked)
        # Write time = block time, so a replay writes the same cell at the same time.
        micros = int(at.timestamp() * 1_000_000)
        self._run(lambda: self._session.execute(self._insert,
                                                (blocker, blocked, at, micros)))

    def blocked_by(self, blocker: str) -> set[str]:
        rows = self._run(lambda: self._session.execute(self._select_one, (blocker,)))
        return {row.blocked_id for row in rows}

    def forget(self, user_id: str) -> int:
        """Delete every block ``user_id`` made or was named in (``mosaic users erase``);
        returns how many. Blocks naming them are found by a filtered scan of the table
        (an erasure is rare; no reverse table is kept for it). The deletes' write time is
        now, after every block's (its block time), so a replayed block stays hidden."""
        named = self._run(lambda: list(self._session.execute(
            f"SELECT blocker_id FROM {self.table} WHERE blocked_id = %s ALLOW FILTERING",
            (user_id,))))
        made = self.blocked_by(user_id)
        self._run(lambda: self._session.execute(
            f"DELETE FROM {self.table} WHERE blocker_id = %s", (user_id,)))
        delete = f"DELETE FROM {self.table} WHERE blocker_id = %s AND blocked_id = %s"
        for row in named:
            self._run(partial(self._session.execute, delete, (row.blocker_id, user_id)))
        return len(made) + len(named)

    def _edges(self, blockers: set[str]) -> Iterator[Pair]:
        if len(blockers) >= self.scan_min_users:
            scanned = self._scan(limit=len(blockers))
            if scanned is not None:
                return iter(scanned)
        ordered = sorted(blockers)
        chunks = [(ordered[i:i + IN_CHUNK],) for i in range(0, len(ordered), IN_CHUNK)]
        rows = self._run(lambda: read_concurrent(self._session, self._select_many, chunks,
                                                 concurrency=self.concurrency))
        return iter([(row.blocker_id, row.blocked_id) for row in rows])

    def _scan(self, limit: int) -> list[Pair] | None:
        """The whole table when it holds at most ``limit`` blocks (else None): most users
        block nobody, so a big pool's blocks are found in far fewer rows than the pool
        has partitions to look up."""
        rows = self._run(lambda: list(self._session.execute(self._scan_all, (limit + 1,))))
        if len(rows) > limit:
            return None
        return [(row.blocker_id, row.blocked_id) for row in rows]

    def _run(self, call: Callable[[], T]) -> T:
        return cassandra_call(f"Cassandra {self.table}", call)
