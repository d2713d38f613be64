"""ID-token verification rules and the JWKS cache (keys made here; JWKS served by a fake
fetch function, a fake monotonic clock)."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import jwt
import pytest

from mosaic.settings import IdentitySettings
from producers.idtoken import (
    IdTokenVerifier,
    InvalidIdToken,
    JwksCache,
    JwksUnavailable,
    parse_jwks,
)
from standins.oidc import new_private_key, public_jwk

pytestmark = pytest.mark.unit

ISSUER = "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_TEST"
AUD = "client-123"
SUB = "5b8c1f3e-0a7d-4c59-9f0e-6a2f4e1b7c11"
KEY_A, KEY_B, ROGUE = new_private_key(), new_private_key(), new_private_key()


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


class Jwks:
    """What the JWKS endpoint serves right now; ``down`` makes it fail."""

    def __init__(self, *keys: tuple[str, Any]) -> None:
        self.keys = list(keys)
        self.down = False
        self.calls = 0

    async def __call__(self, url: str) -> Any:
        self.calls += 1
        if self.down:
            raise OSError("connection refused")
        return {"keys": [public_jwk(key, kid) for kid, key in self.keys]}


def _cfg() -> IdentitySettings:
    return IdentitySettings(issuer=ISSUER, audience=AUD, leeway_seconds=30)


def _verifier(jwks: Jwks, clock: Clock) -> IdTokenVerifier:
    cache = JwksCache("https://jwks", jwks, clock=clock, cache_seconds=3600,
                      min_refetch_seconds=5, max_stale_seconds=7200)
    return IdTokenVerifier(_cfg(), cache)


def _token(key: Any = KEY_A, kid: str = "a", **claims: Any) -> str:
    now = int(time.time())
    body = {"sub": SUB, "aud": AUD, "iss": ISSUER, "token_use": "id", "iat": now,
            "exp": now + 600, **claims}
    body = {k: v for k, v in body.items() if v is not None}
    return jwt.encode(body, key, algorithm="RS256", headers={"kid": kid})


def _run(verifier: IdTokenVerifier, token: str, sub: str = SUB) -> dict[str, Any]:
    return asyncio.run(verifier.verify(token, sub))


def _refused(verifier: IdTokenVerifier, token: str, sub: str = SUB) -> str:
    with pytest.raises(InvalidIdToken) as info:
        _run(verifier, token, sub)
    return str(info.value)


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_a_valid_token_passes() -> None:
    claims = _run(_verifier(Jwks(("a", KEY_A)), Clock()), _token())
    assert claims["sub"] == SUB


@pytest.mark.parametrize(("claims", "reason"), [
    ({"sub": "someone-else-0001"}, "subject"),
    ({"aud": "other-client"}, "InvalidAudience"),
    ({"iss": "https://evil.example"}, "InvalidIssuer"),
    ({"token_use": "access"}, "not an ID token"),
    ({"token_use": None}, "not an ID token"),
    ({"exp": int(time.time()) - 31}, "expired"),
    ({"exp": None}, "MissingRequiredClaim"),
    ({"iat": None}, "MissingRequiredClaim"),
])
def test_claims_are_checked(claims: dict[str, Any], reason: str) -> None:
    assert reason in _refused(_verifier(Jwks(("a", KEY_A)), Clock()), _token(**claims))


def test_expiry_leeway_is_small() -> None:
    verifier = _verifier(Jwks(("a", KEY_A)), Clock())
    _run(verifier, _token(exp=int(time.time()) - 10))  # inside the 30 s leeway
    _refused(verifier, _token(exp=int(time.time()) - 40))


def test_tampered_payload_alg_none_and_foreign_keys_are_refused() -> None:
    verifier = _verifier(Jwks(("a", KEY_A)), Clock())
    header, _payload, signature = _token().split(".")
    forged = _b64({"sub": "victim-000001", "aud": AUD, "iss": ISSUER, "token_use": "id",
                   "iat": int(time.time()), "exp": int(time.time()) + 600})
    assert "InvalidSignature" in _refused(verifier, f"{header}.{forged}.{signature}",
                                          "victim-000001")
    none_header = _b64({"alg": "none", "typ": "JWT", "kid": "a"})
    assert "algorithm" in _refused(verifier, f"{none_header}.{forged}.", "victim-000001")
    hs_token = jwt.encode({"sub": SUB}, "a-shared-secret-of-32-bytes-length!",
                          algorithm="HS256", headers={"kid": "a"})
    assert "algorithm" in _refused(verifier, hs_token)
    assert "unknown signing key" in _refused(verifier, _token(ROGUE, kid="rogue"))
    # A foreign key under a known kid fails the signature check.
    assert "InvalidSignature" in _refused(verifier, _token(ROGUE, kid="a"))
    for junk in ("", "x", "a.b.c", "a" * 9000):
        _refused(verifier, junk)


def test_a_rotated_key_is_fetched_once_and_made_up_kids_are_throttled() -> None:
    jwks, clock = Jwks(("a", KEY_A)), Clock()
    verifier = _verifier(jwks, clock)
    _run(verifier, _token())
    assert jwks.calls == 1
    for i in range(20):  # made-up kids: at most one fetch per min_refetch_seconds
        _refused(verifier, _token(ROGUE, kid=f"junk-{i}"))
    assert jwks.calls == 1  # the first fetch happened just now
    jwks.keys.append(("b", KEY_B))  # the pool rotates: new key published
    clock.now += 6
    _run(verifier, _token(KEY_B, kid="b"))
    assert jwks.calls == 2
    _run(verifier, _token(KEY_B, kid="b"))
    _run(verifier, _token())
    assert jwks.calls == 2  # both keys cached now


def test_jwks_down_uses_cached_keys_then_fails_closed() -> None:
    jwks, clock = Jwks(("a", KEY_A)), Clock()
    verifier = _verifier(jwks, clock)
    _run(verifier, _token())
    jwks.down = True
    clock.now += 3600 + 10  # cache expired: refresh fails, stale keys still serve
    _run(verifier, _token())
    clock.now += 7200  # past max stale
    with pytest.raises(JwksUnavailable):
        _run(verifier, _token())


def test_jwks_down_from_the_start_is_unavailable_not_a_pass() -> None:
    jwks = Jwks(("a", KEY_A))
    jwks.down = True
    with pytest.raises(JwksUnavailable):
        _run(_verifier(jwks, Clock()), _token())


def test_parse_jwks_keeps_rsa_signing_keys_only() -> None:
    good = public_jwk(KEY_A, "a")
    keys = parse_jwks({"keys": [good, {**good, "kid": "enc", "use": "enc"},
                                {**good, "kid": "hs", "alg": "HS256"},
                                {"kty": "oct", "k": "c2VjcmV0", "kid": "oct"},
                                {**good, "kid": ""}, "junk"]})
    assert list(keys) == ["a"]
    with pytest.raises(ValueError, match="JWKS"):
        parse_jwks({"nope": []})
