"""Token bucket and retry backoff with an injected clock (no real waiting)."""

from __future__ import annotations

import random
import threading

import pytest

from mosaic.ratelimit import TokenBucket
from mosaic.retry import Retrier

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
