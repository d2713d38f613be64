"""The ``user_state`` table: where a user stands in matching. This module is its one owner.

Vocabulary, reads and writes live here (the schema is migration 1 in ``mosaic/migrations.py``,
applied by ``mosaic db migrate``); every stage calls it, nobody else writes CQL for this table:

- the ingress (producers/) records ``preparing_profile`` / ``opted_out`` after the broker
  confirmed an opt-in / opt-out, and reads the row for ``GET /user/{id}/status``
  (``UserStateStore``, asynchronous);
- the embedding agent records ``waiting`` or ``profile_failed`` (with why, in ``detail``),
  and marks a ``preparing_profile`` that waits out a throttled or unreachable embedding API
  as delayed (``reason_code`` :data:`PROFILE_DELAYED`);
- post-match records ``matched`` (and the room) or another missed cycle
  (``UserStateWriter``, synchronous);
- the demo and tools read states with ``read_states``;
- ``mosaic users erase`` deletes a user's row (``forget_state``).

Every write carries a write time (``USING TIMESTAMP``; per column the newest wins), so the
order of the events decides whatever order the writes arrive in, and replays change nothing.
The write times follow each user's own order, not the stages' clocks (:func:`stage_time`):
an opt-in or opt-out is written at the ingress' time of the request (whole milliseconds),
and again at the seekers record's ``version`` by the embedding agent when the log moved
the version past that time (consumers/request_order.py); the later stages of that
request write at its version plus a few microseconds (a delay notice, waiting or
profile_failed, then each missed cycle, then matched),
so they follow the opt-in they belong to and never pass the user's next request. No row
means ``not_opted_in``. The row also keeps the user's last request the embedding agent
ordered (:class:`CassandraRequestVersions`).

Status shows ``reason_code`` and a fixed ``message`` (:data:`REASON_MESSAGES`,
:data:`DELAY_MESSAGES`) for a failure or a delay, never the stored ``detail``, which can
name other users (an insight's parse error); ``detail`` stays in Cassandra and the logs.

A new state is added to ``State`` (the status endpoint answers every member;
tests/e2e/test_user_state_contract.py walks each one through the ingress and Nakama).

It sits in ``mosaic/`` (the bottom layer) because both producers/ and consumers/ use it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol, get_args

from mosaic.cassandra import cassandra_call, execute_async
from mosaic.migrations import require

State = Literal["not_opted_in", "preparing_profile", "waiting", "profile_failed", "matched",
                "opted_out"]
STATES: tuple[State, ...] = get_args(State)

# profile_failed reason codes and the only text status shows for them.
NO_INSIGHTS = "no_insights"
INSIGHTS_UNREADABLE = "insights_unreadable"
PROFILE_UNAVAILABLE = "profile_unavailable"  # any other failure, and rows without a code
# preparing_profile, taking longer: the embedding API is throttling us or away. Not a failure.
PROFILE_DELAYED = "profile_delayed"
REASON_MESSAGES: dict[str, str] = {
    NO_INSIGHTS: "We could not build your profile yet: there are no analysed chats to "
                 "build it from. Try again after chatting a little more.",
    INSIGHTS_UNREADABLE: "We could not read your chat analysis. Please try again later.",
    PROFILE_UNAVAILABLE: "Your profile could not be prepared. Please try again later.",
}
# preparing_profile reason codes (still in line, nothing failed) and their only text.
DELAY_MESSAGES: dict[str, str] = {
    PROFILE_DELAYED: "Preparing your profile is taking longer than usual. You keep your "
                     "place; there is no need to opt in again.",
}

# Microseconds after the request's millisecond (see the module docstring): a delay notice
# at +1 (after the ingress' own write, which clears reason_code at +0), waiting or
# profile_failed at +2, missed cycle n at +2+n (n capped), matched at +999. A user's next
# request is at least a millisecond later, so no stage of one opt-in passes it.
_DELAYED_STEP = 1
_PROFILE_STEP = 2
MATCHED_STEP = 999
_MAX_MISSED_STEP = MATCHED_STEP - _PROFILE_STEP - 1
STAGE_DELAY = timedelta(microseconds=_PROFILE_STEP)
DELAYED_DELAY = timedelta(microseconds=_DELAYED_STEP)

_SELECT = (
    "SELECT user_id, state, detail, opted_in_at, waiting_since, missed_cycles, cycle_id,"
    " room_id, pool, updated_at, last_cycle_id, unmatched_reason, reason_code"
    " FROM {keyspace}.user_state WHERE user_id = ?"
)
_UPDATE = "UPDATE {keyspace}.user_state USING TIMESTAMP ? SET "
# The ingress' write resets the later stages' columns: an opt-in or opt-out starts an episode.
_RECORD = (
    "state = ?, opted_in_at = ?, detail = null, reason_code = null, waiting_since = null,"
    " missed_cycles = null, cycle_id = null, room_id = null, last_cycle_id = null,"
    " unmatched_reason = null, pool = ?, updated_at = ? WHERE user_id = ?"
)
_WAITING = ("state = 'waiting', pool = ?, waiting_since = ?, missed_cycles = ?, detail = null,"
            " reason_code = null, updated_at = ? WHERE user_id = ?")
_FAILED = ("state = 'profile_failed', detail = ?, reason_code = ?, updated_at = ?"
           " WHERE user_id = ?")
# Only the code: the state stays what the ingress wrote (preparing_profile), and the
# agent's later waiting/profile_failed write (+2 µs) replaces the code.
_DELAYED = "reason_code = ?, updated_at = ? WHERE user_id = ?"
_MISSED = ("state = 'waiting', missed_cycles = ?, last_cycle_id = ?, unmatched_reason = ?,"
           " updated_at = ? WHERE user_id = ?")
_MATCHED = ("state = 'matched', cycle_id = ?, last_cycle_id = ?, unmatched_reason = null,"
            " updated_at = ? WHERE user_id = ?")
_MATCHED_ROOM = ("state = 'matched', cycle_id = ?, last_cycle_id = ?, unmatched_reason = null,"
                 " room_id = ?, updated_at = ? WHERE user_id = ?")


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
    detail: str | None = None  # profile_failed: the raw cause; never shown to the user
    last_cycle_id: str | None = None  # the last cycle the user took part in
    unmatched_reason: str | None = None  # the matcher's reason code if it did not match them
    reason_code: str | None = None  # profile_failed: a key of REASON_MESSAGES


def reason_message(state: UserState) -> tuple[str | None, str | None]:
    """(``reason_code``, fixed user-safe ``message``) of a failed profile (an unknown or
    missing code shows as :data:`PROFILE_UNAVAILABLE`) or of a delayed one
    (``preparing_profile`` with :data:`PROFILE_DELAYED`), else (None, None)."""
    if state.state == "preparing_profile" and state.reason_code in DELAY_MESSAGES:
        return state.reason_code, DELAY_MESSAGES[state.reason_code]
    if state.state != "profile_failed":
        return None, None
    code = state.reason_code if state.reason_code in REASON_MESSAGES else PROFILE_UNAVAILABLE
    return code, REASON_MESSAGES[code]


def stage_time(version: int, at: datetime, step: int) -> datetime:
    """The write time of a stage ``step`` microseconds after the request of ``version``
    (ms since the epoch); with no version (0, an older writer) the event time ``at``."""
    if not version:
        return at
    return datetime.fromtimestamp(version // 1000, UTC) + timedelta(
        milliseconds=version % 1000, microseconds=step)


def missed_step(missed_cycles: int) -> int:
    return _PROFILE_STEP + max(1, min(missed_cycles, _MAX_MISSED_STEP))


class UserStateStore(Protocol):
    """The ingress' side: read a user's row; record what the ingress knows."""

    async def get(self, user_id: str) -> UserState | None: ...

    async def record(self, state: UserState) -> None:
        """Write ``state`` as of ``state.updated_at``; a newer stored state wins."""

    async def record_many(self, states: Sequence[UserState]) -> None:
        """``record`` for several users at once (one round trip where the store allows)."""


MatchedRow = tuple[str, str, str, datetime, int]  # user_id, cycle_id, room_id, at, version


@dataclass(frozen=True)
class LastRequest:
    """The last opt-in/opt-out of a user the embedding agent ordered: where it was on the
    opt-in topic and the version it got (consumers/request_order.py)."""

    partition: int
    offset: int
    version: int
    event_id: str


class UserStateWriter(ABC):
    """The later stages' side: each method writes one state as of the event time ``at``."""

    @abstractmethod
    def waiting(self, user_id: str, *, pool: str, waiting_since: datetime,
                missed_cycles: int, at: datetime) -> None: ...

    @abstractmethod
    def profile_failed(self, user_id: str, *, reason: str, at: datetime,
                       code: str = PROFILE_UNAVAILABLE) -> None:
        """``reason``: the raw cause (kept, never shown); ``code``: what status shows."""

    @abstractmethod
    def profile_delayed(self, user_id: str, *, at: datetime) -> None:
        """Still ``preparing_profile``, but late (:data:`PROFILE_DELAYED`); ``at`` is the
        request's time + :data:`DELAYED_DELAY`, before that request's profile outcome."""

    @abstractmethod
    def requested(self, state: UserState) -> None:
        """What the ingress writes for an opt-in (``preparing_profile``) or an opt-out
        (``opted_out``), again at ``state.updated_at``: the request's version when the
        embedding agent ordered it after a request the ingress had not seen."""

    @abstractmethod
    def missed_cycle(self, user_id: str, *, cycle_id: str, missed_cycles: int,
                     at: datetime, reason: str | None = None, version: int = 0) -> None:
        """``version``: the seekers record's (orders the write after its opt-in)."""

    @abstractmethod
    def matched(self, user_id: str, *, cycle_id: str, room_id: str | None,
                at: datetime, version: int = 0) -> None: ...

    def matched_many(self, rows: Sequence[MatchedRow]) -> None:
        """``matched`` for many (user_id, cycle_id, room_id, at, version) at once."""
        for user_id, cycle_id, room_id, at, version in rows:
            self.matched(user_id, cycle_id=cycle_id, room_id=room_id, at=at, version=version)


