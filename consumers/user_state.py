"""Writes of later stages to the ``user_state`` table the status endpoint reads.

The ingress records ``preparing_profile`` / ``opted_out``; the embedding agent records
``waiting`` or ``profile_failed`` (with why); the post-match consumers record ``matched``
(and the room) or another missed cycle. Every write uses the event's time as the Cassandra
write timestamp, so replays and out-of-order arrivals never move a user back in time.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from datetime import datetime
from typing import Any

from producers.state import TABLE_CQL


def _micros(at: datetime) -> int:
    return int(at.timestamp() * 1_000_000)


class UserStateWriter(ABC):
    @abstractmethod
    def waiting(self, user_id: str, *, pool: str, waiting_since: datetime,
                missed_cycles: int, at: datetime) -> None: ...

    @abstractmethod
    def profile_failed(self, user_id: str, *, reason: str, at: datetime) -> None: ...

    @abstractmethod
    def missed_cycle(self, user_id: str, *, cycle_id: str, missed_cycles: int,
                     at: datetime) -> None: ...

    @abstractmethod
    def matched(self, user_id: str, *, cycle_id: str, room_id: str | None,
                at: datetime) -> None: ...


class MemoryUserStateWriter(UserStateWriter):
    """For unit tests: keeps the latest fields per user, newest write wins."""

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
                    missed_cycles=missed_cycles, detail=None)

    def profile_failed(self, user_id: str, *, reason: str, at: datetime) -> None:
        self._write(user_id, at, state="profile_failed", detail=reason)

    def missed_cycle(self, user_id: str, *, cycle_id: str, missed_cycles: int,
                     at: datetime) -> None:
        self._write(user_id, at, state="waiting", missed_cycles=missed_cycles)

    def matched(self, user_id: str, *, cycle_id: str, room_id: str | None,
                at: datetime) -> None:
        fields: dict[str, Any] = {"state": "matched", "cycle_id": cycle_id}
        if room_id is not None:
            fields["room_id"] = room_id
        self._write(user_id, at, **fields)


class CassandraUserStateWriter(UserStateWriter):
    def __init__(self, session: Any, keyspace: str) -> None:
        from cassandra import InvalidRequest

        self._session = session
        session.execute(TABLE_CQL.format(keyspace=keyspace))
        try:  # the ingress may have created the table before this column existed
            session.execute(f"ALTER TABLE {keyspace}.user_state ADD detail text")
        except InvalidRequest as exc:
            if "already exist" not in str(exc):
                raise
        prefix = f"UPDATE {keyspace}.user_state USING TIMESTAMP ? SET "
        self._waiting = session.prepare(
            prefix + "state = 'waiting', pool = ?, waiting_since = ?, missed_cycles = ?, "
            "detail = null, updated_at = ? WHERE user_id = ?")
        self._failed = session.prepare(
            prefix + "state = 'profile_failed', detail = ?, updated_at = ? WHERE user_id = ?")
        self._missed = session.prepare(
            prefix + "state = 'waiting', missed_cycles = ?, updated_at = ? WHERE user_id = ?")
        self._matched = session.prepare(
            prefix + "state = 'matched', cycle_id = ?, updated_at = ? WHERE user_id = ?")
        self._room = session.prepare(
            prefix + "state = 'matched', cycle_id = ?, room_id = ?, updated_at = ? "
            "WHERE user_id = ?")

    def waiting(self, user_id: str, *, pool: str, waiting_since: datetime,
                missed_cycles: int, at: datetime) -> None:
        self._session.execute(self._waiting, (_micros(at), pool, waiting_since, missed_cycles,
                                              at, user_id))

    def profile_failed(self, user_id: str, *, reason: str, at: datetime) -> None:
        self._session.execute(self._failed, (_micros(at), reason, at, user_id))

    def missed_cycle(self, user_id: str, *, cycle_id: str, missed_cycles: int,
                     at: datetime) -> None:
        self._session.execute(self._missed, (_micros(at), missed_cycles, at, user_id))

    def matched(self, user_id: str, *, cycle_id: str, room_id: str | None,
                at: datetime) -> None:
        if room_id is None:
            self._session.execute(self._matched, (_micros(at), cycle_id, at, user_id))
        else:
            self._session.execute(self._room, (_micros(at), cycle_id, room_id, at, user_id))
