"""Retries with exponential backoff and jitter for calls to outside services.

The caller decides which errors are transient (``retryable``); everything else is
raised at once. Sleep and randomness are injected so tests need not wait.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)


class Retrier:
    def __init__(self, attempts: int = 5, *, base_delay_seconds: float = 0.5,
                 max_delay_seconds: float = 20.0,
                 sleep: Callable[[float], None] = time.sleep,
                 rng: random.Random | None = None) -> None:
        if attempts < 1 or base_delay_seconds < 0 or max_delay_seconds < base_delay_seconds:
            raise ValueError("attempts >= 1 and 0 <= base_delay <= max_delay")
        self.attempts = attempts
        self.base_delay_seconds = base_delay_seconds
        self.max_delay_seconds = max_delay_seconds
        self._sleep = sleep
        self._rng = rng or random.Random()
        self.retries = 0  # total retries performed (for tests and metrics)

    def delay(self, attempt: int) -> float:
        """Seconds before retry number ``attempt`` (1-based): "equal jitter", so
        between half and all of the capped exponential step, never zero."""
        step = min(self.max_delay_seconds, self.base_delay_seconds * 2.0 ** (attempt - 1))
        return step / 2 + self._rng.uniform(0, step / 2)

    def call(self, fn: Callable[[], T], *, retryable: Callable[[Exception], bool],
             what: str = "call") -> T:
        attempt = 0
        while True:
            attempt += 1
            try:
                return fn()
            except Exception as exc:
                if attempt >= self.attempts or not retryable(exc):
                    raise
                pause = self.delay(attempt)
                log.info("%s failed (attempt %d/%d), retrying in %.2fs: %s",
                         what, attempt, self.attempts, pause, exc)
                self.retries += 1
                self._sleep(pause)
