"""A signed request is single use across ingress instances and restarts (issue 19): with
``ingress.state_store = cassandra`` the nonce is claimed in Cassandra (producers/nonces.py),
not only in the process. Real HTTP servers, real Kafka, real Cassandra."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import httpx
import pytest

from mosaic.settings import IngressSettings, KafkaSettings, Settings
from producers.bootstrap import RunningServer, build_production_app, serve_in_thread
from producers.signing import signed_headers
from stack.base import Service
from streams.kafka import make_admin
from tests.testkit import SignedClient

pytestmark = pytest.mark.integration


@pytest.fixture
def shared(settings: Settings, kafka_stack: Service, cassandra_stack: Service,
           unique: str) -> Iterator[Settings]:
    """Every instance on the migrated default keyspace (nonces are random: no collision
    with other tests) and an opt-in topic of this test's own."""
    ingress = {**settings.ingress.model_dump(), "state_store": "cassandra", "port": 0}
    own = settings.model_copy(update={
        "kafka": KafkaSettings(**{**settings.kafka.model_dump(),
                                  "topic_prefix": f"replay{unique}."}),
        "ingress": IngressSettings(**ingress)})
    yield own
    admin = make_admin(own)  # held: the futures fail once the client is collected
    futures = admin.delete_topics([f"replay{unique}.optin"], operation_timeout=30)
    for future in futures.values():
        future.result(timeout=30)


def _start(settings: Settings) -> RunningServer:
    return serve_in_thread(build_production_app(settings))


def _send(server: RunningServer, path: str, body: bytes,
          headers: dict[str, str]) -> httpx.Response:
    method = "POST" if body else "GET"
    return httpx.request(method, f"http://127.0.0.1:{server.port}{path}", content=body,
                         headers={"content-type": "application/json", **headers},
                         trust_env=False, timeout=30)


@pytest.mark.parametrize("route", ["opt-in", "status"])
def test_a_captured_request_replays_on_no_instance_and_after_no_restart(
        shared: Settings, route: str) -> None:
    key = shared.ingress.hmac_key.get_secret_value().encode()
    user = str(uuid.uuid4())
    if route == "opt-in":
        path = f"/user/{user}/opt-in-embedding"
        body = json.dumps({"request_id": f"replay-{user}"}).encode()
        ok = 202
    else:
        path, body, ok = f"/user/{user}/status", b"", 200
    captured = signed_headers(key, "POST" if body else "GET", path, body)
    first, second = _start(shared), _start(shared)
    try:
        accepted = _send(first, path, body, captured)
        assert accepted.status_code == ok, accepted.text
        on_second = _send(second, path, body, captured)
        assert (on_second.status_code, on_second.json().get("message")) == (
            401, "replayed nonce"), f"second instance accepted the replay: {on_second.text}"
        # The second instance itself works: a freshly signed request is accepted.
        fresh = SignedClient(f"http://127.0.0.1:{second.port}", key)
        try:
            again = fresh.request("GET", f"/user/{user}/status")
            assert again.status_code == 200, again.text
        finally:
            fresh.close()
        first.stop()
        first = _start(shared)  # a restart: a new process state, empty nonce cache
        after_restart = _send(first, path, body, captured)
        assert (after_restart.status_code, after_restart.json().get("message")) == (
            401, "replayed nonce"), f"restarted instance accepted it: {after_restart.text}"
    finally:
        first.stop()
        second.stop()
