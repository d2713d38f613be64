"""What a user's status says stays true after a cycle, on the real stack.

Users log in to the real Nakama and opt in with ``rpc_opt_in_match`` (Lua -> the real
signed ingress -> Kafka, ``preparing_profile`` in Cassandra). The embedding stage's write is
made as that stage makes it (``CassandraUserStateWriter.waiting`` at the event's time plus
``consumers.embedding.pipeline.STATE_DELAY``); the cycle's outcome is the matcher's events on Kafka,
handled by the real post-match agents (Nakama rooms, Cassandra). Status is read through the
ingress (signed ``GET /user/{id}/status``) and through Nakama (``rpc_get_user_match_status``).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from consumers.embedding.pipeline import PROFILE_CODES, STATE_DELAY
from consumers.postmatch.app import PostMatch, build_postmatch, run_postmatch
from consumers.request_order import request_millis
from mosaic.cassandra import connect
from mosaic.nakama_client import NakamaClient, Session
from mosaic.s3 import s3_client
from mosaic.settings import Settings
from mosaic.user_state import INSIGHTS_UNREADABLE, REASON_MESSAGES, CassandraUserStateStore
from mosaic.user_state import CassandraUserStateWriter as Writer
from producers.bootstrap import RunningServer, optin_topic
from profiles.errors import MalformedInsightError
from profiles.insights import S3InsightStore
from streams.events import (
    Event,
    OptInRequested,
    PairMatched,
    SeekerUnmatched,
    derive_event_id,
    pair_key,
)
from streams.kafka import make_producer, produce_and_wait
from tests.support import own_topics, with_topic_prefix
from tests.testkit import SignedClient, TopicReader

pytestmark = pytest.mark.e2e

POOL = "status-e2e"


@dataclass
class User:
    id: str
    session: Session


@dataclass
class Stack:
    settings: Settings
    nakama: NakamaClient
    signed: SignedClient
    writer: Writer
    store: CassandraUserStateStore
    session: Any

    def user(self) -> User:
        user_id = str(uuid.uuid4())
        return User(user_id, self.nakama.login(user_id))

    def opt_in(self, user: User, **payload: Any) -> dict[str, Any]:
        return self.nakama.rpc(user.session, "rpc_opt_in_match", {"pool": POOL, **payload})

    def status(self, user: User) -> dict[str, Any]:
        """The ingress' answer, checked to agree with what Nakama gives the user."""
        direct = self.signed.request("GET", f"/user/{user.id}/status")
        assert direct.status_code == 200, direct.text
        body: dict[str, Any] = direct.json()
        via_nakama = self.nakama.rpc(user.session, "rpc_get_user_match_status")
        # Nakama's Lua drops user_id and JSON nulls; every other field is the same.
        assert via_nakama == {k: v for k, v in body.items()
                              if v is not None and k != "user_id"}, (body, via_nakama)
        return body

    def embedded(self, event: OptInRequested) -> None:
        """The embedding stage's write for ``event`` (the user entered the pool)."""
        self.writer.waiting(event.user_id, pool=event.pool, waiting_since=event.opted_in_at,
                            missed_cycles=0, at=event.occurred_at + STATE_DELAY)


@pytest.fixture(scope="module")
def stack(settings: Settings, ingress: RunningServer) -> Iterator[Stack]:
    session = connect(settings.cassandra)
    keyspace = settings.cassandra.keyspace
    nakama = NakamaClient(settings.nakama)
    signed = SignedClient(f"http://{settings.ingress.host}:{settings.ingress.port}",
                          settings.ingress.hmac_key.get_secret_value().encode())
    yield Stack(settings, nakama, signed, Writer(session, keyspace),
                CassandraUserStateStore(session, keyspace), session)
    signed.close()
    nakama.close()
    session.cluster.shutdown()


@pytest.fixture
def postmatch(stack: Stack, unique: str) -> Iterator[PostMatch]:
    """Post-match agents on topics of their own, writing the shared keyspace that the
    ingress reads."""
    own = with_topic_prefix(stack.settings, f"t{unique}.")
    with own_topics(own):
        app = build_postmatch(own)
        yield app
        app.close()


def _opt_in_events(reader: TopicReader, users: list[str]) -> dict[str, OptInRequested]:
    def seen(records: list[Any]) -> bool:
        return {r.event.user_id for r in records
                if isinstance(r.event, OptInRequested)} >= set(users)

    records = reader.read(seen, timeout_seconds=30)
    found = {r.event.user_id: r.event for r in records
             if isinstance(r.event, OptInRequested) and r.event.user_id in users}
    assert set(found) == set(users), f"OptInRequested on the optin topic for {sorted(found)}"
    return found


def _run(app: PostMatch, *events: Event, agent: str) -> None:
    producer = make_producer(app.settings)
    for event in events:
        topic = app.catalog.pairs
        produce_and_wait(producer, topic, event)
    stats = run_postmatch(app, idle_seconds=4, max_seconds=60)
    done = stats[agent]
    assert done.handled >= len(events) and done.dead_lettered == 0, (
        f"post-match agent {agent} on {app.catalog.pairs.name}: {done}")


