"""The one retry policy: backoff with jitter, a retrying call, and which errors are transient.

Every retry loop in the project takes its delays from :class:`Backoff` and its "worth another
attempt?" answer from the classifiers below; each caller keeps its own limits (attempts,
base, cap) and jitter kind, which are part of its documented behaviour:

caller (jitter; base, cap; attempts):

- ``Retrier`` for Vertex, Pinecone, the Cassandra vector index (equal; 0.5 s, 20 s; 5)
- ``consumers/runner.py`` ``RetryPolicy``, post-match (full; 0.2 s, 5 s; 5 per item,
  a failed batch forever)
- ``consumers/embedding/outputs.py`` ``StageRetry``, embedding agent (none; 0.5 s, 30 s;
  forever, interruptible by the stop event)
- ``streams/deadletter.py`` ``ErrorPolicy``, per-record consumers (none; 0.2 s, 10 s; 5)
- ``matcher/service.py`` ``TICK_BACKOFF``, a failed tick (none; 0.5 s, 10 s; settings)
- ``producers/projection.py`` ``RETRY_BACKOFF``, user_state writes (none; 0.2 s, 5 s;
  forever, async)

``Retrier`` and ``StageRetry`` never retry sooner than the service's own ``Retry-After``
(:func:`retry_after_seconds`, on an SDK error or on our ``ExternalServiceError``), and
``Retrier`` counts "too many requests" answers (:func:`is_throttled`) for a metric.

Why not tenacity (installed through google-genai): only :class:`Retrier` has the shape
tenacity serves (retry one call N times). The other loops retry a set of items, re-queue
work in an asyncio task, wait on a stop event, or let a policy choose between retry and
dead-letter; they need the delay schedule, not a decorator. tenacity is also not one of our
direct dependencies (its version follows google-genai's pin), and this module is small,
typed, and takes injected sleep and randomness so tests never wait.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

from mosaic.errors import ExternalServiceError

T = TypeVar("T")
log = logging.getLogger(__name__)


class Jitter(StrEnum):
    NONE = "none"  # the capped exponential step itself
    FULL = "full"  # uniform in [0, step]: retries of many workers never line up
    EQUAL = "equal"  # uniform in [step/2, step]: spread out, never zero


@dataclass(frozen=True)
class Backoff:
    """Capped exponential backoff: step ``n`` (1-based) is ``min(cap, base * 2**(n-1))``."""

    base_seconds: float
    max_seconds: float
    jitter: Jitter = Jitter.NONE

    def step(self, attempt: int) -> float:
        return float(min(self.max_seconds, self.base_seconds * 2.0 ** (attempt - 1)))

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1-based); ``rng`` defaults to
        the ``random`` module's shared generator."""
        step = self.step(attempt)
        uniform = (rng or random).uniform
        if self.jitter is Jitter.FULL:
            return uniform(0, step)
        if self.jitter is Jitter.EQUAL:
            return step / 2 + uniform(0, step / 2)
        return step


class Retrier:
    """Calls ``fn`` up to ``attempts`` times while ``retryable`` says the failure is transient."""

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
        self.throttled = 0  # answers that said "too many requests" (HTTP 429)
        self.on_throttled: Callable[[str], None] | None = None
        self.backoff = Backoff(base_delay_seconds, max_delay_seconds, Jitter.EQUAL)

    def delay(self, attempt: int) -> float:
        """Seconds before retry number ``attempt`` (1-based): "equal jitter", so
        between half and all of the capped exponential step, never zero."""
        return self.backoff.delay(attempt, self._rng)

    def call(self, fn: Callable[[], T], *, retryable: Callable[[Exception], bool],
             what: str = "call") -> T:
        """A service's ``Retry-After`` (:func:`retry_after_seconds`) lengthens the pause:
        never retry before the service said it would take the call again. Each 429
        answer calls ``on_throttled`` (a metric)."""
        attempt = 0
        while True:
            attempt += 1
            try:
                return fn()
            except Exception as exc:
                if is_throttled(exc):
                    self.throttled += 1
                    if self.on_throttled is not None:
                        self.on_throttled(what)
                if attempt >= self.attempts or not retryable(exc):
                    raise
                pause = max(self.delay(attempt), retry_after_seconds(exc) or 0.0)
                log.info("%s failed (attempt %d/%d), retrying in %.2fs: %s",
                         what, attempt, self.attempts, pause, exc)
                self.retries += 1
                self._sleep(pause)


