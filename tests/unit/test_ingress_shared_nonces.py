"""The ingress' shared nonce store (producers/nonces.py) is asked after the rate limits and
the process' own cache, and decides: a nonce another instance used is 401, an unreachable
store is 503, and neither publishes anything. The real store: tests/integration/
test_ingress_replay.py."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest

from mosaic.settings import IngressSettings, Settings
from mosaic.user_state import InMemoryUserStateStore
from producers.bootstrap import build_app
from producers.publisher import InMemoryPublisher
from producers.signing import NONCE_HEADER, TIMESTAMP_HEADER, signed_headers
from tests.fakes import MemorySharedNonces
from tests.unit.test_ingress_http import ALICE, BOB, KEY, Clock, Harness

pytestmark = [pytest.mark.unit, pytest.mark.anyio]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def nonces() -> MemorySharedNonces:
    return MemorySharedNonces()


@pytest.fixture(params=[True, False], ids=["fast-path", "fastapi-routes"])
async def h(request: pytest.FixtureRequest, nonces: MemorySharedNonces
            ) -> AsyncIterator[Harness]:
    settings = Settings(ingress=IngressSettings(hmac_key=KEY, per_user_rate_per_minute=2))
    publisher, store, clock = InMemoryPublisher(), InMemoryUserStateStore(), Clock()
    app = build_app(settings, publisher=publisher, store=store, clock=clock,
                    fast_path=request.param, shared_nonces=nonces)
    transport = httpx.ASGITransport(app=app.state.front)
    async with httpx.AsyncClient(transport=transport, base_url="http://ingress") as client:
        harness = Harness(client, publisher, store, clock)
        harness.app = app
        yield harness


def _signed(h: Harness, path: str, body: bytes) -> dict[str, str]:
    return signed_headers(KEY.encode(), "POST", path, body, now=h.clock.now)


async def test_a_nonce_another_instance_used_is_refused_and_publishes_nothing(
        h: Harness, nonces: MemorySharedNonces) -> None:
    path, body = f"/user/{ALICE}/opt-out", json.dumps({"request_id": "replay-0001"}).encode()
    headers = _signed(h, path, body)
    nonces.claimed.add((int(headers[TIMESTAMP_HEADER]), headers[NONCE_HEADER]))
    refused = await h.client.post(path, content=body, headers=headers)
    assert (refused.status_code, refused.json()["message"]) == (401, "replayed nonce")
    assert h.publisher.published == []
    for route in ("opt-in-embedding", "opt-out"):  # fresh nonces: accepted and claimed
        assert (await h.call("POST", f"/user/{BOB}/{route}", {})).status_code == 202
    assert len(nonces.claimed) == 3


async def test_status_reads_claim_their_nonce_too(h: Harness,
                                                  nonces: MemorySharedNonces) -> None:
    assert (await h.call("GET", f"/user/{ALICE}/status")).status_code == 200
    assert nonces.calls == 1


async def test_a_rate_limited_request_claims_nothing_and_can_be_sent_again(
        h: Harness, nonces: MemorySharedNonces) -> None:
    for _ in range(2):
        assert (await h.call("POST", f"/user/{ALICE}/opt-out", {})).status_code == 202
    path, body = f"/user/{ALICE}/opt-out", json.dumps({"request_id": "later-0001"}).encode()
    headers = _signed(h, path, body)
    assert (await h.client.post(path, content=body, headers=headers)).status_code == 429
    assert nonces.calls == 2
    h.clock.now += 60  # bucket refilled, still inside the window
    assert (await h.client.post(path, content=body, headers=headers)).status_code == 202
    again = await h.client.post(path, content=body, headers=headers)
    assert again.status_code == 401  # refused by this process' cache: no store round trip
    assert nonces.calls == 3


async def test_an_unreachable_store_is_503_and_publishes_nothing(
        h: Harness, nonces: MemorySharedNonces) -> None:
    nonces.down = True
    refused = await h.call("POST", f"/user/{ALICE}/opt-in-embedding", {})
    assert refused.status_code == 503 and refused.headers["retry-after"] == "5"
    assert h.publisher.published == []
