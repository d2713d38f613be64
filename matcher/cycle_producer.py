"""The matcher's transactional producer, kept alive across what a cycle's transaction
can run into (docs/matcher-service.md, "Crashes, reruns, fencing"):

- a fence by another instance with the same ``transactional.id``: :class:`MatcherFenced`,
  the process must stop;
- a transaction the broker aborted for its age (librdkafka reports it as a fence too):
  told apart by the transaction's age, the producer is rebuilt with the timeout doubled;
- a commit whose outcome is unknown: the producer is rebuilt, and its
  ``init_transactions`` returns only once that transaction is settled; while the broker
  is away it times out and the SAME producer's init is resumed on the next attempt.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from confluent_kafka import KafkaException, Producer

from mosaic.errors import MosaicError
from mosaic.settings import Settings
from streams.kafka import (
    KafkaOperationError,
    init_transactions,
    make_transactional_producer,
    transaction,
)

log = logging.getLogger(__name__)

# The broker's transaction.max.timeout.ms default (15 min): a producer asking for more is
# refused at init_transactions.
MAX_TRANSACTION_TIMEOUT_SECONDS = 900.0


class MatcherFenced(MosaicError):
    """Another instance with the same transactional.id took over; this one must stop."""


class CycleProducer:
    """One transactional id's producer: :meth:`ensure` before a transaction,
    :meth:`recover` after a fatal producer error."""

    def __init__(self, settings: Settings, transactional_id: str, *, timeout_seconds: float,
                 on_commit: Callable[[], None] | None = None) -> None:
        """``on_commit``: a test hook run right before every commit request."""
        self._settings, self.transactional_id = settings, transactional_id
        self._timeout, self._on_commit = timeout_seconds, on_commit
        self._producer: Producer | None = None
        self._initialising: Producer | None = None  # its init_transactions timed out
        self._started: float | None = None  # monotonic start of the open transaction
        # Doubled after a transaction the broker timed out (a cycle that outgrew it).
        self.transaction_timeout_seconds = settings.matcher.transaction_timeout_seconds

    @property
    def producer(self) -> Producer:
        assert self._producer is not None, "ensure() first"
        return self._producer

    def ensure(self) -> None:
        """Build the producer (at start, and after :meth:`recover` dropped it). Its
        init_transactions returns once our previous transaction is settled (committed
        or aborted), so a tick never runs again while its first attempt could still
        commit. While the broker is away it times out and the tick is retried like any
        outage, resuming the SAME producer's init: a new one would be fenced by it once
        the broker answers (seen: the matcher took that for another instance and quit)."""
        if self._producer is not None:
            return
        if self._initialising is None:
            self._initialising = make_transactional_producer(
                self._settings, self.transactional_id, timeout_seconds=self._timeout,
                transaction_timeout_seconds=self.transaction_timeout_seconds, init=False)
        init_transactions(self._initialising, self.transactional_id, self._timeout)
        self._producer, self._initialising = self._initialising, None

    def recover(self, exc: KafkaOperationError) -> None:
        """After a fatal producer error: a fence while our transaction was younger than
        its timeout is another instance (raises :class:`MatcherFenced`). A transaction
        older than that was aborted by the coordinator (librdkafka says "fenced" for that
        too), and a commit whose outcome is unknown is settled by a new producer's
        init_transactions: the next attempt builds one (:meth:`ensure`) and first checks
        whether the cycle was committed after all."""
        started, self._started = self._started, None
        open_for = None if started is None else time.monotonic() - started
        limit = self.transaction_timeout_seconds
        if exc.fenced and (open_for is None or open_for < limit):
            raise MatcherFenced(f"matcher {self.transactional_id} was fenced by another "
                                f"instance: {exc}") from exc
        if exc.fenced:  # timed out: the same cycle would time out again at this limit
            self.transaction_timeout_seconds = min(2 * limit, MAX_TRANSACTION_TIMEOUT_SECONDS)
        log.error("matcher %s: transaction failed after %.1f s (transaction timeout %.0f s, "
                  "MOSAIC_MATCHER__TRANSACTION_TIMEOUT_SECONDS): %s; rebuilding the "
                  "producer (transaction timeout %.0f s) and retrying the tick",
                  self.transactional_id, open_for or 0.0, limit, exc,
                  self.transaction_timeout_seconds)
        self.close()
        self._initialising = None

    @contextmanager
    def transaction(self) -> Iterator[Producer]:
        """One transaction (:func:`streams.kafka.transaction`), its age tracked."""
        self._started = time.monotonic()
        with transaction(self.producer, timeout_seconds=self._timeout,
                         before_commit=self._on_commit) as producer:
            yield producer
        self._started = None

    def close(self) -> None:
        if self._producer is not None:
            try:
                self._producer.flush(1.0)
            except KafkaException as exc:  # a fenced producer refuses even this
                log.info("matcher producer not flushed on close: %s", exc)
        self._producer = None
