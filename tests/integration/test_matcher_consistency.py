"""Cycle consistency on the real broker (issue 11): nobody matched twice, nobody
resurrected, poison seekers reported, never a failed cycle.

Each test says in its docstring what it caught before the fix."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta

import pytest
from confluent_kafka import Producer, TopicPartition

from consumers.blocks import CassandraBlockStore
from matcher.harness import CyclePlan
from matcher.pool import LogRecord, PoolState
from matcher.service import MatcherService
from mosaic.s3 import s3_client
from mosaic.settings import Settings
from producers.ticker import publish_tick
from profiles.insights import ChatInsights, ParticipantInsight, S3InsightStore
from stack.base import Service
from standins.vertex import VertexStandin
from streams.events import (
    CycleCompleted,
    OptInRequested,
    PairMatched,
    SeekerRemoved,
    SeekerUnmatched,
    SeekerUpdated,
    derive_event_id,
    to_millis,
)
from streams.kafka import make_consumer, make_producer, produce_event, read_to_end
from streams.serde import MAGIC, decode, default_serde, encode_record
from streams.topics import TopicCatalog
from tests.support import CLUSTERED_POOL as POOL
from tests.support import T0, drop_keyspace, matcher_topics, migrated_session, wait_for_line

pytestmark = pytest.mark.integration

OPTED_IN = T0 - timedelta(hours=2)


@pytest.fixture
def env(settings: Settings, kafka_stack: Service, unique: str
        ) -> Iterator[tuple[Settings, TopicCatalog]]:
    with matcher_topics(settings, f"c{unique}.", f"mc-{unique}") as env:
        yield env


def waiting(user: str, vector: tuple[float, ...], *, at: datetime = OPTED_IN
            ) -> SeekerUpdated:
    """What the embedding agent publishes for an opt-in accepted at ``at``."""
    return SeekerUpdated(event_id=derive_event_id("seed", user, str(vector), str(at)),
                         occurred_at=at, user_id=user, opted_in_at=at, vector=vector,
                         model="test", traits_hash="h", version=to_millis(at))


def opted_out(user: str, at: datetime) -> SeekerRemoved:
    return SeekerRemoved(event_id=derive_event_id("out", user, str(at)), occurred_at=at,
                         user_id=user, reason="opted_out", version=to_millis(at))


def seed(settings: Settings, catalog: TopicCatalog, vectors: Mapping[str, tuple[float, ...]],
         producer: Producer | None = None) -> None:
    client = producer or make_producer(settings)
    for user, vector in vectors.items():
        produce_event(client, catalog.seekers, waiting(user, vector))
    assert client.flush(30) == 0


def settled(settings: Settings, topic: str, timeout: float = 15.0) -> None:
    """Wait until no transaction on ``topic`` is pending: right after a commit returns,
    the last stable offset (the read_committed end) may still lag the high watermark
    while the commit markers are written (the race of issue 11 (b))."""
    stable = make_consumer(settings, f"lso-{time.monotonic_ns()}")
    raw = make_consumer(settings, f"hw-{time.monotonic_ns()}",
                        overrides={"isolation.level": "read_uncommitted"})
    try:
        parts = stable.list_topics(topic, 10).topics[topic].partitions
        deadline = time.monotonic() + timeout
        while True:
            lagging = [p for p in parts
                       if stable.get_watermark_offsets(TopicPartition(topic, p), 10)[1]
                       < raw.get_watermark_offsets(TopicPartition(topic, p), 10)[1]]
            if not lagging:
                return
            assert time.monotonic() < deadline, f"{topic}{lagging}: a transaction stays open"
            time.sleep(0.05)
    finally:
        stable.close()
        raw.close()


def committed(settings: Settings, topic: str) -> list[LogRecord]:
    settled(settings, topic)
    consumer = make_consumer(settings, f"read-{time.monotonic_ns()}")
    try:
        return [LogRecord(m.partition() or 0, m.offset() or 0, m.key(), m.value())
                for m in read_to_end(consumer, topic).messages]
    finally:
        consumer.close()


def events(settings: Settings, topic: str) -> list[object]:
    return [decode(r.value) for r in committed(settings, topic) if r.value is not None]


def pairs_of(settings: Settings, catalog: TopicCatalog) -> list[PairMatched]:
    return [e for e in events(settings, catalog.pairs.name) if isinstance(e, PairMatched)]


def summaries(settings: Settings, catalog: TopicCatalog) -> list[CycleCompleted]:
    return [e for e in events(settings, catalog.cycles.name) if isinstance(e, CycleCompleted)]


def pool_after(settings: Settings, catalog: TopicCatalog) -> dict[str, int]:
    """The waiting pool as any reader folds the committed seekers topic: user -> missed."""
    state = PoolState()
    state.apply_all(sorted(committed(settings, catalog.seekers.name),
                           key=lambda r: (r.partition, r.offset)))
    return {s.user_id: s.record.missed_cycles for s in state.waiting("default")
            if s.poison is None}


def assert_nobody_matched_twice(pairs: list[PairMatched]) -> None:
    users = Counter(u for p in pairs for u in (p.user_a, p.user_b))
    assert [u for u, n in users.items() if n > 1] == [], pairs


# -- (a) the pool changes while the cycle's transaction is open ----------------------------


def test_opt_out_before_commit_unpairs_the_user_and_frees_the_partner(
        env: tuple[Settings, TopicCatalog]) -> None:
    """Before: u1 opted out after the snapshot (inside the open transaction, via the
    before-commit hook) and was still committed in PairMatched u1|u2 (and the opt-out of
    the leftover u7 could be overwritten by the matcher's missed_cycles+1 copy).
    Now the late change aborts the transaction; the revised cycle has no u1, u2 is back
    in the pool with priority, u7 stays out."""
    settings, catalog = env
    seed(settings, catalog, POOL)
    tick = publish_tick(settings, "default", T0)
    producer = make_producer(settings)
    calls: list[CyclePlan] = []

    def opt_out_u1_and_u7(plan: CyclePlan) -> None:
        calls.append(plan)
        if len(calls) == 1:
            for user in ("u1", "u7"):
                produce_event(producer, catalog.seekers, opted_out(user, T0))
            assert producer.flush(10) == 0

    with MatcherService(settings, before_commit=opt_out_u1_and_u7) as service:
        (report,) = service.run(stop_when_idle=True)
    assert report.outcome == "completed"
    assert len(calls) == 2  # the first transaction was aborted and revised
    keys = {p.pair_key for p in pairs_of(settings, catalog)}
    assert keys == {"u3|u4", "u5|u6"}
    (summary,) = summaries(settings, catalog)
    assert summary.cycle_id == tick.cycle_id and summary.pairs == 2
    assert summary.unmatched_by_reason == {"left_during_cycle": 2, "partner_changed": 1}
    unmatched = {e.user_id: e.reason for e in events(settings, catalog.pairs.name)
                 if isinstance(e, SeekerUnmatched)}
    assert unmatched == {"u2": "partner_changed"}
    assert pool_after(settings, catalog) == {"u2": 1}


def test_block_before_commit_withdraws_the_pair(
        env: tuple[Settings, TopicCatalog], cassandra_stack: Service, unique: str) -> None:
    """Before: u3 blocked u4 after the snapshot (recorded in the real Cassandra block
    store inside the open transaction) and the pair u3|u4 was committed anyway."""
    settings, catalog = env
    keyspace = f"blk_{unique}"
    session = migrated_session(settings, keyspace)
    try:
        blocks = CassandraBlockStore(session)
        seed(settings, catalog, POOL)
        publish_tick(settings, "default", T0)

        def block(plan: CyclePlan) -> None:
            blocks.add("u3", "u4", T0)

        with MatcherService(settings, blocks=blocks, before_commit=block) as service:
            (report,) = service.run(stop_when_idle=True)
        assert report.outcome == "completed"
        assert {p.pair_key for p in pairs_of(settings, catalog)} == {"u1|u2", "u5|u6"}
        (summary,) = summaries(settings, catalog)
        assert summary.unmatched_by_reason["partner_changed"] == 2
        assert pool_after(settings, catalog) == {"u3": 1, "u4": 1, "u7": 1}
    finally:
        session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}")
        session.cluster.shutdown()


def test_reembedding_before_commit_keeps_the_new_vector(
        env: tuple[Settings, TopicCatalog]) -> None:
    """Before: u5 re-embedded (a new opt-in, a new vector) after the snapshot and was
    paired on the old vector. Now u5 waits with the new record, u6 with priority."""
    settings, catalog = env
    seed(settings, catalog, POOL)
    publish_tick(settings, "default", T0)
    producer = make_producer(settings)
    again = waiting("u5", (0.3, 0.3, 0.9), at=T0)

    def reembed(plan: CyclePlan) -> None:
        produce_event(producer, catalog.seekers, again)
        assert producer.flush(10) == 0

    with MatcherService(settings, before_commit=reembed) as service:
        service.run(stop_when_idle=True)
    assert {p.pair_key for p in pairs_of(settings, catalog)} == {"u1|u2", "u3|u4"}
    assert pool_after(settings, catalog) == {"u5": 0, "u6": 1, "u7": 1}


# -- (b) a tick right after a commit -------------------------------------------------------


def test_back_to_back_and_duplicate_ticks_see_the_cycle_just_committed(
        env: tuple[Settings, TopicCatalog]) -> None:
    """A backlog of ticks (downtime) with a duplicate right behind each: each tick is
    handled right after the previous commit. Under read_committed the watermark is the
    last stable offset, which lags while commit markers are written: before, a tick
    could read cycles/seekers without the cycle just committed (and run it again, or
    match its users again). Now the next catch-up waits for our own committed records."""
    settings, catalog = env
    rounds = 8
    seed(settings, catalog, {f"{c}{u}": v for c in "abc" for u, v in POOL.items()})
    for r in range(rounds):
        publish_tick(settings, "default", T0 + timedelta(hours=r))
        publish_tick(settings, "default", T0 + timedelta(hours=r, minutes=30))  # duplicate
    with MatcherService(settings) as service:
        outcomes = [x.outcome for x in service.run(stop_when_idle=True)]
    assert outcomes == ["completed", "duplicate"] * rounds
    ids = Counter(s.cycle_id for s in summaries(settings, catalog))
    assert len(ids) == rounds and set(ids.values()) == {1}, ids
    assert_nobody_matched_twice(pairs_of(settings, catalog))


def test_duplicate_tick_right_after_each_commit_many_times(
        env: tuple[Settings, TopicCatalog]) -> None:
    """A duplicate tick published during each cycle's commit (before-commit hook), so the
    service handles it immediately after the commit returns. A regression guard: this
    shape did not reproduce the lagging last stable offset reliably before the fix (the
    backlog test above did); it checks one CycleCompleted per cycle id round after round."""
    settings, catalog = env
    rounds = 6

    def duplicate_now(plan: CyclePlan) -> None:
        publish_tick(settings, "default", plan.tick.occurred_at + timedelta(minutes=1))

    with MatcherService(settings, before_commit=duplicate_now) as service:
        for r in range(rounds):
            seed(settings, catalog, {f"d{r}{u}": v for u, v in POOL.items()})
            publish_tick(settings, "default", T0 + timedelta(hours=r))
            reports = service.run(stop_when_idle=True)
            while len(reports) < 2:
                reports += service.run(stop_when_idle=True)
            assert [x.outcome for x in reports] == ["completed", "duplicate"], r
    ids = Counter(s.cycle_id for s in summaries(settings, catalog))
    assert len(ids) == rounds and set(ids.values()) == {1}, ids
    assert_nobody_matched_twice(pairs_of(settings, catalog))


# -- (d) poison seekers ----------------------------------------------------------------------


def _raw_seeker(update: SeekerUpdated, **fields: object) -> bytes:
    """A SeekerUpdated encoded as bytes without the event's own checks (e.g. NaN)."""
    entry = default_serde().registry.current("SeekerUpdated")
    return MAGIC + entry.fingerprint + encode_record(entry, {**update.to_dict(), **fields})


def test_poison_seekers_are_left_out_and_reported(env: tuple[Settings, TopicCatalog]) -> None:
    """Before: a vector whose float32 norm overflows (1e38 per value) or underflows
    (1e-30) made the core refuse the whole pool (ValidationError: the cycle failed and
    the service stopped); an undecodable record or a NaN vector was skipped silently
    (its user neither matched nor reported). Now each is left out with invalid_vector
    and counted in the summary; the good users are paired."""
    settings, catalog = env
    seed(settings, catalog, {u: v for u, v in POOL.items() if u != "u7"})
    producer = make_producer(settings)
    bad = {
        "p-dim": waiting("p-dim", (1.0, 0.0)),
        "p-overflow": waiting("p-overflow", (1e38, 1e38, 1e38)),
        "p-underflow": waiting("p-underflow", (1e-30, 1e-30, 0.0)),
    }
    for event in bad.values():
        produce_event(producer, catalog.seekers, event)
    nan = _raw_seeker(waiting("p-nan", (1.0, 0.0, 0.0)), vector=[float("nan"), 0.0, 0.0])
    producer.produce(catalog.seekers.name, value=nan, key=b"p-nan")
    producer.produce(catalog.seekers.name, value=b"\x00garbage", key=b"p-garbage")
    assert producer.flush(10) == 0
    publish_tick(settings, "default", T0)
    with MatcherService(settings) as service:
        (report,) = service.run(stop_when_idle=True)
    assert report.outcome == "completed" and report.pairs == 3
    (summary,) = summaries(settings, catalog)
    assert summary.unmatched_by_reason == {"invalid_vector": 5}
    assert summary.seekers == 11
    reported = {e.user_id for e in events(settings, catalog.pairs.name)
                if isinstance(e, SeekerUnmatched) and e.reason == "invalid_vector"}
    assert reported == {"p-dim", "p-overflow", "p-underflow", "p-nan", "p-garbage"}


# -- (c) a replayed opt-in ---------------------------------------------------------------------


def _old_seekers_fold_would_resurrect(records: list[LogRecord]) -> dict[str, str]:
    """The latest record per user in offset order (the fold before versions)."""
    latest: dict[str, str] = {}
    for r in records:
        event = decode(r.value) if r.value is not None else None
        if event is not None:
            latest[event.user_id] = type(event).__name__  # type: ignore[attr-defined]
    return latest


def test_replayed_seeker_record_after_match_does_not_bring_the_user_back(
        env: tuple[Settings, TopicCatalog]) -> None:
    """The embedding agent re-publishes the same SeekerUpdated (a replay: same request,
    same version) after the user was matched. Before, the offset-ordered fold made the
    user wait again and the next cycle paired u1|u2 again (with nobody else, recent
    partners are only avoided for 3 cycles... and here they are the only two)."""
    settings, catalog = env
    seed(settings, catalog, {u: POOL[u] for u in ("u1", "u2")})
    publish_tick(settings, "default", T0)
    with MatcherService(settings) as service:
        service.run(stop_when_idle=True)
        seed(settings, catalog, {u: POOL[u] for u in ("u1", "u2")})  # the replay
        publish_tick(settings, "default", T0 + timedelta(hours=5))
        (second,) = service.run(stop_when_idle=True)
    assert second.seekers == 0 and second.pairs == 0
    assert_nobody_matched_twice(pairs_of(settings, catalog))
    assert pool_after(settings, catalog) == {}
    records = committed(settings, catalog.seekers.name)
    assert _old_seekers_fold_would_resurrect(records)["u1"] == "SeekerUpdated"


# -- the embedding agent killed between publishing and committing ---------------------------

AGENT_DIM = 64
AGENT_TOKEN = "consistency-test-token"


def _agent(settings: Settings, vertex_url: str, keyspace: str, *, pause: float,
           idle_exit: float | None = None) -> subprocess.Popen[str]:
    env = {**os.environ,
           "MOSAIC_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
           "MOSAIC_KAFKA__TOPIC_PREFIX": settings.kafka.topic_prefix,
           "MOSAIC_CASSANDRA__KEYSPACE": keyspace,
           "MOSAIC_VECTOR_INDEX__CASSANDRA_TABLE": "vectors64",
           "MOSAIC_EMBEDDING__BACKEND": "vertex",
           "MOSAIC_EMBEDDING__VERTEX_BASE_URL": vertex_url,
           "MOSAIC_EMBEDDING__VERTEX_STATIC_TOKEN": AGENT_TOKEN,
           "MOSAIC_EMBEDDING__OUTPUT_DIMENSIONALITY": str(AGENT_DIM),
           "MOSAIC_EMBEDDING_AGENT__GROUP_ID": f"{settings.matcher.transactional_id}-emb",
           "MOSAIC_EMBEDDING_AGENT__BATCH_WITHIN_SECONDS": "0.3",
           "MOSAIC_EMBEDDING_AGENT__TEST_PAUSE_AFTER_PUBLISH_SECONDS": str(pause)}
    args = ["agents", "embedding"] + ([] if idle_exit is None else
                                      ["--idle-exit", str(idle_exit)])
    return subprocess.Popen([sys.executable, "-c", "from app.cli import entry; entry()",
                             *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _opt_in(user: str, at: datetime) -> OptInRequested:
    return OptInRequested(event_id=derive_event_id("optin", user, str(at)), occurred_at=at,
                          request_id=f"r{to_millis(at)}", user_id=user, opted_in_at=at)


@pytest.mark.usefixtures("cassandra_stack", "s3_stack")
def test_agent_killed_after_publish_replays_without_resurrecting_matched_users(
        env: tuple[Settings, TopicCatalog], unique: str) -> None:
    """kill -9 of the embedding agent after it published two opt-ins to seekers and
    before it acknowledged them; a tick pairs the two; a third user opts in; the
    restarted agent replays the two opt-ins and embeds the third. Before, the replayed
    SeekerUpdated put both back in the pool and the next cycle paired one of them with
    the newcomer (matched twice without an opt-in between). Now the replay carries the
    matched record's version and is ignored: the next cycle sees only the newcomer."""
    settings, catalog = env
    users = [f"k{unique}-{n}" for n in ("a", "b", "c")]
    store = S3InsightStore(s3_client(settings.s3), settings.s3.insights_bucket)
    for user in users:
        insight = ParticipantInsight(("curious", "warm"), ("hiking", "jazz"), ("honesty",),
                                     "short, playful messages")
        store.put_chat_insights(ChatInsights(f"{user}-chat", T0, (user,), {user: insight}),
                                T0)
    keyspace = f"kill_{unique}"
    session = migrated_session(settings, keyspace)
    producer = make_producer(settings)
    try:
        with VertexStandin(token=AGENT_TOKEN) as vertex:
            for user in users[:2]:
                produce_event(producer, catalog.optin, _opt_in(user, OPTED_IN))
            assert producer.flush(10) == 0
            agent = _agent(settings, vertex.url, keyspace, pause=120)
            try:
                wait_for_line(agent, "TEST HOOK: paused after publishing", timeout=90.0,
                              failure="agent never logged its pause hook")
            finally:
                if agent.poll() is None:
                    os.kill(agent.pid, signal.SIGKILL)
                agent.wait(30)
            publish_tick(settings, "default", T0)
            with MatcherService(settings) as service:
                (first,) = service.run(stop_when_idle=True)
                assert first.pairs == 1
                produce_event(producer, catalog.optin, _opt_in(users[2], T0))
                assert producer.flush(10) == 0
                again = _agent(settings, vertex.url, keyspace, pause=0, idle_exit=4)
                assert again.wait(120) == 0, again.stderr.read() if again.stderr else ""
                replayed = [e for e in events(settings, catalog.seekers.name)
                            if isinstance(e, SeekerUpdated) and e.user_id == users[0]]
                assert len(replayed) == 2  # the replay really was published again
                publish_tick(settings, "default", T0 + timedelta(hours=1))
                (second,) = service.run(stop_when_idle=True)
        assert (second.seekers, second.pairs) == (1, 0)
        assert_nobody_matched_twice(pairs_of(settings, catalog))
        assert pool_after(settings, catalog) == {users[2]: 1}
    finally:
        session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}")
        session.cluster.shutdown()


def test_block_store_reads_a_large_pool_concurrently_and_finds_every_block(
        settings: Settings, cassandra_stack: Service, unique: str) -> None:
    """The pool's partitions are read as concurrent IN queries of IN_CHUNK users, or the
    table is scanned when it holds fewer blocks than the pool has members: blocks in every
    chunk (and across chunks) are found either way, the same as one query at a time."""
    session = migrated_session(settings, f"blkc_{unique}")
    try:
        blocks = CassandraBlockStore(session)
        users = [f"p{i:05d}" for i in range(1_234)]
        edges = {(users[i], users[(i * 7 + 3) % len(users)]) for i in range(0, 1_234, 37)}
        edges.add((users[0], "someone-not-in-the-pool"))
        for blocker, blocked in edges:
            blocks.add(blocker, blocked, T0)
        expected = {tuple(sorted(e)) for e in edges if e[1] in set(users)}
        assert len(expected) > 30
        assert blocks.blocked_pairs(users) == expected
        serial = CassandraBlockStore(session, concurrency=1)
        assert serial.blocked_pairs(users) == expected
        scan = CassandraBlockStore(session, scan_min_users=1)  # the table is small
        assert scan.blocked_pairs(users) == expected
        # More blocks in the table than members in the pool: back to the partitions.
        assert scan.blocked_pairs(users[:20]) == {
            tuple(sorted(e)) for e in edges if e[0] in users[:20] and e[1] in users[:20]}
        assert blocks.blocked_pairs(users[:10]) == {
            tuple(sorted(e)) for e in edges if e[0] in users[:10] and e[1] in users[:10]}
    finally:
        session.shutdown()
        drop_keyspace(settings.cassandra, f"blkc_{unique}")
