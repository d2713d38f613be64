"""Custom-id logins on the real Nakama need a Cognito ID token (nakama/modules/mosaic_auth.lua
-> producers/authhook.py), issued here by the real local OIDC issuer stand-in; only a signed
answer of the hook counts; sessions cannot be refreshed past their maximum lifetime."""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import httpx
import jwt
import pytest

from mosaic.nakama_client import LocalIssuer, NakamaClient
from mosaic.settings import Settings
from producers.authhook import answer_signature
from stack.base import Service
from standins.oidc import new_private_key
from tests.support import second_nakama

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


# -- sessions: a bounded absolute lifetime -------------------------------------------------

def _refresh(settings: Settings, token: str, **extra: Any) -> httpx.Response:
    with httpx.Client(base_url=settings.nakama.url, trust_env=False, timeout=10) as http:
        return http.post("/v2/account/session/refresh", json={"token": token, **extra},
                         auth=(settings.nakama.server_key.get_secret_value(), ""))


def _refresh_token_issued(settings: Settings, session: dict[str, Any], iat: int) -> str:
    """A refresh token as Nakama would have issued it to a login at ``iat`` (signed with the
    server's refresh key): what a client that keeps refreshing still holds much later."""
    claims = _claims(session["refresh_token"])
    now = int(time.time())
    return jwt.encode({**claims, "tid": str(uuid.uuid4()), "iat": iat, "exp": now + 3600},
                      settings.nakama.session_refresh_encryption_key.get_secret_value(),
                      algorithm="HS256")


@pytest.mark.filterwarnings("ignore:The HMAC key is")  # the local refresh key is short
def test_refresh_is_refused_once_the_login_is_older_than_the_max_lifetime(
        nakama: NakamaClient, issuer: LocalIssuer, settings: Settings, sub: str) -> None:
    login = nakama.authenticate(sub, issuer.mint(sub))
    assert login.status_code == 200, login.text
    session = login.json()
    now, limit = int(time.time()), settings.nakama.session_max_lifetime_seconds
    fresh = _refresh(settings, session["refresh_token"], vars={"role": "admin"})
    assert fresh.status_code == 200, fresh.text
    renewed = _claims(fresh.json()["refresh_token"])
    assert renewed["iat"] == _claims(session["refresh_token"])["iat"]  # the login's time
    assert "vrs" not in _claims(fresh.json()["token"])  # a refresh cannot add vars
    # Nakama's own refresh_token_expiry_sec comes from the settings.
    expiry = renewed["exp"] - now
    assert abs(expiry - settings.nakama.refresh_token_expiry_seconds) < 60, expiry
    young = _refresh(settings, _refresh_token_issued(settings, session, now - limit + 120))
    assert young.status_code == 200, young.text
    old = _refresh(settings, _refresh_token_issued(settings, session, now - limit - 5))
    assert old.status_code == 401, old.text
    assert "token" not in old.json() and "log in again" in old.text


# -- the hook's answer must be signed -------------------------------------------------------

class _RogueHook(BaseHTTPRequestHandler):
    """Answers every call with 200 and ``answer(request headers, body)``."""

    answer: ClassVar[Any]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        data = json.dumps(type(self).answer(self.headers, json.loads(body))).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def rogue_nakama(settings: Settings, nakama_stack: Service,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, Any]]:
    """A second Nakama on its own ports (same database, same Lua modules) whose auth hook URL
    points at a server answering 200 to everything; the answer is set per test."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _RogueHook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    identity = settings.identity.model_copy(update={
        "hook_url": f"http://127.0.0.1:{server.server_address[1]}"})
    try:
        with second_nakama(settings, tmp_path_factory.mktemp("rogue-nakama"),
                           identity=identity) as rogue:
            yield rogue, _RogueHook
    finally:
        server.shutdown()


@pytest.mark.stack_scripts
@pytest.mark.parametrize("answer", ["unsigned", "replayed", "wrong key", "signed"])
def test_only_a_signed_hook_answer_logs_in(rogue_nakama: tuple[Settings, Any],
                                           settings: Settings, issuer: LocalIssuer,
                                           answer: str) -> None:
    """A 200 from whatever answers on the hook's URL is not enough: it must carry the hook
    key's signature over this request's nonce and custom id ("signed" is the control)."""
    rogue, hook = rogue_nakama
    cfg = settings.identity
    key = cfg.hook_hmac_key.get_secret_value().encode()

    def reply(headers: Any, body: dict[str, Any]) -> dict[str, Any]:
        nonce, custom_id = headers["X-Mosaic-Nonce"], body["custom_id"]
        signature = {
            "unsigned": None,
            "replayed": answer_signature(key, cfg.hook_hmac_key_id, "0" * 32, custom_id),
            "wrong key": answer_signature(b"not-the-hook-key", cfg.hook_hmac_key_id, nonce,
                                          custom_id),
            "signed": answer_signature(key, cfg.hook_hmac_key_id, nonce, custom_id),
        }[answer]
        return {"ok": True} if signature is None else {"ok": True, "signature": signature}

    hook.answer = staticmethod(reply)
    client = NakamaClient(rogue.nakama, id_tokens=issuer)
    try:
        sub = str(uuid.uuid4())
        got = client.authenticate(sub, "not-even-a-jwt")  # the rogue hook says yes to anything
    finally:
        client.close()
    if answer == "signed":
        assert got.status_code == 200, got.text
        return
    assert got.status_code == 500, got.text
    assert "token" not in got.json() and "temporarily unavailable" in got.text
