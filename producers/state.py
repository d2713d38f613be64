"""Where a user stands in matching, as the status endpoint reports it.

Later stages (embedding agent, matcher, index-state consumer) own the ``user_state`` table;
the ingress reads it and, after the broker confirmed an opt-in or opt-out, writes what it
knows (``preparing_profile`` / ``opted_out``) with the event time as the Cassandra write
timestamp, so a later stage's newer write always wins regardless of arrival order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

State = Literal["not_opted_in", "preparing_profile", "waiting", "matched", "opted_out"]

TABLE_CQL = """
CREATE TABLE IF NOT EXISTS {keyspace}.user_state (
    user_id text PRIMARY KEY,
    state text,
    opted_in_at timestamp,
    waiting_since timestamp,
    missed_cycles int,
    cycle_id text,
    room_id text,
    pool text,
    updated_at timestamp
)"""

_SELECT = (
    "SELECT user_id, state, opted_in_at, waiting_since, missed_cycles, cycle_id, room_id,"
    " pool, updated_at FROM {keyspace}.user_state WHERE user_id = ?"
)
# Resets the later stages' columns: a new opt-in or an opt-out starts a new episode.
_RECORD = (
    "UPDATE {keyspace}.user_state USING TIMESTAMP ? SET state = ?, opted_in_at = ?,"
    " waiting_since = null, missed_cycles = null, cycle_id = null, room_id = null,"
    " pool = ?, updated_at = ? WHERE user_id = ?"
)


@dataclass(frozen=True)
class UserState:
    user_id: str
    state: State = "not_opted_in"
    opted_in_at: datetime | None = None
    waiting_since: datetime | None = None
    missed_cycles: int | None = None
    cycle_id: str | None = None
    room_id: str | None = None
    pool: str | None = None
    updated_at: datetime | None = None


class UserStateStore(Protocol):
    async def get(self, user_id: str) -> UserState | None: ...

    async def record(self, state: UserState) -> None:
        """Write ``state`` as of ``state.updated_at``; a newer stored state wins."""

    async def record_many(self, states: Sequence[UserState]) -> None:
        """``record`` for several users at once (one round trip where the store allows)."""


class InMemoryUserStateStore:
    def __init__(self) -> None:
        self.rows: dict[str, UserState] = {}

    async def get(self, user_id: str) -> UserState | None:
        return self.rows.get(user_id)

    async def record(self, state: UserState) -> None:
        old = self.rows.get(state.user_id)
        if old and old.updated_at and state.updated_at and old.updated_at > state.updated_at:
            return
        self.rows[state.user_id] = state

    async def record_many(self, states: Sequence[UserState]) -> None:
        for state in states:
            await self.record(state)


def _utc(value: datetime | None) -> datetime | None:
    # The driver returns naive UTC datetimes.
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def _micros(value: datetime) -> int:
    return int(value.timestamp() * 1_000_000)


class CassandraUserStateStore:
    """Reads/writes ``<keyspace>.user_state``; creates the table if missing (idempotent)."""

    def __init__(self, session: Any, keyspace: str) -> None:
        self._session = session
        session.execute(TABLE_CQL.format(keyspace=keyspace))
        self._select = session.prepare(_SELECT.format(keyspace=keyspace))
        self._record = session.prepare(_RECORD.format(keyspace=keyspace))

    async def _execute(self, statement: Any, params: tuple[Any, ...]) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()

        def done(rows: Any) -> None:
            loop.call_soon_threadsafe(_settle, future, rows, None)

        def failed(exc: BaseException) -> None:
            loop.call_soon_threadsafe(_settle, future, None, exc)

        self._session.execute_async(statement, params or None).add_callbacks(done, failed)
        return await future

    async def get(self, user_id: str) -> UserState | None:
        rows = await self._execute(self._select, (user_id,))
        row = rows[0] if rows else None  # the callback receives the first page as a list
        if row is None:
            return None
        state = UserState(user_id=row.user_id, state=row.state or "not_opted_in",
                          missed_cycles=row.missed_cycles, cycle_id=row.cycle_id,
                          room_id=row.room_id, pool=row.pool)
        return replace(state, opted_in_at=_utc(row.opted_in_at),
                       waiting_since=_utc(row.waiting_since), updated_at=_utc(row.updated_at))

    def _bind(self, state: UserState) -> tuple[Any, ...]:
        at = state.updated_at or datetime.now(UTC)
        return (_micros(at), state.state, state.opted_in_at, state.pool, at, state.user_id)

    async def record(self, state: UserState) -> None:
        await self._execute(self._record, self._bind(state))

    async def record_many(self, states: Sequence[UserState]) -> None:
        from cassandra.query import BatchStatement, BatchType

        # Unlogged: no atomicity needed, just one request for many single-row writes.
        batch = BatchStatement(batch_type=BatchType.UNLOGGED)
        for state in states:
            batch.add(self._record, self._bind(state))
        await self._execute(batch, ())

    def close(self) -> None:
        self._session.cluster.shutdown()


def _settle(future: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)
