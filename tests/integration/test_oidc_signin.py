"""The browser sign-in of the stack's OIDC issuer stand-in (standins/oidc_flow.py) over HTTP:
authorization code + PKCE and refresh tokens, and the ID tokens it hands out log in to the
real Nakama through the same before-hook as the Python client's."""

from __future__ import annotations

import base64
import json
import re
import secrets
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from mosaic.nakama_client import NakamaClient
from mosaic.settings import Settings
from stack.base import Service
from standins.oidc_flow import s256

pytestmark = pytest.mark.integration

REDIRECT = "http://127.0.0.1:8765/"


@pytest.fixture
def http(settings: Settings, nakama_stack: Service) -> Iterator[httpx.Client]:
    # The stack starts the issuer stand-in with Nakama (its auth hook trusts it).
    with httpx.Client(base_url=settings.identity.issuer.rstrip("/"), timeout=10.0,
                      trust_env=False) as client:
        yield client


@pytest.fixture(scope="module")
def nakama(settings: Settings, nakama_stack: Service) -> Iterator[NakamaClient]:
    client = NakamaClient(settings.nakama)
    yield client
    client.close()


def _claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def _authorize_params(settings: Settings, verifier: str, **over: str) -> dict[str, str]:
    return {"client_id": settings.identity.audience, "redirect_uri": REDIRECT,
            "response_type": "code", "scope": "openid", "state": "st-1",
            "code_challenge": s256(verifier), "code_challenge_method": "S256",
            "nonce": "n-1", **over}


def _sign_in(http: httpx.Client, params: dict[str, str], sub: str) -> str:
    """The form's POST (as the browser sends it) -> the code from the redirect."""
    resp = http.post("/oauth2/authorize", data={**params, "sub": sub})
    assert resp.status_code == 302, resp.text
    location = urlsplit(resp.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == REDIRECT
    answer = parse_qs(location.query)
    assert answer["state"] == ["st-1"]
    return answer["code"][0]


def _token(http: httpx.Client, **fields: str) -> httpx.Response:
    return http.post("/oauth2/token", data=fields)


def test_discovery_names_the_flow_and_allows_browsers(http: httpx.Client,
                                                      settings: Settings) -> None:
    resp = http.get("/.well-known/openid-configuration", headers={"Origin": REDIRECT[:-1]})
    doc = resp.json()
    assert resp.headers["access-control-allow-origin"] == "*"
    issuer = settings.identity.issuer.rstrip("/")
    assert doc["authorization_endpoint"] == f"{issuer}/oauth2/authorize"
    assert doc["token_endpoint"] == f"{issuer}/oauth2/token"
    assert doc["code_challenge_methods_supported"] == ["S256"]
    assert set(doc["grant_types_supported"]) == {"authorization_code", "refresh_token"}
    preflight = http.options("/oauth2/token", headers={
        "Origin": REDIRECT[:-1], "Access-Control-Request-Method": "POST"})
    assert preflight.status_code == 204
    assert "POST" in preflight.headers["access-control-allow-methods"]


def test_code_and_pkce_give_an_id_token_that_logs_in_to_nakama(
        http: httpx.Client, settings: Settings, nakama: NakamaClient) -> None:
    sub, verifier = str(uuid.uuid4()), secrets.token_urlsafe(48)
    params = _authorize_params(settings, verifier)
    page = http.get("/oauth2/authorize", params=params)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for test_id in ("signin-form", "signin-user", "signin-submit"):
        assert f'data-testid="{test_id}"' in page.text
    code = _sign_in(http, params, sub)
    resp = _token(http, grant_type="authorization_code", code=code, redirect_uri=REDIRECT,
                  client_id=settings.identity.audience, code_verifier=verifier)
    assert resp.status_code == 200, resp.text
    tokens = resp.json()
    claims = _claims(tokens["id_token"])
    assert (claims["sub"], claims["aud"], claims["nonce"], claims["token_use"]) == (
        sub, settings.identity.audience, "n-1", "id")
    session = nakama.login(sub, tokens["id_token"])
    assert session.custom_id == sub
    again = _token(http, grant_type="authorization_code", code=code, redirect_uri=REDIRECT,
                   client_id=settings.identity.audience, code_verifier=verifier)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant", \
        "a code works once"


def test_refresh_token_gives_a_new_id_token_with_the_same_sign_in(
        http: httpx.Client, settings: Settings, nakama: NakamaClient) -> None:
    sub, verifier = str(uuid.uuid4()), secrets.token_urlsafe(48)
    code = _sign_in(http, _authorize_params(settings, verifier), sub)
    first = _token(http, grant_type="authorization_code", code=code, redirect_uri=REDIRECT,
                   client_id=settings.identity.audience, code_verifier=verifier).json()
    resp = _token(http, grant_type="refresh_token", refresh_token=first["refresh_token"],
                  client_id=settings.identity.audience)
    assert resp.status_code == 200, resp.text
    refreshed = _claims(resp.json()["id_token"])
    assert refreshed["sub"] == sub
    assert refreshed["auth_time"] == _claims(first["id_token"])["auth_time"]
    assert refreshed["jti"] != _claims(first["id_token"])["jti"]
    assert nakama.login(sub, resp.json()["id_token"]).custom_id == sub
    bad = _token(http, grant_type="refresh_token", refresh_token="nope",
                 client_id=settings.identity.audience)
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_grant"


@pytest.mark.parametrize(("case", "fields", "error"), [
    ("wrong verifier", {"code_verifier": "x" * 50}, "invalid_grant"),
    ("other redirect_uri", {"redirect_uri": "http://127.0.0.1:9/"}, "invalid_grant"),
    ("unknown client", {"client_id": "someone-else"}, "invalid_client"),
    ("unknown grant type", {"grant_type": "password"}, "unsupported_grant_type"),
])
def test_token_refusals(http: httpx.Client, settings: Settings, case: str,
                        fields: dict[str, str], error: str) -> None:
    verifier = secrets.token_urlsafe(48)
    code = _sign_in(http, _authorize_params(settings, verifier), str(uuid.uuid4()))
    body = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
            "client_id": settings.identity.audience, "code_verifier": verifier, **fields}
    resp = _token(http, **body)
    assert resp.status_code in (400, 401), (case, resp.text)
    assert resp.json()["error"] == error, case
    assert "id_token" not in resp.json()


