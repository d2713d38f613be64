"""``mosaic users erase ID`` on the real stack (issue 22, item 7): a user with a Nakama
account who opted in through the signed ingress, became a seeker through the embedding
agent, blocked and was blocked, and was matched (room, notifications, audit) is erased;
then no store
holds them: the seekers topic's read_committed compacted view, the Cassandra tables
(user_state, vector index, blocks, audit), the traits cache in S3, Nakama (account,
mosaic_room_done, mosaic_notification_sent, the partner's notification). A replay of their
old opt-in record through the agent does not bring them back, and a second erase finds
nothing left. Own topics, keyspace and ingress."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import SecretStr

from app.ops.erase import erase_user
from consumers.audit import ERASED, CassandraAuditStore, PairRef
from consumers.chat import NakamaChat, NotifyRequest, RoomRequest
from mosaic.erasures import CassandraErasures
from mosaic.errors import ExternalServiceError
from mosaic.migrations import DDL_TIMEOUT_SECONDS
from mosaic.nakama_client import NakamaClient, Session
from mosaic.settings import EmbeddingSettings, Settings
from producers.bootstrap import build_production_app, serve_in_thread
from profiles.traits import S3TraitsCache
from stack.base import Service
from standins.vertex import VertexStandin
from streams.events import OptInRequested, SeekerUpdated, pair_key
from streams.kafka import make_producer
from streams.serde import decode
from tests.integration.test_embedding_agent import DIM, TOKEN, Env, make_env
from tests.integration.test_nakama_rooms import Sql
from tests.support import migrated_session
from tests.testkit import SignedClient

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def standin() -> Iterator[VertexStandin]:
    with VertexStandin(token=TOKEN) as server:
        yield server


@pytest.fixture
def env(settings: Settings, kafka_stack: Service, cassandra_stack: Service,
        s3_stack: Service, nakama_stack: Service, standin: VertexStandin,
        unique: str) -> Iterator[Env]:
    keyspace = f"erase_{unique}"
    session = migrated_session(settings, keyspace)
    embedding = EmbeddingSettings(
        backend="vertex", vertex_base_url=standin.url, vertex_static_token=SecretStr(TOKEN),
        output_dimensionality=DIM, max_attempts=2)
    try:
        yield from make_env(settings, (keyspace, session), unique, embedding, "vectors64")
    finally:
        # A busy node takes longer than a query's usual timeout to drop a keyspace.
        session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=DDL_TIMEOUT_SECONDS)
        session.cluster.shutdown()


@pytest.fixture
def ingress(env: Env) -> Iterator[SignedClient]:
    """The production ingress on this test's topics and keyspace, and a client that signs
    like the Nakama module (its own port: the shared one may be serving another test)."""
    server = serve_in_thread(build_production_app(env.settings))
    client = SignedClient(f"http://127.0.0.1:{server.port}",
                          env.settings.ingress.hmac_key.get_secret_value().encode())
    yield client
    client.close()
    server.stop()


def _matched(env: Env, alice: str, bob: str) -> tuple[str, str]:
    """What the post-match agents leave for a pair: room, notifications, audit row."""
    chat, audit = NakamaChat(env.settings.nakama), CassandraAuditStore(env.session)
    cycle, key = f"default:{uuid.uuid4().hex[:8]}", pair_key(alice, bob)
    try:
        (room,) = chat.create_rooms([RoomRequest(cycle, key, alice, bob)])
        assert room.ok, room
        notes = [NotifyRequest(cycle, key, u, p, room.group_id, room.channel_id)
                 for u, p in ((alice, bob), (bob, alice))]
        assert all(r.ok for r in chat.notify_matches(notes))
    finally:
        chat.close()
    ref, now = PairRef(cycle, key, *sorted((alice, bob))), datetime.now(UTC)
    audit.mark_rooms([(ref, room.group_id, room.channel_id)], now, matched_at=now)
    audit.mark_notified([(ref, alice), (ref, bob)], now)
    return cycle, room.group_id


def _nakama_rows(sql: Sql, nakama_id: str, group_id: str) -> dict[str, str]:
    one = sql.rows(
        f"SELECT (SELECT count(*) FROM users WHERE id = '{nakama_id}'),"
        f" (SELECT count(*) FROM mosaic_notification_sent WHERE user_id = '{nakama_id}'),"
        f" (SELECT count(*) FROM mosaic_room_done WHERE group_id = '{group_id}'),"
        f" (SELECT count(*) FROM notification WHERE content->>'partner_user_id'"
        f" = '{nakama_id}')")[0]
    return dict(zip(("account", "notification_sent", "room_done", "partner_note"), one,
                    strict=True))


def _cassandra(env: Env, user: str) -> dict[str, Any]:
    blocks = [*env.session.execute("SELECT * FROM blocks WHERE blocker_id = %s", (user,)),
              *env.session.execute("SELECT * FROM blocks WHERE blocked_id = %s "
                                   "ALLOW FILTERING", (user,))]
    return {"user_state": env.state(user), "vector": env.index().fetch([user]),
            "blocks": blocks, "audit": CassandraAuditStore(env.session).rows_of(user)}


def test_an_erased_user_leaves_nothing_and_a_replay_does_not_bring_them_back(
        env: Env, ingress: SignedClient) -> None:
    alice, bob, carol = (str(uuid.uuid4()) for _ in range(3))
    nakama = NakamaClient(env.settings.nakama)
    sessions: dict[str, Session] = {u: nakama.login(u) for u in (alice, bob, carol)}
    sql, cache = Sql(env.settings), S3TraitsCache(env.s3, env.settings.s3.traits_cache_bucket)
    env.seed(alice, "curious", "warm")
    answers = [ingress.request("POST", f"/user/{alice}/opt-in-embedding", {}),
               ingress.request("POST", f"/user/{alice}/block", {"blocked_user_id": carol}),
               ingress.request("POST", f"/user/{carol}/block", {"blocked_user_id": alice})]
    assert [a.status_code for a in answers] == [202] * 3, [a.text for a in answers]
    report = env.run()
    assert not report.fatal, report
    assert isinstance(env.seekers().get(alice), SeekerUpdated), "alice never became a seeker"
    cycle, group_id = _matched(env, alice, bob)
    before = _cassandra(env, alice)
    assert before["user_state"] is not None and before["vector"] and len(before["blocks"]) == 2
    assert len(before["audit"]) == 1 and cache.get(alice) is not None
    assert _nakama_rows(sql, sessions[alice].user_id, group_id) == {
        "account": "1", "notification_sent": "1", "room_done": "1", "partner_note": "1"}
    (old_opt_in,) = [m for m in env.read(env.catalog.optin)
                     if isinstance(decode(m.value()), OptInRequested)]
    with pytest.raises(ExternalServiceError, match="403"):  # a user cannot erase anyone
        nakama.rpc(sessions[bob], "mosaic_erase_user", {"user": alice})
    assert _nakama_rows(sql, sessions[alice].user_id, group_id)["account"] == "1"

    reports = {r["store"]: r for r in erase_user(env.settings, alice, session=env.session,
                                                  s3=env.s3)}

    assert {s: reports[s]["removed"] for s in ("vector_index", "traits_cache", "user_state",
                                              "blocks", "audit")} == {
        "vector_index": 1, "traits_cache": 1, "user_state": 1, "blocks": 2, "audit": 1}
    assert {k: reports["nakama"][k] for k in ("account", "notification_sent", "room_done",
                                              "partner_notifications")} == {
        "account": 1, "notification_sent": 1, "room_done": 1, "partner_notifications": 1}
    assert reports["seekers"]["tombstones"] == 1 and reports["s3_insights"]["owned"] is False
    _assert_gone(env, alice, sessions[alice].user_id, group_id, sql, cache)
    (row,) = CassandraAuditStore(env.session).rows(cycle)
    assert {row.user1_id, row.user2_id} == {ERASED, bob} and alice not in row.pair_key

    # The old opt-in again (an offset reset, a dead letter sent back): refused.
    producer = make_producer(env.settings)
    producer.produce(env.catalog.optin.name, key=old_opt_in.key(), value=old_opt_in.value())
    assert producer.flush(30) == 0
    report = env.run()
    assert not report.fatal and report.outcomes == {"erased": 1}, report
    _assert_gone(env, alice, sessions[alice].user_id, group_id, sql, cache)
    assert alice in CassandraErasures(env.session).erased_at([alice])

    again = {r["store"]: r["removed"] for r in erase_user(env.settings, alice,
                                                          session=env.session, s3=env.s3)}
    assert sum(again.values()) == 0, again
    nakama.close()


def _assert_gone(env: Env, user: str, nakama_id: str, group_id: str, sql: Sql,
                 cache: S3TraitsCache) -> None:
    seekers = env.seekers()
    assert user in seekers and seekers[user] is None, (
        f"seekers' compacted view holds {seekers.get(user)!r} for the erased user")
    assert _cassandra(env, user) == {"user_state": None, "vector": {}, "blocks": [],
                                     "audit": []}
    assert cache.get(user) is None
    assert _nakama_rows(sql, nakama_id, group_id) == {
        "account": "0", "notification_sent": "0", "room_done": "0", "partner_note": "0"}
