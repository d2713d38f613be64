"""Long-running consumers through broker faults, on a PRIVATE broker (a free port pair, data
dir under /tmp, deleted at the end) so the shared stack's broker is never touched:

- a post-match agent whose broker goes away for longer than its watchdog's limit logs an
  ERROR naming the agent, the partitions and how long, within the limit plus 10 s, and
  goes on once the broker is back;
- the embedding agent (faust) through a broker restart mid-stream: every opt-in becomes a
  seeker exactly once;
- the matcher service through a broker restart between ticks: the next tick still becomes
  a cycle.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import traceback
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import SecretStr

from consumers.embedding.worker import WorkerReport, run_embedding_worker
from consumers.postmatch.app import build_postmatch
from matcher.metrics import CycleReport
from matcher.service import MatcherService
from mosaic.s3 import s3_client
from mosaic.settings import (
    CassandraSettings,
    EmbeddingAgentSettings,
    EmbeddingSettings,
    MatcherSettings,
    Settings,
    VectorIndexSettings,
)
from producers.ticker import publish_tick
from profiles.insights import ChatInsights, ParticipantInsight, S3InsightStore
from stack.base import Service
from standins.vertex import VertexStandin
from streams.events import (
    CycleCompleted,
    OptInRequested,
    PairMatched,
    SeekerRemoved,
    SeekerUpdated,
    derive_event_id,
    new_event_id,
    pair_key,
)
from streams.kafka import (
    KafkaOperationError,
    make_consumer,
    make_producer,
    produce_event,
    read_to_end,
)
from streams.serde import decode
from tests.brokers import PrivateBroker, private_broker
from tests.support import CLUSTERED_POOL, T0, migrated_session, own_keyspace, own_topics

pytestmark = [pytest.mark.integration, pytest.mark.fault]

WATCHDOG_SECONDS = 8.0
TOKEN = "broker-fault-token"
DIM = 64


@pytest.fixture(scope="module")
def broker(settings: Settings, kafka_stack: Service) -> Iterator[PrivateBroker]:
    with private_broker(settings) as own:
        yield own


def _own(broker: PrivateBroker, unique: str, **update: Any) -> Settings:
    return broker.settings.model_copy(update={
        "kafka": broker.settings.kafka.model_copy(update={"topic_prefix": f"b{unique}."}),
        **update})


def _wait(what: str, check: Callable[[], Any], timeout: float,
          errors: Callable[[], list[BaseException]] = list,
          worker: threading.Thread | None = None) -> Any:
    """``check()`` until truthy; fail naming ``what`` and any worker error first, else
    where the worker thread is stuck."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if errors():
            raise AssertionError(f"{what}: the worker failed: {errors()}")
        value = check()
        if value:
            return value
        time.sleep(0.5)
    frame = sys._current_frames().get(worker.ident or 0) if worker else None
    where = "".join(traceback.format_stack(frame)[-8:]) if frame else "(no worker thread)"
    raise AssertionError(f"{what}: not within {timeout:.0f} s, no worker error; the "
                         f"worker is at:\n{where}")


def _read(settings: Settings, topic: str) -> list[Any]:
    consumer = make_consumer(settings, f"read-{uuid.uuid4().hex[:8]}")
    try:
        return [decode(m.value()) for m in read_to_end(consumer, topic, timeout_seconds=60)
                .messages if m.value() is not None]
    finally:
        consumer.close()


# -- the post-match watchdog ------------------------------------------------------------


def test_an_agent_whose_broker_is_away_says_so_within_the_limit(
        broker: PrivateBroker, cassandra_stack: Service, nakama_stack: Service, unique: str,
        caplog: pytest.LogCaptureFixture) -> None:
    own = _own(broker, unique, cassandra=CassandraSettings(keyspace=f"w_{unique}"))
    own = own.model_copy(update={"kafka": own.kafka.model_copy(
        update={"consumer_watchdog_seconds": WATCHDOG_SECONDS})})
    with own_keyspace(own), own_topics(own) as catalog:
        app = build_postmatch(own)
        runner = app.runner("index-state", max_batch=50)
        stop = threading.Event()
        errors: list[BaseException] = []

        def work() -> None:
            try:
                runner.run(stop=stop.is_set)
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                errors.append(exc)

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        try:
            cycle = f"default:w-{unique}"
            producer = make_producer(own)
            for n in range(20):
                a, b = f"w{n}a-{unique}", f"w{n}b-{unique}"
                produce_event(producer, catalog.pairs, PairMatched(
                    event_id=derive_event_id("w", cycle, str(n)), occurred_at=datetime.now(UTC),
                    cycle_id=cycle, pair_key=pair_key(a, b), user_a=a, user_b=b, score=0.9,
                    similarity=0.8))
            assert producer.flush(30) == 0
            _wait("index-state handles the 20 pairs", lambda: runner.stats.handled >= 20, 60,
                  lambda: errors)
            caplog.clear()
            with caplog.at_level(logging.ERROR, logger="consumers.runner"), broker.paused():
                paused_at = time.monotonic()
                line = _wait("an ERROR from the watchdog", lambda: next(
                    (r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR
                     and "no progress" in r.getMessage()), None),
                    WATCHDOG_SECONDS + 10, lambda: errors)
                said_after = time.monotonic() - paused_at
            assert said_after <= WATCHDOG_SECONDS + 10
            assert line.startswith("index-state: no progress for ")
            assert "broker unreachable" in line and f"b{unique}.pairs[" in line
            assert f"b{unique}.cycles[" in line and "rebuilding the consumer" in line
            # Back to work once the broker is back: the next record is handled.
            more = PairMatched(event_id=derive_event_id("w", cycle, "late"),
                               occurred_at=datetime.now(UTC), cycle_id=cycle,
                               pair_key=pair_key("late-a", "late-b"), user_a="late-a",
                               user_b="late-b", score=0.9, similarity=0.8)
            produce_event(producer, catalog.pairs, more)
            assert producer.flush(60) == 0
            _wait("index-state handles a record after the pause",
                  lambda: runner.stats.handled >= 21, 90, lambda: errors)
        finally:
            stop.set()
            thread.join(60)
            app.close()
    assert not errors, errors


