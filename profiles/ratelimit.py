"""A thread-safe token bucket for outbound API quotas (e.g. Vertex requests per minute).

Callers reserve a token and then sleep outside the lock until it is due, so concurrent
callers queue in arrival order and never oversleep each other. Clock and sleep are
injected so tests can run minutes of traffic in microseconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class TokenBucket:
    def __init__(self, rate_per_second: float, capacity: float = 1.0, *,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if rate_per_second <= 0 or capacity < 1:
            raise ValueError("rate_per_second must be > 0 and capacity >= 1")
        self.rate = rate_per_second
        self.capacity = float(capacity)
        self._clock, self._sleep = clock, sleep
        self._tokens = self.capacity  # start full: a cold start may burst
        self._updated = clock()
        self._lock = threading.Lock()
        self.waited_seconds = 0.0

    @classmethod
    def per_minute(cls, requests_per_minute: float, burst: float | None = None, *,
                   clock: Callable[[], float] = time.monotonic,
                   sleep: Callable[[float], None] = time.sleep) -> TokenBucket:
        """Default burst: one second's worth of requests (at least one)."""
        rate = requests_per_minute / 60.0
        return cls(rate, burst if burst is not None else max(1.0, rate), clock=clock,
                   sleep=sleep)

    def _reserve(self, tokens: float) -> float:
        with self._lock:
            now = self._clock()
            self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.rate)
            self._updated = now
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