class InMemoryUserStateStore:
    """The ingress' store when ``ingress.state_store = memory`` (one process, no Cassandra)."""

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


def read_states(session: Any, keyspace: str, user_ids: Iterable[str]) -> dict[str, State]:
    """The state of each user that has a row (no row: ``not_opted_in``)."""
    from cassandra.query import ValueSequence

    rows = session.execute(
        f"SELECT user_id, state FROM {keyspace}.user_state WHERE user_id IN %s",
        (ValueSequence(list(user_ids)),))
    return {r.user_id: _state(r.state) for r in rows}


def forget_state(session: Any, keyspace: str, user_id: str) -> int:
    """Delete the user's row (``mosaic users erase``); 1 if there was one, else 0. The
    delete's write time is now, after every stage write of the user's requests so far
    (those carry the request's time), so a late or replayed write of one stays hidden."""
    found = session.execute(f"SELECT user_id FROM {keyspace}.user_state WHERE user_id = %s",
                            (user_id,)).one()
    session.execute(f"DELETE FROM {keyspace}.user_state WHERE user_id = %s", (user_id,))
    return 0 if found is None else 1


def _state(value: str | None) -> State:
    if value is None:
        return "not_opted_in"
    if value not in STATES:
        raise ValueError(f"user_state holds {value!r}, which is not in the vocabulary {STATES}")
    return value  # narrowed to State by the membership test


