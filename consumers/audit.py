"""The cycle audit: one row per (cycle, pair) with a flag per post-match step.

It is the record of what is done, so at-least-once consumers can skip finished steps and
the reconciler can find unfinished ones. Columns follow the seed plan's cycle audit
table; ``index_metadata_updated`` is its ``pinecone_metadata_updated`` (the index may be
Cassandra) and ``nakama_group_id`` holds the room (group) id.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS cycle_audit (
    cycle_id text,
    pair_key text,
    user1_id text,
    user2_id text,
    index_metadata_updated boolean,
    nakama_group_created boolean,
    nakama_group_id text,
    user1_notified boolean,
    user2_notified boolean,
    last_attempt_timestamp timestamp,
    PRIMARY KEY ((cycle_id), pair_key)
)"""


@dataclass(frozen=True)
class AuditRow:
    cycle_id: str
    pair_key: str
    user1_id: str
    user2_id: str
    index_metadata_updated: bool = False
    nakama_group_created: bool = False
    nakama_group_id: str | None = None
    user1_notified: bool = False
    user2_notified: bool = False
    last_attempt_timestamp: datetime | None = None

    @property
    def complete(self) -> bool:
        return (self.index_metadata_updated and self.nakama_group_created
                and self.user1_notified and self.user2_notified)

    def notified(self, user_id: str) -> bool:
        return self.user1_notified if user_id == self.user1_id else self.user2_notified


class AuditStore(ABC):
    @abstractmethod
    def record_pair(self, cycle_id: str, pair_key: str, user1: str, user2: str,
                    at: datetime) -> AuditRow:
        """Create the row if absent (first writer wins) and return the stored row."""

    @abstractmethod
    def get(self, cycle_id: str, pair_key: str) -> AuditRow | None: ...

    @abstractmethod
    def mark_room(self, cycle_id: str, pair_key: str, group_id: str, at: datetime) -> None: ...

    @abstractmethod
    def mark_notified(self, cycle_id: str, pair_key: str, user_id: str, at: datetime) -> None:
        ...

    @abstractmethod
    def mark_index_updated(self, cycle_id: str, pair_key: str, at: datetime) -> None: ...

    @abstractmethod
    def rows(self, cycle_id: str) -> list[AuditRow]: ...

    def incomplete(self, cycle_id: str) -> list[AuditRow]:
        return [r for r in self.rows(cycle_id) if not r.complete]


class MemoryAuditStore(AuditStore):
    """For unit tests of consumer logic."""

    def __init__(self) -> None:
        self._rows: dict[tuple[str, str], AuditRow] = {}
        self._lock = threading.Lock()

    def record_pair(self, cycle_id: str, pair_key: str, user1: str, user2: str,
                    at: datetime) -> AuditRow:
        with self._lock:
            key = (cycle_id, pair_key)
            if key not in self._rows:
                self._rows[key] = AuditRow(cycle_id, pair_key, user1, user2,
                                           last_attempt_timestamp=at)
            return self._rows[key]

    def get(self, cycle_id: str, pair_key: str) -> AuditRow | None:
        return self._rows.get((cycle_id, pair_key))

    def _update(self, cycle_id: str, pair_key: str, **fields: Any) -> None:
        with self._lock:
            key = (cycle_id, pair_key)
            self._rows[key] = replace(self._rows[key], **fields)

    def mark_room(self, cycle_id: str, pair_key: str, group_id: str, at: datetime) -> None:
        self._update(cycle_id, pair_key, nakama_group_created=True, nakama_group_id=group_id,
                     last_attempt_timestamp=at)

    def mark_notified(self, cycle_id: str, pair_key: str, user_id: str, at: datetime) -> None:
        row = self._rows[(cycle_id, pair_key)]
        field = "user1_notified" if user_id == row.user1_id else "user2_notified"
        self._update(cycle_id, pair_key, **{field: True, "last_attempt_timestamp": at})

    def mark_index_updated(self, cycle_id: str, pair_key: str, at: datetime) -> None:
        self._update(cycle_id, pair_key, index_metadata_updated=True, last_attempt_timestamp=at)

    def rows(self, cycle_id: str) -> list[AuditRow]:
        return sorted((r for (c, _), r in self._rows.items() if c == cycle_id),
                      key=lambda r: r.pair_key)