def test_a_user_who_opted_in_after_the_tick_reads_matched(
        stack: Stack, postmatch: PostMatch) -> None:
    """Issue 22.1: the tick is the cycle's boundary; the snapshot is taken later, so an
    opt-in in between is matched in this cycle. Its ``waiting`` (opt-in time + delay) must
    not win over ``matched`` (tick time)."""
    tick = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=1)
    reader = TopicReader(stack.settings.kafka.bootstrap_servers,
                         optin_topic(stack.settings))
    alice, bob = stack.user(), stack.user()
    for user in (alice, bob):
        assert stack.opt_in(user)["accepted"] is True
    events = _opt_in_events(reader, [alice.id, bob.id])
    for event in events.values():
        assert event.occurred_at > tick
        stack.embedded(event)
    cycle = f"{POOL}:{uuid.uuid4().hex[:8]}"
    key = pair_key(alice.id, bob.id)
    a, b = key.split("|")
    pair = PairMatched(event_id=derive_event_id("PairMatched", cycle, key), occurred_at=tick,
                       cycle_id=cycle, pair_key=key, user_a=a, user_b=b, score=0.9,
                       similarity=0.9, pool=POOL, version_a=request_millis(events[a]),
                       version_b=request_millis(events[b]))

    _run(postmatch, pair, agent="rooms")

    for user in (alice, bob):
        status = stack.status(user)
        assert (status["state"], status["cycle_id"], status["last_cycle_id"]) == (
            "matched", cycle, cycle), status
        assert status["room_id"]


def test_an_unmatched_user_keeps_their_place_in_line(stack: Stack, postmatch: PostMatch
                                                     ) -> None:
    """Issue 17: after a cycle that did not match the user, status says so with the
    matcher's reason; a repeated opt-in (a double tap while preparing, a reload that
    retries while waiting) keeps ``opted_in_at`` and ``missed_cycles`` and publishes
    nothing, so the seekers record and the matcher's wait boost stay as they were."""
    reader = TopicReader(stack.settings.kafka.bootstrap_servers,
                         optin_topic(stack.settings))
    tick = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=1)
    carol = stack.user()
    first = stack.opt_in(carol)
    tap = stack.opt_in(carol)  # a double tap while the profile is being prepared
    assert (first["duplicate"], tap["duplicate"]) == (False, True)
    event = _opt_in_events(reader, [carol.id])[carol.id]
    preparing = stack.status(carol)
    assert preparing["state"] == "preparing_profile"
    stack.embedded(event)
    cycle = f"{POOL}:{uuid.uuid4().hex[:8]}"
    missed = SeekerUnmatched(
        event_id=derive_event_id("SeekerUnmatched", cycle, carol.id), occurred_at=tick,
        cycle_id=cycle, user_id=carol.id, reason="below_min_similarity", missed_cycles=1,
        pool=POOL, version=request_millis(event))

    _run(postmatch, missed, agent="index-state")

    waiting = stack.status(carol)
    assert (waiting["state"], waiting["missed_cycles"], waiting["last_cycle_id"],
            waiting["unmatched_reason"]) == ("waiting", 1, cycle, "below_min_similarity")
    assert waiting["opted_in_at"] == waiting["waiting_since"] == preparing["opted_in_at"]
    again = stack.opt_in(carol, request_id=uuid.uuid4().hex)  # a reload that retries
    assert again["accepted"] is True and again["duplicate"] is True
    after = stack.status(carol)
    assert {k: after[k] for k in ("state", "opted_in_at", "missed_cycles", "last_cycle_id",
                                  "unmatched_reason")} == {
        k: waiting[k] for k in ("state", "opted_in_at", "missed_cycles", "last_cycle_id",
                                "unmatched_reason")}
    later = reader.read(lambda records: False, timeout_seconds=3)
    assert [r.event for r in later if getattr(r.event, "user_id", None) == carol.id] == []


def test_a_parse_error_naming_another_user_never_reaches_the_status(
        stack: Stack, unique: str) -> None:
    """Issue 19 (4): an insight that does not parse names another participant; status
    shows a fixed code and message, the raw cause stays in Cassandra."""
    dave, other = stack.user(), f"other-{uuid.uuid4()}"
    s3 = s3_client(stack.settings.s3)
    chat = f"{unique}-privacy"
    document = {"schema_version": 1, "chat_hash": chat, "updated_at": "2026-11-01T00:00:00Z",
                "participants": [dave.id, other], "insights": {other: "not an object"}}
    s3.put_object(Bucket=stack.settings.s3.insights_bucket, Key=f"{chat}/insights.json",
                  Body=json.dumps(document).encode())
    with pytest.raises(MalformedInsightError) as caught:
        S3InsightStore(s3, stack.settings.s3.insights_bucket).chat_insights(chat)
    error = caught.value
    assert other in str(error)
    # As the embedding stage records a failed profile (consumers/embedding/pipeline.py).
    stack.writer.profile_failed(dave.id, reason=str(error), at=datetime.now(UTC),
                                code=PROFILE_CODES[type(error)])

    status = stack.status(dave)
    assert (status["state"], status["reason_code"], status["message"]) == (
        "profile_failed", INSIGHTS_UNREADABLE, REASON_MESSAGES[INSIGHTS_UNREADABLE])
    assert other not in json.dumps(status) and "detail" not in status
    stored = asyncio.run(stack.store.get(dave.id))
    assert stored is not None and other in (stored.detail or "")
