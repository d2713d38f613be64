"""The matcher service: reads ticks, runs a cycle per tick, publishes it atomically.

Per tick: catch up with the log (pool from ``seekers``, history from ``cycles`` and
``pairs``); a cycle id already in ``cycles`` is a duplicate tick and only its offset is
committed. Otherwise: snapshot the pool, build constraints (block store + recent
partners), run the pure core, and in ONE transaction publish the pairs, unmatched
seekers, pool updates, the ``CycleCompleted`` summary and the tick's offset.

Concurrency control is the one-partition tick topic plus ``transactional.id`` fencing:
starting an instance aborts a predecessor's open transaction and makes every later call
of the predecessor fail (:class:`MatcherFenced`). A crash before commit leaves nothing
visible to read_committed consumers and the tick uncommitted, so the rerun repeats the
cycle and, on the same snapshot, publishes byte-identical records.

Test hook: ``MOSAIC_MATCHER__TEST_PAUSE_BEFORE_COMMIT_SECONDS=N`` flushes the open
transaction, logs ``paused before commit`` and sleeps N seconds before committing, so a
test can kill the process mid-transaction. Never set it in production.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol

from confluent_kafka import Consumer, KafkaException, Message
from confluent_kafka import TopicPartition as KafkaTopicPartition

from matcher.checkpoint import Loaded, checkpoint_place
from matcher.core.model import Constraints, MatchParams, MatchResult, MatchStats, PoolSnapshot
from matcher.cycle_producer import CycleProducer
from matcher.harness import CycleOutcome, CyclePlan, Phases, params_hash, plan_cycle
from matcher.harness_log import MatcherLog, TopicTail
from matcher.metrics import CycleObserver, CycleReport
from matcher.pool import LogRecord, PoolState, Seeker, build_constraints, late_changes
from matcher.snapshot import CycleInput, snapshot_of
from mosaic.errors import ConfigError, ExternalServiceError, MosaicError, SerializationError
from mosaic.retry import Backoff
from mosaic.settings import Settings
from streams.deadletter import DeadLetterPublisher, RawRecord
from streams.events import CycleTick
from streams.kafka import (
    DEFAULT_TIMEOUT_SECONDS,
    Encoded,
    KafkaOperationError,
    make_consumer,
    produce_encoded,
    send_offsets,
    wrap_kafka_error,
)
from streams.serde import default_serde
from streams.topics import build_catalog

log = logging.getLogger(__name__)

IDLE_REFRESH_SECONDS = 60.0
# Transactions aborted and redone because users changed while one was open, per attempt.
MAX_REVISIONS = 5
# A failed tick is retried after 0.5 s, 1 s, 2 s ... up to 10 s (no jitter: one matcher).
TICK_BACKOFF = Backoff(0.5, 10.0)

MatchFunction = Callable[[PoolSnapshot, Constraints, MatchParams], MatchResult]
BeforeCommit = Callable[[CyclePlan], None]


class BlockStore(Protocol):
    """Who blocked whom among ``user_ids``: ``(blocker, blocked)`` pairs."""

    def blocked_pairs(self, user_ids: Sequence[str]) -> set[tuple[str, str]]: ...


class NoBlocks:
    """A block store that knows no blocks (blocks on seeker records still apply)."""

    def blocked_pairs(self, user_ids: Sequence[str]) -> set[tuple[str, str]]:
        return set()


class _PoolChanged(MosaicError):
    """Users of the open transaction changed before its commit: abort and revise."""


@dataclass(frozen=True)
class _Draft:
    """What a cycle decided before publishing: enough to revise its plan."""

    tick: CycleTick
    cycle: CycleInput
    outcome: CycleOutcome
    offsets: dict[int, int]

    @property
    def members(self) -> dict[str, Seeker]:
        return {s.user_id: s for s in (*self.cycle.seekers, *self.cycle.invalid)}


def _core_match(pool: PoolSnapshot, constraints: Constraints, params: MatchParams
                ) -> MatchResult:
    """The core, with the faiss index for pools above ``params.exact_max_users`` (its
    recall is measured every cycle and widened when below ``params.recall_target``)."""
    from matcher.ann import FaissIvfSearch
    from matcher.core import match_pool

    return match_pool(pool, constraints, params, search=FaissIvfSearch())


class MatcherService:
    """One matcher instance. ``run()`` handles ticks and returns a report per tick."""

    def __init__(self, settings: Settings, *, blocks: BlockStore | None = None,
                 match: MatchFunction = _core_match, observer: CycleObserver | None = None,
                 before_commit: BeforeCommit | None = None, max_attempts: int = 5,
                 timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
                 sleep: Callable[[float], None] = time.sleep,
                 pools: Sequence[str] = (),
                 on_commit: Callable[[], None] | None = None) -> None:
        """``before_commit`` and ``on_commit`` are test hooks: the first runs inside a
        cycle's transaction before its last look at the pool, the second right before
        every transaction's commit request."""
        self._settings, self._catalog = settings, build_catalog(settings)
        # Pools served: () = every pool. A matcher per pool keeps only its pool's vectors,
        # takes only its pool's ticks and has its own transactional id, so pools neither
        # queue behind each other nor fence each other.
        self._pools = frozenset(pools) or None
        self._blocks, self._match = blocks or NoBlocks(), match
        self._observer, self._before_commit = observer, before_commit
        self._max_attempts, self._timeout, self._sleep = max_attempts, timeout_seconds, sleep
        self._params = MatchParams.from_settings(settings.matcher)
        self._params_hash = params_hash(self._params)
        self._ticks: Consumer | None = None
        self._reader: Consumer | None = None
        self._late: Consumer | None = None  # read_uncommitted: changes inside our txn
        self._draft: _Draft | None = None
        self._log: MatcherLog | None = None
        self._next_tick = 0
        self._refreshed_at = 0.0
        self._checkpoint_due = False  # the pool moved on since the last checkpoint
        self._txn = CycleProducer(settings, self.transactional_id,
                                  timeout_seconds=timeout_seconds, on_commit=on_commit)

    @property
    def transaction_timeout_seconds(self) -> float:
        """The transaction timeout of the next producer (the setting, doubled per timeout)."""
        return self._txn.transaction_timeout_seconds

    @property
    def pool(self) -> PoolState:
        """The pool as read so far (after :meth:`start`)."""
        assert self._log is not None, "start() first"
        return self._log.pool

    @property
    def resumed(self) -> Loaded | None:
        """The checkpoint this instance's pool started from (None: the whole topic)."""
        assert self._log is not None, "start() first"
        return self._log.resumed

    @property
    def transactional_id(self) -> str:
        base = self._settings.matcher.transactional_id
        return base if self._pools is None else f"{base}.{'+'.join(sorted(self._pools))}"

    def __enter__(self) -> MatcherService:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        try:
            if kind is None:  # a clean stop: the next start reads from here on
                self.save_checkpoint()
        finally:
            self.close()

    def start(self) -> None:
        """Fence older instances (aborting their open transaction), then position the
        tick consumer at the committed offset and load the log."""
        if self._log is not None:
            return
        tid = self.transactional_id
        self._txn.ensure()
        # The reader fetches only on demand; a short broker wait keeps a catch-up right
        # after our own commit (markers in flight) from idling 500 ms per topic.
        self._reader = make_consumer(self._settings, f"{tid}.log",
                                     overrides={"fetch.wait.max.ms": 20})
        # Inside our open transaction read_committed stops at its first record (the LSO):
        # a change written after it is only visible uncommitted (see _late_changes).
        self._late = make_consumer(self._settings, f"{tid}.late",
                                   overrides={"fetch.wait.max.ms": 20,
                                              "isolation.level": "read_uncommitted"})
        self._ticks = make_consumer(self._settings, tid)
        self._assign_ticks(self._ticks)
        self._log = MatcherLog(
            self._reader, self._catalog, self._settings.matcher.history_cycles,
            timeout_seconds=self._timeout, pools=self._pools,
            checkpoint=checkpoint_place(self._settings, self._catalog, tid, self._timeout))
        self._log.refresh()
        self._refreshed_at = time.monotonic()
        self._checkpoint_due = True  # saved when idle, or at a clean stop
        resumed = self._log.resumed
        log.info("matcher %s started at tick offset %d; pool has %d seekers (%s)", tid,
                 self._next_tick, len(self._log.pool),
                 "read the whole seekers topic" if resumed is None else
                 f"from the checkpoint of {len(resumed.pool)} users and the records after it")

    def save_checkpoint(self) -> None:
        """Catch up with ``seekers`` and checkpoint the pool, if it moved on since the
        last checkpoint (matcher/checkpoint.py). Done when idle and at a clean stop, never
        inside a cycle; a failure only costs the next start some time."""
        if self._log is None or not self._checkpoint_due:
            return
        try:
            self._log.refresh_pool()
        except ExternalServiceError as exc:
            log.warning("matcher %s: no checkpoint now, reading seekers failed: %s",
                        self.transactional_id, exc)
            return
        self._log.save_checkpoint()
        self._checkpoint_due = False

    def close(self) -> None:
        for consumer in (self._ticks, self._reader, self._late):
            if consumer is not None:
                consumer.close()
        self._txn.close()
        self._ticks = self._reader = self._late = None
        self._log = None

    def run(self, *, stop_when_idle: bool = False, max_seconds: float | None = None,
            should_stop: Callable[[], bool] = lambda: False) -> list[CycleReport]:
        """Handle ticks until ``should_stop()``, ``max_seconds``, or (``stop_when_idle``)
        every tick that existed when the call began is handled. Outcomes per report:
        ``completed``, ``duplicate`` (cycle already published), ``dead_lettered``."""
        self.start()
        assert self._ticks is not None
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        until = self._tick_end() if stop_when_idle else None
        reports: list[CycleReport] = []
        while not should_stop() and (deadline is None or time.monotonic() < deadline):
            if until is not None and self._tick_position() >= until:
                break
            message = self._ticks.poll(0.5)
            if message is None:
                self._refresh_when_idle()
                self.save_checkpoint()
                continue
            error = message.error()
            if error is not None:
                if error.fatal():
                    raise KafkaOperationError(f"ticks: {error.str()}", retryable=False,
                                              fatal=True)
                log.warning("tick consumer: %s", error.str())
                continue
            report = self._handle(message)
            if report is not None:
                reports.append(report)
            self._next_tick = (message.offset() or 0) + 1
        return reports

    def _refresh_when_idle(self) -> None:
        # Keeps each tick's catch-up short, and reads tombstones before compaction may
        # drop them (delete.retention.ms) however long the gap between ticks.
        if time.monotonic() - self._refreshed_at >= IDLE_REFRESH_SECONDS:
            assert self._log is not None
            try:
                self._log.refresh()
            except ExternalServiceError as exc:
                if not exc.retryable:
                    raise
                # E.g. a read stalled while the broker was away: try again, don't stop.
                log.warning("matcher %s: idle read of the log failed, trying again: %s",
                            self.transactional_id, exc)
                self._sleep(1.0)
                return
            self._refreshed_at = time.monotonic()

    # -- ticks ------------------------------------------------------------------------

    def _assign_ticks(self, consumer: Consumer) -> None:
        topic = self._catalog.ticks.name
        deadline = time.monotonic() + self._timeout
        while True:
            try:
                (committed,) = consumer.committed([KafkaTopicPartition(topic, 0)],
                                                  self._timeout)
                low, _ = consumer.get_watermark_offsets(KafkaTopicPartition(topic, 0),
                                                        self._timeout, cached=False)
                break
            except KafkaException as exc:
                error = wrap_kafka_error(f"committed offset of {topic}", exc)
                # e.g. NOT_COORDINATOR while a cluster moves the group coordinator
                if not error.retryable or time.monotonic() > deadline:
                    raise error from exc
                time.sleep(0.5)
        if committed.error is not None:
            raise ConfigError(f"{topic}: {committed.error}")
        self._next_tick = max(committed.offset, low)
        consumer.assign([KafkaTopicPartition(topic, 0, self._next_tick)])

    def _tick_end(self) -> int:
        assert self._ticks is not None
        topic = KafkaTopicPartition(self._catalog.ticks.name, 0)
        return int(self._ticks.get_watermark_offsets(topic, self._timeout, cached=False)[1])

    def _tick_position(self) -> int:
        assert self._ticks is not None
        (position,) = self._ticks.position([KafkaTopicPartition(self._catalog.ticks.name, 0)])
        return max(self._next_tick, position.offset)

    def _handle(self, message: Message) -> CycleReport | None:
        """One tick, retried on retryable failures (each attempt is its own transaction).
        None: another pool's tick (its offset is committed with our next one)."""
        try:
            tick: CycleTick | None = default_serde().decode_as(message.value(), CycleTick)
        except SerializationError as exc:
            tick, bad = None, exc
        if not self._serves(tick):
            return None
        attempt = 1
        while True:
            try:
                self._txn.ensure()
                if tick is None:
                    return self._dead_letter(message, bad)
                return self._handle_tick(tick, message)
            except ExternalServiceError as exc:
                recovered = isinstance(exc, KafkaOperationError) and exc.fatal
                if isinstance(exc, KafkaOperationError) and exc.fatal:
                    self._txn.recover(exc)  # raises MatcherFenced for a real fence
                if self._observer is not None:
                    self._observer.cycle_failed(tick.pool if tick else "", exc)
                if not (exc.retryable or recovered) or attempt >= self._max_attempts:
                    raise
                log.warning("tick @%s attempt %d failed, retrying: %s", message.offset(),
                            attempt, exc)
                self._sleep(TICK_BACKOFF.delay(attempt))
                attempt += 1

    def _serves(self, tick: CycleTick | None) -> bool:
        if self._pools is None:
            return True
        if tick is None:  # one matcher dead-letters a bad tick: the first pool's
            return self._settings.matcher.pools[0] in self._pools
        return tick.pool in self._pools

    def _handle_tick(self, tick: CycleTick, message: Message) -> CycleReport:
        assert self._log is not None
        phases = Phases()
        with phases.measure("snapshot"):
            self._log.refresh()
        self._refreshed_at = time.monotonic()
        if self._log.history.is_completed(tick.cycle_id):
            self._commit_only(message)
            log.info("cycle %s already completed: tick @%s skipped", tick.cycle_id,
                     message.offset())
            return self._report(CycleReport(tick.cycle_id, tick.pool, "duplicate"))
        self._plan(tick, phases)
        try:
            plan = self._publish(message, phases)
            self._checkpoint_due = True
            assert self._draft is not None
            snapshot = self._draft.cycle.snapshot
            waits = dict(zip(snapshot.user_ids, snapshot.wait_seconds.tolist(), strict=True))
            report = _completed(plan, phases, waits, self._draft.outcome.stats)
        finally:
            # Not kept until the next cycle: its snapshot (a copy of every waiting vector)
            # would still be alive while the next one is built and matched.
            self._draft = None
        return self._report(report)

    # -- a cycle ----------------------------------------------------------------------

    def _plan(self, tick: CycleTick, phases: Phases) -> None:
        """Snapshot, constraints and the core's decision (the draft the publish phase
        turns into events: they are built once, after the last look at the pool)."""
        assert self._log is not None
        with phases.measure("snapshot"):
            cycle = snapshot_of(self._log.pool, tick.pool, tick.occurred_at)
            offsets = dict(self._log.seekers_end)
        with phases.measure("constraints"):
            ids = cycle.snapshot.user_ids
            blocked = self._blocks.blocked_pairs(ids) if ids else set()
            constraints = build_constraints(cycle.seekers, blocked,
                                            self._log.history.recent(tick.pool))
        with phases.measure("match"):
            outcome = self._run_core(cycle, constraints)
        self._draft = _Draft(tick, cycle, outcome, offsets)

    def _revise(self, phases: Phases, left: set[str], withdrawn: set[str]) -> CyclePlan:
        draft = self._draft
        assert draft is not None
        return plan_cycle(draft.tick, draft.cycle, draft.outcome,
                          snapshot_offsets=draft.offsets, params_digest=self._params_hash,
                          phase_seconds=phases.seconds, left=left, withdrawn=withdrawn)

    def _run_core(self, cycle: CycleInput, constraints: Constraints) -> CycleOutcome:
        if not len(cycle.snapshot):
            return CycleOutcome()
        result = self._match(cycle.snapshot, constraints, self._params)
        _log_recall(result.stats)
        return CycleOutcome(result.pairs, result.unmatched, stats=result.stats)

    def _publish(self, message: Message, phases: Phases) -> CyclePlan:
        """Publish the cycle in one transaction. Users who changed after the snapshot
        (opted out, blocked, re-embedded) are taken out first; a change that lands while
        the transaction is open (seen uncommitted, right before the commit) aborts it
        and the revised cycle is published in a fresh one. Returns what was committed."""
        assert self._log is not None
        assert self._ticks is not None and self._draft is not None
        members = self._draft.members
        left: set[str] = set()
        withdrawn: set[str] = set()
        with phases.measure("publish"):
            for revision in range(MAX_REVISIONS):
                self._log.refresh_pool()
                left |= self._log.pool.changed_since(members, self._draft.offsets)
                with phases.measure("encode"):  # building the events, then encoding them
                    plan = self._revise(phases, left, withdrawn)
                try:
                    own = self._publish_once(plan, message, members, left, withdrawn,
                                             phases=phases)
                except _PoolChanged as exc:
                    log.info("cycle %s revision %d aborted: %s", plan.tick.cycle_id,
                             revision + 1, exc)
                    continue
                self._log.expect(own)  # the next catch-up waits for our own records
                break
            else:
                raise ExternalServiceError(f"cycle {plan.tick.cycle_id}: the pool kept "
                                           f"changing over {MAX_REVISIONS} attempts",
                                           retryable=True)
        if left or withdrawn:
            log.info("cycle %s: %d seekers left during the cycle, %d pairs withdrawn",
                     plan.tick.cycle_id, len(left), len(withdrawn))
        log.info("cycle %s: %d seekers, %d pairs, unmatched %s", plan.tick.cycle_id,
                 plan.summary.seekers, plan.summary.pairs,
                 dict(plan.summary.unmatched_by_reason),
                 extra={"cycle_id": plan.tick.cycle_id, "pool": plan.tick.pool})
        return plan

    def _publish_once(self, plan: CyclePlan, message: Message, members: dict[str, Seeker],
                      left: set[str], withdrawn: set[str], *, phases: Phases
                      ) -> dict[str, dict[int, int]]:
        """One transaction; raises :class:`_PoolChanged` (aborted) when users of the plan
        changed while it was open. Returns the end offset of our records per topic."""
        assert self._log is not None
        assert self._ticks is not None
        start = dict(self._log.seekers_end)
        own: dict[str, dict[int, int]] = {}
        with phases.measure("encode"):  # within "publish", before the transaction
            records = plan.records(self._catalog, Encoded)
            seekers = self._catalog.seekers.name
            own_seekers = {_key_bytes(r.key): r.value for r in records if r.topic == seekers}

        def delivered(error: object, record: Message | None) -> None:
            if error is None and record is not None:
                ends = own.setdefault(record.topic() or "", {})
                partition = record.partition() or 0
                ends[partition] = max(ends.get(partition, 0), (record.offset() or 0) + 1)

        with phases.measure("transaction"), self._txn.transaction():  # within "publish"
            for record in records:
                produce_encoded(self._txn.producer, record, on_delivery=delivered,
                                timeout_seconds=self._timeout)
            send_offsets(self._txn.producer, self._ticks, [message],
                         timeout_seconds=self._timeout)
            self._txn.producer.flush(self._timeout)  # our records are on the broker
            self._pause_before_commit(plan)
            late, blocked = self._late_changes(plan, members, start, own_seekers)
            if (late - left) or (blocked - withdrawn):
                left |= late
                withdrawn |= blocked
                raise _PoolChanged(f"changed: {sorted(late)[:10]}, "
                                   f"blocked pairs: {sorted(blocked)[:10]}")
        return own

    def _late_changes(self, plan: CyclePlan, members: dict[str, Seeker],
                      start: dict[int, int], own: Mapping[bytes, bytes]
                      ) -> tuple[set[str], set[str]]:
        """Right before the commit: snapshot users with a newer seekers record (read
        uncommitted up to the high watermark, skipping matcher records), and pairs
        blocked since the snapshot. ``own``: this transaction's seekers records (key ->
        value). Most of the tail is them (a removal or carry-over per snapshot user):
        they are recognised by their bytes and never decoded (at 1M seekers decoding
        them took about 13 s inside the transaction)."""
        assert self._late is not None
        tail = TopicTail(self._late, self._catalog.seekers.name, timeout_seconds=self._timeout)
        tail.start_at(start)
        others: list[LogRecord] = []

        def keep(record: LogRecord) -> None:
            if record.key is None or own.get(record.key) != record.value:
                others.append(record)

        tail.read(keep)
        changed = late_changes(others, members)
        users = sorted({u for p in plan.pairs for u in (p.user_a, p.user_b)})
        blocked = self._blocks.blocked_pairs(users) if users else set()
        withdrawn = {p.pair_key for p in plan.pairs
                     if (p.user_a, p.user_b) in blocked or (p.user_b, p.user_a) in blocked}
        return changed, withdrawn

    def _pause_before_commit(self, plan: CyclePlan) -> None:
        if self._before_commit is not None:
            self._before_commit(plan)
        pause = self._settings.matcher.test_pause_before_commit_seconds
        if pause > 0:
            self._txn.producer.flush(self._timeout)
            log.warning("TEST HOOK: paused before commit of cycle %s for %.1fs",
                        plan.tick.cycle_id, pause)
            self._sleep(pause)

    def _commit_only(self, message: Message) -> None:
        assert self._ticks is not None
        with self._txn.transaction():
            send_offsets(self._txn.producer, self._ticks, [message], timeout_seconds=self._timeout)

    def _dead_letter(self, message: Message, error: SerializationError) -> CycleReport:
        assert self._ticks is not None
        letters = DeadLetterPublisher(self._txn.producer, self._catalog.deadletter,
                                      consumer_group=self.transactional_id, wait=False)
        with self._txn.transaction():
            letters.publish(RawRecord.from_message(message), error)
            send_offsets(self._txn.producer, self._ticks, [message], timeout_seconds=self._timeout)
        return self._report(CycleReport("", "", "dead_lettered"))

    def _report(self, report: CycleReport) -> CycleReport:
        if self._observer is not None:
            self._observer.cycle_handled(report)
        return report


