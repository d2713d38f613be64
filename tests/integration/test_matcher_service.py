"""The matcher service on the real broker: a tick becomes one atomic cycle; duplicate
ticks, a kill -9 mid-transaction and a second instance never produce a second result."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Iterator, Mapping
from datetime import timedelta
from typing import TypeVar

import numpy as np
import pytest
from confluent_kafka import Producer

import matcher.service as service_module
from matcher.core.prepare import normalised
from matcher.cycle_producer import MatcherFenced
from matcher.service import MatcherService
from matcher.snapshot import CycleInput, snapshot_of
from mosaic.settings import Settings
from producers.ticker import publish_tick
from stack.base import Service
from streams.events import (
    CycleCompleted,
    Event,
    PairMatched,
    SeekerRemoved,
    SeekerUnmatched,
    SeekerUpdated,
    derive_event_id,
)
from streams.kafka import make_consumer, make_producer, produce_event, read_to_end
from streams.serde import decode
from streams.topics import TopicCatalog
from tests.support import CLUSTERED_POOL as POOL
from tests.support import EXPECTED_PAIRS, T0, matcher_topics, wait_for_line

pytestmark = pytest.mark.integration

E = TypeVar("E", bound=Event)


@pytest.fixture
def env(settings: Settings, kafka_stack: Service, unique: str
        ) -> Iterator[tuple[Settings, TopicCatalog]]:
    with matcher_topics(settings, f"t{unique}.", f"m-{unique}") as env:
        yield env


def seed(settings: Settings, catalog: TopicCatalog, vectors: Mapping[str, tuple[float, ...]],
         producer: Producer | None = None) -> None:
    client = producer or make_producer(settings)
    for user, vector in vectors.items():
        produce_event(client, catalog.seekers, SeekerUpdated(
            event_id=derive_event_id("seed", user, str(vector)), occurred_at=T0,
            user_id=user, opted_in_at=T0 - timedelta(hours=2), vector=vector, model="test",
            traits_hash="h"))
    assert client.flush(30) == 0


def committed(settings: Settings, topic: str, *, isolation: str = "read_committed"
              ) -> list[tuple[bytes, Event]]:
    consumer = make_consumer(settings, f"read-{time.monotonic_ns()}",
                             overrides={"isolation.level": isolation})
    try:
        messages = read_to_end(consumer, topic).messages
        return [(m.value() or b"", decode(m.value())) for m in messages]
    finally:
        consumer.close()


def of_type(records: list[tuple[bytes, Event]], kind: type[E]) -> list[tuple[bytes, E]]:
    return [(raw, e) for raw, e in records if isinstance(e, kind)]


def summaries(settings: Settings, catalog: TopicCatalog) -> list[CycleCompleted]:
    return [e for _, e in committed(settings, catalog.cycles.name)
            if isinstance(e, CycleCompleted)]


def test_tick_runs_one_cycle_with_the_right_pairs_and_remembers_partners(
        env: tuple[Settings, TopicCatalog], monkeypatch: pytest.MonkeyPatch) -> None:
    settings, catalog = env
    seed(settings, catalog, POOL)
    tick = publish_tick(settings, "default", T0 + timedelta(minutes=1))
    snapshots: list[weakref.ref[np.ndarray]] = []
    sizes: list[int] = []

    def watched(*args: object) -> CycleInput:
        cycle = snapshot_of(*args)  # type: ignore[arg-type]
        snapshots.append(weakref.ref(cycle.snapshot.vectors))
        sizes.append(cycle.snapshot.vectors.nbytes)
        return cycle

    monkeypatch.setattr(service_module, "snapshot_of", watched)
    with MatcherService(settings) as service:
        (report,) = service.run(stop_when_idle=True)
        assert (report.cycle_id, report.outcome, report.pairs) == (tick.cycle_id, "completed", 3)
        # The cycle's snapshot is not kept until the next cycle; its matrix lives on only
        # as the pool's store of the vectors, held once.
        gc.collect()
        assert len(snapshots) == 1 and snapshots[0]() is None
        assert service.pool.vector_bytes() == sizes[0] > 0

        pairs = of_type(committed(settings, catalog.pairs.name), PairMatched)
        assert {e.key() for _, e in pairs} == EXPECTED_PAIRS
        (summary,) = summaries(settings, catalog)
        assert (summary.cycle_id, summary.seekers, summary.pairs) == (tick.cycle_id, 7, 3)
        assert sum(summary.unmatched_by_reason.values()) == 1
        assert sum(summary.snapshot_offsets.values()) == len(POOL)
        assert {"snapshot", "constraints", "match"} <= set(summary.phase_seconds)
        pool = [e for _, e in committed(settings, catalog.seekers.name)]
        assert sorted(e.user_id for e in pool if isinstance(e, SeekerRemoved)) == \
               ["u1", "u2", "u3", "u4", "u5", "u6"]
        assert [(e.user_id, e.missed_cycles) for e in pool
                if isinstance(e, SeekerUpdated) and e.missed_cycles] == [("u7", 1)]
        # The leftover's carry-over repeats the unit vector the core paired it by (the
        # pool keeps the snapshot's rows), not the recorded one.
        (carried,) = [e for e in pool if isinstance(e, SeekerUpdated) and e.missed_cycles]
        recorded = np.asarray([POOL["u7"]], dtype=np.float32)
        assert abs(float(np.linalg.norm(recorded)) - 1.0) > 1e-3
        assert carried.vector == tuple(normalised(recorded, 1)[0].tolist())

        # Next slot: u1 and u2 opt in again next to a close newcomer; they just met.
        seed(settings, catalog, {"u1": POOL["u1"], "u2": POOL["u2"], "u8": (1.0, 0.02, 0.02)})
        publish_tick(settings, "default", T0 + timedelta(hours=1))
        (second,) = service.run(stop_when_idle=True)
    assert second.outcome == "completed"
    latest = [e for _, e in of_type(committed(settings, catalog.pairs.name), PairMatched)
              if e.cycle_id == second.cycle_id]
    # u7 still waits, so two pairs form; the recent pair u1|u2 is not one of them.
    keys = {e.key() for e in latest}
    assert len(keys) == 2 and "u1|u2" not in keys
    assert keys & {"u1|u8", "u2|u8"}


def test_duplicate_and_bad_ticks_are_skipped(env: tuple[Settings, TopicCatalog]) -> None:
    settings, catalog = env
    seed(settings, catalog, POOL)
    first = publish_tick(settings, "default", T0)
    producer = make_producer(settings)
    producer.produce(catalog.ticks.name, b"not an event", key=b"default")
    producer.flush(10)
    publish_tick(settings, "default", T0 + timedelta(minutes=30))  # same slot
    with MatcherService(settings) as service:
        outcomes = [r.outcome for r in service.run(stop_when_idle=True)]
    assert outcomes == ["completed", "dead_lettered", "duplicate"]
    # A fresh instance learns completed cycles from the cycles topic.
    publish_tick(settings, "default", T0 + timedelta(minutes=59))
    with MatcherService(settings) as service:
        assert [r.outcome for r in service.run(stop_when_idle=True)] == ["duplicate"]
    assert [s.cycle_id for s in summaries(settings, catalog)] == [first.cycle_id]
    assert len(of_type(committed(settings, catalog.pairs.name), PairMatched)) == 3
    assert len(committed(settings, catalog.deadletter.name)) == 1


def _start_paused_matcher(settings: Settings) -> subprocess.Popen[str]:
    env = {**os.environ, "MOSAIC_KAFKA__TOPIC_PREFIX": settings.kafka.topic_prefix,
           "MOSAIC_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
           "MOSAIC_MATCHER__TRANSACTIONAL_ID": settings.matcher.transactional_id,
           "MOSAIC_MATCHER__BLOCK_STORE": "none",
           "MOSAIC_MATCHER__TEST_PAUSE_BEFORE_COMMIT_SECONDS": "120"}
    return subprocess.Popen(
        [sys.executable, "-c", "from app.cli import entry; entry()", "matcher", "run",
         "--once"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_pause(process: subprocess.Popen[str]) -> None:
    wait_for_line(process, "paused before commit", timeout=60.0,
                  failure="matcher never reached the commit")


def test_kill_mid_transaction_then_rerun_publishes_one_identical_result(
        env: tuple[Settings, TopicCatalog]) -> None:
    settings, catalog = env
    seed(settings, catalog, POOL)
    publish_tick(settings, "default", T0)
    process = _start_paused_matcher(settings)
    try:
        _wait_for_pause(process)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(30)
    # The killed run's records are in the log, inside a transaction that never commits.
    doomed = of_type(committed(settings, catalog.pairs.name, isolation="read_uncommitted"),
                     PairMatched)
    assert {e.key() for _, e in doomed} == EXPECTED_PAIRS
    assert summaries(settings, catalog) == []

    with MatcherService(settings) as service:  # same transactional.id: aborts the zombie
        assert [r.outcome for r in service.run(stop_when_idle=True)] == ["completed"]

    pairs = of_type(committed(settings, catalog.pairs.name), PairMatched)
    assert sorted(raw for raw, _ in pairs) == sorted(raw for raw, _ in doomed)
    assert len(summaries(settings, catalog)) == 1
    unmatched = of_type(committed(settings, catalog.pairs.name), SeekerUnmatched)
    everything = committed(settings, catalog.pairs.name, isolation="read_uncommitted")
    assert len(of_type(everything, SeekerUnmatched)) == 2 * len(unmatched) == 2
    assert len({raw for raw, _ in of_type(everything, SeekerUnmatched)}) == 1


def test_second_instance_fences_the_first(env: tuple[Settings, TopicCatalog]) -> None:
    settings, catalog = env
    seed(settings, catalog, POOL)
    publish_tick(settings, "default", T0)
    successor = MatcherService(settings)

    def take_over(_: object) -> None:
        successor.start()  # init_transactions with the same id: the first is fenced

    first = MatcherService(settings, before_commit=take_over)
    try:
        with pytest.raises(MatcherFenced, match="fenced"):
            first.run(stop_when_idle=True)
    finally:
        first.close()
    assert summaries(settings, catalog) == []
    assert of_type(committed(settings, catalog.pairs.name), PairMatched) == []

    with successor:
        assert [r.outcome for r in successor.run(stop_when_idle=True)] == ["completed"]
    assert len(summaries(settings, catalog)) == 1
    assert len(of_type(committed(settings, catalog.pairs.name), PairMatched)) == 3


def test_a_transaction_the_broker_timed_out_is_retried_not_reported_as_fencing(
        env: tuple[Settings, TopicCatalog]) -> None:
    """The coordinator aborts a transaction older than transaction.timeout.ms and
    librdkafka reports that as "fenced". The matcher must tell it from a second instance:
    rebuild its producer, retry the tick, and commit the cycle once. A cycle that needs
    longer than the timeout every time (here every attempt holds its commit 14 s, past the
    broker's 10 s abort sweep) must not be retried at the same timeout for ever: each retry
    doubles it (2, 4, 8, 16 s), so the third or fourth attempt commits."""
    settings, catalog = env
    settings = settings.model_copy(update={"matcher": settings.matcher.model_copy(
        update={"transaction_timeout_seconds": 2.0})})
    seed(settings, catalog, POOL)
    publish_tick(settings, "default", T0)
    timeouts: list[float] = []
    service = MatcherService(settings, before_commit=lambda _: hold_past_the_timeout())

    def hold_past_the_timeout() -> None:
        timeouts.append(service.transaction_timeout_seconds)
        assert len(timeouts) <= 4, \
            f"the matcher retried at transaction timeouts {timeouts}: it never grows"
        time.sleep(14)

    with service:
        reports = service.run(stop_when_idle=True)
    assert [r.outcome for r in reports] == ["completed"]
    assert timeouts in ([2.0, 4.0, 8.0], [2.0, 4.0, 8.0, 16.0]), timeouts
    assert len(summaries(settings, catalog)) == 1
    pairs = of_type(committed(settings, catalog.pairs.name), PairMatched)
    assert {e.key() for _, e in pairs} == EXPECTED_PAIRS and len(pairs) == 3
    # The aborted attempts are in the log, invisible to read_committed readers.
    everything = of_type(committed(settings, catalog.pairs.name,
                                   isolation="read_uncommitted"), PairMatched)
    assert len(everything) == len(timeouts) * len(pairs)


def test_a_matcher_per_pool_neither_waits_for_nor_fences_another_pool(
        env: tuple[Settings, TopicCatalog]) -> None:
    """Pool "slow" is mid-transaction (paused before its commit) when pool "default"'s
    tick arrives: default's matcher commits its cycle meanwhile, and starting a second
    matcher for default fences only default's predecessor. (read_committed readers see
    default's cycle once slow's open transaction on the shared partitions ends: hence
    the short transaction.)"""
    settings, catalog = env
    seed(settings, catalog, POOL)  # the "default" pool
    slow_users = {f"s{k}": vector for k, vector in POOL.items()}
    client = make_producer(settings)
    for user, vector in slow_users.items():
        produce_event(client, catalog.seekers, SeekerUpdated(
            event_id=derive_event_id("seed", user), occurred_at=T0, user_id=user,
            opted_in_at=T0 - timedelta(hours=2), vector=vector, model="test",
            traits_hash="h", pool="slow"))
    assert client.flush(30) == 0
    publish_tick(settings, "slow", T0)
    publish_tick(settings, "default", T0)
    paused, release = threading.Event(), threading.Event()

    def hold(_: object) -> None:
        paused.set()
        assert release.wait(60), "the test never released pool slow"

    slow = MatcherService(settings, pools=["slow"], before_commit=hold)
    slow_reports: list[object] = []
    worker = threading.Thread(target=lambda: slow_reports.extend(
        slow.run(stop_when_idle=True)))
    worker.start()
    try:
        assert paused.wait(60), "pool slow never reached its commit"
        with MatcherService(settings, pools=["default"]) as fast:
            (report,) = fast.run(stop_when_idle=True)
            assert (report.pool, report.outcome, report.pairs) == ("default", "completed", 3)
            assert fast.transactional_id.endswith(".default")
            assert not release.is_set() and worker.is_alive()  # slow is still open
        with MatcherService(settings, pools=["default"]):
            pass  # the same transactional id as "fast" (closed): slow's is not touched
    finally:
        release.set()
        worker.join(60)
        slow.close()
    assert [r.outcome for r in slow_reports] == ["completed"]  # type: ignore[attr-defined]
    assert sorted(s.pool for s in summaries(settings, catalog)) == ["default", "slow"]
    pairs = of_type(committed(settings, catalog.pairs.name), PairMatched)
    assert {e.pool for _, e in pairs} == {"default", "slow"}
    assert all(e.user_a.startswith("s") == (e.pool == "slow") for _, e in pairs)
