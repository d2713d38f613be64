"""Custom-id logins on the real Nakama need a Cognito ID token (nakama/modules/mosaic_auth.lua
-> producers/authhook.py), issued here by the real local OIDC issuer stand-in."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest

from mosaic.nakama_client import LocalIssuer, NakamaClient
from mosaic.settings import Settings
from stack.base import Service
from standins.oidc import new_private_key

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def issuer(settings: Settings, nakama_stack: Service) -> LocalIssuer:
    return LocalIssuer(settings.identity)


@pytest.fixture(scope="module")
def nakama(settings: Settings, issuer: LocalIssuer) -> Iterator[NakamaClient]:
    client = NakamaClient(settings.nakama, id_tokens=issuer)
    yield client
    client.close()


@pytest.fixture
def sub() -> str:
    return str(uuid.uuid4())


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def _refused(nakama: NakamaClient, sub: str, token: str | None) -> None:
    response = nakama.authenticate(sub, token)
    assert response.status_code == 401, response.text
    assert "token" not in response.json()


def test_a_valid_token_logs_in_and_stays_out_of_the_session(
        nakama: NakamaClient, issuer: LocalIssuer, sub: str) -> None:
    first = nakama.login(sub, issuer.mint(sub))
    again = nakama.login(sub, issuer.mint(sub))
    assert first.user_id == again.user_id
    assert "vrs" not in _claims(first.token)  # vars.id_token was removed by the hook


def test_no_token_is_refused(nakama: NakamaClient, sub: str) -> None:
    _refused(nakama, sub, None)
    _refused(nakama, sub, "")


def test_a_token_for_another_sub_is_refused(nakama: NakamaClient, issuer: LocalIssuer,
                                            sub: str) -> None:
    _refused(nakama, sub, issuer.mint(str(uuid.uuid4())))


def test_an_expired_token_is_refused(nakama: NakamaClient, issuer: LocalIssuer,
                                     sub: str) -> None:
    _refused(nakama, sub, issuer.mint(sub, ttl_seconds=-120))


def test_a_token_signed_by_an_unknown_key_is_refused(
        nakama: NakamaClient, settings: Settings, sub: str) -> None:
    now = int(time.time())
    claims = {"sub": sub, "aud": settings.identity.audience, "token_use": "id",
              "iss": settings.identity.issuer, "iat": now, "exp": now + 600}
    rogue = new_private_key()
    _refused(nakama, sub, jwt.encode(claims, rogue, algorithm="RS256",
                                     headers={"kid": "rogue-" + sub}))


def test_a_known_kid_with_a_foreign_key_is_refused(
        nakama: NakamaClient, issuer: LocalIssuer, settings: Settings, sub: str) -> None:
    kid = jwt.get_unverified_header(issuer.mint(sub))["kid"]
    now = int(time.time())
    claims = {"sub": sub, "aud": settings.identity.audience, "token_use": "id",
              "iss": settings.identity.issuer, "iat": now, "exp": now + 600}
    _refused(nakama, sub, jwt.encode(claims, new_private_key(), algorithm="RS256",
                                     headers={"kid": kid}))


def test_a_wrong_audience_is_refused(nakama: NakamaClient, issuer: LocalIssuer,
                                     sub: str) -> None:
    _refused(nakama, sub, issuer.mint(sub, aud="another-app-client"))


def test_an_access_token_is_refused(nakama: NakamaClient, issuer: LocalIssuer,
                                    sub: str) -> None:
    _refused(nakama, sub, issuer.mint(sub, claims={"token_use": "access"}))


def test_a_tampered_payload_is_refused(nakama: NakamaClient, issuer: LocalIssuer,
                                       sub: str) -> None:
    victim = str(uuid.uuid4())
    header, payload, signature = issuer.mint(sub).split(".")
    forged = _b64({**_claims(f"{header}.{payload}.{signature}"), "sub": victim})
    _refused(nakama, victim, f"{header}.{forged}.{signature}")


def test_alg_none_is_refused(nakama: NakamaClient, issuer: LocalIssuer, sub: str) -> None:
    claims = _claims(issuer.mint(sub))
    _refused(nakama, sub, f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}.")
    kid = jwt.get_unverified_header(issuer.mint(sub))["kid"]
    _refused(nakama, sub, f"{_b64({'alg': 'none', 'kid': kid})}.{_b64(claims)}.")


def test_a_rotated_key_is_picked_up(nakama: NakamaClient, issuer: LocalIssuer,
                                    sub: str) -> None:
    old_token = issuer.mint(sub)
    new_kid = issuer.rotate()
    token = issuer.mint(sub)
    assert jwt.get_unverified_header(token)["kid"] == new_kid
    deadline = time.monotonic() + 10  # unknown kids refetch the JWKS at most once a second
    while True:
        response = nakama.authenticate(sub, token)
        if response.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert response.status_code == 200, response.text
    # The previous key stays published for tokens issued before the rotation.
    assert nakama.authenticate(sub, old_token).status_code == 200


def test_link_custom_needs_a_token_and_other_login_methods_are_off(
        nakama: NakamaClient, issuer: LocalIssuer, settings: Settings, sub: str) -> None:
    session = nakama.login(sub)
    with httpx.Client(base_url=settings.nakama.url, trust_env=False, timeout=10) as http:
        bearer = {"Authorization": f"Bearer {session.token}"}
        victim = str(uuid.uuid4())
        link = http.post("/v2/account/link/custom", headers=bearer, json={"id": victim})
        assert link.status_code == 401, link.text
        link = http.post("/v2/account/link/custom", headers=bearer,
                         json={"id": victim, "vars": {"id_token": issuer.mint(sub)}})
        assert link.status_code == 401, link.text
        device = http.post("/v2/account/authenticate/device", params={"create": "true"},
                           auth=(settings.nakama.server_key.get_secret_value(), ""),
                           json={"id": f"device-{victim}"})
        assert device.status_code == 403, device.text
        email = http.post("/v2/account/authenticate/email", params={"create": "true"},
                          auth=(settings.nakama.server_key.get_secret_value(), ""),
                          json={"email": f"{victim}@example.com", "password": "x" * 12})
        assert email.status_code == 403, email.text


def test_server_to_server_and_user_rpcs_still_work(
        nakama: NakamaClient, settings: Settings, sub: str) -> None:
    with httpx.Client(base_url=settings.nakama.url, trust_env=False, timeout=10) as http:
        reply = http.post("/v2/rpc/mosaic_ping", content=b"{}", params={
            "http_key": settings.nakama.http_key.get_secret_value(), "unwrap": ""})
        assert reply.status_code == 200, reply.text
        assert reply.json()["ok"] is True
    session = nakama.login(sub)
    assert nakama.rpc(session, "mosaic_ping")["user_id"] == session.user_id


def test_login_latency_is_a_few_milliseconds(nakama: NakamaClient, issuer: LocalIssuer,
                                             sub: str) -> None:
    token = issuer.mint(sub)
    nakama.authenticate(sub, token)
    started = time.perf_counter()
    for _ in range(20):
        assert nakama.authenticate(sub, token).status_code == 200
    per_login = (time.perf_counter() - started) / 20
    print(f"login with ID-token check: {per_login * 1000:.1f} ms")
    assert per_login < 0.5  # generous: 2 shared cores under a test run
