"""Users -> Nakama Lua RPCs -> signed ingress -> Kafka (and status from Cassandra).

Real Nakama (runtime env points at settings.ingress host:port), the real ingress served
there, real Kafka and Cassandra. Users authenticate with custom ids (Cognito subs).
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from mosaic.nakama_client import LocalIssuer
from mosaic.settings import Settings
from producers.bootstrap import RunningServer, optin_topic
from streams.events import BlockRequested, OptInRequested, OptOutRequested
from tests.testkit import TopicReader

pytestmark = pytest.mark.e2e


class Player:
    def __init__(self, settings: Settings, custom_id: str) -> None:
        self.custom_id = custom_id
        self.http = httpx.Client(base_url=settings.nakama.url, trust_env=False, timeout=30)
        basic = base64.b64encode(
            f"{settings.nakama.server_key.get_secret_value()}:".encode()).decode()
        auth = self.http.post("/v2/account/authenticate/custom?create=true",
                              headers={"Authorization": f"Basic {basic}"},
                              json={"id": custom_id, "vars": {
                                  "id_token": LocalIssuer(settings.identity).mint(custom_id)}})
        auth.raise_for_status()
        self.http.headers["Authorization"] = f"Bearer {auth.json()['token']}"
        self.user_id = self.http.get("/v2/account").json()["user"]["id"]

    def rpc(self, name: str, payload: dict[str, Any] | None = None) -> httpx.Response:
        return self.http.post(f"/v2/rpc/{name}?unwrap", content=json.dumps(payload or {}))

    def ok(self, name: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        response = self.rpc(name, payload)
        assert response.status_code == 200, (name, response.text)
        answer: dict[str, Any] = response.json()
        return answer


@pytest.fixture
def players(settings: Settings, ingress: RunningServer) -> Iterator[tuple[Player, Player]]:
    alice = Player(settings, str(uuid.uuid4()))
    bob = Player(settings, str(uuid.uuid4()))
    yield alice, bob
    alice.http.close()
    bob.http.close()


@pytest.fixture
def reader(settings: Settings, ingress: RunningServer) -> Iterator[TopicReader]:
    r = TopicReader(settings.kafka.bootstrap_servers, optin_topic(settings))
    yield r
    r.close()


def _keys(records: list[Any], cls: type) -> dict[str, Any]:
    return {r.key: r.event for r in records if isinstance(r.event, cls)}


def test_two_users_opt_in_through_nakama(players: tuple[Player, Player],
                                         reader: TopicReader) -> None:
    alice, bob = players
    assert alice.ok("rpc_opt_in_match", {"top_chats": 7, "pool": "eu:en"})["accepted"]
    assert bob.ok("rpc_opt_in_match", {"force_refresh": True})["accepted"]
    wanted = {alice.custom_id, bob.custom_id}
    records = reader.read(lambda rs: set(_keys(rs, OptInRequested)) >= wanted)
    events = _keys(records, OptInRequested)
    assert events[alice.custom_id].user_id == alice.custom_id
    assert (events[alice.custom_id].top_chats, events[alice.custom_id].pool) == (7, "eu:en")
    assert (events[bob.custom_id].force_refresh, events[bob.custom_id].pool) == (
        True, "default")
    status = alice.ok("rpc_get_user_match_status")
    assert status["state"] == "preparing_profile" and status["pool"] == "eu:en"


def test_identity_comes_from_the_session_not_the_payload(players: tuple[Player, Player],
                                                         reader: TopicReader) -> None:
    alice, bob = players
    alice.ok("rpc_opt_in_match", {"request_id": "spoof-0001"})
    # force_refresh: a plain repeat while alice is opted in would publish nothing.
    spoof = alice.rpc("rpc_opt_in_match", {"user_id": bob.custom_id, "force_refresh": True})
    assert spoof.status_code == 200  # the unknown field is dropped, alice opts in again
    records = reader.read(lambda rs: sum(r.key == alice.custom_id for r in rs) >= 2)
    assert [r.key for r in records] == [alice.custom_id] * 2


def test_opt_out_and_confidential_block(players: tuple[Player, Player],
                                        reader: TopicReader) -> None:
    alice, bob = players
    assert alice.ok("rpc_block_user", {"user_id": bob.user_id}) == {"blocked": True}
    assert bob.ok("rpc_opt_out_match")["accepted"]
    records = reader.read(lambda rs: bool(_keys(rs, BlockRequested))
                          and bool(_keys(rs, OptOutRequested)))
    block = _keys(records, BlockRequested)[alice.custom_id]
    assert block.blocked_user_id == bob.custom_id
    assert bob.custom_id in _keys(records, OptOutRequested)
    assert bob.ok("rpc_get_user_match_status")["state"] == "opted_out"
    notes = bob.http.get("/v2/notification?limit=100").json().get("notifications", [])
    assert notes == []  # the blocked user is never told


@pytest.mark.parametrize(
    ("rpc", "payload", "code"),
    [
        ("rpc_opt_in_match", {"top_chats": 0}, 400),
        ("rpc_opt_in_match", {"request_id": "bad id!"}, 400),
        ("rpc_block_user", {}, 400),
    ],
)
def test_invalid_requests_map_to_invalid_argument(players: tuple[Player, Player], rpc: str,
                                                  payload: dict[str, Any], code: int) -> None:
    response = players[0].rpc(rpc, payload)
    assert response.status_code == code, response.text


def test_self_block_is_refused(players: tuple[Player, Player]) -> None:
    alice, _ = players
    assert alice.rpc("rpc_block_user", {"user_id": alice.user_id}).status_code == 400


def test_rate_limit_maps_to_429(players: tuple[Player, Player]) -> None:
    alice, _ = players
    codes = [alice.rpc("rpc_opt_out_match").status_code for _ in range(11)]
    assert codes[:10] == [200] * 10 and codes[10] == 429
