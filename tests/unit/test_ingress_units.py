"""Pure units of the ingress: signing, nonce cache, token buckets (fake clock)."""

from __future__ import annotations

import pytest

from mosaic.ratelimit import KeyedRateLimiter, TokenBucket
from producers.errors import AuthError, Unavailable
from producers.signing import (
    KEY_ID_HEADER,
    NONCE_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    NonceCache,
    Verifier,
    canonical,
    canonical_query,
    signed_headers,
)

pytestmark = pytest.mark.unit

KEY = b"test-key"
OLD_KEY = b"old-test-key"
KEYS = {"local-1": KEY, "old-1": OLD_KEY}
NOW = 1_800_000_000.0


class FakeClock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _verifier(clock: FakeClock, max_entries: int = 100) -> Verifier:
    nonces = NonceCache(window_seconds=300, max_entries=max_entries, clock=clock)
    return Verifier(KEYS, nonces, skew_seconds=300, clock=clock)


def test_canonical_string_is_documented_layout() -> None:
    text = canonical("post", "/user/u1/opt-in-embedding", 12, "n" * 16, b"", key_id="k-2",
                     query="b=2&a=x+y").decode()
    assert text.split("\n") == [
        "POST", "/user/u1/opt-in-embedding", "a=x%20y&b=2", "k-2", "12", "n" * 16,
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    ]
    assert canonical("GET", "/p", 1, "n" * 16, b"").decode().split("\n")[2:4] == [
        "", "local-1"]


@pytest.mark.parametrize(("query", "expected"), [
    ("", ""),
    ("a=1", "a=1"),
    ("b=2&a=1", "a=1&b=2"),
    ("a=2&a=1&a=10", "a=1&a=10&a=2"),  # repeated names: sorted by value too
    ("a", "a="),  # a name without "=" reads as an empty value
    ("a=&&b=", "a=&b="),  # empty pieces are not parameters
    ("x=a+b", "x=a%20b"),  # "+" is a space, as the application reads it
    ("x=a%2Bb", "x=a%2Bb"),
    ("x=%7e%41", "x=~A"),  # unreserved characters literal, whatever the spelling
    ("x=%c3%a9", "x=%C3%A9"),  # upper-case hex
    ("x=\u00e9", "x=%C3%A9"),
    ("%2F=/?", "%2F=%2F%3F"),
    ("a-b=1&a=1&a.b=1&a_b=1&a~b=1", "a=1&a-b=1&a.b=1&a_b=1&a~b=1"),
])
def test_canonical_query(query: str, expected: str) -> None:
    assert canonical_query(query) == expected


@pytest.mark.parametrize(("signed", "sent", "ok"), [
    ("a=1&b=2", "b=2&a=1", True),  # same parameters, another order
    ("a=%7E", "a=~", True),  # same value, another spelling
    ("a=1", "a=2", False),  # changed value
    ("a=1", "a=1&b=2", False),  # added parameter
    ("a=1&a=2", "a=1", False),  # removed repeat
    ("", "a=1", False),  # a query on an unsigned request
    ("a=x%20y", "a=x+y", True),
    ("a=x%2By", "a=x+y", False),  # "+" and "%2B" read differently
])
def test_signature_covers_the_query(signed: str, sent: str, ok: bool) -> None:
    verifier = _verifier(FakeClock())
    headers = signed_headers(KEY, "GET", "/p", b"", query=signed, now=NOW)
    if ok:
        verifier.verify("GET", "/p", headers, b"", query=sent)
    else:
        with pytest.raises(AuthError, match="bad signature"):
            verifier.verify("GET", "/p", headers, b"", query=sent)


def test_every_active_key_is_accepted_by_its_id() -> None:
    verifier = _verifier(FakeClock())
    for key_id, key in KEYS.items():
        headers = signed_headers(key, "POST", "/p", b"{}", key_id=key_id, now=NOW)
        assert headers[KEY_ID_HEADER] == key_id
        verifier.verify("POST", "/p", headers, b"{}")
    assert verifier.key_ids == {"local-1", "old-1"}


