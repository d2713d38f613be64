"""The one rate limiter: a thread-safe token bucket, and one bucket per key.

``TokenBucket`` serves both sides: outbound quotas block in :meth:`TokenBucket.acquire`
(e.g. Vertex requests per minute: callers reserve a token and then sleep outside the lock
until it is due, so concurrent callers queue in arrival order and never oversleep each
other); inbound limits answer at once with :meth:`TokenBucket.try_take` and
:meth:`TokenBucket.retry_after_seconds` (the ingress' global limit, HTTP 429 +
Retry-After). ``KeyedRateLimiter`` is the same arithmetic per key (the ingress' per-user
limits). Clock and sleep are injected so tests can run minutes of traffic in microseconds.

A quota of the whole project (Vertex requests per minute) spent by several worker
processes: each process's bucket takes :meth:`TokenBucket.set_share` of it, the share of
the topic's partitions assigned to it, so the buckets together never exceed the quota.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

Clock = Callable[[], float]


def _refilled(tokens: float, updated: float, now: float, capacity: float,
              rate: float) -> float:
    """Tokens after refilling at ``rate`` per second from ``updated`` to ``now``."""
    return min(capacity, tokens + max(0.0, now - updated) * rate)


class TokenBucket:
    """``capacity`` tokens (starts full: a cold start may burst), refilled continuously at
    ``rate_per_second``."""

    def __init__(self, rate_per_second: float, capacity: float = 1.0, *,
                 clock: Clock = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if rate_per_second <= 0 or capacity <= 0:
            raise ValueError("rate_per_second and capacity must be > 0")
        self.rate = rate_per_second
        self.capacity = float(capacity)
        self._clock, self._sleep = clock, sleep
        self._tokens = self.capacity  # start full: a cold start may burst
        self._updated = clock()
        self._lock = threading.Lock()
        self.waited_seconds = 0.0
        self.quota_rate, self.quota_capacity = self.rate, self.capacity
        self.share = 1.0

    def set_share(self, share: float) -> None:
        """Take ``share`` (0 < share <= 1) of the quota the bucket was made with: rate and
        burst both scale, so N processes whose shares sum to 1 never spend more than the
        quota together (burst at least one token). Tokens above the new burst are dropped."""
        if not 0 < share <= 1:
            raise ValueError(f"share must be in (0, 1], got {share}")
        with self._lock:
            self._refill()
            self.share = share
            self.rate = self.quota_rate * share
            self.capacity = max(1.0, self.quota_capacity * share)
            self._tokens = min(self._tokens, self.capacity)

    @classmethod
    def per_minute(cls, requests_per_minute: float, burst: float | None = None, *,
                   clock: Callable[[], float] = time.monotonic,
                   sleep: Callable[[float], None] = time.sleep) -> TokenBucket:
        """Default burst: one second's worth of requests (at least one)."""
        rate = requests_per_minute / 60.0
        return cls(rate, burst if burst is not None else max(1.0, rate), clock=clock,
                   sleep=sleep)

    def _refill(self) -> None:  # under the lock
        now = self._clock()
        self._tokens = _refilled(self._tokens, self._updated, now, self.capacity, self.rate)
        self._updated = now

    def try_take(self, tokens: float = 1.0) -> bool:
        """Take ``tokens`` if they are there now; never waits."""
        with self._lock:
            self._refill()
            if self._tokens >= tokens:
                self._tokens -= tokens
                return True
            return False

    def retry_after_seconds(self, tokens: float = 1.0) -> float:
        """How long until ``tokens`` are available (0 if they are now)."""
        with self._lock:
            self._refill()
            return max(0.0, (tokens - self._tokens) / self.rate)

    def _reserve(self, tokens: float) -> float:
        with self._lock:
            self._refill()
            self._tokens -= tokens  # may go negative: that is the queue of reservations
            return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    def acquire(self, tokens: float = 1.0) -> float:
        """Block until ``tokens`` are available; returns the seconds waited."""
        if tokens > self.capacity:
            raise ValueError(f"cannot take {tokens} tokens from a bucket of {self.capacity}")
        wait = self._reserve(tokens)
        if wait > 0:
            self._sleep(wait)
            with self._lock:
                self.waited_seconds += wait
        return wait


class KeyedRateLimiter:
    """One token bucket per key, at most ``max_keys`` of them (LRU).

    Buckets are stored as ``(tokens, updated)`` float tuples, not objects: the garbage
    collector stops tracking such tuples, so 100k+ idle users cost no GC pause. A dropped
    key starts again with a full bucket, which only matters past ``max_keys`` active users.
    """

    def __init__(self, *, capacity: float, rate_per_second: float, max_keys: int,
                 clock: Clock) -> None:
        if capacity <= 0 or rate_per_second <= 0:
            raise ValueError("capacity and rate must be positive")
        self._capacity = float(capacity)
        self._rate = rate_per_second
        self._max = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def _tokens(self, key: str, now: float) -> float:
        state = self._buckets.get(key)
        if state is None:
            return self._capacity
        return _refilled(state[0], state[1], now, self._capacity, self._rate)

    def _store(self, key: str, tokens: float, now: float) -> None:
        self._buckets[key] = (tokens, now)
        self._buckets.move_to_end(key)
        if len(self._buckets) > self._max:
            self._buckets.popitem(last=False)

    def try_take(self, key: str) -> bool:
        now = self._clock()
        tokens = self._tokens(key, now)
        ok = tokens >= 1.0
        self._store(key, tokens - 1.0 if ok else tokens, now)
        return ok

    def retry_after_seconds(self, key: str) -> float:
        return max(0.0, (1.0 - self._tokens(key, self._clock())) / self._rate)
