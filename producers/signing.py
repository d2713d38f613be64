"""HMAC-SHA256 request signing shared by the ingress and its callers (Nakama, tests, bench).

The signed string is::

    METHOD \n PATH \n CANONICAL_QUERY \n KEY_ID \n TIMESTAMP \n NONCE \n SHA256_HEX(BODY)

PATH is the raw request path without the query string. CANONICAL_QUERY is the query string
as the application reads it (``parse_qsl``: split on ``&``, ``+`` is a space, percent-decoded,
blank values kept), each name and value percent-encoded again (UTF-8; only
``A-Za-z0-9-._~`` stay literal; upper-case hex), pairs sorted by encoded name then value,
joined ``name=value`` with ``&`` (empty when there is no query). KEY_ID names the key
(``X-Mosaic-Key-Id``); the verifier holds a small set of active keys by id, so a key can be
rotated with two keys accepted at once. The timestamp is integer Unix seconds; the signature
is lower-case hex in ``X-Mosaic-Signature``. nakama/modules/mosaic_signing.lua builds the same
string.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote

from pydantic import SecretStr

from mosaic.settings import DEFAULT_HMAC_KEY_ID, KEY_ID_PATTERN
from producers.errors import AuthError, Unavailable

TIMESTAMP_HEADER = "x-mosaic-timestamp"
NONCE_HEADER = "x-mosaic-nonce"
SIGNATURE_HEADER = "x-mosaic-signature"
KEY_ID_HEADER = "x-mosaic-key-id"

_NONCE_RE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
_SIGNATURE_RE = re.compile(r"^[0-9a-f]{64}$")
_TIMESTAMP_RE = re.compile(r"^[0-9]{1,12}$")
_KEY_ID_RE = re.compile(KEY_ID_PATTERN)

Clock = Callable[[], float]


def body_digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def _encode(text: str) -> str:
    return quote(text, safe="", encoding="utf-8", errors="strict")


def canonical_query(query: str) -> str:
    """The query string as the application will read it, in one spelling: decoded like
    Starlette/FastAPI decode it, re-encoded, sorted. Two queries that read the same sign the
    same; any change to what is read changes the signature."""
    pairs = parse_qsl(query, keep_blank_values=True)
    return "&".join(f"{name}={value}" for name, value in
                    sorted((_encode(name), _encode(value)) for name, value in pairs))


def canonical(method: str, path: str, timestamp: int, nonce: str,
              body: bytes, *, key_id: str = DEFAULT_HMAC_KEY_ID, query: str = "") -> bytes:
    return (f"{method.upper()}\n{path}\n{canonical_query(query)}\n{key_id}\n{timestamp}\n"
            f"{nonce}\n{body_digest(body)}").encode()


def sign(key: bytes, method: str, path: str, timestamp: int, nonce: str,  # noqa: PLR0917
         body: bytes, *, key_id: str = DEFAULT_HMAC_KEY_ID, query: str = "") -> str:
    message = canonical(method, path, timestamp, nonce, body, key_id=key_id, query=query)
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def signed_headers(key: bytes, method: str, path: str, body: bytes,
                   *, key_id: str = DEFAULT_HMAC_KEY_ID, query: str = "",
                   now: float | None = None, nonce: str | None = None) -> dict[str, str]:
    """Headers a client adds to a request (used by tests, the bench and tooling).
    ``path`` is without the query string; pass the query (as sent) in ``query``."""
    ts = int(time.time() if now is None else now)
    nonce = nonce or secrets.token_hex(16)
    return {
        KEY_ID_HEADER: key_id,
        TIMESTAMP_HEADER: str(ts),
        NONCE_HEADER: nonce,
        SIGNATURE_HEADER: sign(key, method, path, ts, nonce, body, key_id=key_id, query=query),
    }


def keyring(key_id: str, key: SecretStr, previous: Mapping[str, SecretStr]) -> dict[str, bytes]:
    """The keys a verifier accepts, by id: the current one and those still being retired."""
    keys = {kid: secret.get_secret_value().encode() for kid, secret in previous.items()}
    keys[key_id] = key.get_secret_value().encode()
    return keys


@dataclass(frozen=True)
class SignedRequest:
    timestamp: int
    nonce: str


class NonceCache:
    """Remembers (timestamp, nonce) pairs while their timestamp is inside the window.

    A replay must reuse the signed timestamp, so only that second's bucket is looked up and
    whole seconds expire at once. When full of live entries it refuses (fail closed) rather
    than forgetting a nonce that could then be replayed.
    """

    def __init__(self, *, window_seconds: int, max_entries: int, clock: Clock) -> None:
        self._window = window_seconds
        self._max = max_entries
        self._clock = clock
        self._buckets: dict[int, set[str]] = {}
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def seen(self, timestamp: int, nonce: str) -> bool:
        """True if remembered (read only: stores nothing)."""
        bucket = self._buckets.get(timestamp)
        return bucket is not None and nonce in bucket

    def add(self, timestamp: int, nonce: str) -> bool:
        """True if new (and now remembered); False if seen before or the cache is full."""
        self._expire()
        bucket = self._buckets.get(timestamp)
        if bucket is not None and nonce in bucket:
            return False
        if self._size >= self._max:
            raise Unavailable("nonce cache full", retry_after_seconds=1.0)
        if bucket is None:
            bucket = self._buckets[timestamp] = set()
        bucket.add(nonce)
        self._size += 1
        return True

    def _expire(self) -> None:
        oldest_live = int(self._clock()) - self._window
        if not self._buckets or min(self._buckets) >= oldest_live:
            return
        for ts in [t for t in self._buckets if t < oldest_live]:
            self._size -= len(self._buckets.pop(ts))


class Verifier:
    """Checks one request's signature headers; raises AuthError (401) on any failure."""

    def __init__(self, keys: Mapping[str, bytes], nonces: NonceCache, *, skew_seconds: int,
                 clock: Clock) -> None:
        if not keys or any(not _KEY_ID_RE.fullmatch(kid) or not key
                           for kid, key in keys.items()):
            raise ValueError("a verifier needs at least one key, each with a valid id")
        self._keys = dict(keys)
        self._nonces = nonces
        self._skew = skew_seconds
        self._clock = clock

    @property
    def key_ids(self) -> frozenset[str]:
        return frozenset(self._keys)

    def authenticate(self, method: str, path: str, headers: Mapping[str, str],
                     body: bytes, *, query: str = "") -> SignedRequest:
        """Check the headers, the key id, the window, the signature (over the path and the
        query as sent) and that the nonce is unused, storing nothing: the caller applies its
        rate limits, then calls :meth:`remember`, so a flood of signed requests cannot fill
        the nonce cache past the limits."""
        key_id = headers.get(KEY_ID_HEADER, "")
        ts_raw = headers.get(TIMESTAMP_HEADER, "")
        nonce = headers.get(NONCE_HEADER, "")
        given = headers.get(SIGNATURE_HEADER, "")
        if not (_KEY_ID_RE.fullmatch(key_id) and _TIMESTAMP_RE.fullmatch(ts_raw)
                and _NONCE_RE.fullmatch(nonce) and _SIGNATURE_RE.fullmatch(given)):
            raise AuthError("missing or malformed signature headers")
        key = self._keys.get(key_id)
        if key is None:
            raise AuthError("unknown key id")
        timestamp = int(ts_raw)
        if abs(self._clock() - timestamp) > self._skew:
            raise AuthError("timestamp outside the allowed window")
        try:
            expected = sign(key, method, path, timestamp, nonce, body, key_id=key_id,
                            query=query)
        except UnicodeError as exc:  # a query parse_qsl could not decode strictly
            raise AuthError("bad signature") from exc
        if not hmac.compare_digest(expected, given):
            raise AuthError("bad signature")
        if self._nonces.seen(timestamp, nonce):
            raise AuthError("replayed nonce")
        return SignedRequest(timestamp, nonce)

    def remember(self, signed: SignedRequest) -> None:
        """Store the nonce (single use); a concurrent twin that got here first wins."""
        if not self._nonces.add(signed.timestamp, signed.nonce):
            raise AuthError("replayed nonce")

    def verify(self, method: str, path: str, headers: Mapping[str, str], body: bytes, *,
               query: str = "") -> None:
        """authenticate + remember, for callers without rate limits of their own."""
        self.remember(self.authenticate(method, path, headers, body, query=query))
