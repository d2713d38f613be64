"""An at-least-once batch consumer loop on confluent-kafka for the post-match agents.

Per poll (up to ``max_batch`` records): decode every record (undecodable or invalid ones
go to the dead-letter topic with the reason), hand the decoded ones to the handler as
one batch, retry the items that failed, confirm every output with one producer flush,
then commit each partition's highest offset once. Cost per record is a share of a few
round trips instead of a synchronous produce and commit each.

What a failure does:
- the whole batch failed with a retryable error (Nakama, Cassandra or Kafka down): back
  off with jitter and retry the same batch, never committing past it, until it works or
  the runner is stopped (then the records are replayed after a restart);
- one item failed for good (``permanent``: a deleted or banned user): dead-letter it,
  let the handler note it in the audit, go on;
- one item keeps failing while the others succeed: after ``max_item_attempts`` park it
  (the handler records it for the reconciler) so it never stalls its partition;
- anything else is a bug: raise; the process exits non-zero rather than run half-alive.

Handlers must be idempotent: a crash between a side effect and the commit replays it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from prometheus_client import Counter, Gauge, Histogram

from consumers.watchdog import ConsumerStalled, Watchdog
from mosaic.errors import ExternalServiceError, SerializationError, ValidationError
from mosaic.retry import Backoff, Jitter, is_transient
from mosaic.settings import Settings
from streams.deadletter import DeadLetterPublisher, RawRecord
from streams.events import Event
from streams.kafka import (
    BatchPublisher,
    group_id,
    make_consumer,
    next_offsets,
    partition_names,
)
from streams.serde import AvroSerde, default_serde
from streams.topics import Topic, build_catalog

log = logging.getLogger(__name__)

STUCK_EXIT_CODE = 70  # EX_SOFTWARE: a loop blocked in a call past twice the watchdog limit

RECORDS = Counter("mosaic_agent_records", "Records processed by agent and outcome.",
                  ["agent", "outcome"])
BATCH_SECONDS = Histogram("mosaic_agent_batch_seconds",
                          "Time to handle one batch, from poll to commit.", ["agent"],
                          buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
IN_FLIGHT = Gauge("mosaic_agent_in_flight_records", "Records polled but not committed yet.",
                  ["agent"])
RETRIES = Counter("mosaic_agent_retries", "Batch or item retries after a transient failure.",
                  ["agent", "scope"])
LAG = Gauge("mosaic_agent_lag_records", "Records between the position and the end (fresh "
            "from the broker) of each assigned partition, per agent.", ["agent"])
STALLS = Counter("mosaic_agent_watchdog_stalls", "Stalls the watchdog found (no progress "
                 "with records waiting or the broker away), per agent.", ["agent"])


@dataclass(frozen=True)
class Item:
    event: Event
    record: RawRecord


@dataclass(frozen=True)
class Failure:
    error: str
    permanent: bool = False


class BatchHandler(Protocol):
    def handle(self, items: Sequence[Item]) -> list[Failure | None]:
        """Do the work for every item; per item None (done) or why it failed. Raise
        only when the whole batch failed (an outage) or on a bug."""
        ...

    def park(self, item: Item, error: str) -> None:
        """Retries exhausted: record the item so the reconciler finishes it later."""
        ...

    def gave_up(self, item: Item, error: str) -> None:
        """The item was dead-lettered (it can never succeed): record that."""
        ...


@dataclass
class RunStats:
    handled: int = 0
    dead_lettered: int = 0
    parked: int = 0
    batches: int = 0
    stalls: int = 0
    by_topic: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter (retries of many agents do not line up)."""

    base_seconds: float = 0.2
    max_seconds: float = 5.0
    max_item_attempts: int = 5

    def delay(self, attempt: int) -> float:
        """Uniform in [0, min(max, base * 2**attempt)] (``attempt`` counts from 1)."""
        return Backoff(self.base_seconds, self.max_seconds, Jitter.FULL).delay(attempt + 1)