# -- which failures are transient ------------------------------------------------------

# Cassandra driver errors that mean "the request is wrong", not "a node is away".
CASSANDRA_FATAL = frozenset({"InvalidRequest", "SyntaxException", "Unauthorized",
                             "AuthenticationFailed", "ConfigurationException"})


def is_retryable(exc: BaseException) -> bool:
    """Our own errors say it: an ``ExternalServiceError`` marked retryable."""
    return isinstance(exc, ExternalServiceError) and exc.retryable


def is_transient(exc: BaseException) -> bool:
    """Any failure of a batch of work (the post-match runner): our errors by their flag,
    every Cassandra driver error except a wrong request (``CASSANDRA_FATAL``), and Kafka
    errors that are retriable or not fatal."""
    if isinstance(exc, ExternalServiceError):
        return exc.retryable
    if type(exc).__module__.startswith("cassandra"):
        return type(exc).__name__ not in CASSANDRA_FATAL
    from confluent_kafka import KafkaError, KafkaException

    if isinstance(exc, KafkaException):
        err = exc.args[0] if exc.args else None
        return isinstance(err, KafkaError) and (err.retriable() or not err.fatal())
    return False


def is_cassandra_unavailable(exc: BaseException) -> bool:
    """A Cassandra call worth repeating as it is: timeouts, too few replicas, no host."""
    from cassandra import OperationTimedOut, ReadTimeout, Unavailable, WriteTimeout
    from cassandra.cluster import NoHostAvailable

    return isinstance(exc, Unavailable | ReadTimeout | WriteTimeout | OperationTimedOut
                      | NoHostAvailable)


def is_transient_status(code: int) -> bool:
    """HTTP answers worth another attempt: 408, 429 and 5xx."""
    return code in (408, 429) or code >= 500


# The longest Retry-After taken at its word: a bigger value (or a date far ahead) is
# treated as this, so a wrong header cannot park a worker for hours.
MAX_RETRY_AFTER_SECONDS = 300.0


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds from an HTTP ``Retry-After`` value: delta-seconds or an HTTP date
    (RFC 9110, 10.2.3); None when absent or unreadable; capped at
    :data:`MAX_RETRY_AFTER_SECONDS`."""
    if value is None or not value.strip():
        return None
    try:
        seconds = float(value)
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if math.isnan(seconds):
        return None
    return min(MAX_RETRY_AFTER_SECONDS, max(0.0, seconds))


def _headers_of(exc: BaseException) -> Any:
    headers = getattr(exc, "headers", None)  # pinecone's ApiError
    if headers is None:
        headers = getattr(getattr(exc, "response", None), "headers", None)  # google-genai
    return headers


def retry_after_seconds(exc: BaseException) -> float | None:
    """How long the service asked us to wait: our error's ``retry_after_seconds``, or the
    ``Retry-After`` header of an SDK error (google-genai's ``response``, pinecone's
    ``headers``)."""
    own = getattr(exc, "retry_after_seconds", None)
    if isinstance(own, int | float):
        return float(own)
    headers = _headers_of(exc)
    if headers is None:
        return None
    try:
        value = headers.get("retry-after") or headers.get("Retry-After")
    except AttributeError:
        return None
    return parse_retry_after(value if isinstance(value, str) else None)


def is_throttled(exc: BaseException) -> bool:
    """The service said "too many requests" (HTTP 429, RESOURCE_EXHAUSTED)."""
    if getattr(exc, "throttled", False) is True:
        return True
    code = getattr(exc, "code", None)
    if not isinstance(code, int):
        code = getattr(exc, "status_code", None)
    return code == 429


def is_pinecone_transient(exc: BaseException) -> bool:
    from pinecone.errors.exceptions import (
        ApiError,
        PineconeConnectionError,
        PineconeTimeoutError,
    )

    if isinstance(exc, PineconeConnectionError | PineconeTimeoutError):
        return True
    return isinstance(exc, ApiError) and is_transient_status(exc.status_code)


def is_vertex_transient(exc: BaseException) -> bool:
    """google-genai's 429, 408 and 5xx answers and transport failures."""
    import httpx
    from google.genai import errors

    if isinstance(exc, errors.APIError):
        return is_transient_status(exc.code)
    return isinstance(exc, httpx.TransportError)
