"""Token buckets with an injected clock: one global, one per user (bounded, LRU)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

Clock = Callable[[], float]


class TokenBucket:
    """``capacity`` tokens, refilled continuously at ``rate_per_second``."""

    __slots__ = ("_capacity", "_clock", "_rate", "_tokens", "_updated")

    def __init__(self, *, capacity: float, rate_per_second: float, clock: Clock) -> None:
        if capacity <= 0 or rate_per_second <= 0:
            raise ValueError("capacity and rate must be positive")
        self._capacity = capacity
        self._rate = rate_per_second
        self._clock = clock
        self._tokens = capacity
        self._updated = clock()

    def _refill(self) -> None:
        now = self._clock()
        elapsed = max(0.0, now - self._updated)
        self._tokens = min(self._capacity, self._tokens + elapsed * self._rate)
        self._updated = now

    def try_take(self, tokens: float = 1.0) -> bool:
        self._refill()
        if self._tokens >= tokens:
            self._tokens -= tokens
            return True
        return False

    def retry_after_seconds(self, tokens: float = 1.0) -> float:
        """How long until ``tokens`` are available (0 if they are now)."""
        self._refill()
        return max(0.0, (tokens - self._tokens) / self._rate)


class KeyedRateLimiter:
    """One bucket per key, at most ``max_keys`` of them.

    The least recently used bucket is dropped when full; a dropped key starts again with
    a full bucket, which only matters past ``max_keys`` distinct active users.
    """

    def __init__(self, *, capacity: float, rate_per_second: float, max_keys: int,
                 clock: Clock) -> None:
        self._capacity = capacity
        self._rate = rate_per_second
        self._max = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def _bucket(self, key: str) -> TokenBucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = TokenBucket(capacity=self._capacity, rate_per_second=self._rate,
                                 clock=self._clock)
            self._buckets[key] = bucket
            if len(self._buckets) > self._max:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        return bucket

    def try_take(self, key: str) -> bool:
        return self._bucket(key).try_take()

    def retry_after_seconds(self, key: str) -> float:
        return self._bucket(key).retry_after_seconds()
