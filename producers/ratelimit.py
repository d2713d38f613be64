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
        tokens, updated = state
        return min(self._capacity, tokens + max(0.0, now - updated) * self._rate)

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
