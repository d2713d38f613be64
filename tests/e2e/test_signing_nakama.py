"""HMAC key rotation and query signing through the real Nakama (mosaic_signing.lua).

Nakama signs with the key and key id of its runtime env (settings.ingress: hmac_key_id,
hmac_key). The ingress is served here on settings.ingress host:port, where Nakama sends its
RPCs, three times over: the rotation procedure of docs/security.md without touching Nakama.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from urllib.parse import quote, urlencode

import httpx
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from pydantic import SecretStr

from mosaic.settings import Settings
from producers.bootstrap import RunningServer, build_production_app, serve_in_thread
from producers.signing import canonical_query, signed_headers
from stack.base import Service, port_open
from tests.e2e.test_optin_nakama import Player

pytestmark = pytest.mark.e2e

NEW_ID, NEW_KEY = "rotation-2", SecretStr("rotation-test-new-ingress-key")


def _serve(settings: Settings, **ingress: object) -> RunningServer:
    cfg = settings.ingress.model_copy(update={"state_store": "memory", **ingress})
    host, port = cfg.host, cfg.port
    if port_open(host, port):
        pytest.fail(f"{host}:{port} is taken; Nakama's runtime env sends RPCs there")
    return serve_in_thread(build_production_app(settings.model_copy(update={"ingress": cfg})),
                           host, port)


def _direct(settings: Settings, key: SecretStr, key_id: str) -> int:
    path = f"/user/{uuid.uuid4()}/status"
    headers = signed_headers(key.get_secret_value().encode(), "GET", path, b"", key_id=key_id)
    with httpx.Client(trust_env=False, timeout=30) as http:
        url = f"http://{settings.ingress.host}:{settings.ingress.port}{path}"
        return http.get(url, headers=headers).status_code


@pytest.fixture
def player(settings: Settings, kafka_stack: Service, nakama_stack: Service) -> Iterator[Player]:
    p = Player(settings, str(uuid.uuid4()))
    yield p
    p.http.close()


def test_rotation_without_downtime(settings: Settings, player: Player) -> None:
    old_id, old_key = settings.ingress.hmac_key_id, settings.ingress.hmac_key
    # 1. The ingress accepts the new key and still the old one (Nakama signs with the old).
    server = _serve(settings, hmac_key_id=NEW_ID, hmac_key=NEW_KEY,
                    hmac_previous_keys={old_id: old_key})
    try:
        assert player.ok("rpc_get_user_match_status")["state"] == "not_opted_in"
        assert player.ok("rpc_opt_out_match")["accepted"]
        assert _direct(settings, old_key, old_id) == 200  # signed with the previous key
        assert _direct(settings, NEW_KEY, NEW_ID) == 200  # what Nakama signs with after step 2
        assert _direct(settings, NEW_KEY, "unknown-9") == 401
    finally:
        server.stop()
    # 2. (Nakama's runtime env switches to the new key: a restart, covered by the direct call.)
    # 3. The old key is retired: whatever still signs with it is refused.
    server = _serve(settings, hmac_key_id=NEW_ID, hmac_key=NEW_KEY, hmac_previous_keys={})
    try:
        assert _direct(settings, NEW_KEY, NEW_ID) == 200
        assert _direct(settings, old_key, old_id) == 401
        refused = player.rpc("rpc_get_user_match_status")
        assert refused.status_code == 500, refused.text  # ingress 401 -> INTERNAL
        assert "temporarily unavailable" in refused.text
    finally:
        server.stop()
    # Back to the configuration Nakama signs with: accepted again.
    server = _serve(settings)
    try:
        assert player.ok("rpc_get_user_match_status")["state"] == "not_opted_in"
    finally:
        server.stop()


QUERY_TEXT = st.text(st.characters(codec="utf-8", min_codepoint=1), max_size=10)


@hypothesis_settings(max_examples=60, deadline=None, derandomize=True,
                     suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(params=st.lists(st.tuples(QUERY_TEXT, QUERY_TEXT), max_size=5))
def test_lua_and_python_build_the_same_canonical_query(
        settings: Settings, nakama_stack: Service, params: list[tuple[str, str]]) -> None:
    key = settings.nakama.http_key.get_secret_value()
    with httpx.Client(base_url=settings.nakama.url, trust_env=False, timeout=30) as http:
        answer = http.post("/v2/rpc/mosaic_signing_canonical_query",
                           params={"http_key": key, "unwrap": ""},
                           content=json.dumps({"params": [list(p) for p in params]}))
    assert answer.status_code == 200, answer.text
    lua = answer.json()["query"]
    assert lua == canonical_query(urlencode(params, quote_via=quote))
    assert canonical_query(lua) == lua  # what Lua sends reads back as what it signed


def test_the_canonical_query_rpc_is_server_to_server_only(player: Player) -> None:
    assert player.rpc("mosaic_signing_canonical_query", {"params": []}).status_code == 403
