"""Wiring for the post-match agents and the reconciler: the one place that builds them.

``run_postmatch`` runs the rooms, notifier and index-state agents (one batch runner
thread each, each its own consumer group and producer) and, optionally, the reconciler
loop. If any of them dies the others are stopped and the error re-raised, so the process
exits non-zero instead of running half-alive. ``reconcile`` finishes every unsettled pair
of a cycle; ``Reconciler`` finds such cycles by itself on a schedule.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import Counter, Gauge

from consumers.audit import (
    DEAD_LETTERED,
    PARKED,
    AuditRow,
    AuditStore,
    CassandraAuditStore,
    CycleRow,
    CycleStatus,
    summarize,
)
from consumers.chat import ChatServer, NakamaChat, RoomRequest
from consumers.postmatch.handlers import (
    IndexStateHandler,
    NotifierHandler,
    RoomsHandler,
    pair_ref,
    room_created,
)
from consumers.runner import BatchHandler, BatchRunner, RunStats, run_threads
from mosaic.errors import SerializationError, ValidationError
from mosaic.settings import Settings
from mosaic.user_state import CassandraUserStateWriter, UserStateWriter
from profiles.index import VectorIndex
from streams.events import CycleCompleted, Event, PairMatched, RoomCreated, derive_event_id
from streams.kafka import (
    BatchPublisher,
    group_id,
    make_consumer,
    make_producer,
    read_to_end,
)
from streams.serde import default_serde
from streams.topics import Topic, TopicCatalog, build_catalog

log = logging.getLogger(__name__)

AGENTS = ("rooms", "notifier", "index-state")

CYCLE_PAIRS = Gauge("mosaic_postmatch_cycle_pairs",
                    "Pairs of the latest cycles by post-match state.", ["cycle_id", "state"])
RECONCILED = Counter("mosaic_postmatch_reconciled_pairs",
                     "Pairs the reconciler finished (or found settled) by outcome.", ["outcome"])
LAST_FINISHED = Gauge("mosaic_postmatch_last_cycle_finished_timestamp_seconds",
                      "When the reconciler last saw a cycle with every pair settled.")


@dataclass
class PostMatch:
    """Everything the post-match handlers need, built once from settings."""

    settings: Settings
    catalog: TopicCatalog
    audit: AuditStore
    chat: ChatServer
    states: UserStateWriter
    index: VectorIndex
    close: Callable[[], None]
    _producers: list[Any] = field(default_factory=list)

    def publisher(self) -> BatchPublisher:
        """A producer of its own per agent: one agent's flush never waits on another's."""
        producer = make_producer(self.settings)
        self._producers.append(producer)
        return BatchPublisher(producer)

    def handler(self, agent: str, publisher: BatchPublisher) -> BatchHandler:
        def publish(event: Event) -> None:
            publisher.publish(self.catalog.for_event(event), event)

        if agent == "rooms":
            return RoomsHandler(self.audit, self.chat, self.states, publish)
        if agent == "notifier":
            return NotifierHandler(self.audit, self.chat, publish)
        return IndexStateHandler(self.audit, self.index, self.states)

    def topics(self, agent: str) -> list[Topic]:
        return {"rooms": [self.catalog.pairs], "notifier": [self.catalog.rooms],
                "index-state": [self.catalog.pairs, self.catalog.cycles]}[agent]

    def runner(self, agent: str, **kwargs: Any) -> BatchRunner:
        publisher = self.publisher()
        return BatchRunner(self.settings, agent, self.topics(agent),
                           self.handler(agent, publisher), publisher, **kwargs)


def build_postmatch(settings: Settings) -> PostMatch:
    from mosaic.cassandra import connect
    from profiles.bootstrap import build_embedder, build_vector_index

    session = connect(settings.cassandra)
    chat = NakamaChat(settings.nakama)
    app: PostMatch

    def close() -> None:
        for producer in app._producers:
            producer.flush(10)
        chat.close()
        session.cluster.shutdown()

    dim = build_embedder(settings).dim  # the index table is typed by the embedder's size
    app = PostMatch(
        settings=settings, catalog=build_catalog(settings),
        audit=CassandraAuditStore(session), chat=chat,
        states=CassandraUserStateWriter(session, settings.cassandra.keyspace),
        index=build_vector_index(settings, dim=dim, session=session), close=close,
    )
    return app


def run_postmatch(app: PostMatch, agents: Iterable[str] = AGENTS, *,
                  stop: Callable[[], bool] = lambda: False,
                  idle_seconds: float | None = None, max_seconds: float | None = None,
                  reconcile_every: float | None = None,
                  max_batch: int = 500, exit_when_stuck: bool = False
                  ) -> dict[str, RunStats]:
    """Run the chosen agents (and the reconciler every ``reconcile_every`` seconds) until
    ``stop()``, idleness or ``max_seconds``; re-raises the first agent's death. With
    ``exit_when_stuck`` (the CLI) an agent loop blocked in a call past twice the watchdog
    limit ends the process (exit 70) for its supervisor to restart."""
    halt = threading.Event()

    def stopped() -> bool:
        return halt.is_set() or stop()

    def agent_loop(runner: BatchRunner) -> Callable[[], object]:
        runner.exit_when_stuck = exit_when_stuck
        return lambda: runner.run(stop=stopped, idle_seconds=idle_seconds,
                                  max_seconds=max_seconds)

    targets: dict[str, Callable[[], object]] = {
        agent: agent_loop(app.runner(agent, max_batch=max_batch)) for agent in agents}
    if reconcile_every:
        reconciler = Reconciler(app)
        targets["reconciler"] = lambda: reconciler.run(stopped, every=reconcile_every,
                                                       max_seconds=max_seconds)
    results = run_threads(targets, halt)
    return {k: v for k, v in results.items() if isinstance(v, RunStats)}


# -- reconciliation ----------------------------------------------------------------------


@dataclass(frozen=True)
class Reconciled:
    cycle_id: str
    pairs: int
    already_complete: int
    finished: int
    failed: int = 0


def reconcile(app: PostMatch, cycle_id: str) -> Reconciled:
    """Finish every unsettled pair of ``cycle_id`` (idempotent; safe to run any time).

    Pairs come from the audit rows when the cycle's row count matches its
    CycleCompleted; otherwise (a pair the agents never saw) from the pairs topic."""
    rows = {r.pair_key: r for r in app.audit.rows(cycle_id)}
    meta = app.audit.cycle(cycle_id)
    if meta is not None and meta.pairs is not None and len(rows) >= meta.pairs:
        pairs = [_pair_of(r) for r in rows.values()]
    else:
        pairs = cycle_pairs(app, cycle_id)
    todo = [p for p in pairs if p.pair_key not in rows or not rows[p.pair_key].settled]
    done = len(pairs) - len(todo)
    failed = _finish(app, todo, rows)
    RECONCILED.labels("already_settled").inc(done)
    RECONCILED.labels("finished").inc(len(todo) - failed)
    RECONCILED.labels("failed").inc(failed)
    return Reconciled(cycle_id, len(pairs), done, len(todo) - failed, failed)


def _finish(app: PostMatch, todo: Sequence[PairMatched], rows: dict[str, AuditRow]) -> int:
    """Run every missing step of ``todo``; the number of pairs that still failed."""
    if not todo:
        return 0
    publisher = app.publisher()

    def publish(event: Event) -> None:
        publisher.publish(app.catalog.for_event(event), event)

    rooms = RoomsHandler(app.audit, app.chat, app.states, publish)
    notifier = NotifierHandler(app.audit, app.chat, publish)
    index = IndexStateHandler(app.audit, app.index, app.states)
    now = datetime.now(UTC)
    index.on_pairs([p for p in todo if p.pair_key not in rows
                    or not rows[p.pair_key].pinecone_metadata_updated])
    results = app.chat.create_rooms([RoomRequest(p.cycle_id, p.pair_key, p.user_a, p.user_b)
                                     for p in todo])
    outcomes = rooms.finish(todo, results)
    failed = 0
    created: list[RoomCreated] = []
    for (pair, failure), room in zip(outcomes, results, strict=True):
        if failure is None:
            created.append(room_created(pair, room))
        else:
            failed += 1
            app.audit.mark_status(pair_ref(pair), DEAD_LETTERED if failure.permanent
                                  else PARKED, failure.error, now)
    by_key = {(p.cycle_id, p.pair_key): p for p in todo}
    for key, failure in notifier.notify(created).items():
        failed += 1
        app.audit.mark_status(pair_ref(by_key[key]), DEAD_LETTERED if failure.permanent
                              else PARKED, failure.error, now)
    publisher.confirm()
    return failed


def _pair_of(row: AuditRow) -> PairMatched:
    return PairMatched(
        event_id=derive_event_id("pair", row.cycle_id, row.pair_key),
        occurred_at=row.matched_at or row.last_attempt_timestamp or datetime.now(UTC),
        cycle_id=row.cycle_id, pair_key=row.pair_key, user_a=row.user1_id,
        user_b=row.user2_id, score=0.0, similarity=0.0)


def _read_events(app: PostMatch, topic: Topic) -> list[Event]:
    """Every decodable event of ``topic`` up to its current end (manual assignment: no
    group offsets are used or changed)."""
    consumer = make_consumer(app.settings, group_id(app.settings, "reconciler"))
    try:
        snapshot = read_to_end(consumer, topic)
    finally:
        consumer.close()
    serde = default_serde()
    events: list[Event] = []
    for message in snapshot.messages:
        try:
            events.append(serde.decode(message.value()))
        except (SerializationError, ValidationError) as exc:
            # The topic's agents dead-letter it (their group owns its progress); a scan
            # only says what it skipped (docs/operations.md, "Schema evolution").
            log.warning("skipped unreadable %s[%s]@%s: %s", topic.name, message.partition(),
                        message.offset(), exc)
    return events


def cycle_pairs(app: PostMatch, cycle_id: str) -> list[PairMatched]:
    seen: dict[str, PairMatched] = {}
    for event in _read_events(app, app.catalog.pairs):
        if isinstance(event, PairMatched) and event.cycle_id == cycle_id:
            seen.setdefault(event.pair_key, event)
    return [seen[k] for k in sorted(seen)]


def completed_cycles(app: PostMatch, cycle_ids: set[str]) -> dict[str, CycleCompleted]:
    """The CycleCompleted of each of ``cycle_ids`` found on the cycles topic."""
    return {e.cycle_id: e for e in _read_events(app, app.catalog.cycles)
            if isinstance(e, CycleCompleted) and e.cycle_id in cycle_ids}


class Reconciler:
    """Finds cycles whose post-match work is unsettled and finishes them by replay.

    A cycle is left to the agents, without even reading its pair rows, until it has been
    quiet for ``grace``: committed, and last worked on by an agent (cycle_status
    .last_activity, one write per batch), more than ``grace`` ago. Then its rows are
    counted: every pair settled -> the cycle is marked finished and never looked at again;
    otherwise its unsettled pairs, parked ones included, are replayed. A cycle whose
    CycleCompleted is not recorded gets it from the cycles topic (skipped until it is
    there: its size is unknown)."""

    def __init__(self, app: PostMatch, *, grace: timedelta = timedelta(seconds=30),
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._app, self._grace, self._clock = app, grace, clock

    def sweep(self) -> list[Reconciled]:
        done: list[Reconciled] = []
        now = self._clock()
        for cycle in self._quiet_cycles(now):
            status = summarize(cycle.cycle_id, self._app.audit.rows(cycle.cycle_id), cycle)
            self._export(status)
            if status.finished:
                self._app.audit.mark_cycle_finished(cycle.cycle_id, now)
                LAST_FINISHED.set(time.time())
                log.info("cycle %s: all %d pairs settled (%d dead-lettered)",
                         cycle.cycle_id, status.pairs, status.dead_lettered)
                continue
            result = reconcile(self._app, cycle.cycle_id)
            log.info("reconciled cycle %s: %d pairs, %d finished now, %d still failing",
                     cycle.cycle_id, result.pairs, result.finished, result.failed)
            done.append(result)
        return done

    def _quiet_cycles(self, now: datetime) -> list[CycleRow]:
        """Unfinished cycles the agents left alone for ``grace``. A cycle with audit rows
        but no recorded CycleCompleted (the index-state agent never got to it) has its
        count recorded here from the cycles topic; one not on the topic yet is skipped."""
        cycles = self._app.audit.cycles()
        finished = [c.finished_at for c in cycles if c.finished_at is not None]
        if finished:  # from the store, so a restarted process reports it too
            LAST_FINISHED.set(max(finished).timestamp())
        quiet = [c for c in cycles if c.finished_at is None and not any(
            now - t < self._grace for t in (c.committed_at, c.last_activity) if t is not None)]
        unknown = {c.cycle_id for c in quiet if c.pairs is None}
        found = completed_cycles(self._app, unknown) if unknown else {}
        for event in found.values():
            log.warning("cycle %s: CycleCompleted (%d pairs) was not recorded by the "
                        "index-state agent; recorded from the cycles topic", event.cycle_id,
                        event.pairs)
            self._app.audit.record_cycle(event.cycle_id, event.pairs, event.seekers,
                                         event.occurred_at)
        return [c if c.pairs is not None else replace(
                    c, pairs=found[c.cycle_id].pairs, seekers=found[c.cycle_id].seekers,
                    committed_at=found[c.cycle_id].occurred_at)
                for c in quiet if c.pairs is not None or c.cycle_id in found]

    @staticmethod
    def _export(status: CycleStatus) -> None:
        for state, value in (("completed", status.completed), ("pending", status.pending),
                             ("parked", status.parked),
                             ("dead_lettered", status.dead_lettered)):
            CYCLE_PAIRS.labels(status.cycle_id, state).set(value)

    def run(self, stop: Callable[[], bool], *, every: float = 30.0,
            max_seconds: float | None = None) -> None:
        started = time.monotonic()
        next_sweep = started
        while not stop():
            if max_seconds is not None and time.monotonic() - started > max_seconds:
                return
            if time.monotonic() >= next_sweep:
                try:
                    self.sweep()
                except Exception as exc:
                    from mosaic.retry import is_transient

                    if not is_transient(exc):
                        raise
                    log.warning("reconciler: %s; next sweep in %.0f s", exc, every)
                next_sweep = time.monotonic() + every
            time.sleep(0.5)

