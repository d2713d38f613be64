"""Every state a stage can write to ``user_state`` is answerable by status.

For each state of the one vocabulary (``mosaic.user_state.State``) the test writes it the
way its stage does (through the table's owning module, into real Cassandra), then asks the
real ingress (signed ``GET /user/{id}/status``) and the real Nakama
(``rpc_get_user_match_status`` as that user, which calls the same ingress).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from mosaic.cassandra import connect
from mosaic.nakama_client import NakamaClient
from mosaic.settings import Settings
from mosaic.user_state import (
    DELAY_MESSAGES,
    DELAYED_DELAY,
    NO_INSIGHTS,
    PROFILE_DELAYED,
    REASON_MESSAGES,
    STATES,
    State,
    UserState,
)
from mosaic.user_state import CassandraUserStateStore as Store
from mosaic.user_state import CassandraUserStateWriter as Writer
from producers.bootstrap import RunningServer
from tests.testkit import SignedClient

pytestmark = pytest.mark.e2e

T0 = datetime(2026, 1, 1, tzinfo=UTC)
REASON = "the user has no chat index (no analysed chats)"


@dataclass
class Tables:
    store: Store
    writer: Writer


def _record(tables: Tables, state: UserState) -> None:
    asyncio.run(tables.store.record(state))


# How each stage writes its state: the ingress (store), the embedding agent and post-match.
WRITES: dict[State, Callable[[Tables, str], None]] = {
    "not_opted_in": lambda t, user: None,  # no row at all
    "preparing_profile": lambda t, user: _record(t, UserState(
        user, "preparing_profile", opted_in_at=T0, pool="eu:en", updated_at=T0)),
    "opted_out": lambda t, user: _record(t, UserState(
        user, "opted_out", pool="eu:en", updated_at=T0)),
    "waiting": lambda t, user: t.writer.waiting(
        user, pool="eu:en", waiting_since=T0, missed_cycles=0, at=T0),
    "profile_failed": lambda t, user: t.writer.profile_failed(user, reason=REASON, at=T0,
                                                              code=NO_INSIGHTS),
    "matched": lambda t, user: t.writer.matched(
        user, cycle_id="eu:en:20260101T000000Z", room_id="room-1", at=T0),
}


@pytest.fixture(scope="module")
def tables(settings: Settings, cassandra_stack: object) -> Iterator[Tables]:
    session = connect(settings.cassandra)
    keyspace = settings.cassandra.keyspace
    yield Tables(Store(session, keyspace), Writer(session, keyspace))
    session.cluster.shutdown()


@pytest.fixture(scope="module")
def signed(settings: Settings, ingress: RunningServer) -> Iterator[SignedClient]:
    client = SignedClient(f"http://{settings.ingress.host}:{settings.ingress.port}",
                          settings.ingress.hmac_key.get_secret_value().encode())
    yield client
    client.close()


@pytest.fixture(scope="module")
def nakama(settings: Settings, ingress: RunningServer) -> Iterator[NakamaClient]:
    client = NakamaClient(settings.nakama)
    yield client
    client.close()


def test_every_state_of_the_vocabulary_is_walked() -> None:
    assert set(WRITES) == set(STATES)


@pytest.mark.parametrize("state", STATES)
def test_status_answers_every_state(state: State, tables: Tables, signed: SignedClient,
                                    nakama: NakamaClient) -> None:
    user = str(uuid.uuid4())
    session = nakama.login(user)
    WRITES[state](tables, user)

    direct = signed.request("GET", f"/user/{user}/status")
    assert direct.status_code == 200, direct.text
    body: dict[str, Any] = direct.json()
    assert (body["user_id"], body["state"]) == (user, state)

    through_nakama = nakama.rpc(session, "rpc_get_user_match_status")
    assert through_nakama["state"] == state
    assert "user_id" not in through_nakama  # the Lua module drops it: the client knows
    assert "detail" not in body and "detail" not in through_nakama  # raw causes stay inside
    if state == "profile_failed":
        assert body["reason_code"] == through_nakama["reason_code"] == NO_INSIGHTS
        assert body["message"] == through_nakama["message"] == REASON_MESSAGES[NO_INSIGHTS]


def test_a_delayed_profile_reads_delayed_not_failed(tables: Tables, signed: SignedClient,
                                                    nakama: NakamaClient) -> None:
    """The embedding agent's notice while it waits out a throttled embedder: still
    preparing_profile, with the fixed delay message, through the ingress and Nakama."""
    user = str(uuid.uuid4())
    session = nakama.login(user)
    _record(tables, UserState(user, "preparing_profile", opted_in_at=T0, pool="eu:en",
                              updated_at=T0))
    tables.writer.profile_delayed(user, at=T0 + DELAYED_DELAY)
    direct = signed.request("GET", f"/user/{user}/status")
    assert direct.status_code == 200, direct.text
    for answer in (direct.json(), nakama.rpc(session, "rpc_get_user_match_status")):
        assert answer["state"] == "preparing_profile"
        assert answer["reason_code"] == PROFILE_DELAYED
        assert answer["message"] == DELAY_MESSAGES[PROFILE_DELAYED]
