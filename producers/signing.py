"""HMAC-SHA256 request signing shared by the ingress and its callers (Nakama, tests, bench).

The signed string is ``METHOD\\nPATH\\nTIMESTAMP\\nNONCE\\nSHA256_HEX(BODY)``. The path is the
raw request path without the query string; the timestamp is integer Unix seconds. The
signature is lower-case hex in ``X-Mosaic-Signature``. The Lua module builds the same string.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from producers.errors import AuthError, Unavailable

TIMESTAMP_HEADER = "x-mosaic-timestamp"
NONCE_HEADER = "x-mosaic-nonce"
SIGNATURE_HEADER = "x-mosaic-signature"

_NONCE_RE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
_SIGNATURE_RE = re.compile(r"^[0-9a-f]{64}$")
_TIMESTAMP_RE = re.compile(r"^[0-9]{1,12}$")

Clock = Callable[[], float]


def body_digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def canonical(method: str, path: str, timestamp: int, nonce: str, body: bytes) -> bytes:
    return f"{method.upper()}\n{path}\n{timestamp}\n{nonce}\n{body_digest(body)}".encode()


def sign(key: bytes, method: str, path: str, timestamp: int, nonce: str,  # noqa: PLR0917
         body: bytes) -> str:
    message = canonical(method, path, timestamp, nonce, body)
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def signed_headers(key: bytes, method: str, path: str, body: bytes,
                   *, now: float | None = None, nonce: str | None = None) -> dict[str, str]:
    """Headers a client adds to a request (used by tests, the bench and tooling)."""
    ts = int(time.time() if now is None else now)
    nonce = nonce or secrets.token_hex(16)
    return {
        TIMESTAMP_HEADER: str(ts),
        NONCE_HEADER: nonce,
        SIGNATURE_HEADER: sign(key, method, path, ts, nonce, body),
    }


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

    def __init__(self, key: bytes, nonces: NonceCache, *, skew_seconds: int, clock: Clock) -> None:
        self._key = key
        self._nonces = nonces
        self._skew = skew_seconds
        self._clock = clock

    def authenticate(self, method: str, path: str, headers: Mapping[str, str],
                     body: bytes) -> SignedRequest:
        """Check the headers, the window, the signature and that the nonce is unused,
        storing nothing: the caller applies its rate limits, then calls :meth:`remember`,
        so a flood of signed requests cannot fill the nonce cache past the limits."""
        ts_raw = headers.get(TIMESTAMP_HEADER, "")
        nonce = headers.get(NONCE_HEADER, "")
        given = headers.get(SIGNATURE_HEADER, "")
        if not (_TIMESTAMP_RE.fullmatch(ts_raw) and _NONCE_RE.fullmatch(nonce)
                and _SIGNATURE_RE.fullmatch(given)):
            raise AuthError("missing or malformed signature headers")
        timestamp = int(ts_raw)
        if abs(self._clock() - timestamp) > self._skew:
            raise AuthError("timestamp outside the allowed window")
        expected = sign(self._key, method, path, timestamp, nonce, body)
        if not hmac.compare_digest(expected, given):
            raise AuthError("bad signature")
        if self._nonces.seen(timestamp, nonce):
            raise AuthError("replayed nonce")
        return SignedRequest(timestamp, nonce)

    def remember(self, signed: SignedRequest) -> None:
        """Store the nonce (single use); a concurrent twin that got here first wins."""
        if not self._nonces.add(signed.timestamp, signed.nonce):
            raise AuthError("replayed nonce")

    def verify(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> None:
        """authenticate + remember, for callers without rate limits of their own."""
        self.remember(self.authenticate(method, path, headers, body))