_COLUMNS = ("cycle_id, pair_key, user1_id, user2_id, index_metadata_updated, "
            "nakama_group_created, nakama_group_id, user1_notified, user2_notified, "
            "last_attempt_timestamp")


class CassandraAuditStore(AuditStore):
    """Cassandra adapter. Creation uses a lightweight transaction so replays agree."""

    def __init__(self, session: Any) -> None:
        self._session = session
        session.execute(SCHEMA)
        self._insert = session.prepare(
            "INSERT INTO cycle_audit (cycle_id, pair_key, user1_id, user2_id, "
            "index_metadata_updated, nakama_group_created, user1_notified, user2_notified, "
            "last_attempt_timestamp) VALUES (?, ?, ?, ?, false, false, false, false, ?) "
            "IF NOT EXISTS")
        self._select = session.prepare(
            f"SELECT {_COLUMNS} FROM cycle_audit WHERE cycle_id = ? AND pair_key = ?")
        self._select_cycle = session.prepare(
            f"SELECT {_COLUMNS} FROM cycle_audit WHERE cycle_id = ?")
        self._room = session.prepare(
            "UPDATE cycle_audit SET nakama_group_created = true, nakama_group_id = ?, "
            "last_attempt_timestamp = ? WHERE cycle_id = ? AND pair_key = ?")
        self._index = session.prepare(
            "UPDATE cycle_audit SET index_metadata_updated = true, last_attempt_timestamp = ? "
            "WHERE cycle_id = ? AND pair_key = ?")
        self._notified = {
            field: session.prepare(
                f"UPDATE cycle_audit SET {field} = true, last_attempt_timestamp = ? "
                "WHERE cycle_id = ? AND pair_key = ?")
            for field in ("user1_notified", "user2_notified")
        }

    def record_pair(self, cycle_id: str, pair_key: str, user1: str, user2: str,
                    at: datetime) -> AuditRow:
        self._session.execute(self._insert, (cycle_id, pair_key, user1, user2, at))
        row = self.get(cycle_id, pair_key)
        if row is None:
            raise KeyError(f"audit row {cycle_id}/{pair_key} vanished after insert")
        return row

    def get(self, cycle_id: str, pair_key: str) -> AuditRow | None:
        found = self._session.execute(self._select, (cycle_id, pair_key)).one()
        return _row(found) if found is not None else None

    def mark_room(self, cycle_id: str, pair_key: str, group_id: str, at: datetime) -> None:
        self._session.execute(self._room, (group_id, at, cycle_id, pair_key))

    def mark_notified(self, cycle_id: str, pair_key: str, user_id: str, at: datetime) -> None:
        row = self.get(cycle_id, pair_key)
        if row is None:
            raise KeyError(f"no audit row for {cycle_id}/{pair_key}")
        field = "user1_notified" if user_id == row.user1_id else "user2_notified"
        self._session.execute(self._notified[field], (at, cycle_id, pair_key))

    def mark_index_updated(self, cycle_id: str, pair_key: str, at: datetime) -> None:
        self._session.execute(self._index, (at, cycle_id, pair_key))

    def rows(self, cycle_id: str) -> list[AuditRow]:
        return [_row(r) for r in self._session.execute(self._select_cycle, (cycle_id,))]


def _row(r: Any) -> AuditRow:
    return AuditRow(
        cycle_id=r.cycle_id, pair_key=r.pair_key, user1_id=r.user1_id, user2_id=r.user2_id,
        index_metadata_updated=bool(r.index_metadata_updated),
        nakama_group_created=bool(r.nakama_group_created), nakama_group_id=r.nakama_group_id,
        user1_notified=bool(r.user1_notified), user2_notified=bool(r.user2_notified),
        last_attempt_timestamp=r.last_attempt_timestamp,
    )