def _utc(value: datetime | None) -> datetime | None:
    # The driver returns naive UTC datetimes.
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def _micros(value: datetime) -> int:
    return int(value.timestamp() * 1_000_000)


class CassandraUserStateStore:
    """``UserStateStore`` on ``<keyspace>.user_state``, asynchronous (the ingress' event loop)."""

    def __init__(self, session: Any, keyspace: str) -> None:
        self._session = session
        require(session, keyspace)  # no DDL: fails clearly if not migrated
        self._select = session.prepare(_SELECT.format(keyspace=keyspace))
        self._record = session.prepare(_UPDATE.format(keyspace=keyspace) + _RECORD)

    async def _execute(self, statement: Any, params: tuple[Any, ...]) -> Any:
        return await execute_async(self._session, statement, params)

    async def get(self, user_id: str) -> UserState | None:
        rows = await self._execute(self._select, (user_id,))
        row = rows[0] if rows else None  # the callback receives the first page as a list
        if row is None:
            return None
        state = UserState(user_id=row.user_id, state=_state(row.state), detail=row.detail,
                          missed_cycles=row.missed_cycles, cycle_id=row.cycle_id,
                          room_id=row.room_id, pool=row.pool, last_cycle_id=row.last_cycle_id,
                          unmatched_reason=row.unmatched_reason, reason_code=row.reason_code)
        return replace(state, opted_in_at=_utc(row.opted_in_at),
                       waiting_since=_utc(row.waiting_since), updated_at=_utc(row.updated_at))

    async def record(self, state: UserState) -> None:
        await self._execute(self._record, _bind(state))

    async def record_many(self, states: Sequence[UserState]) -> None:
        from cassandra.query import BatchStatement, BatchType

        # Unlogged: no atomicity needed, just one request for many single-row writes.
        batch = BatchStatement(batch_type=BatchType.UNLOGGED)
        for state in states:
            batch.add(self._record, _bind(state))
        await self._execute(batch, ())

    def close(self) -> None:
        self._session.cluster.shutdown()


def _bind(state: UserState) -> tuple[Any, ...]:
    at = state.updated_at or datetime.now(UTC)
    return (_micros(at), state.state, state.opted_in_at, state.pool, at, state.user_id)


