"""The auth hook's door: key ids (current, previous, unknown), the signed query, repeated
signature headers. A body without an ID token gets 403 once the signature checked out, so
403 means "signature accepted" and 401 "refused at the door" (no JWKS is ever fetched)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import SecretStr

from mosaic.settings import IdentitySettings, Settings
from producers.authhook import PATH, answer_signature, build_app
from producers.signing import signed_headers

pytestmark = [pytest.mark.unit, pytest.mark.anyio]

NOW = 1_800_000_000.0
CURRENT, PREVIOUS = "hook-current-key", "hook-previous-key"
CUSTOM_ID = "11111111-1111-4111-8111-111111111111"
BODY = json.dumps({"custom_id": CUSTOM_ID}).encode()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _app(previous: dict[str, SecretStr]) -> Any:
    async def no_fetch(url: str) -> dict[str, Any]:
        raise AssertionError("no JWKS fetch expected")

    settings = Settings(identity=IdentitySettings(
        hook_hmac_key_id="h-2", hook_hmac_key=SecretStr(CURRENT),
        hook_hmac_previous_keys=previous))
    return build_app(settings, fetch=no_fetch, clock=lambda: NOW)


async def _call(app: Any, headers: list[tuple[str, str]], query: str = "") -> int:
    sent: list[dict[str, Any]] = []
    chunks = [{"type": "http.request", "body": BODY, "more_body": False}]

    async def receive() -> dict[str, Any]:
        return chunks.pop(0) if chunks else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": PATH, "raw_path": PATH.encode(),
             "query_string": query.encode(),
             "headers": [(k.encode(), v.encode()) for k, v in headers]}
    await app(scope, receive, send)
    return int(sent[0]["status"])


def _signed(key: str, key_id: str, query: str = "") -> list[tuple[str, str]]:
    return list(signed_headers(key.encode(), "POST", PATH, BODY, key_id=key_id, query=query,
                               now=NOW).items())


async def test_current_and_previous_keys_pass_the_door() -> None:
    app = _app({"h-1": SecretStr(PREVIOUS)})
    assert await _call(app, _signed(CURRENT, "h-2")) == 403
    assert await _call(app, _signed(PREVIOUS, "h-1")) == 403


async def test_retired_unknown_and_mismatched_ids_are_401() -> None:
    app = _app({})
    assert await _call(app, _signed(PREVIOUS, "h-1")) == 401  # retired
    assert await _call(app, _signed(CURRENT, "h-9")) == 401  # unknown
    assert await _call(app, _signed(PREVIOUS, "h-2")) == 401  # not the key the id names
    headers = [h for h in _signed(CURRENT, "h-2") if h[0] != "x-mosaic-key-id"]
    assert await _call(app, headers) == 401  # no id


async def test_the_query_is_signed_and_headers_come_once() -> None:
    app = _app({})
    assert await _call(app, _signed(CURRENT, "h-2", "a=1"), "a=1") == 403
    assert await _call(app, _signed(CURRENT, "h-2"), "a=1") == 401  # added
    assert await _call(app, _signed(CURRENT, "h-2", "a=1"), "a=2") == 401  # changed
    twice = [*_signed(CURRENT, "h-2"), ("x-mosaic-key-id", "h-2")]
    assert await _call(app, twice) == 401


class _AnyToken:
    """Stands in for the ID-token check: every token proves its custom id."""

    async def verify(self, token: str, custom_id: str) -> None:
        return None


async def test_an_ok_is_signed_with_the_requests_key_and_nonce() -> None:
    """The answer Nakama's hook checks (mosaic_signing.answer_signature): the key the
    request named (current or previous), bound to the request's nonce and custom id."""
    app = _app({"h-1": SecretStr(PREVIOUS)})
    app.tokens = _AnyToken()
    body = json.dumps({"custom_id": CUSTOM_ID, "id_token": "t"}).encode()
    for key, key_id in ((CURRENT, "h-2"), (PREVIOUS, "h-1")):
        headers = signed_headers(key.encode(), "POST", PATH, body, key_id=key_id, now=NOW)
        status, answer = await app.check(PATH, dict(headers), body)
        nonce = headers["x-mosaic-nonce"]
        assert (status, answer) == (200, {"ok": True, "signature": answer_signature(
            key.encode(), key_id, nonce, CUSTOM_ID)})
        assert answer["signature"] != answer_signature(key.encode(), key_id, "0" * 32,
                                                       CUSTOM_ID)
