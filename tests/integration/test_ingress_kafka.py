"""The ingress as a real HTTP server on a free port, writing to the real Kafka.

Every security rejection is driven through HTTP; accepted requests are read back from the
optin topic. The OpenAPI document drives a schemathesis fuzz run (no 5xx, no crash).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest

from mosaic.settings import IngressSettings, Settings
from producers.bootstrap import (
    RunningServer,
    build_production_app,
    optin_topic,
    serve_in_thread,
)
from stack.base import Service
from streams.events import BlockRequested, OptInRequested, OptOutRequested
from tests.testkit import SignedClient, TopicReader

pytestmark = pytest.mark.integration


def _settings(base: Settings, **ingress: object) -> Settings:
    cfg = base.ingress.model_copy(update={"state_store": "memory", **ingress})
    return base.model_copy(update={"ingress": IngressSettings(**cfg.model_dump())})


@pytest.fixture(scope="module")
def server(settings: Settings, kafka_stack: Service) -> Iterator[RunningServer]:
    running = serve_in_thread(build_production_app(_settings(settings)))
    yield running
    running.stop()


@pytest.fixture
def client(settings: Settings, server: RunningServer) -> Iterator[SignedClient]:
    c = SignedClient(f"http://127.0.0.1:{server.port}",
                     settings.ingress.hmac_key.get_secret_value().encode())
    yield c
    c.close()


@pytest.fixture
def reader(settings: Settings, server: RunningServer) -> Iterator[TopicReader]:
    r = TopicReader(settings.kafka.bootstrap_servers, optin_topic(settings))
    yield r
    r.close()


def _user() -> str:
    return str(uuid.uuid4())


def test_commands_land_on_the_optin_topic_keyed_by_user(client: SignedClient,
                                                        reader: TopicReader) -> None:
    alice, bob = _user(), _user()
    ok = [
        client.request("POST", f"/user/{alice}/opt-in-embedding",
                       {"top_chats": 8, "force_refresh": True, "pool": "eu:en"}),
        client.request("POST", f"/user/{bob}/opt-in-embedding", {}),
        client.request("POST", f"/user/{alice}/block", {"blocked_user_id": bob}),
        client.request("POST", f"/user/{bob}/opt-out", {}),
    ]
    assert [r.status_code for r in ok] == [202] * 4, [r.text for r in ok]
    ids = {r.json()["event_id"] for r in ok}
    records = reader.read(lambda rs: {r.event.event_id for r in rs} >= ids)
    mine = {r.event.event_id: r for r in records if r.event.event_id in ids}
    assert set(mine) == ids
    first = mine[ok[0].json()["event_id"]]
    assert first.key == alice and isinstance(first.event, OptInRequested)
    assert (first.event.top_chats, first.event.force_refresh, first.event.pool) == (
        8, True, "eu:en")
    block = mine[ok[2].json()["event_id"]]
    assert isinstance(block.event, BlockRequested) and block.key == alice
    assert block.event.blocked_user_id == bob
    opt_out = mine[ok[3].json()["event_id"]]
    assert isinstance(opt_out.event, OptOutRequested) and opt_out.key == bob


def test_retry_with_same_request_id_writes_one_event(client: SignedClient,
                                                     reader: TopicReader) -> None:
    user, body = _user(), {"request_id": uuid.uuid4().hex}
    answers = [client.request("POST", f"/user/{user}/opt-in-embedding", body)
               for _ in range(3)]
    assert {a.status_code for a in answers} == {202}
    assert len({a.json()["event_id"] for a in answers}) == 1
    # A later event with the same key lands on the same partition after any duplicate,
    # so once it is read every copy of the opt-in would have been read too.
    marker = client.request("POST", f"/user/{user}/opt-out", {})
    assert marker.status_code == 202, marker.text
    records = reader.read(lambda rs: any(r.event.event_id == marker.json()["event_id"]
                                         for r in rs))
    assert sum(r.key == user and isinstance(r.event, OptInRequested) for r in records) == 1


@pytest.mark.parametrize(
    ("case", "kwargs", "status"),
    [
        ("no signature", {"headers": {"x-mosaic-signature": ""}}, 401),
        ("bad signature", {"headers": {"x-mosaic-signature": "a" * 64}}, 401),
        ("stale timestamp", {"now": 1_000_000_000.0}, 401),
        ("future timestamp", {"now": 9_000_000_000.0}, 401),
        ("too large", {"raw": json.dumps({"pool": "a" * 5000}).encode()}, 413),
        ("unknown field", {"body": {"admin": True}}, 422),
        ("wrong type", {"body": {"force_refresh": "yes"}}, 422),
        ("not json", {"raw": b"\x00\xff"}, 422),
    ],
)
def test_rejections_over_http(client: SignedClient, case: str, kwargs: dict[str, object],
                              status: int) -> None:
    response = client.request("POST", f"/user/{_user()}/opt-in-embedding", **kwargs)  # type: ignore[arg-type]
    assert response.status_code == status, (case, response.text)
    assert "signature" not in response.text.lower() or status == 401


def test_replayed_request_is_401(client: SignedClient) -> None:
    path, data = f"/user/{_user()}/opt-in-embedding", b"{}"
    from producers.signing import signed_headers

    headers = signed_headers(client.key, "POST", path, data)
    first = client.client.post(path, content=data, headers=headers)
    again = client.client.post(path, content=data, headers=headers)
    assert (first.status_code, again.status_code) == (202, 401)


@pytest.mark.parametrize("path", ["/user/a|b-cdefg/opt-in-embedding", "/user/abc/opt-out",
                                  "/user/%2e%2e%2fadmin/opt-out"])
def test_malformed_user_ids_are_refused(client: SignedClient, path: str) -> None:
    assert client.request("POST", path, {}).status_code in (400, 404, 422)


def test_per_user_rate_limit_is_429_with_retry_after(client: SignedClient) -> None:
    user = _user()
    codes = [client.request("POST", f"/user/{user}/opt-out", {}).status_code
             for _ in range(11)]
    assert codes == [202] * 10 + [429]
    limited = client.request("POST", f"/user/{user}/opt-out", {})
    assert int(limited.headers["retry-after"]) >= 1


def test_global_rate_limit_is_429(settings: Settings, kafka_stack: Service) -> None:
    running = serve_in_thread(build_production_app(_settings(settings,
                                                             global_rate_per_second=3)))
    try:
        c = SignedClient(f"http://127.0.0.1:{running.port}",
                         settings.ingress.hmac_key.get_secret_value().encode())
        codes = [c.request("POST", f"/user/{_user()}/opt-in-embedding", {}).status_code
                 for _ in range(5)]
        c.close()
    finally:
        running.stop()
    assert codes[:3] == [202] * 3 and 429 in codes[3:]


def test_health_and_metrics(client: SignedClient) -> None:
    assert client.client.get("/health").json() == {"status": "ok", "kafka": True}
    metrics = client.client.get("/metrics").text
    assert "mosaic_ingress_publish_duration_seconds_bucket" in metrics
    assert "mosaic-local" not in metrics  # no secret anywhere in the exposition
