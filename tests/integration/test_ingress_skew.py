"""Two ingress hosts whose clocks disagree (issue 22.5), on the real Kafka and Cassandra.

Host B's clock is 500 ms behind host A's. A user opts in through A and, once A's answer
shows in status, opts out through B. The opt-out must come after the opt-in in the order
the matcher folds the seekers topic by (the records' versions), or the matcher keeps the
user waiting after they left; and status must say ``opted_out``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from consumers.embedding import request_version
from matcher.pool import LogRecord, PoolState
from mosaic.cassandra import connect
from mosaic.settings import Settings
from mosaic.user_state import CassandraUserStateStore
from producers.bootstrap import (
    RunningServer,
    build_app,
    ensure_optin_topic,
    optin_topic,
    serve_in_thread,
)
from producers.kafka_publisher import KafkaEventPublisher, ingress_producer_config
from streams.events import OptInRequested, OptOutRequested, SeekerRemoved, SeekerUpdated
from streams.events import derive_event_id as event_id
from streams.serde import default_serde
from tests.testkit import SignedClient, TopicReader

pytestmark = pytest.mark.integration

SKEW_SECONDS = 0.5
POOL = "skew"


def _host(settings: Settings, clock_offset: float) -> tuple[RunningServer, SignedClient]:
    publisher = KafkaEventPublisher(ingress_producer_config(settings), default_serde().encode)
    store = CassandraUserStateStore(connect(settings.cassandra), settings.cassandra.keyspace)
    app = build_app(settings, publisher=publisher, store=store, on_close=store.close,
                    clock=lambda: time.time() + clock_offset)
    server = serve_in_thread(app)
    client = SignedClient(f"http://127.0.0.1:{server.port}",
                          settings.ingress.hmac_key.get_secret_value().encode())
    return server, client


@pytest.fixture
def hosts(settings: Settings, kafka_stack: object, cassandra_stack: object
          ) -> Iterator[tuple[SignedClient, SignedClient]]:
    ensure_optin_topic(settings)
    a, b = _host(settings, 0.0), _host(settings, -SKEW_SECONDS)
    yield a[1], b[1]
    for server, client in (a, b):
        client.close()
        server.stop()


def _status(client: SignedClient, user: str) -> dict[str, Any]:
    response = client.request("GET", f"/user/{user}/status")
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def _wait_for_state(client: SignedClient, user: str, state: str) -> None:
    deadline, seen = time.monotonic() + 10, None
    while time.monotonic() < deadline:
        seen = _status(client, user)["state"]
        if seen == state:
            return
        time.sleep(0.05)
    pytest.fail(f"status of {user} through host B still {seen!r}, not {state!r}, after 10 s "
                "(host A's user_state write never reached Cassandra)")


def _fold(events: list[OptInRequested | OptOutRequested]) -> PoolState:
    """The matcher's pool after the embedding agent turned each request into its seekers
    record (versions from ``request_version``, as the agent sets them)."""
    serde, state = default_serde(), PoolState()
    for offset, event in enumerate(events):
        record: SeekerUpdated | SeekerRemoved
        if isinstance(event, OptInRequested):
            record = SeekerUpdated(
                event_id=event_id("SeekerUpdated", event.event_id), occurred_at=event.occurred_at,
                user_id=event.user_id, opted_in_at=event.opted_in_at, vector=(1.0, 0.0),
                model="m", traits_hash="h", pool=event.pool, version=request_version(event))
        else:
            record = SeekerRemoved(
                event_id=event_id("SeekerRemoved", event.event_id), occurred_at=event.occurred_at,
                user_id=event.user_id, reason="opted_out", pool=event.pool,
                version=request_version(event))
        state.apply(LogRecord(0, offset, event.user_id.encode(), serde.encode(record)))
    return state


def test_an_opt_out_through_a_host_whose_clock_is_behind_still_wins(
        settings: Settings, hosts: tuple[SignedClient, SignedClient]) -> None:
    a, b = hosts
    user = str(uuid.uuid4())
    reader = TopicReader(settings.kafka.bootstrap_servers, optin_topic(settings))
    assert a.request("POST", f"/user/{user}/opt-in-embedding", {"pool": POOL}).status_code == 202
    _wait_for_state(b, user, "preparing_profile")  # the user sees it, then opts out
    assert b.request("POST", f"/user/{user}/opt-out", {"pool": POOL}).status_code == 202

    records = reader.read(lambda rs: sum(r.key == user for r in rs) >= 2)
    events = [r.event for r in records if r.key == user]
    assert [type(e) for e in events] == [OptInRequested, OptOutRequested], events
    opt_in, opt_out = events
    assert isinstance(opt_in, OptInRequested) and isinstance(opt_out, OptOutRequested)
    assert request_version(opt_out) > request_version(opt_in), (
        f"opt-out version {request_version(opt_out)} <= opt-in {request_version(opt_in)}")
    assert [s.user_id for s in _fold([opt_in, opt_out]).waiting(POOL)] == []
    assert _status(a, user)["state"] == _status(b, user)["state"] == "opted_out"