def test_sign_in_form_refusals(http: httpx.Client, settings: Settings) -> None:
    params = _authorize_params(settings, secrets.token_urlsafe(48))
    bad_sub = http.post("/oauth2/authorize", data={**params, "sub": "a b/../c"})
    assert bad_sub.status_code == 400 and "location" not in bad_sub.headers
    assert "a user id is 6-128 letters" in bad_sub.text
    assert 'data-testid="signin-form"' in bad_sub.text, "the form is shown again"
    foreign = http.get("/oauth2/authorize",
                       params={**params, "redirect_uri": "https://evil.example/cb"})
    assert foreign.status_code == 400 and "location" not in foreign.headers
    assert "signin-form" not in foreign.text
    no_pkce = http.get("/oauth2/authorize", params={**params, "code_challenge_method": "plain"})
    assert no_pkce.status_code == 302
    answer = parse_qs(urlsplit(no_pkce.headers["location"]).query)
    assert answer["error"] == ["invalid_request"] and "PKCE" in answer["error_description"][0]


def test_the_form_offers_recently_seen_users_to_pick(http: httpx.Client,
                                                      settings: Settings) -> None:
    sub = str(uuid.uuid4())
    assert http.post("/mint", json={"sub": sub}).status_code == 200
    page = http.get("/oauth2/authorize",
                    params=_authorize_params(settings, secrets.token_urlsafe(48))).text
    picks = re.findall(r'name="pick" value="([^"]+)" data-testid="signin-pick"', page)
    assert picks[0] == sub
    verifier = secrets.token_urlsafe(48)
    params = _authorize_params(settings, verifier)
    resp = http.post("/oauth2/authorize", data={**params, "sub": "", "pick": sub})
    code = parse_qs(urlsplit(resp.headers["location"]).query)["code"][0]
    tokens = _token(http, grant_type="authorization_code", code=code, redirect_uri=REDIRECT,
                    client_id=settings.identity.audience, code_verifier=verifier).json()
    assert _claims(tokens["id_token"])["sub"] == sub, "the picked user signs in"
