"""Two ingress hosts whose clocks disagree (issue 22.5), on the real Kafka and Cassandra.

Host B's clock is 500 ms behind host A's. A user opts in through A and then opts out
through B. The opt-out must come after the opt-in in the order the matcher folds the
seekers topic by (the records' versions), or the matcher keeps the user waiting after they
left; and user_state must end ``opted_out``.

- When B already sees A's state, B orders the opt-out after it (the ingress' own clock).
- When the two requests are closer together than A's state write, B cannot: then the
  embedding agent orders them by the log (the requests of one user share a partition).
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from confluent_kafka import KafkaException

from consumers.embedding.worker import run_embedding_worker
from matcher.pool import LogRecord, PoolState
from mosaic.cassandra import connect
from mosaic.settings import Settings
from mosaic.user_state import CassandraUserStateStore, UserState, UserStateStore
from producers.bootstrap import (
    RunningServer,
    build_app,
    ensure_optin_topic,
    optin_topic,
    serve_in_thread,
)
from producers.kafka_publisher import KafkaEventPublisher, ingress_producer_config
from streams.events import OptInRequested, OptOutRequested, SeekerRemoved, SeekerUpdated
from streams.kafka import make_consumer, read_to_end
from streams.serde import decode, default_serde
from tests.integration.test_embedding_agent import (  # noqa: F401 - fixtures
    Env,
    env,
    keyspace,
    standin,
)
from tests.testkit import SignedClient, TopicReader

pytestmark = pytest.mark.integration

SKEW_SECONDS = 0.5
POOL = "skew"


class HeldStore:
    """The host's user_state store with its writes held until ``release`` is set: the
    window between a request's 202 and its state write, made as long as a test needs."""

    def __init__(self, inner: UserStateStore) -> None:
        self.inner, self.release = inner, threading.Event()

    async def get(self, user_id: str) -> UserState | None:
        return await self.inner.get(user_id)

    async def record(self, state: UserState) -> None:
        await self.record_many([state])

    async def record_many(self, states: Sequence[UserState]) -> None:
        await asyncio.to_thread(self.release.wait, 60)
        await self.inner.record_many(states)


@dataclass
class Host:
    server: RunningServer
    client: SignedClient
    store: HeldStore

    def stop(self) -> None:
        self.store.release.set()
        self.client.close()
        self.server.stop()


def _host(settings: Settings, clock_offset: float) -> Host:
    publisher = KafkaEventPublisher(ingress_producer_config(settings), default_serde().encode)
    cassandra = CassandraUserStateStore(connect(settings.cassandra), settings.cassandra.keyspace)
    store = HeldStore(cassandra)
    app = build_app(settings, publisher=publisher, store=store, on_close=cassandra.close,
                    clock=lambda: time.time() + clock_offset)
    server = serve_in_thread(app)
    client = SignedClient(f"http://127.0.0.1:{server.port}",
                          settings.ingress.hmac_key.get_secret_value().encode())
    return Host(server, client, store)


@pytest.fixture
def hosts(settings: Settings, kafka_stack: object, cassandra_stack: object
          ) -> Iterator[tuple[Host, Host]]:
    """A (on time) and B (behind) on the shared topic and keyspace; writes not held."""
    ensure_optin_topic(settings)
    a, b = _host(settings, 0.0), _host(settings, -SKEW_SECONDS)
    a.store.release.set()
    b.store.release.set()
    yield a, b
    a.stop()
    b.stop()


def _status(client: SignedClient, user: str) -> dict[str, Any]:
    response = client.request("GET", f"/user/{user}/status")
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def _wait_for_state(client: SignedClient, user: str, state: str, why: str) -> None:
    deadline, seen = time.monotonic() + 10, None
    while time.monotonic() < deadline:
        seen = _status(client, user)["state"]
        if seen == state:
            return
        time.sleep(0.05)
    pytest.fail(f"status of {user} through {client.base_url} still {seen!r}, not {state!r}, "
                f"after 10 s ({why})")