@pytest.mark.parametrize(("key", "key_id", "reason"), [
    (KEY, "old-1", "bad signature"),  # another active key's id
    (OLD_KEY, "local-1", "bad signature"),
    (KEY, "retired-0", "unknown key id"),
    (b"anything", "nobody", "unknown key id"),
])
def test_key_id_must_name_the_key_that_signed(key: bytes, key_id: str, reason: str) -> None:
    verifier = _verifier(FakeClock())
    headers = signed_headers(key, "POST", "/p", b"{}", key_id=key_id, now=NOW)
    with pytest.raises(AuthError, match=reason):
        verifier.verify("POST", "/p", headers, b"{}")


def test_the_key_id_is_signed() -> None:
    # The same key under two ids: the id is part of the signed string, so it cannot be
    # swapped even where the keys are equal.
    nonces = NonceCache(window_seconds=300, max_entries=10, clock=FakeClock())
    verifier = Verifier({"a": KEY, "b": KEY}, nonces, skew_seconds=300, clock=FakeClock())
    headers = signed_headers(KEY, "POST", "/p", b"{}", key_id="a", now=NOW)
    with pytest.raises(AuthError, match="bad signature"):
        verifier.verify("POST", "/p", {**headers, KEY_ID_HEADER: "b"}, b"{}")


def test_a_verifier_needs_valid_keys() -> None:
    nonces = NonceCache(window_seconds=300, max_entries=10, clock=FakeClock())
    for keys in ({}, {"bad id": KEY}, {"k": b""}):
        with pytest.raises(ValueError, match="key"):
            Verifier(keys, nonces, skew_seconds=300, clock=FakeClock())


def test_valid_signature_passes_once_then_is_a_replay() -> None:
    clock = FakeClock()
    verifier = _verifier(clock)
    headers = signed_headers(KEY, "POST", "/p", b"{}", now=NOW)
    verifier.verify("POST", "/p", headers, b"{}")
    with pytest.raises(AuthError, match="replayed"):
        verifier.verify("POST", "/p", headers, b"{}")


@pytest.mark.parametrize(
    ("name", "mutate"),
    [
        ("missing headers", lambda h: {}),
        ("bad signature", lambda h: {**h, SIGNATURE_HEADER: "0" * 64}),
        ("upper-case hex", lambda h: {**h, SIGNATURE_HEADER: h[SIGNATURE_HEADER].upper()}),
        ("short nonce", lambda h: {**h, NONCE_HEADER: "abc"}),
        ("non-numeric timestamp", lambda h: {**h, TIMESTAMP_HEADER: "12a"}),
        ("no key id", lambda h: {k: v for k, v in h.items() if k != KEY_ID_HEADER}),
        ("empty key id", lambda h: {**h, KEY_ID_HEADER: ""}),
        ("key id with a space", lambda h: {**h, KEY_ID_HEADER: "local 1"}),
        ("key id with a newline", lambda h: {**h, KEY_ID_HEADER: "local-1\n"}),
        ("oversized key id", lambda h: {**h, KEY_ID_HEADER: "k" * 65}),
    ],
)
def test_bad_headers_are_rejected(name: str, mutate: object) -> None:
    verifier = _verifier(FakeClock())
    headers = signed_headers(KEY, "POST", "/p", b"{}", now=NOW)
    with pytest.raises(AuthError):
        verifier.verify("POST", "/p", mutate(headers), b"{}")  # type: ignore[operator]


@pytest.mark.parametrize("change", ["method", "path", "body"])
def test_signature_covers_method_path_and_body(change: str) -> None:
    verifier = _verifier(FakeClock())
    headers = signed_headers(KEY, "POST", "/p", b"{}", now=NOW)
    method, path, body = "POST", "/p", b"{}"
    if change == "method":
        method = "GET"
    elif change == "path":
        path = "/q"
    else:
        body = b'{"x":1}'
    with pytest.raises(AuthError, match="bad signature"):
        verifier.verify(method, path, headers, body)


@pytest.mark.parametrize(("offset", "ok"), [(-300, True), (300, True), (-301, False), (301, False)])
def test_timestamp_window_is_plus_minus_300_seconds(offset: int, ok: bool) -> None:
    verifier = _verifier(FakeClock())
    headers = signed_headers(KEY, "POST", "/p", b"", now=NOW + offset)
    if ok:
        verifier.verify("POST", "/p", headers, b"")
    else:
        with pytest.raises(AuthError, match="window"):
            verifier.verify("POST", "/p", headers, b"")


