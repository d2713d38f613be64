"""Rate limits run before the nonce cache stores anything; the fast path and the FastAPI
routes validate user ids identically (a trailing newline passes neither)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest

from mosaic.settings import IngressSettings, Settings
from mosaic.user_state import InMemoryUserStateStore
from producers.bootstrap import build_app
from producers.domain import valid_user_id
from producers.publisher import InMemoryPublisher
from producers.signing import signed_headers
from tests.unit.test_ingress_http import ALICE, BOB, KEY, Clock, Harness

pytestmark = [pytest.mark.unit, pytest.mark.anyio]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=[True, False], ids=["fast-path", "fastapi-routes"])
async def h(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    settings = Settings(ingress=IngressSettings(hmac_key=KEY, per_user_rate_per_minute=3,
                                                status_rate_per_minute=2,
                                                global_rate_per_second=1000))
    publisher, store, clock = InMemoryPublisher(), InMemoryUserStateStore(), Clock()
    app = build_app(settings, publisher=publisher, store=store, clock=clock,
                    fast_path=request.param)
    transport = httpx.ASGITransport(app=app.state.front)
    async with httpx.AsyncClient(transport=transport, base_url="http://ingress") as client:
        harness = Harness(client, publisher, store, clock)
        harness.app = app
        yield harness


def _nonces(h: Harness) -> int:
    assert h.app is not None
    return len(h.app.state.ingress.nonces)


async def test_a_flood_past_the_per_user_limit_stores_no_nonce(h: Harness) -> None:
    for _ in range(3):
        assert (await h.call("POST", f"/user/{ALICE}/opt-out", {})).status_code == 202
    assert _nonces(h) == 3
    for _ in range(50):
        assert (await h.call("POST", f"/user/{ALICE}/opt-out", {})).status_code == 429
    assert _nonces(h) == 3  # refused requests left nothing behind
    # Another user is neither limited nor shut out by the flood.
    assert (await h.call("POST", f"/user/{BOB}/opt-out", {})).status_code == 202
    assert _nonces(h) == 4


async def test_a_rate_limited_request_can_be_sent_again_later(h: Harness) -> None:
    for _ in range(3):
        await h.call("POST", f"/user/{ALICE}/opt-out", {})
    body = json.dumps({"request_id": "later-0001"}).encode()
    path = f"/user/{ALICE}/opt-out"
    headers = signed_headers(KEY.encode(), "POST", path, body, now=h.clock.now)
    first = await h.client.post(path, content=body, headers=headers)
    assert first.status_code == 429
    h.clock.now += 60  # bucket refilled; the signed timestamp is still inside the window
    again = await h.client.post(path, content=body, headers=headers)
    assert again.status_code == 202  # its nonce had not been stored
    replay = await h.client.post(path, content=body, headers=headers)
    assert replay.status_code == 401  # now it has


async def test_invalid_bodies_store_no_nonce(h: Harness) -> None:
    for _ in range(5):
        r = await h.call("POST", f"/user/{ALICE}/opt-in-embedding", {"top_chats": "x"})
        assert r.status_code == 422
    assert _nonces(h) == 0


async def test_status_rate_limit_runs_before_the_nonce_cache(h: Harness) -> None:
    for _ in range(2):
        assert (await h.call("GET", f"/user/{ALICE}/status")).status_code == 200
    for _ in range(10):
        assert (await h.call("GET", f"/user/{ALICE}/status")).status_code == 429
    assert _nonces(h) == 2


@pytest.mark.parametrize("path", [
    f"/user/{ALICE}%0A/opt-out",  # decoded: a trailing newline in the user id
    f"/user/{ALICE}%0a/opt-in-embedding",
    f"/user/{ALICE}/opt-out%0A",
    f"/user/{ALICE}%0A/status",
])
async def test_trailing_newline_is_refused_on_both_paths(h: Harness, path: str) -> None:
    method = "GET" if path.endswith("status") else "POST"
    r = await h.call(method, path, None if method == "GET" else {})
    assert r.status_code == 404, r.text
    assert h.publisher.published == []
    assert _nonces(h) == 0


async def test_both_paths_give_the_same_answer_for_odd_ids() -> None:
    answers: dict[bool, list[int]] = {}
    paths = [f"/user/{uid}/opt-out" for uid in
             (f"{ALICE}%0A", f"{ALICE}%0D", "abc", "a" * 129, "-abcdef", f"{ALICE}%20",
              "ABCDEF", "%41BCDEF", "abc%2Fdef")]
    for fast in (True, False):
        settings = Settings(ingress=IngressSettings(hmac_key=KEY))
        app = build_app(settings, publisher=InMemoryPublisher(),
                        store=InMemoryUserStateStore(), clock=Clock(), fast_path=fast)
        transport = httpx.ASGITransport(app=app.state.front)
        async with httpx.AsyncClient(transport=transport, base_url="http://i") as client:
            harness = Harness(client, InMemoryPublisher(), InMemoryUserStateStore(), Clock())
            answers[fast] = [(await harness.call("POST", p, {})).status_code for p in paths]
    assert answers[True] == answers[False]


@pytest.mark.parametrize("value", [f"{ALICE}\n", "abcdef\n", "\nabcdef", "abc def", ""])
def test_valid_user_id_is_a_full_match(value: str) -> None:
    assert not valid_user_id(value)
    assert valid_user_id(value.strip()) == (len(value.strip()) >= 6 and " " not in value)


@pytest.mark.parametrize("name", ["x-mosaic-timestamp", "x-mosaic-nonce", "x-mosaic-signature"])
async def test_a_repeated_signature_header_is_401_on_both_paths(h: Harness, name: str) -> None:
    path, body = f"/user/{ALICE}/opt-out", b"{}"
    good = signed_headers(KEY.encode(), "POST", path, body, now=h.clock.now)
    for first, second in ((good[name], "0"), ("0", good[name])):
        headers = [(k, v) for k, v in good.items() if k != name]
        headers += [(name, first), (name, second)]
        r = await h.client.post(path, content=body, headers=headers)
        assert r.status_code == 401, r.text
    assert h.publisher.published == []
    assert _nonces(h) == 0