def _reader(settings: Settings, topic: str) -> TopicReader:
    """A reader from the topic's end; a topic made a moment ago may have no leader yet."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return TopicReader(settings.kafka.bootstrap_servers, topic)
        except KafkaException as exc:
            if time.monotonic() > deadline:
                pytest.fail(f"no reader on {topic} after 30 s: {exc}")
            time.sleep(0.5)


def _requests(settings: Settings, reader: TopicReader, user: str
              ) -> tuple[OptInRequested, OptOutRequested]:
    records = reader.read(lambda rs: sum(r.key == user for r in rs) >= 2)
    events = [r.event for r in records if r.key == user]
    assert [type(e) for e in events] == [OptInRequested, OptOutRequested], (
        f"{user}'s requests on {optin_topic(settings)}: {events}")
    opt_in, opt_out = events
    assert isinstance(opt_in, OptInRequested) and isinstance(opt_out, OptOutRequested)
    return opt_in, opt_out


def test_an_opt_out_through_a_host_whose_clock_is_behind_is_ordered_after_the_opt_in(
        settings: Settings, hosts: tuple[Host, Host]) -> None:
    """B sees A's state (it waits for it), so it orders its request time after it."""
    a, b = hosts
    user = str(uuid.uuid4())
    reader = TopicReader(settings.kafka.bootstrap_servers, optin_topic(settings))
    assert a.client.request("POST", f"/user/{user}/opt-in-embedding",
                            {"pool": POOL}).status_code == 202
    # The user sees it, then opts out.
    _wait_for_state(b.client, user, "preparing_profile", "A's write never reached Cassandra")
    assert b.client.request("POST", f"/user/{user}/opt-out", {"pool": POOL}).status_code == 202

    opt_in, opt_out = _requests(settings, reader, user)
    assert opt_out.occurred_at > opt_in.occurred_at, (opt_in.occurred_at, opt_out.occurred_at)
    _wait_for_state(a.client, user, "opted_out", "B's write never reached Cassandra")
    assert _status(b.client, user)["state"] == "opted_out"


def _fold_seekers(env: Env) -> tuple[PoolState, list[Any]]:  # noqa: F811
    """The matcher's start-up fold of the seekers topic, and the records read."""
    consumer = make_consumer(env.settings, f"reader-{uuid.uuid4().hex[:8]}")
    try:
        messages = read_to_end(consumer, env.catalog.seekers).messages
    finally:
        consumer.close()
    state = PoolState()
    for m in messages:
        state.apply(LogRecord(m.partition(), m.offset(), m.key(), m.value()))
    return state, [decode(m.value()) for m in messages if m.value() is not None]


def test_requests_closer_than_the_state_write_are_ordered_by_the_log(
        env: Env) -> None:  # noqa: F811 - the fixture imported above
    """A's state write is held, so B cannot see the opt-in: B's opt-out carries B's own
    time, 500 ms before the opt-in's. The embedding agent (one record per batch, so the
    opt-in is in the pool before the opt-out arrives) must still end the user opted out:
    in user_state, in status through both hosts, and in the matcher's fold of seekers."""
    env.settings = env.settings.model_copy(update={
        "embedding_agent": env.settings.embedding_agent.model_copy(update={"batch_max": 1})})
    user = env.user("skewed")
    env.seed(user)
    reader = _reader(env.settings, env.catalog.optin.name)
    a, b = _host(env.settings, 0.0), _host(env.settings, -SKEW_SECONDS)
    try:
        b.store.release.set()
        assert a.client.request("POST", f"/user/{user}/opt-in-embedding",
                                {"pool": POOL}).status_code == 202
        assert b.client.request("POST", f"/user/{user}/opt-out",
                                {"pool": POOL}).status_code == 202
        opt_in, opt_out = _requests(env.settings, reader, user)
        # The race this test is about: B did not see the opt-in, its clock is behind.
        assert opt_out.occurred_at < opt_in.occurred_at, (opt_in, opt_out)
        a.store.release.set()

        report = run_embedding_worker(env.settings, stop_after_idle_seconds=3, max_seconds=90,
                                      session=env.session, s3_client=env.s3)
        assert report.fatal is None, f"embedding agent on {env.catalog.optin.name}: {report}"
        assert report.batches == 2, f"the agent took both requests in one batch: {report}"

        row = env.state(user)
        assert row is not None and row.state == "opted_out", (
            f"user_state of {user} after the agent: {row}")
        for host in (a, b):
            assert _status(host.client, user)["state"] == "opted_out"
        pool, records = _fold_seekers(env)
        mine = [r for r in records if r.user_id == user]
        assert [type(r) for r in mine] == [SeekerUpdated, SeekerRemoved], mine
        assert mine[1].version > mine[0].version, [r.version for r in mine]
        assert pool.get(user) is None and user not in {s.user_id for s in pool.waiting(POOL)}
    finally:
        a.stop()
        b.stop()