class CassandraUserStateWriter(UserStateWriter):
    """``UserStateWriter`` on ``<keyspace>.user_state``, synchronous (stream agents)."""

    def __init__(self, session: Any, keyspace: str) -> None:
        self._session = session
        require(session, keyspace)  # no DDL: fails clearly if not migrated
        prefix = _UPDATE.format(keyspace=keyspace)
        self._waiting = session.prepare(prefix + _WAITING)
        self._failed = session.prepare(prefix + _FAILED)
        self._delayed = session.prepare(prefix + _DELAYED)
        self._missed = session.prepare(prefix + _MISSED)
        self._matched = session.prepare(prefix + _MATCHED)
        self._room = session.prepare(prefix + _MATCHED_ROOM)
        self._requested = session.prepare(prefix + _RECORD)

    def requested(self, state: UserState) -> None:
        self._session.execute(self._requested, _bind(state))

    def waiting(self, user_id: str, *, pool: str, waiting_since: datetime,
                missed_cycles: int, at: datetime) -> None:
        self._session.execute(self._waiting, (_micros(at), pool, waiting_since, missed_cycles,
                                              at, user_id))

    def profile_failed(self, user_id: str, *, reason: str, at: datetime,
                       code: str = PROFILE_UNAVAILABLE) -> None:
        self._session.execute(self._failed, (_micros(at), reason, code, at, user_id))

    def profile_delayed(self, user_id: str, *, at: datetime) -> None:
        self._session.execute(self._delayed, (_micros(at), PROFILE_DELAYED, at, user_id))

    def missed_cycle(self, user_id: str, *, cycle_id: str, missed_cycles: int,
                     at: datetime, reason: str | None = None, version: int = 0) -> None:
        when = stage_time(version, at, missed_step(missed_cycles))
        self._session.execute(self._missed, (_micros(when), missed_cycles, cycle_id, reason,
                                             max(at, when), user_id))

    def matched(self, user_id: str, *, cycle_id: str, room_id: str | None,
                at: datetime, version: int = 0) -> None:
        when = stage_time(version, at, MATCHED_STEP)
        if room_id is None:
            self._session.execute(self._matched, (_micros(when), cycle_id, cycle_id,
                                                  max(at, when), user_id))
        else:
            self._session.execute(self._room, _matched_row(user_id, cycle_id, room_id, at,
                                                           version))

    def matched_many(self, rows: Sequence[MatchedRow]) -> None:
        from mosaic.cassandra import write_batched

        write_batched(self._session, self._room, [_matched_row(*row) for row in rows])


def _matched_row(user_id: str, cycle_id: str, room_id: str, at: datetime, version: int
                 ) -> tuple[Any, ...]:
    # Ordered after the opt-in the match ends (its version), not at the tick time: an
    # opt-in after the tick but before the snapshot is matched, and must read so.
    when = stage_time(version, at, MATCHED_STEP)
    return (_micros(when), cycle_id, cycle_id, room_id, max(at, when), user_id)


_LAST_REQUESTS = (
    "SELECT user_id, last_request_partition, last_request_offset, last_request_version,"
    " last_request_event_id FROM {keyspace}.user_state WHERE user_id IN ?"
)
_LAST_REQUEST = ("last_request_partition = ?, last_request_offset = ?, last_request_version = ?,"
                 " last_request_event_id = ? WHERE user_id = ?")


class CassandraRequestVersions:
    """Each user's :class:`LastRequest` in their ``user_state`` row (the embedding agent's
    ``RequestVersions``). Written at the version's time, so a late writer (a worker that
    lost its partitions) can never move it back; an erasure's delete removes it."""

    def __init__(self, session: Any, keyspace: str) -> None:
        self._session = session
        require(session, keyspace)
        self._select = session.prepare(_LAST_REQUESTS.format(keyspace=keyspace))
        self._update = session.prepare(_UPDATE.format(keyspace=keyspace) + _LAST_REQUEST)

    def last(self, user_ids: Iterable[str]) -> dict[str, LastRequest]:
        rows = cassandra_call("user_state", lambda: list(self._session.execute(
            self._select, (sorted(set(user_ids)),))))
        return {r.user_id: LastRequest(r.last_request_partition, r.last_request_offset,
                                       r.last_request_version, r.last_request_event_id)
                for r in rows if r.last_request_version is not None}

    def record(self, rows: Mapping[str, LastRequest]) -> None:
        from mosaic.cassandra import write_batched

        write_batched(self._session, self._update, [
            (last.version * 1000, last.partition, last.offset, last.version, last.event_id,
             user_id) for user_id, last in rows.items()])
