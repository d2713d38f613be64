"""Verifying Cognito ID tokens: RS256 against the user pool's JWKS, claims, subject.

Rules (Cognito's "Verifying a JSON Web Token"): the header's ``alg`` must be RS256 and its
``kid`` one of the pool's published keys; the signature must verify; ``iss`` is the pool,
``aud`` the app client id, ``token_use`` is ``id``; ``exp`` is in the future (with a small
leeway for clock skew); ``sub`` must equal the custom id the caller logs in with.

The JWKS is cached: refreshed after ``jwks_cache_seconds``; an unknown ``kid`` (a rotated
key) triggers a refresh at most once per ``jwks_min_refetch_seconds`` (so tokens with made
up kids cannot turn every login into a JWKS fetch). When the JWKS endpoint is down, cached
keys stay in use for ``jwks_max_stale_seconds``; with no usable keys logins fail closed
(:class:`JwksUnavailable`, the login is refused with "unavailable", never let through).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import jwt

from mosaic.settings import IdentitySettings

log = logging.getLogger(__name__)

MAX_TOKEN_BYTES = 8192
ALGORITHM = "RS256"

Clock = Callable[[], float]
FetchJson = Callable[[str], Awaitable[Any]]


class InvalidIdToken(Exception):
    """The token does not prove the identity; the message is safe to log (no token data)."""


class JwksUnavailable(Exception):
    """No usable signing keys right now (JWKS endpoint down and nothing cached)."""


def jwks_url(cfg: IdentitySettings) -> str:
    return cfg.jwks_url or f"{cfg.issuer.rstrip('/')}/.well-known/jwks.json"


def parse_jwks(document: Any) -> dict[str, Any]:
    """kid -> public key for every RSA signing key in a JWKS document."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWKS document")
    keys: dict[str, Any] = {}
    for entry in document["keys"]:
        if not isinstance(entry, dict) or entry.get("kty") != "RSA":
            continue
        if entry.get("use", "sig") != "sig" or entry.get("alg", ALGORITHM) != ALGORITHM:
            continue
        kid = entry.get("kid")
        if not isinstance(kid, str) or not kid:
            continue
        try:
            keys[kid] = jwt.PyJWK.from_dict(entry, algorithm=ALGORITHM).key
        except (jwt.PyJWKError, ValueError, TypeError):
            log.warning("JWKS: skipped a malformed key")
    return keys


class JwksCache:
    def __init__(self, url: str, fetch: FetchJson, *, clock: Clock = time.monotonic,
                 cache_seconds: float = 3600.0, min_refetch_seconds: float = 1.0,
                 max_stale_seconds: float = 86400.0) -> None:
        self._url = url
        self._fetch = fetch
        self._clock = clock
        self._cache_seconds = cache_seconds
        self._min_refetch = min_refetch_seconds
        self._max_stale = max_stale_seconds
        self._keys: dict[str, Any] = {}
        self._fetched_at: float | None = None  # last successful fetch
        self._tried_at: float | None = None  # last attempt, successful or not
        self._lock = asyncio.Lock()
        self.fetches = 0

    def __len__(self) -> int:
        return len(self._keys)

    async def key(self, kid: str) -> Any:
        now = self._clock()
        fresh = self._fetched_at is not None and now - self._fetched_at < self._cache_seconds
        if kid in self._keys and fresh:
            return self._keys[kid]
        await self._refresh(force=kid not in self._keys)
        if kid in self._keys:
            if not self._usable():
                raise JwksUnavailable("signing keys are too old and the JWKS is unreachable")
            return self._keys[kid]
        if not self._usable():
            raise JwksUnavailable("no signing keys (the JWKS endpoint did not answer)")
        raise InvalidIdToken("unknown signing key")

    def _usable(self) -> bool:
        return self._fetched_at is not None and \
            self._clock() - self._fetched_at < self._cache_seconds + self._max_stale

    async def _refresh(self, *, force: bool) -> None:
        async with self._lock:  # concurrent logins share one fetch
            now = self._clock()
            if self._tried_at is not None and now - self._tried_at < self._min_refetch:
                return  # fetched (or failed) very recently
            if not force and self._fetched_at is not None and \
                    now - self._fetched_at < self._cache_seconds:
                return
            self._tried_at = now
            self.fetches += 1
            try:
                keys = parse_jwks(await self._fetch(self._url))
            except Exception as exc:  # noqa: BLE001 - any failure: keep the cached keys
                log.warning("JWKS fetch failed (%s); keeping %d cached keys",
                            type(exc).__name__, len(self._keys))
                return
            if not keys:
                log.warning("JWKS document has no usable RS256 keys; keeping the cached ones")
                return
            self._keys, self._fetched_at = keys, now


class IdTokenVerifier:
    def __init__(self, cfg: IdentitySettings, jwks: JwksCache) -> None:
        self._issuer = cfg.issuer.rstrip("/")
        self._audience = cfg.audience
        self._leeway = cfg.leeway_seconds
        self.jwks = jwks

    async def verify(self, token: str, expected_sub: str) -> dict[str, Any]:
        """The token's claims, or raise InvalidIdToken / JwksUnavailable."""
        if not token or len(token) > MAX_TOKEN_BYTES:
            raise InvalidIdToken("missing or oversized token")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise InvalidIdToken("malformed token") from exc
        if header.get("alg") != ALGORITHM:
            raise InvalidIdToken("algorithm not allowed")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise InvalidIdToken("no key id")
        key = await self.jwks.key(kid)
        try:
            claims: dict[str, Any] = jwt.decode(
                token, key, algorithms=[ALGORITHM], audience=self._audience,
                issuer=self._issuer, leeway=self._leeway,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]})
        except jwt.ExpiredSignatureError as exc:
            raise InvalidIdToken("token expired") from exc
        except jwt.InvalidTokenError as exc:
            raise InvalidIdToken(f"token rejected ({type(exc).__name__})") from exc
        if claims.get("token_use") != "id":
            raise InvalidIdToken("not an ID token")
        sub = claims.get("sub")
        if not isinstance(sub, str) or not hmac.compare_digest(sub.encode(),
                                                                expected_sub.encode()):
            raise InvalidIdToken("token subject is not the custom id")
        return claims


def http_fetch(timeout_seconds: float) -> FetchJson:
    """A JWKS fetcher over HTTPS (no proxies from the environment)."""
    import httpx

    client = httpx.AsyncClient(timeout=timeout_seconds, trust_env=False,
                               follow_redirects=False)

    async def fetch(url: str) -> Any:
        response = await client.get(url, headers={"Accept": "application/json"})
        response.raise_for_status()
        return response.json()

    return fetch


def build_verifier(cfg: IdentitySettings, fetch: FetchJson | None = None,
                   clock: Clock = time.monotonic) -> IdTokenVerifier:
    cache = JwksCache(jwks_url(cfg), fetch or http_fetch(cfg.jwks_timeout_seconds),
                      clock=clock, cache_seconds=cfg.jwks_cache_seconds,
                      min_refetch_seconds=cfg.jwks_min_refetch_seconds,
                      max_stale_seconds=cfg.jwks_max_stale_seconds)
    return IdTokenVerifier(cfg, cache)
