"""One contract for the user_state store, run on the in-memory fake and real Cassandra."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from mosaic.cassandra import connect
from mosaic.settings import Settings
from mosaic.user_state import CassandraUserStateStore, InMemoryUserStateStore, UserState
from stack.base import Service

pytestmark = pytest.mark.integration

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(params=["memory", "cassandra"])
def store(request: pytest.FixtureRequest,
          settings: Settings) -> Iterator[InMemoryUserStateStore | CassandraUserStateStore]:
    if request.param == "memory":
        yield InMemoryUserStateStore()
        return
    request.getfixturevalue("cassandra_stack")
    cassandra = CassandraUserStateStore(connect(settings.cassandra), settings.cassandra.keyspace)
    yield cassandra
    cassandra.close()


def test_unknown_user_has_no_row(store: InMemoryUserStateStore | CassandraUserStateStore
                                 ) -> None:
    assert asyncio.run(store.get(str(uuid.uuid4()))) is None


def test_newer_state_wins_whatever_the_arrival_order(
        store: InMemoryUserStateStore | CassandraUserStateStore) -> None:
    user = str(uuid.uuid4())
    newer = UserState(user, "opted_out", pool="eu", updated_at=T0 + timedelta(seconds=5))
    older = UserState(user, "preparing_profile", opted_in_at=T0, pool="eu", updated_at=T0)

    async def run() -> UserState | None:
        await store.record(newer)
        await store.record(older)
        return await store.get(user)

    got = asyncio.run(run())
    assert got is not None
    assert (got.state, got.pool, got.updated_at) == ("opted_out", "eu", newer.updated_at)


def test_opt_in_state_round_trips(store: InMemoryUserStateStore | CassandraUserStateStore
                                  ) -> None:
    user = str(uuid.uuid4())
    state = UserState(user, "preparing_profile", opted_in_at=T0, pool="default", updated_at=T0)

    async def run() -> UserState | None:
        await store.record(state)
        return await store.get(user)

    assert asyncio.run(run()) == state


def test_table_creation_is_idempotent(settings: Settings, cassandra_stack: Service) -> None:
    session = connect(settings.cassandra)
    CassandraUserStateStore(session, settings.cassandra.keyspace)
    CassandraUserStateStore(session, settings.cassandra.keyspace).close()


def test_record_many_writes_every_user(store: InMemoryUserStateStore | CassandraUserStateStore
                                       ) -> None:
    states = [UserState(str(uuid.uuid4()), "preparing_profile", opted_in_at=T0, pool="default",
                        updated_at=T0) for _ in range(30)]

    async def run() -> list[UserState | None]:
        await store.record_many(states)
        return [await store.get(s.user_id) for s in states]

    assert asyncio.run(run()) == states
