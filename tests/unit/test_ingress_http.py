"""The ingress HTTP API against in-memory fakes (publisher, state store, clock)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from mosaic.settings import IngressSettings, Settings
from mosaic.user_state import (
    INSIGHTS_UNREADABLE,
    PROFILE_UNAVAILABLE,
    REASON_MESSAGES,
    InMemoryUserStateStore,
    UserState,
)
from producers.bootstrap import build_app
from producers.publisher import InMemoryPublisher, PublishFailed
from producers.signing import signed_headers
from streams.events import BlockRequested, OptInRequested, OptOutRequested

pytestmark = [pytest.mark.unit, pytest.mark.anyio]

KEY = "unit-key"
OLD_KEY = "unit-old-key"
NOW = 1_800_000_000.0
ALICE = "11111111-1111-4111-8111-111111111111"
BOB = "22222222-2222-4222-8222-222222222222"


class Clock:
    now = NOW

    def __call__(self) -> float:
        return self.now


class Harness:
    def __init__(self, client: httpx.AsyncClient, publisher: InMemoryPublisher,
                 store: InMemoryUserStateStore, clock: Clock) -> None:
        self.client = client
        self.publisher = publisher
        self.store = store
        self.clock = clock
        self.app: FastAPI | None = None

    async def settle(self) -> None:
        """Let the background user_state writes finish."""
        assert self.app is not None
        await self.app.state.ingress.service.drain()

    async def call(self, method: str, path: str, body: Any = None, *,
                   raw: bytes | None = None, headers: dict[str, str] | None = None,
                   key: str = KEY, key_id: str = "local-1", query: str = "",
                   signed_query: str | None = None) -> httpx.Response:
        data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
        signed = signed_headers(key.encode(), method, path, data, key_id=key_id,
                                query=query if signed_query is None else signed_query,
                                now=self.clock.now)
        url = f"{path}?{query}" if query else path
        return await self.client.request(method, url, content=data,
                                         headers={**signed, **(headers or {})})


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=[True, False], ids=["fast-path", "fastapi-routes"])
async def h(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    settings = Settings(ingress=IngressSettings(hmac_key=KEY, global_rate_per_second=20,
                                                hmac_previous_keys={"old-1": OLD_KEY}))
    publisher, store, clock = InMemoryPublisher(), InMemoryUserStateStore(), Clock()
    app = build_app(settings, publisher=publisher, store=store, clock=clock,
                    fast_path=request.param)
    transport = httpx.ASGITransport(app=app.state.front)
    async with httpx.AsyncClient(transport=transport, base_url="http://ingress") as client:
        harness = Harness(client, publisher, store, clock)
        harness.app = app
        yield harness


def _opt_in(user: str = ALICE) -> str:
    return f"/user/{user}/opt-in-embedding"


async def test_opt_in_publishes_one_event_keyed_by_user(h: Harness) -> None:
    r = await h.call("POST", _opt_in(), {"request_id": "req-00000001", "top_chats": 7,
                                         "force_refresh": True, "pool": "eu:en"})
    assert r.status_code == 202, r.text
    [(topic, key, event)] = h.publisher.published
    assert (topic, key) == ("mosaic.optin", ALICE)
    assert isinstance(event, OptInRequested)
    assert (event.user_id, event.top_chats, event.force_refresh, event.pool) == (
        ALICE, 7, True, "eu:en")
    assert event.event_id == r.json()["event_id"]
    assert event.opted_in_at.timestamp() == NOW


async def test_defaults_apply_to_an_empty_body(h: Harness) -> None:
    assert (await h.call("POST", _opt_in())).status_code == 202
    event = h.publisher.published[0][2]
    assert isinstance(event, OptInRequested)
    assert (event.top_chats, event.force_refresh, event.pool) == (5, False, "default")


async def test_retry_with_same_request_id_is_applied_once(h: Harness) -> None:
    body = {"request_id": "retry-0000001"}
    first = await h.call("POST", _opt_in(), body)
    second = await h.call("POST", _opt_in(), body)
    assert first.status_code == second.status_code == 202
    assert first.json()["event_id"] == second.json()["event_id"]
    assert second.json()["duplicate"] is True
    assert len(h.publisher.published) == 1
    other = await h.call("POST", _opt_in(), {**body, "top_chats": 9})
    assert other.status_code == 409


async def test_broker_down_is_503_with_retry_hint_and_retry_publishes_same_id(
        h: Harness) -> None:
    h.publisher.fail_with = PublishFailed("all brokers down")
    body = {"request_id": "down-0000001"}
    r = await h.call("POST", _opt_in(), body)
    assert r.status_code == 503
    assert r.headers["retry-after"] == "5"
    assert h.publisher.published == []
    h.publisher.fail_with = None
    ok = await h.call("POST", _opt_in(), body)
    assert ok.status_code == 202 and ok.json()["duplicate"] is False
    assert len(h.publisher.published) == 1


@pytest.mark.parametrize("method", ["POST", "GET"])
async def test_current_and_previous_keys_are_accepted_by_id(h: Harness, method: str) -> None:
    path = _opt_in() if method == "POST" else f"/user/{ALICE}/status"
    for key, key_id in ((KEY, "local-1"), (OLD_KEY, "old-1")):
        r = await h.call(method, path, {} if method == "POST" else None, key=key,
                         key_id=key_id)
        assert r.status_code == (202 if method == "POST" else 200), (key_id, r.text)


@pytest.mark.parametrize(("key", "key_id"), [
    (KEY, "retired-0"),  # unknown id, even with a good key
    (OLD_KEY, "local-1"),  # a known id with another key
    (KEY, "old-1"),
])
@pytest.mark.parametrize("method", ["POST", "GET"])
async def test_unknown_or_mismatched_key_id_is_401(h: Harness, method: str, key: str,
                                                   key_id: str) -> None:
    path = _opt_in() if method == "POST" else f"/user/{ALICE}/status"
    r = await h.call(method, path, {} if method == "POST" else None, key=key, key_id=key_id)
    assert r.status_code == 401, r.text
    assert r.json()["error"] == "unauthorized"
    assert h.publisher.published == []


async def test_a_retired_key_is_refused() -> None:
    settings = Settings(ingress=IngressSettings(hmac_key=KEY))  # old-1 retired
    app = build_app(settings, publisher=InMemoryPublisher(), store=InMemoryUserStateStore(),
                    clock=Clock())
    transport = httpx.ASGITransport(app=app.state.front)
    async with httpx.AsyncClient(transport=transport, base_url="http://ingress") as client:
        h = Harness(client, InMemoryPublisher(), InMemoryUserStateStore(), Clock())
        assert (await h.call("POST", _opt_in(), {}, key=OLD_KEY, key_id="old-1")
                ).status_code == 401
        assert (await h.call("POST", _opt_in(), {})).status_code == 202


@pytest.mark.parametrize(("sent", "signed", "ok"), [
    ("a=1&b=2", None, True),  # signed as sent
    ("b=2&a=1", "a=1&b=2", True),  # another order reads the same
    ("x=1", "", False),  # an added parameter
    ("a=1&x=1", "a=1", False),
    ("a=2", "a=1", False),  # a changed value
    ("a=1", "a=1&a=2", False),  # a removed one
])
@pytest.mark.parametrize("method", ["POST", "GET"])
async def test_the_query_string_is_signed(h: Harness, method: str, sent: str,
                                          signed: str | None, ok: bool) -> None:
    path = _opt_in() if method == "POST" else f"/user/{ALICE}/status"
    r = await h.call(method, path, {} if method == "POST" else None, query=sent,
                     signed_query=signed)
    if ok:
        assert r.status_code == (202 if method == "POST" else 200), r.text
    else:
        assert r.status_code == 401, r.text
        assert h.publisher.published == []


@pytest.mark.parametrize(
    ("case", "headers", "key"),
    [
        ("no signature", {"x-mosaic-signature": ""}, KEY),
        ("wrong key", {}, "another-key"),
        ("tampered signature", {"x-mosaic-signature": "f" * 64}, KEY),
    ],
)
async def test_unsigned_or_badly_signed_is_401(h: Harness, case: str, headers: dict[str, str],
                                               key: str) -> None:
    r = await h.call("POST", _opt_in(), {}, headers=headers, key=key)
    assert r.status_code == 401, case
    assert r.json()["error"] == "unauthorized"
    assert h.publisher.published == []


async def test_stale_timestamp_and_replay_are_401(h: Harness) -> None:
    data = b"{}"
    old = signed_headers(KEY.encode(), "POST", _opt_in(), data, now=NOW - 301)
    assert (await h.client.post(_opt_in(), content=data, headers=old)).status_code == 401
    fresh = signed_headers(KEY.encode(), "POST", _opt_in(), data, now=NOW)
    assert (await h.client.post(_opt_in(), content=data, headers=fresh)).status_code == 202
    assert (await h.client.post(_opt_in(), content=data, headers=fresh)).status_code == 401


async def test_large_body_is_413(h: Harness) -> None:
    r = await h.call("POST", _opt_in(), raw=b'{"pool": "' + b"a" * 5000 + b'"}')
    assert r.status_code == 413


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (_opt_in(), {"unknown": 1}),
        (_opt_in(), {"top_chats": 0}),
        (_opt_in(), {"top_chats": "5"}),
        (_opt_in(), {"request_id": "short"}),
        (_opt_in(), {"pool": "EU"}),
        (_opt_in("bad|id"), {}),
        (_opt_in("abc"), {}),
        (f"/user/{ALICE}/block", {}),
        (f"/user/{ALICE}/block", {"blocked_user_id": "x|y"}),
        (f"/user/{ALICE}/block", {"blocked_user_id": ALICE}),
    ],
)
async def test_invalid_input_is_422(h: Harness, path: str, body: dict[str, Any]) -> None:
    r = await h.call("POST", path, body)
    assert r.status_code == 422, r.text
    assert h.publisher.published == []


async def test_malformed_json_is_422(h: Harness) -> None:
    assert (await h.call("POST", _opt_in(), raw=b"{not json")).status_code == 422


async def test_per_user_rate_limit_is_429_other_users_unaffected(h: Harness) -> None:
    codes = [(await h.call("POST", _opt_in(), {})).status_code for _ in range(11)]
    assert codes == [202] * 10 + [429]
    assert (await h.call("POST", _opt_in(BOB), {})).status_code == 202
    h.clock.now += 6.1  # 10/min refills one token every 6 s
    assert (await h.call("POST", _opt_in(), {})).status_code == 202


async def test_global_rate_limit_is_429(h: Harness) -> None:
    users = [f"user-{i:06d}" for i in range(21)]
    codes = [(await h.call("POST", _opt_in(u), {})).status_code for u in users]
    assert codes.count(202) == 20
    assert codes[-1] == 429


async def test_status_follows_opt_in_and_opt_out_but_never_shows_blocks(h: Harness) -> None:
    status = f"/user/{ALICE}/status"
    assert (await h.call("GET", status)).json()["state"] == "not_opted_in"
    await h.call("POST", _opt_in(), {"pool": "eu"})
    await h.call("POST", f"/user/{BOB}/block", {"blocked_user_id": ALICE})
    await h.settle()
    body = (await h.call("GET", status)).json()
    assert (body["state"], body["pool"]) == ("preparing_profile", "eu")
    h.clock.now += 1
    await h.call("POST", f"/user/{ALICE}/opt-out", {"pool": "eu"})
    await h.settle()
    assert (await h.call("GET", status)).json()["state"] == "opted_out"
    kinds = [type(e) for _, _, e in h.publisher.published]
    assert kinds == [OptInRequested, BlockRequested, OptOutRequested]


async def test_a_repeated_opt_in_while_opted_in_keeps_the_place_in_line(h: Harness) -> None:
    """A double tap or a retried reload publishes nothing new (the first opt-in's wait and
    missed cycles stay); another pool, a forced refresh or an opt-in after an opt-out do."""
    status = f"/user/{ALICE}/status"
    first = await h.call("POST", _opt_in(), {"pool": "eu"})
    h.clock.now += 1
    tap = await h.call("POST", _opt_in(), {"pool": "eu"})
    assert (first.json()["duplicate"], tap.status_code, tap.json()["duplicate"]) == (
        False, 202, True)
    await h.settle()
    h.store.rows[ALICE] = replace(h.store.rows[ALICE], state="waiting", missed_cycles=2,
                                  updated_at=h.store.rows[ALICE].updated_at)
    h.clock.now += 1
    reload = await h.call("POST", _opt_in(), {"pool": "eu"})
    assert reload.json()["duplicate"] is True
    body = (await h.call("GET", status)).json()
    assert (body["state"], body["missed_cycles"], body["opted_in_at"]) == (
        "waiting", 2, "2027-01-15T08:00:00Z")
    assert len(h.publisher.published) == 1
    h.store.rows[ALICE] = replace(h.store.rows[ALICE], unmatched_reason="invalid_vector")
    h.clock.now += 1
    assert (await h.call("POST", _opt_in(), {"pool": "eu"})).json()["duplicate"] is False
    h.clock.now += 1
    await h.call("POST", _opt_in(), {"pool": "us"})
    h.clock.now += 1
    await h.call("POST", _opt_in(), {"pool": "us", "force_refresh": True})
    h.clock.now += 1
    await h.call("POST", f"/user/{ALICE}/opt-out", {"pool": "us"})
    h.clock.now += 1
    await h.call("POST", _opt_in(), {"pool": "us"})
    kinds = [type(e).__name__ for _, _, e in h.publisher.published]
    assert kinds == ["OptInRequested"] * 4 + ["OptOutRequested", "OptInRequested"]


async def test_a_profile_preparing_for_too_long_does_not_swallow_a_retry(h: Harness) -> None:
    first = await h.call("POST", _opt_in(), {})
    h.clock.now += 9 * 60
    assert (await h.call("POST", _opt_in(), {})).json()["duplicate"] is True
    h.clock.now += 60
    retry = await h.call("POST", _opt_in(), {})
    assert (first.json()["duplicate"], retry.json()["duplicate"]) == (False, False)
    assert len(h.publisher.published) == 2


async def test_a_request_is_ordered_after_the_last_state_whatever_this_clock_says(
        h: Harness) -> None:
    """Another host, whose clock is 2 s ahead of this one's, recorded the opt-in."""
    ahead = datetime.fromtimestamp(NOW + 2, UTC)
    h.store.rows[ALICE] = UserState(ALICE, "waiting", pool="eu", opted_in_at=ahead,
                                    updated_at=ahead)
    assert (await h.call("POST", f"/user/{ALICE}/opt-out", {"pool": "eu"})).status_code == 202
    [(_, _, event)] = h.publisher.published
    assert event.occurred_at == ahead + timedelta(milliseconds=1)
    await h.settle()
    assert h.store.rows[ALICE].state == "opted_out"