# -- the embedding agent ----------------------------------------------------------------


@pytest.fixture(scope="module")
def standin() -> Iterator[VertexStandin]:
    with VertexStandin(token=TOKEN) as server:
        yield server


def test_the_embedding_agent_makes_each_opt_in_a_seeker_once_through_a_broker_restart(
        broker: PrivateBroker, cassandra_stack: Service, s3_stack: Service,
        standin: VertexStandin, unique: str) -> None:
    keyspace = f"eb_{unique}"
    session = migrated_session(broker.settings, keyspace)
    own = _own(broker, unique, cassandra=CassandraSettings(keyspace=keyspace),
               vector_index=VectorIndexSettings(cassandra_table="vectors64"),
               embedding=EmbeddingSettings(
                   backend="vertex", vertex_base_url=standin.url,
                   vertex_static_token=SecretStr(TOKEN), output_dimensionality=DIM,
                   max_attempts=2),
               embedding_agent=EmbeddingAgentSettings(
                   group_id=f"embedding-{unique}", batch_max=8, batch_within_seconds=0.3,
                   retry_backoff_seconds=0.2, retry_max_backoff_seconds=2.0))
    s3 = s3_client(own.s3)
    users = [f"e{n}-{unique}" for n in range(60)]
    store = S3InsightStore(s3, own.s3.insights_bucket)
    for user in users:
        store.put_chat_insights(ChatInsights(f"{user}-chat", T0, (user,), {
            user: ParticipantInsight(("curious", "warm"), ("hiking",), ("honesty",), "short")}),
            T0)
    stop = threading.Event()
    reports: list[WorkerReport] = []
    errors: list[BaseException] = []
    with own_topics(own) as catalog:

        def work() -> None:
            try:
                reports.append(run_embedding_worker(own, stop=stop, max_seconds=400,
                                                    session=session, s3_client=s3))
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                errors.append(exc)

        def opt_in(batch: list[str]) -> None:
            producer = make_producer(own)
            for user in batch:
                produce_event(producer, catalog.optin, OptInRequested(
                    event_id=new_event_id(), occurred_at=T0, request_id=f"r-{user}",
                    user_id=user, opted_in_at=T0, pool="eu"))
            assert producer.flush(60) == 0

        def seekers() -> dict[str, set[str]]:
            seen: dict[str, set[str]] = defaultdict(set)
            for event in _read(own, catalog.seekers.name):
                if isinstance(event, SeekerUpdated):
                    seen[event.user_id].add(event.event_id)
            return seen

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        try:
            opt_in(users[:30])
            _wait("the first opt-ins become seekers", lambda: len(seekers()) >= 10, 120,
                  lambda: errors, thread)
            broker.fault("restart")
            opt_in(users[30:])
            _wait("every opt-in becomes a seeker after the restart",
                  lambda: len(seekers()) == len(users), 180, lambda: errors, thread)
        finally:
            stop.set()
            thread.join(120)
            session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}")
            session.cluster.shutdown()
        seen = seekers()
    assert not errors, errors
    assert sorted(seen) == sorted(users)
    # Replays after the restart may repeat a record, never make a second seeker: one
    # event id (derived from the opt-in) per user.
    assert {u: len(ids) for u, ids in seen.items() if len(ids) != 1} == {}
    assert reports and reports[0].fatal is None, reports


# -- the matcher service ----------------------------------------------------------------


