"""Reading the matcher's inputs from Kafka incrementally.

:class:`TopicTail` returns, per call, the committed records appended since its last call,
up to the end offsets taken at the call: a consistent cut, and after the first call each
read costs only what is new. :class:`MatcherLog` keeps :class:`PoolState` (``seekers``)
and :class:`CycleHistory` (``cycles`` then ``pairs``) current with three tails.

Cost: the first read of ``seekers`` and ``cycles`` is the whole (compacted / one record
per cycle) topic; ``pairs`` starts at the time of the oldest cycle still inside
``history_cycles`` (``offsets_for_times``), so start-up reads only the pairs it needs
and each tick afterwards reads only records written since the previous tick.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, KafkaException, Message
from confluent_kafka import TopicPartition as KafkaTopicPartition

from matcher.checkpoint import CheckpointPlace, Loaded, offsets_refusal
from matcher.pool import CycleHistory, LogRecord, PoolState
from streams.kafka import (
    DEFAULT_TIMEOUT_SECONDS,
    KafkaOperationError,
    watermarks,
    wrap_kafka_error,
)
from streams.topics import TopicCatalog

# Pairs are produced before their cycle's summary within one transaction, which lasts at
# most transaction.timeout.ms (60 s); a generous margin also covers clock steps.
PAIRS_LOOKBACK_MS = 10 * 60 * 1000
_BATCH = 1000
_PROGRESS_SECONDS = 10.0

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Batch:
    records: list[LogRecord]
    end_offsets: dict[int, int]


def to_record(message: Message) -> LogRecord:
    _, timestamp = message.timestamp()
    return LogRecord(message.partition() or 0, message.offset() or 0, message.key(),
                     message.value(), timestamp)


class TopicTail:
    """Incremental reader of one topic with manual assignment (no group offsets)."""

    def __init__(self, consumer: Consumer, topic: str, *,
                 timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS) -> None:
        self._consumer, self.topic, self._timeout = consumer, topic, timeout_seconds
        self._positions: dict[int, int] | None = None
        self._floors: dict[int, int] = {}

    def expect(self, ends: Mapping[int, int]) -> None:
        """The next read goes at least to ``ends`` (the end of records we just committed):
        under read_committed the watermark is the last stable offset, which may not yet
        cover a transaction whose commit markers are still being written."""
        for partition, end in ends.items():
            self._floors[partition] = max(self._floors.get(partition, 0), end)

    def start_at(self, positions: Mapping[int, int]) -> None:
        self._positions = dict(positions)

    @property
    def positions(self) -> dict[int, int] | None:
        """Per partition, the next offset to read (None before the first read)."""
        return None if self._positions is None else dict(self._positions)

    def watermarks(self) -> dict[int, tuple[int, int]]:
        """Per partition, (log start, end) as the broker reports them now."""
        return self._watermarks()

    def end_offsets(self) -> dict[int, int]:
        """Per partition, the end librdkafka reports: the high watermark, but under
        read_committed the LAST STABLE OFFSET, which lags a transaction whose commit
        markers are still being written (e.g. our own cycle, just committed). Hence
        :meth:`expect`: the end is at least what we know we committed."""
        ends = {p: high for p, (_, high) in self._watermarks().items()}
        for partition, floor in self._floors.items():
            if partition in ends and floor > ends[partition]:
                ends[partition] = floor
        return ends

    def beginning(self) -> dict[int, int]:
        return {p: low for p, (low, _) in self._watermarks().items()}

    def read(self, apply: Callable[[LogRecord], None] | None = None) -> Batch:
        """The records since the last read; with ``apply``, each record is handed to it
        as it arrives instead (``records`` stays empty): a start-up that folds the whole
        topic never holds all of it at once."""
        ends = self.end_offsets()
        positions = self._positions if self._positions is not None else self.beginning()
        pending = {p: positions.get(p, 0) for p in ends if positions.get(p, 0) < ends[p]}
        records = self._read_range(pending, ends, apply) if pending else []
        self._positions = {p: max(positions.get(p, 0), end) for p, end in ends.items()}
        return Batch(records, ends)

    def _read_range(self, start: Mapping[int, int], ends: Mapping[int, int],
                    apply: Callable[[LogRecord], None] | None = None) -> list[LogRecord]:
        """Read ``start`` to ``ends``. The timeout bounds a STALL (no record for that
        long), not the read: a big pool takes as long as its size needs, with progress
        logged every ``_PROGRESS_SECONDS``, instead of a fixed deadline that would turn
        a large start-up into a crash loop."""
        consumer = self._consumer
        consumer.assign([KafkaTopicPartition(self.topic, p, o) for p, o in start.items()])
        total = sum(ends[p] - o for p, o in start.items())
        began = last_record = last_report = time.monotonic()
        records: list[LogRecord] = []
        add = records.append if apply is None else apply
        seen = 0
        try:
            while not self._caught_up(start, ends):
                now = time.monotonic()
                if now - last_record > self._timeout:
                    raise KafkaOperationError(
                        f"reading {self.topic} to {dict(ends)}: no record for "
                        f"{self._timeout:.0f} s after {seen:,} (an open "
                        "transaction of another producer?)", retryable=True)
                if total > _BATCH and now - last_report >= _PROGRESS_SECONDS:
                    last_report = now
                    log.info("reading %s: %s of %s records in %.0f s", self.topic,
                             f"{seen:,}", f"{total:,}", now - began)
                # consume() waits its full timeout unless a whole batch is ready: keep it
                # short, the loop re-checks the positions anyway.
                messages = consumer.consume(_BATCH, 0.02)
                if messages:
                    last_record = time.monotonic()
                for message in messages:
                    self._check(message)
                    if (message.offset() or 0) < ends[message.partition() or 0]:
                        add(to_record(message))
                        seen += 1
        finally:
            consumer.unassign()
        return records

    def _caught_up(self, start: Mapping[int, int], ends: Mapping[int, int]) -> bool:
        partitions = [KafkaTopicPartition(self.topic, p) for p in start]
        return all(tp.offset >= ends[tp.partition]
                   for tp in self._consumer.position(partitions))

    def _check(self, message: Message) -> None:
        error = message.error()
        if error is not None and error.code() != KafkaError._PARTITION_EOF:
            raise KafkaOperationError(f"reading {self.topic}: {error.str()}",
                                      retryable=error.retriable(), fatal=error.fatal())

    def _watermarks(self) -> dict[int, tuple[int, int]]:
        return watermarks(self._consumer, self.topic, self._timeout)

    def offsets_for_time(self, timestamp_ms: int) -> dict[int, int]:
        """Per partition, the first offset at or after ``timestamp_ms`` (else the end)."""
        ends = self.end_offsets()
        query = [KafkaTopicPartition(self.topic, p, timestamp_ms) for p in ends]
        try:
            found = self._consumer.offsets_for_times(query, self._timeout)
        except KafkaException as exc:
            raise wrap_kafka_error(f"offsets_for_times on {self.topic}", exc) from exc
        return {tp.partition: tp.offset if tp.offset >= 0 else ends[tp.partition]
                for tp in found}


class MatcherLog:
    """The pool and cycle history, refreshed from the log on demand. With a
    :class:`CheckpointPlace`, the pool starts from the checkpoint when it can be used
    (matcher/checkpoint.py) and reads ``seekers`` from its offsets on."""

    def __init__(self, consumer: Consumer, catalog: TopicCatalog, history_cycles: int, *,
                 timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
                 pools: frozenset[str] | None = None,
                 checkpoint: CheckpointPlace | None = None) -> None:
        self._pools, self._checkpoint = pools, checkpoint
        self.resumed: Loaded | None = None  # the checkpoint the pool started from
        self._saved: dict[int, int] | None = None  # positions of the last checkpoint
        self.pool = PoolState(pools=pools)
        self.history = CycleHistory(history_cycles)
        self._seekers = TopicTail(consumer, catalog.seekers.name,
                                  timeout_seconds=timeout_seconds)
        self._cycles = TopicTail(consumer, catalog.cycles.name,
                                 timeout_seconds=timeout_seconds)
        self._pairs = TopicTail(consumer, catalog.pairs.name, timeout_seconds=timeout_seconds)
        self._started = False
        self.seekers_end: dict[int, int] = {}

    def expect(self, own: Mapping[str, Mapping[int, int]]) -> None:
        """Our committed records' end offsets per topic: later reads include them."""
        for tail in (self._seekers, self._cycles, self._pairs):
            if tail.topic in own:
                tail.expect(own[tail.topic])

    def refresh(self) -> None:
        """Catch up with everything committed so far (cycles before pairs)."""
        for record in self._cycles.read().records:
            self.history.apply_cycle(record)
        if not self._started:
            self._pairs.start_at(self._pairs_start())
            self._started = True
        for record in self._pairs.read().records:
            self.history.apply_pair(record)
        self.refresh_pool()

    def refresh_pool(self) -> None:
        if self._seekers.positions is None and self._checkpoint is not None:
            self._resume(self._checkpoint)
        self.seekers_end = self._seekers.read(self.pool.apply).end_offsets

    def _resume(self, place: CheckpointPlace) -> None:
        topic = self._seekers.topic
        loaded = place.checkpoints.load(topic, place.topic_id, self._pools,
                                        place.max_age_seconds)
        if loaded is None:
            return
        why = offsets_refusal(loaded.meta.positions, self._seekers.watermarks())
        if why is not None:
            log.warning("checkpoint %s not used: %s; reading %s from the beginning",
                        place.checkpoints.path, why, topic)
            return
        self.pool, self.resumed = loaded.pool, loaded
        self._saved = loaded.meta.positions
        self._seekers.start_at(loaded.meta.positions)
        log.info("pool of %s from its checkpoint: %d waiting users, %.0f s old, read in "
                 "%.1f s; reading the records after it", topic, len(loaded.pool),
                 time.time() - loaded.meta.written_at, loaded.seconds)

    def save_checkpoint(self) -> bool:
        """Write a checkpoint of the pool as read so far, unless it has not moved since
        the last one (or there is no place for it). A failure is logged, not raised: the
        checkpoint only saves time."""
        positions = self._seekers.positions
        if self._checkpoint is None or positions is None or positions == self._saved:
            return False
        place = self._checkpoint
        try:
            place.checkpoints.save(self.pool, self._seekers.topic, place.topic_id, positions)
        except OSError as exc:
            log.warning("checkpoint %s not written: %s", place.checkpoints.path, exc)
            return False
        self._saved = positions
        return True

    def _pairs_start(self) -> dict[int, int]:
        oldest = self.history.oldest_recent_timestamp_ms()
        if oldest is None:
            return self._pairs.end_offsets()  # no cycle to remember: nothing to read
        return self._pairs.offsets_for_time(max(0, oldest - PAIRS_LOOKBACK_MS))
