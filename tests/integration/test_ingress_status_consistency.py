"""Status must always answer (issue 11): under a burst the ingress never accepts a request
whose state it would then drop. Real HTTP server, real Kafka, real Cassandra."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from mosaic.settings import CassandraSettings, IngressSettings, KafkaSettings, Settings
from producers.bootstrap import build_production_app, optin_topic, serve_in_thread
from stack.base import Service
from streams.kafka import make_consumer, read_to_end
from tests.support import migrated_session
from tests.testkit import SignedClient

pytestmark = pytest.mark.integration

BURST = 600
MAX_PENDING = 25


@pytest.fixture
def ingress_settings(settings: Settings, kafka_stack: Service, cassandra_stack: Service,
                     unique: str) -> Iterator[Settings]:
    keyspace = f"st_{unique}"
    session = migrated_session(settings, keyspace)  # creates the keyspace and its tables
    ingress = settings.ingress.model_dump()
    ingress.update(state_store="cassandra", port=0, state_max_pending=MAX_PENDING)
    own = settings.model_copy(update={
        "kafka": KafkaSettings(bootstrap_servers=settings.kafka.bootstrap_servers,
                               topic_prefix=f"s{unique}."),
        "cassandra": CassandraSettings(**{**settings.cassandra.model_dump(),
                                          "keyspace": keyspace}),
        "ingress": IngressSettings(**ingress)})
    try:
        yield own
    finally:
        session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}")
        session.cluster.shutdown()


def test_a_202_is_never_followed_by_not_opted_in(ingress_settings: Settings) -> None:
    """A burst of opt-ins (32 connections, distinct users), each followed at once by a
    status read. Before: the state was projected asynchronously and shed past 10,000
    pending, so a user who got 202 could read ``not_opted_in`` (immediately, or for good
    when shed). Now a full projection answers 503 + Retry-After before publishing, and
    a state not yet written answers status from the ingress' own queue."""
    settings = ingress_settings
    topic = optin_topic(settings)
    running = serve_in_thread(build_production_app(settings))
    key = settings.ingress.hmac_key.get_secret_value().encode()
    url = f"http://127.0.0.1:{running.port}"
    clients = [SignedClient(url, key) for _ in range(32)]

    def one(n: int) -> tuple[str, int, str | None, str | None]:
        client = clients[n % len(clients)]
        user = str(uuid.uuid4())
        answer = client.request("POST", f"/user/{user}/opt-in-embedding", {})
        state = None
        if answer.status_code == 202:
            status = client.request("GET", f"/user/{user}/status")
            assert status.status_code == 200, status.text
            state = status.json()["state"]
        return user, answer.status_code, answer.headers.get("retry-after"), state

    try:
        with ThreadPoolExecutor(len(clients)) as pool:
            results = list(pool.map(one, range(BURST)))
        accepted = [r for r in results if r[1] == 202]
        refused = [r for r in results if r[1] == 503]
        assert len(accepted) + len(refused) == BURST, {r[1] for r in results}
        assert accepted
        assert all(r[2] for r in refused), "a 503 must carry Retry-After"
        regressed = [r for r in accepted if r[3] != "preparing_profile"]
        assert regressed == [], f"{len(regressed)} of {len(accepted)} accepted users read " \
                                f"{sorted({r[3] for r in regressed}, key=str)}"
        # Every 202 is on the topic exactly once; no 503 was published.
        consumer = make_consumer(settings, f"check-{uuid.uuid4().hex[:8]}")
        try:  # the topic is this test's own: everything on it came from the burst
            on_topic = [(m.key() or b"").decode()
                        for m in read_to_end(consumer, topic).messages]
        finally:
            consumer.close()
        assert sorted(on_topic) == sorted(r[0] for r in accepted)
        # And once the projection is written, status still answers the same from Cassandra.
        late = [clients[0].request("GET", f"/user/{r[0]}/status").json()["state"]
                for r in accepted[:50]]
        assert set(late) == {"preparing_profile"}
        print(f"burst {BURST}: {len(accepted)} accepted, {len(refused)} refused with 503")
    finally:
        for client in clients:
            client.close()
        running.stop()