class BatchRunner:
    """Runs one batch handler over ``topics`` in consumer group ``<topic prefix>agent.<name>``,
    watched by a :class:`Watchdog` (``kafka.consumer_watchdog_seconds``)."""

    def __init__(self, settings: Settings, name: str, topics: list[Topic],
                 handler: BatchHandler, publisher: BatchPublisher, *,
                 max_batch: int = 500, retry: RetryPolicy | None = None,
                 consumer: Consumer | None = None, serde: AvroSerde | None = None,
                 watchdog: Watchdog | None = None) -> None:
        self.name = name
        self._handler = handler
        self._publisher = publisher
        self._max_batch = max_batch
        self._retry = retry or RetryPolicy()
        self._serde = serde or default_serde()
        self._group = group_id(settings, name)
        self._connect: Callable[[], Consumer] = lambda: make_consumer(
            settings, self._group, topics, overrides={"on_commit": self._on_commit})
        self._commit_pending_since: float | None = None
        self._consumer = consumer or self._connect()
        self._dead_letters = DeadLetterPublisher(
            publisher.producer, build_catalog(settings).deadletter,
            consumer_group=self._group, wait=False)
        self.stats = RunStats()
        self.watchdog = watchdog or Watchdog(name, settings.kafka.consumer_watchdog_seconds)
        self._beat = time.monotonic()
        self.exit_when_stuck = False  # `mosaic postmatch`: a loop stuck in a call exits

    def run(self, *, stop: Callable[[], bool] = lambda: False,
            idle_seconds: float | None = None, max_seconds: float | None = None) -> RunStats:
        """Consume until ``stop()``, ``idle_seconds`` without records, or ``max_seconds``.
        A stop lets the current batch finish and commit (or, during an outage, leaves it
        uncommitted for the next run), then closes the consumer."""
        started = last_record = time.monotonic()
        done = threading.Event()
        threading.Thread(target=self._monitor, args=(done, threading.current_thread()),
                         daemon=True, name=f"watch-{self.name}").start()
        try:
            while not stop():
                now = self._beat = time.monotonic()
                if max_seconds is not None and now - started > max_seconds:
                    break
                if idle_seconds is not None and now - last_record > idle_seconds:
                    break
                if self.watchdog.due():  # between batches: a rebuild never splits one
                    self._watch()
                messages = self._consumer.consume(self._max_batch, 0.2)
                batch = [m for m in messages if not self._skip(m)]
                if not batch:
                    continue
                last_record = time.monotonic()
                IN_FLIGHT.labels(self.name).set(len(batch))
                with BATCH_SECONDS.labels(self.name).time():
                    self._batch(batch, stop)
                self.watchdog.progressed()
                IN_FLIGHT.labels(self.name).set(0)
        finally:
            done.set()
            self._settle_commits(5.0)
            self._consumer.close()
        return self.stats

    def _monitor(self, done: threading.Event, worker: threading.Thread) -> None:
        """The loop's own thread cannot see itself blocked in a call (a synchronous commit
        once blocked forever): this one logs an ERROR with where it is stuck, and with
        ``exit_when_stuck`` ends the process after twice the limit (the supervisor
        restarts it; a blocked thread cannot be stopped any other way)."""
        reported = 0.0
        while not done.wait(self.watchdog.every):
            beat = self._beat
            stuck = time.monotonic() - beat
            if stuck <= self.watchdog.limit:
                continue
            if beat != reported:
                reported = beat
                STALLS.labels(self.name).inc()
                log.error("%s: its loop has not come back for %.0f s; stuck in %s",
                          self.name, stuck, _where(worker))
            if self.exit_when_stuck and stuck > 2 * self.watchdog.limit:
                log.critical("%s: stuck for %.0f s; exiting so the process restarts",
                             self.name, stuck)
                logging.shutdown()
                os._exit(STUCK_EXIT_CODE)

    def _settle_commits(self, timeout_seconds: float) -> None:
        """Serve the last commit's outcome before closing (bounded: it may never come).
        Records polled here are not handled: nothing commits past them."""
        deadline = time.monotonic() + timeout_seconds
        with contextlib.suppress(KafkaException, RuntimeError):
            while self._commit_pending_since is not None and time.monotonic() < deadline:
                self._consumer.poll(0.1)
        if self._commit_pending_since is not None:
            log.warning("%s: the last commit was not confirmed before closing; its records "
                        "are read again by the next run", self.name)

    def _skip(self, message: Message) -> bool:
        error = message.error()
        if error is None:
            return False
        if error.code() != KafkaError._PARTITION_EOF:
            log.warning("%s: consumer error %s", self.name, error.str())
        return True

    def _batch(self, messages: list[Message], stop: Callable[[], bool]) -> None:
        items: list[Item] = []
        undecodable: list[tuple[RawRecord, str]] = []
        for message in messages:
            record = RawRecord.from_message(message)
            try:
                items.append(Item(self._serde.decode(record.value), record))
            except (SerializationError, ValidationError) as exc:
                self._dead_letters.publish(record, exc)
                undecodable.append((record, "dead_lettered"))
        attempt = 0
        while True:
            try:
                outcomes = undecodable + self._items(items)
                self._publisher.confirm()
                self._commit(messages)
                self.stats.batches += 1
                for record, outcome in outcomes:
                    self._count(record, outcome)
                return
            except Exception as exc:
                if not is_transient(exc):
                    raise
                attempt += 1
                self._beat = time.monotonic()
                self.stats.stalls += 1
                RETRIES.labels(self.name, "batch").inc()
                RECORDS.labels(self.name, "stalled").inc(len(messages))
                log.warning("%s: batch of %d failed (%s); retry %d", self.name,
                            len(messages), exc, attempt)
                if stop():
                    self._rewind(messages)
                    return
                time.sleep(self._retry.delay(attempt))

    def _items(self, items: list[Item]) -> list[tuple[RawRecord, str]]:
        """Handle, retry and settle every item; what happened to each record."""
        outcomes: list[tuple[RawRecord, str]] = []
        pending = items
        for attempt in range(1, self._retry.max_item_attempts + 1):
            self._beat = time.monotonic()
            if not pending:
                break
            failures = self._handler.handle(pending)
            retry: list[Item] = []
            for item, failure in zip(pending, failures, strict=True):
                if failure is None:
                    outcomes.append((item.record, "handled"))
                elif failure.permanent:
                    self._dead_letters.publish(
                        item.record, ExternalServiceError(failure.error, retryable=False))
                    self._handler.gave_up(item, failure.error)
                    outcomes.append((item.record, "dead_lettered"))
                elif attempt == self._retry.max_item_attempts:
                    self._handler.park(item, failure.error)
                    log.warning("%s: parked %s[%d]@%d after %d attempts: %s", self.name,
                                item.record.topic, item.record.partition, item.record.offset,
                                attempt, failure.error)
                    outcomes.append((item.record, "parked"))
                else:
                    retry.append(item)
            if retry:
                RETRIES.labels(self.name, "item").inc(len(retry))
                time.sleep(self._retry.delay(attempt))
            pending = retry
        return outcomes

    def _count(self, record: RawRecord, outcome: str) -> None:
        RECORDS.labels(self.name, outcome).inc()
        if outcome == "handled":
            self.stats.handled += 1
        elif outcome == "dead_lettered":
            self.stats.dead_lettered += 1
        elif outcome == "parked":
            self.stats.parked += 1
        self.stats.by_topic[record.topic] = self.stats.by_topic.get(record.topic, 0) + 1

    def _commit(self, messages: list[Message]) -> None:
        """Commit asynchronously: a synchronous commit blocked forever in librdkafka after
        the group coordinator moved (a broker restart or pause; docs/postmatch.md, "Why
        post-match stalled"). The work is done and its outputs confirmed; a commit that
        fails or never lands only means these records are read again after a restart
        (handlers are idempotent). Its outcome arrives in ``_on_commit`` while polling."""
        offsets = next_offsets(messages)
        if self._commit_pending_since is None:
            self._commit_pending_since = time.monotonic()
        try:
            self._consumer.commit(offsets=offsets, asynchronous=True)
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if isinstance(err, KafkaError) and err.fatal():
                raise
            log.warning("%s: commit not sent (%s); the next commit covers these records",
                        self.name, err)

    def _on_commit(self, error: KafkaError | None, partitions: list[TopicPartition]) -> None:
        if error is None:
            self._commit_pending_since = None
        elif error.code() != KafkaError._NO_OFFSET:
            log.warning("%s: commit failed (%s) for %s; the next commit covers these "
                        "records", self.name, error.str(), partition_names(partitions))

    def _commits_stuck(self) -> float:
        """Seconds since the oldest commit that has not been confirmed (0: none)."""
        since = self._commit_pending_since
        return 0.0 if since is None else time.monotonic() - since

    def _rewind(self, messages: list[Message]) -> None:
        for tp in next_offsets(messages):
            first = min(m.offset() or 0 for m in messages
                        if m.topic() == tp.topic and m.partition() == tp.partition)
            # Closing anyway if this fails: the committed offset is still before the batch.
            with contextlib.suppress(KafkaException):
                self._consumer.seek(TopicPartition(tp.topic, tp.partition, first))

    def _watch(self) -> None:
        """The watchdog's check (fresh end offsets, which also give the lag metric); on a
        stall an ERROR, then a new consumer, or :class:`ConsumerStalled` when rebuilding
        did not help."""
        positions = self._positions()
        ends = self._fresh_ends(positions)
        if ends is not None:
            LAG.labels(self.name).set(Watchdog.lag(positions, ends))
        stall = self.watchdog.observe(positions, ends)
        stuck = self._commits_stuck()
        if stall is not None:
            what = stall.describe()
        elif stuck > self.watchdog.limit:
            what = f"{self.name}: no offset commit confirmed for {stuck:.0f} s"
        else:
            return
        STALLS.labels(self.name).inc()
        if self.watchdog.exhausted():
            raise ConsumerStalled(f"{what}; {self.watchdog.rebuilds} new consumers did "
                                  "not help: exiting so the process restarts")
        log.error("%s; rebuilding the consumer of group %s (%d of %d)", what, self._group,
                  self.watchdog.rebuilds + 1, self.watchdog.max_rebuilds)
        self._rebuild()

    def _positions(self) -> dict[tuple[str, int], int]:
        """Per assigned partition, the next offset to read (before the first fetch: the
        committed offset, else 0)."""
        try:
            assigned = self._consumer.assignment()
            positions = {(tp.topic, tp.partition): max(tp.offset, 0)
                         for tp in self._consumer.position(assigned)}
        except KafkaException as exc:
            log.debug("%s: positions unavailable: %s", self.name, exc)
            return {}
        unknown = [tp for tp in assigned if positions[(tp.topic, tp.partition)] == 0]
        try:
            for tp in self._consumer.committed(unknown, 2.0) if unknown else []:
                positions[(tp.topic, tp.partition)] = max(tp.offset, 0)
        except KafkaException as exc:  # the broker away: positions are what we know
            log.debug("%s: committed offsets unavailable: %s", self.name, exc)
        return positions

    def _fresh_ends(self, positions: dict[tuple[str, int], int]
                    ) -> dict[tuple[str, int], int] | None:
        """Each partition's end from the broker (not the fetcher's cache); None when the
        broker does not answer within the check's share of time."""
        timeout = min(2.0, self.watchdog.every)
        try:
            if not positions:  # nothing assigned: is the broker there at all?
                self._consumer.list_topics(timeout=timeout)
                return {}
            return {tp: self._consumer.get_watermark_offsets(
                        TopicPartition(*tp), timeout, cached=False)[1] for tp in positions}
        except KafkaException as exc:
            log.debug("%s: end offsets unavailable: %s", self.name, exc)
            return None

    def _rebuild(self) -> None:
        """Replace the consumer; nothing uncommitted is lost (it is read again). The old
        one is closed aside: closing waits for a broker that may be the problem."""
        old = self._consumer
        threading.Thread(target=_close_quietly, args=(old, self.name), daemon=True,
                         name=f"close-{self.name}").start()
        self._consumer = self._connect()
        self._commit_pending_since = None
        self.watchdog.rebuilt()


def _where(thread: threading.Thread) -> str:
    frame = sys._current_frames().get(thread.ident or 0)
    if frame is None:
        return "(unknown)"
    return " <- ".join(f"{f.name} ({Path(f.filename).name}:{f.lineno})"
                       for f in reversed(traceback.extract_stack(frame)[-3:]))


def _close_quietly(consumer: Consumer, name: str) -> None:
    try:
        consumer.close()
    except (KafkaException, RuntimeError) as exc:
        log.warning("%s: closing the stalled consumer failed: %s", name, exc)


def run_threads(targets: dict[str, Callable[[], object]], stop: threading.Event
                ) -> dict[str, object]:
    """Run each target in its own thread. If one dies, log why, stop the others and
    re-raise: a process with a dead agent must not keep running half-alive."""
    results: dict[str, object] = {}
    errors: list[tuple[str, BaseException]] = []

    def work(name: str, target: Callable[[], object]) -> None:
        try:
            results[name] = target()
        except BaseException as exc:
            log.exception("%s died: %s", name, exc)
            errors.append((name, exc))
            stop.set()

    threads = [threading.Thread(target=work, args=(n, t), name=f"agent-{n}", daemon=True)
               for n, t in targets.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0][1]
    return results