def test_nonce_cache_expires_whole_seconds_and_is_bounded() -> None:
    clock = FakeClock()
    cache = NonceCache(window_seconds=300, max_entries=2, clock=clock)
    assert cache.add(int(NOW), "a" * 16)
    assert not cache.add(int(NOW), "a" * 16)
    assert cache.add(int(NOW) + 1, "a" * 16)  # another second: another key
    with pytest.raises(Unavailable):
        cache.add(int(NOW), "b" * 16)  # full of live entries: refuse, never forget
    clock.now += 301
    assert cache.add(int(clock.now), "c" * 16)
    assert len(cache) == 2  # the NOW bucket expired, NOW+1 still live


def test_token_bucket_refills_with_the_clock() -> None:
    clock = FakeClock()
    bucket = TokenBucket(capacity=2, rate_per_second=1, clock=clock)
    assert bucket.try_take() and bucket.try_take()
    assert not bucket.try_take()
    assert bucket.retry_after_seconds() == pytest.approx(1.0)
    clock.now += 0.5
    assert not bucket.try_take()
    clock.now += 0.5
    assert bucket.try_take()


def test_keyed_limiter_is_per_key_and_bounded() -> None:
    clock = FakeClock()
    limiter = KeyedRateLimiter(capacity=1, rate_per_second=1 / 60, max_keys=2, clock=clock)
    assert limiter.try_take("a")
    assert not limiter.try_take("a")
    assert limiter.try_take("b")
    assert limiter.try_take("c")
    assert len(limiter) == 2
    assert limiter.retry_after_seconds("b") == pytest.approx(60.0)


def test_projector_keeps_the_newest_state_per_user_and_refuses_when_full() -> None:
    import asyncio
    from datetime import UTC, datetime, timedelta

    from mosaic.user_state import InMemoryUserStateStore, UserState
    from producers.projection import StateProjector

    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    store, refused = InMemoryUserStateStore(), []
    projector = StateProjector(store, max_pending=2, on_drop=lambda: refused.append(1))

    async def run() -> None:
        for state in (UserState("user-a", "opted_out", updated_at=t0 + timedelta(seconds=1)),
                      UserState("user-a", "preparing_profile", updated_at=t0),  # older
                      UserState("user-b", "preparing_profile", updated_at=t0)):
            assert projector.reserve()
            projector.submit(state)
        assert not projector.reserve()  # full: the request is refused before publishing
        assert projector.lookup("user-a") is not None  # unwritten states answer status
        await projector.drain()
        assert projector.lookup("user-a") is None and projector.backlog == 0

    asyncio.run(run())
    assert {u: s.state for u, s in store.rows.items()} == {"user-a": "opted_out",
                                                           "user-b": "preparing_profile"}
    assert refused == [1]


def test_projector_retries_a_failed_write_and_status_answers_meanwhile() -> None:
    import asyncio
    from collections.abc import Sequence
    from datetime import UTC, datetime

    from mosaic.user_state import InMemoryUserStateStore, UserState
    from producers import projection
    from producers.projection import StateProjector

    class Flaky(InMemoryUserStateStore):
        failures = 2

        async def record_many(self, states: Sequence[UserState]) -> None:
            if self.failures:
                self.failures -= 1
                raise ConnectionError("cassandra down")
            await super().record_many(states)

    store, failed = Flaky(), []
    projector = StateProjector(store, on_failure=lambda: failed.append(1))
    state = UserState("user-a", "preparing_profile", updated_at=datetime(2026, 1, 1, tzinfo=UTC))
    projection.RETRY_BACKOFF_SECONDS = 0.01

    async def run() -> None:
        assert projector.reserve()
        projector.submit(state)
        await asyncio.sleep(0)
        assert projector.lookup("user-a") == state
        await projector.drain()

    try:
        asyncio.run(run())
    finally:
        projection.RETRY_BACKOFF_SECONDS = 0.2
    assert store.rows == {"user-a": state} and failed == [1, 1]