def _key_bytes(key: str | bytes | None) -> bytes:
    return key.encode() if isinstance(key, str) else key or b""


def _log_recall(stats: MatchStats) -> None:
    """Say when the candidate search had to be widened, or missed its recall target."""
    if stats.candidate_recall is None:
        return
    steps = " -> ".join(stats.candidate_widening)
    if not stats.recall_target_met:
        log.error("candidate recall@10 %.3f below target %.2f after widening (%s); pairs "
                  "may be worse than with exact candidates; %.1f%% of the sampled exact "
                  "neighbours are at chance level", stats.candidate_recall,
                  stats.recall_target, steps, 100 * (stats.candidate_chance_share or 0.0))
    elif stats.candidates_widened:
        log.warning("candidate recall@10 of %s was %.3f, below target %.2f: search widened "
                    "(%s)", stats.candidate_method, stats.candidate_recall_initial or 0.0,
                    stats.recall_target, steps)


def _completed(plan: CyclePlan, phases: Phases, waits: dict[str, float],
               stats: MatchStats | None = None) -> CycleReport:
    summary = plan.summary
    return CycleReport(summary.cycle_id, summary.pool, "completed", seekers=summary.seekers,
                       pairs=summary.pairs, scores=tuple(p.score for p in plan.pairs),
                       unmatched_by_reason=dict(summary.unmatched_by_reason),
                       phase_seconds=dict(phases.seconds), wait_seconds=waits,
                       matched_user_ids=tuple(u for p in plan.pairs
                                              for u in (p.user_a, p.user_b)),
                       candidate_recall=None if stats is None else stats.candidate_recall,
                       recall_target_met=True if stats is None else stats.recall_target_met,
                       candidate_widening=() if stats is None else stats.candidate_widening)
