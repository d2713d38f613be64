"""Token bucket and retry backoff with an injected clock (no real waiting)."""

from __future__ import annotations

import random
import threading

import pytest

from mosaic.errors import ExternalServiceError
from mosaic.ratelimit import TokenBucket
from mosaic.retry import (
    MAX_RETRY_AFTER_SECONDS,
    Retrier,
    is_throttled,
    parse_retry_after,
    retry_after_seconds,
)

pytestmark = pytest.mark.unit


class FakeTime:
    """A clock whose sleep advances it; sleeps are recorded."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def clock(self) -> float:
        with self._lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self.now += seconds


def test_bucket_spaces_requests_at_the_rate() -> None:
    t = FakeTime()
    bucket = TokenBucket.per_minute(60, burst=1, clock=t.clock, sleep=t.sleep)
    for _ in range(4):
        bucket.acquire()
    assert t.sleeps == pytest.approx([1.0, 1.0, 1.0])
    assert t.now == pytest.approx(3.0)


def test_bucket_allows_a_burst_then_refills() -> None:
    t = FakeTime()
    bucket = TokenBucket.per_minute(600, burst=5, clock=t.clock, sleep=t.sleep)
    for _ in range(5):
        assert bucket.acquire() == 0
    assert bucket.acquire() == pytest.approx(0.1)
    t.now += 10  # idle: refills, but never past the burst
    for _ in range(5):
        assert bucket.acquire() == 0
    assert bucket.acquire() > 0


def test_bucket_default_burst_is_one_second_of_traffic() -> None:
    assert TokenBucket.per_minute(600).capacity == 10
    assert TokenBucket.per_minute(30).capacity == 1


def test_concurrent_callers_queue_without_exceeding_the_rate() -> None:
    t = FakeTime()
    bucket = TokenBucket(rate_per_second=10, capacity=1, clock=t.clock, sleep=lambda s: None)
    waits: list[float] = []
    lock = threading.Lock()

    def take() -> None:
        w = bucket.acquire()
        with lock:
            waits.append(w)

    threads = [threading.Thread(target=take) for _ in range(20)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    # The clock never moved, so the waits are the reservation queue: 0, .1, .2 ... 1.9
    assert sorted(waits) == pytest.approx([i / 10 for i in range(20)])


def test_bucket_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        TokenBucket(0)
    with pytest.raises(ValueError):
        TokenBucket(1, capacity=2).acquire(3)


class Flaky:
    def __init__(self, failures: int, exc: Exception) -> None:
        self.failures, self.exc, self.calls = failures, exc, 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.exc
        return "ok"


def test_retrier_retries_transient_errors_with_growing_jittered_delays() -> None:
    t = FakeTime()
    retrier = Retrier(5, base_delay_seconds=1, max_delay_seconds=30, sleep=t.sleep,
                      rng=random.Random(7))
    fn = Flaky(3, TimeoutError("slow"))
    assert retrier.call(fn, retryable=lambda e: isinstance(e, TimeoutError)) == "ok"
    assert fn.calls == 4 and retrier.retries == 3
    for attempt, slept in enumerate(t.sleeps, start=1):
        step = 2 ** (attempt - 1)
        assert step / 2 <= slept <= step


def test_retrier_gives_up_after_the_attempts_and_reraises() -> None:
    retrier = Retrier(3, sleep=lambda s: None)
    fn = Flaky(10, TimeoutError("slow"))
    with pytest.raises(TimeoutError):
        retrier.call(fn, retryable=lambda e: True)
    assert fn.calls == 3


def test_retrier_does_not_retry_permanent_errors() -> None:
    retrier = Retrier(5, sleep=lambda s: None)
    fn = Flaky(1, ValueError("bad input"))
    with pytest.raises(ValueError):
        retrier.call(fn, retryable=lambda e: isinstance(e, TimeoutError))
    assert fn.calls == 1


def test_delay_is_capped() -> None:
    retrier = Retrier(20, base_delay_seconds=1, max_delay_seconds=8)
    assert all(4 <= retrier.delay(n) <= 8 for n in range(5, 20))


class _Throttled(Exception):
    """An SDK error shaped like pinecone's ApiError: a status code and the headers."""

    def __init__(self, retry_after: str | None) -> None:
        super().__init__("429 Too Many Requests")
        self.status_code = 429
        self.headers = {"retry-after": retry_after} if retry_after is not None else {}


def test_retrier_waits_at_least_the_retry_after_and_counts_throttles() -> None:
    t = FakeTime()
    retrier = Retrier(5, base_delay_seconds=0.1, max_delay_seconds=1, sleep=t.sleep)
    seen: list[str] = []
    retrier.on_throttled = seen.append
    fn = Flaky(2, _Throttled("7"))
    assert retrier.call(fn, retryable=lambda e: True, what="vertex") == "ok"
    assert t.sleeps == [7.0, 7.0]
    assert retrier.throttled == 2 and seen == ["vertex", "vertex"]


def test_retry_after_values() -> None:
    assert parse_retry_after("2.5") == 2.5
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after("86400") == MAX_RETRY_AFTER_SECONDS  # capped
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT",
                             now=1445412480.0) == pytest.approx(10.0)
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None
    assert retry_after_seconds(_Throttled("4")) == 4.0
    assert retry_after_seconds(_Throttled(None)) is None
    assert retry_after_seconds(ExternalServiceError("x", retry_after_seconds=3)) == 3.0
    assert is_throttled(_Throttled(None)) and is_throttled(
        ExternalServiceError("x", throttled=True))
    assert not is_throttled(TimeoutError())


def test_shares_of_a_quota_never_spend_more_than_it_together() -> None:
    t = FakeTime()
    # 3 processes of one 600/min quota, each with 2 of the topic's 6 partitions.
    buckets = [TokenBucket.per_minute(600, clock=t.clock, sleep=lambda s: None)
               for _ in range(3)]
    for bucket in buckets:
        bucket.set_share(2 / 6)
    assert sum(b.rate for b in buckets) == pytest.approx(10.0)
    assert sum(b.capacity for b in buckets) == pytest.approx(10.0)
    taken = 0
    for _ in range(600):  # 60 s in steps of 0.1 s: each takes what is there
        t.now += 0.1
        taken += sum(1 for b in buckets for _ in range(5) if b.try_take())
    assert taken <= 10 + 600  # the burst plus 60 s at the quota
    with pytest.raises(ValueError):
        buckets[0].set_share(0)