async def test_status_shows_a_fixed_reason_never_the_raw_detail(h: Harness) -> None:
    raw = f"malformed document 'chat/insights.json': insights['{BOB}'] is not an object"
    h.store.rows[ALICE] = UserState(ALICE, "profile_failed", detail=raw,
                                    reason_code=INSIGHTS_UNREADABLE)
    body = (await h.call("GET", f"/user/{ALICE}/status")).json()
    assert (body["reason_code"], body["message"]) == (
        INSIGHTS_UNREADABLE, REASON_MESSAGES[INSIGHTS_UNREADABLE])
    assert "detail" not in body and BOB not in json.dumps(body)
    h.store.rows[ALICE] = UserState(ALICE, "profile_failed", detail=raw)  # written before codes
    body = (await h.call("GET", f"/user/{ALICE}/status")).json()
    assert (body["reason_code"], BOB in json.dumps(body)) == (PROFILE_UNAVAILABLE, False)


async def test_status_requires_a_signature(h: Harness) -> None:
    assert (await h.client.get(f"/user/{ALICE}/status")).status_code == 401


async def test_health_metrics_and_openapi(h: Harness) -> None:
    assert (await h.client.get("/health")).json()["status"] == "ok"
    await h.call("POST", _opt_in(), {})
    metrics = (await h.client.get("/metrics")).text
    assert 'mosaic_ingress_requests_total{route="opt_in",status="202"} 1.0' in metrics
    doc = (await h.client.get("/openapi.json")).json()
    assert {"/user/{user_id}/opt-in-embedding", "/user/{user_id}/opt-out",
            "/user/{user_id}/block", "/user/{user_id}/status", "/health"} <= set(doc["paths"])