def test_the_matcher_service_turns_ticks_into_cycles_through_a_broker_restart(
        broker: PrivateBroker, unique: str) -> None:
    own = _own(broker, unique, matcher=MatcherSettings(
        transactional_id=f"mb-{unique}", block_store="none", cycle_seconds=3600))
    stop = threading.Event()
    reports: list[CycleReport] = []
    errors: list[BaseException] = []
    with own_topics(own) as catalog:

        def cycles() -> list[str]:
            return [e.cycle_id for e in _read(own, catalog.cycles.name)
                    if isinstance(e, CycleCompleted)]

        _seed(own, catalog.seekers, unique, CLUSTERED_POOL)
        thread = _run_matcher(lambda: MatcherService(own), stop, reports, errors)
        try:
            first = publish_tick(own, "default", T0 + timedelta(minutes=1))
            _wait("the first tick's cycle", lambda: first.cycle_id in cycles(), 120,
                  lambda: errors, thread)
            broker.fault("restart")
            _seed(own, catalog.seekers, unique,
                  {"u1": CLUSTERED_POOL["u1"], "u8": (1.0, 0.02, 0.02)})
            second = publish_tick(own, "default", T0 + timedelta(hours=1))
            _wait("the tick after the restart becomes a cycle",
                  lambda: second.cycle_id in cycles(), 120, lambda: errors, thread)
        finally:
            stop.set()
            thread.join(120)
        done = cycles()
    assert not errors, errors
    assert sorted(done) == sorted([first.cycle_id, second.cycle_id])  # each exactly once


# -- a commit that times out (issue 22.4) ------------------------------------------------


@pytest.mark.parametrize("pause_seconds", [8.0, 20.0], ids=["commit-retried", "producer-rebuilt"])
def test_a_cycle_whose_commit_times_out_has_one_result(
        broker: PrivateBroker, unique: str, pause_seconds: float) -> None:
    """The broker is stopped (SIGSTOP) right as the cycle's commit request goes out, so
    the client's commit times out (5 s): 8 s is one failed attempt then a commit again,
    20 s outlasts every attempt (outcome unknown: the producer is rebuilt and the tick
    retried). Between the plan and the commit, u1 opts out, so a second run of the cycle
    would pair differently. The cycle must have exactly one result on the topics."""
    own = _own(broker, unique, matcher=MatcherSettings(
        transactional_id=f"mt-{unique}", block_store="none", cycle_seconds=3600,
        transaction_timeout_seconds=120))
    stop, paused = threading.Event(), threading.Event()
    reports: list[CycleReport] = []
    errors: list[BaseException] = []

    def pause_the_broker() -> None:
        with broker.paused():
            paused.set()
            time.sleep(pause_seconds)

    with own_topics(own) as catalog:
        def on_commit() -> None:
            if paused.is_set():
                return
            producer = make_producer(own)
            produce_event(producer, catalog.seekers, SeekerRemoved(
                event_id=derive_event_id("left", unique), occurred_at=T0, user_id="u1",
                reason="opted_out"))
            assert producer.flush(30) == 0
            threading.Thread(target=pause_the_broker, daemon=True).start()
            assert paused.wait(10), "the broker was not paused"

        _seed(own, catalog.seekers, unique, CLUSTERED_POOL)
        thread = _run_matcher(
            lambda: MatcherService(own, timeout_seconds=5, on_commit=on_commit), stop,
            reports, errors)
        try:
            tick = publish_tick(own, "default", T0 + timedelta(minutes=1))
            def committed() -> bool:
                try:
                    events = _read(own, catalog.cycles.name)
                except KafkaOperationError:  # the broker is paused
                    return False
                return any(isinstance(e, CycleCompleted) and e.cycle_id == tick.cycle_id
                           for e in events)

            _wait("the cycle whose commit timed out", committed, 180, lambda: errors, thread)
            assert paused.is_set(), "the commit never reached the hook"
        finally:
            stop.set()
            thread.join(120)
        cycles = [e for e in _read(own, catalog.cycles.name)
                  if isinstance(e, CycleCompleted) and e.cycle_id == tick.cycle_id]
        pairs = [e for e in _read(own, catalog.pairs.name)
                 if isinstance(e, PairMatched) and e.cycle_id == tick.cycle_id]
    assert not errors, errors
    assert len(cycles) == 1, f"{len(cycles)} results for {tick.cycle_id}: {cycles}"
    users = [u for p in pairs for u in (p.user_a, p.user_b)]
    assert len(users) == len(set(users)) and len(pairs) == cycles[0].pairs, (
        f"two pairings of {tick.cycle_id}: {sorted(p.pair_key for p in pairs)}")
    assert [r.outcome for r in reports].count("completed") <= 1, reports


def _seed(settings: Settings, topic: Any, unique: str,
          users: Mapping[str, tuple[float, ...]]) -> None:
    """Seekers records for ``users`` (vector per user), unversioned."""
    producer = make_producer(settings)
    for user, vector in users.items():
        produce_event(producer, topic, SeekerUpdated(
            event_id=derive_event_id("seed", unique, user), occurred_at=T0, user_id=user,
            opted_in_at=T0 - timedelta(hours=2), vector=vector, model="test", traits_hash="h"))
    assert producer.flush(60) == 0


def _run_matcher(service: Callable[[], MatcherService], stop: threading.Event,
                 reports: list[CycleReport], errors: list[BaseException]) -> threading.Thread:
    """The matcher service in a thread until ``stop`` (at most 400 s); its reports and
    its error (if any) land in ``reports`` and ``errors``."""
    def work() -> None:
        try:
            with service() as running:
                reports.extend(running.run(should_stop=stop.is_set, max_seconds=400))
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread
