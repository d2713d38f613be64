"""Who blocked whom, so the matcher never pairs two users when either blocked the other.

The embedding agent records each ``BlockRequested``; the matcher harness asks
``blocked_pairs(pool_user_ids)`` once per cycle and drops those pairs. A block is
one-directional on the wire but symmetric for matching: the answer is the set of sorted
``(a, b)`` tuples where a blocked b or b blocked a, both in the pool.

Cassandra table (in the session's keyspace; created by migration 1 in mosaic/migrations.py)::

    blocks (blocker_id text, blocked_id text, blocked_at timestamp,
            PRIMARY KEY ((blocker_id), blocked_id))

One partition per blocker. ``blocked_pairs`` reads the partitions of every pool member:
each block between two pool members is found in its blocker's partition, so no second
(reverse) table is needed. Writes are idempotent (same key, same values on replay).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any, TypeVar

from mosaic.cassandra import cassandra_call
from mosaic.migrations import require
from streams.events import pair_key as make_pair_key
from streams.events import split_pair_key

Pair = tuple[str, str]
T = TypeVar("T")

# Partitions per SELECT ... IN (...): bounded so one query never fans out too widely.
IN_CHUNK = 50


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

    def __init__(self, session: Any, *, table: str = "blocks", check: bool = True) -> None:
        self._session = session
        self.table = table
        if check:  # no DDL here: `mosaic db migrate` creates the table
            self._run(lambda: require(session))
        # First block wins the timestamp: a replay must not move blocked_at.
        self._insert = session.prepare(
            f"INSERT INTO {table} (blocker_id, blocked_id, blocked_at) VALUES (?, ?, ?) "
            "USING TIMESTAMP ?")
        self._select_one = session.prepare(
            f"SELECT blocked_id FROM {table} WHERE blocker_id = ?")

    def add(self, blocker: str, blocked: str, at: datetime) -> None:
        sorted_pair(blocker, blocked)
        # Write time = block time, so a replay writes the same cell at the same time.
        micros = int(at.timestamp() * 1_000_000)
        self._run(lambda: self._session.execute(self._insert,
                                                (blocker, blocked, at, micros)))

    def blocked_by(self, blocker: str) -> set[str]:
        rows = self._run(lambda: self._session.execute(self._select_one, (blocker,)))
        return {row.blocked_id for row in rows}

    def _edges(self, blockers: set[str]) -> Iterator[Pair]:
        ordered = sorted(blockers)
        for start in range(0, len(ordered), IN_CHUNK):
            yield from self._chunk(ordered[start:start + IN_CHUNK])

    def _chunk(self, chunk: Sequence[str]) -> list[Pair]:
        marks = ", ".join(["%s"] * len(chunk))  # simple statements bind with %s
        cql = f"SELECT blocker_id, blocked_id FROM {self.table} WHERE blocker_id IN ({marks})"
        rows = self._run(lambda: self._session.execute(cql, tuple(chunk)))
        return [(row.blocker_id, row.blocked_id) for row in rows]

    def _run(self, call: Callable[[], T]) -> T:
        return cassandra_call(f"Cassandra {self.table}", call)
