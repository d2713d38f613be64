"""What the web client (docs/web.md) needs from the real Nakama as a page on another
loopback origin: CORS answers for its HTTP calls and a socket that accepts that origin."""

from __future__ import annotations

import json
import uuid
from urllib.parse import urlsplit

import httpx
import pytest
from websockets.sync.client import connect
from websockets.typing import Origin

from mosaic.nakama_client import NakamaClient
from mosaic.settings import Settings
from stack.base import Service

pytestmark = pytest.mark.integration

ORIGIN = "http://127.0.0.1:8095"  # app/web.py's default port


@pytest.mark.parametrize("path", ["/v2/account/authenticate/custom",
                                  "/v2/rpc/rpc_get_user_match_status", "/v2/notification",
                                  "/v2/channel/abc"])
def test_the_http_api_answers_a_browser_preflight(settings: Settings, nakama_stack: Service,
                                                  path: str) -> None:
    resp = httpx.options(f"{settings.nakama.url}{path}", trust_env=False, timeout=10, headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type"})
    assert resp.status_code in (200, 204), resp.text
    assert resp.headers.get("access-control-allow-origin") in ("*", ORIGIN)
    allowed = resp.headers.get("access-control-allow-headers", "").lower()
    assert "authorization" in allowed and "content-type" in allowed


def test_the_socket_accepts_the_page_origin(settings: Settings, nakama_stack: Service) -> None:
    client = NakamaClient(settings.nakama)
    try:
        session = client.login(str(uuid.uuid4()))
    finally:
        client.close()
    api = urlsplit(settings.nakama.url)
    url = f"ws://{api.netloc}/ws?lang=en&status=true&token={session.token}"
    with connect(url, origin=Origin(ORIGIN), open_timeout=10) as socket:
        socket.send(json.dumps({"cid": "1", "ping": {}}))
        seen = [json.loads(socket.recv(timeout=10)) for _ in range(2)]  # + own status event
    assert {"cid": "1", "pong": {}} in seen, seen
