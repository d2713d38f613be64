"""The embedding agent (faust) on the real stack: Kafka, Cassandra (vector index, blocks,
user_state), S3 (insights, traits cache) and the Vertex stand-in as the embedder (a real
HTTP server speaking the documented API; deterministic and fast). Each test has its own
topics, consumer group and users; the module shares one keyspace and index table."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from confluent_kafka import TopicPartition
from prometheus_client import REGISTRY
from pydantic import SecretStr

from consumers.blocks import CassandraBlockStore
from consumers.embedding.worker import WorkerReport, build_wiring, run_embedding_worker
from mosaic.migrations import DDL_TIMEOUT_SECONDS
from mosaic.s3 import s3_client
from mosaic.settings import (
    CassandraSettings,
    EmbeddingAgentSettings,
    EmbeddingSettings,
    KafkaSettings,
    Settings,
    VectorIndexSettings,
)
from profiles.cassandra_index import CassandraVectorIndex
from profiles.insights import ChatInsights, ParticipantInsight, S3InsightStore
from profiles.pinecone_index import PineconeVectorIndex
from profiles.traits import S3TraitsCache
from stack.base import Service
from standins.vertex import VertexStandin
from streams.admin import apply
from streams.events import (
    BlockRequested,
    DeadLettered,
    Event,
    OptInRequested,
    OptOutRequested,
    SeekerRemoved,
    SeekerUpdated,
    new_event_id,
)
from streams.kafka import (
    make_admin,
    make_consumer,
    make_producer,
    make_transactional_producer,
    produce_event,
    read_to_end,
    transaction,
)
from streams.serde import decode
from streams.topics import TopicCatalog, build_catalog
from tests.support import migrated_session

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 1, tzinfo=UTC)
DIM = 64
TOKEN = "agent-test-token"


@pytest.fixture(scope="module")
def standin() -> Iterator[VertexStandin]:
    with VertexStandin(token=TOKEN) as server:
        yield server


@pytest.fixture(scope="module")
def keyspace(settings: Settings, cassandra_stack: Service) -> Iterator[tuple[str, Any]]:
    name = f"emb_{uuid.uuid4().hex[:10]}"
    session = migrated_session(settings, name)
    yield name, session
    # A busy node takes longer than a query's usual timeout to drop a keyspace.
    session.execute(f"DROP KEYSPACE IF EXISTS {name}", timeout=DDL_TIMEOUT_SECONDS)
    session.cluster.shutdown()


@dataclass
class Env:
    settings: Settings
    catalog: TopicCatalog
    session: Any
    s3: Any
    unique: str

    def user(self, name: str) -> str:
        return f"{name}-{self.unique}"

    def seed(self, user: str, *traits: str) -> None:
        """One analysed chat for ``user`` in S3 (the upstream contract)."""
        store = S3InsightStore(self.s3, self.settings.s3.insights_bucket)
        chat = f"{user}-chat".replace(".", "_")
        insight = ParticipantInsight(traits or ("curious", "warm"), ("hiking", "jazz"),
                                     ("honesty",), "short, playful messages")
        store.put_chat_insights(ChatInsights(chat, T0, (user,), {user: insight}), T0)

    def produce(self, *events: Event, raw: Sequence[tuple[bytes, bytes | None]] = ()
                ) -> None:
        producer = make_producer(self.settings)
        for key, value in raw:
            producer.produce(self.catalog.optin.name, key=key, value=value)
        for event in events:
            produce_event(producer, self.catalog.optin, event)
        assert producer.flush(30) == 0

    def run(self, idle: float | None = 3.0, **kw: Any) -> WorkerReport:
        return run_embedding_worker(self.settings, stop_after_idle_seconds=idle,
                                    max_seconds=90, session=self.session, s3_client=self.s3,
                                    **kw)

    def read(self, topic: Any) -> list[Any]:
        consumer = make_consumer(self.settings, f"reader-{uuid.uuid4().hex[:8]}")
        try:
            return read_to_end(consumer, topic).messages
        finally:
            consumer.close()

    def seekers(self) -> dict[str, Event | None]:
        """The matcher's view: the latest record per key (None for a null tombstone)."""
        latest: dict[str, Event | None] = {}
        for m in sorted(self.read(self.catalog.seekers), key=lambda m: m.offset()):
            latest[m.key().decode()] = None if m.value() is None else decode(m.value())
        return latest

    def dead_letters(self) -> list[DeadLettered]:
        return [decode(m.value()) for m in self.read(self.catalog.deadletter)]  # type: ignore[misc]

    def index(self, dim: int = DIM) -> CassandraVectorIndex:
        return CassandraVectorIndex(self.session, dim=dim, create=False,
                                    table=self.settings.vector_index.cassandra_table)

    def state(self, user: str) -> Any:
        return self.session.execute("SELECT * FROM user_state WHERE user_id = %s",
                                    (user,)).one()

    def committed(self) -> list[int]:
        consumer = make_consumer(self.settings, self.settings.embedding_agent.group_id)
        try:
            parts = [TopicPartition(self.catalog.optin.name, p)
                     for p in range(self.catalog.optin.partitions)]
            return [tp.offset for tp in consumer.committed(parts, timeout=10)]
        finally:
            consumer.close()


def make_env(settings: Settings, keyspace: tuple[str, Any], unique: str,
             embedding: EmbeddingSettings, table: str) -> Iterator[Env]:
    env_settings = settings.model_copy(update={
        "kafka": KafkaSettings(topic_prefix=f"t{unique}."),
        "cassandra": CassandraSettings(keyspace=keyspace[0]),
        "vector_index": VectorIndexSettings(cassandra_table=table),
        "embedding": embedding,
        "embedding_agent": EmbeddingAgentSettings(
            group_id=f"embedding-{unique}", batch_max=16, batch_within_seconds=0.3,
            retry_backoff_seconds=0.2, retry_max_backoff_seconds=1.0),
    })
    catalog = build_catalog(env_settings)
    admin = make_admin(env_settings)
    apply(catalog, admin)
    yield Env(env_settings, catalog, keyspace[1], s3_client(env_settings.s3), unique)
    for future in admin.delete_topics([t.name for t in catalog],
                                      operation_timeout=30).values():
        future.result(timeout=30)


@pytest.fixture
def env(settings: Settings, kafka_stack: Service, s3_stack: Service, standin: VertexStandin,
        keyspace: tuple[str, Any], unique: str) -> Iterator[Env]:
    standin.reset_requests()
    embedding = EmbeddingSettings(
        backend="vertex", vertex_base_url=standin.url, vertex_static_token=SecretStr(TOKEN),
        output_dimensionality=DIM, max_attempts=2)
    yield from make_env(settings, keyspace, unique, embedding, table="vectors64")


def opt_in(user: str, n: int = 0, **kw: Any) -> OptInRequested:
    at = T0 + timedelta(seconds=n)
    return OptInRequested(event_id=new_event_id(), occurred_at=at, request_id=f"r{n}",
                          user_id=user, opted_in_at=at, pool="eu", **kw)


def opt_out(user: str, n: int = 0) -> OptOutRequested:
    return OptOutRequested(event_id=new_event_id(), occurred_at=T0 + timedelta(seconds=n),
                           request_id=f"o{n}", user_id=user, pool="eu")


def until(predicate: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("condition not met in time")


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# -- the scenarios -------------------------------------------------------------------------


def test_opt_in_reaches_the_seekers_topic_with_its_vector(env: Env,
                                                         standin: VertexStandin) -> None:
    alice, bob = env.user("alice"), env.user("bob")
    env.seed(alice, "curious", "warm")
    env.seed(bob, "calm", "patient")
    env.produce(opt_in(alice, 1), opt_in(bob, 2))
    report = env.run()
    assert report.fatal is None and report.outcomes == {"indexed": 2}
    seekers = env.seekers()
    stored = env.index().fetch([alice, bob])
    for user in (alice, bob):
        event = seekers[user]
        assert isinstance(event, SeekerUpdated) and event.pool == "eu"
        opted_in_at = T0 + timedelta(seconds=1 if user == alice else 2)
        assert event.opted_in_at == opted_in_at
        assert stored[user].metadata["opted_in_at"] == opted_in_at.timestamp()
        assert np.allclose(event.vector, stored[user].vector, atol=1e-6)
        assert event.traits_hash == stored[user].metadata["fingerprint"]
        assert stored[user].metadata["status"] == "waiting"
        row = env.state(user)
        assert row.state == "waiting" and row.missed_cycles == 0 and row.pool == "eu"
    assert env.state(alice).waiting_since.replace(tzinfo=UTC) == T0 + timedelta(seconds=1)
    # One embed request per batch (both texts in one call when they share a batch).
    assert standin.request_count == report.batches
    assert sum(o for o in env.committed() if o > 0) == 2


def test_opt_out_removes_the_user_everywhere(env: Env) -> None:
    alice, bob = env.user("alice"), env.user("bob")
    env.seed(alice)
    env.seed(bob)
    stop = threading.Event()
    reports: list[WorkerReport] = []
    worker = threading.Thread(target=lambda: reports.append(env.run(idle=None, stop=stop)))
    worker.start()
    try:
        env.produce(opt_in(alice, 1), opt_in(bob, 2))
        until(lambda: len(env.index().fetch([alice, bob])) == 2)
        cache = S3TraitsCache(env.s3, env.settings.s3.traits_cache_bucket)
        assert cache.get(alice) is not None
        env.produce(opt_out(alice, 3))
        until(lambda: not env.index().fetch([alice]))
        until(lambda: isinstance(env.seekers().get(alice), SeekerRemoved))
    finally:
        stop.set()
        worker.join(60)
    assert reports[0].fatal is None
    assert cache.get(alice) is None and cache.get(bob) is not None
    snapshot = {u: e for u, e in env.seekers().items() if isinstance(e, SeekerUpdated)}
    assert set(snapshot) == {bob}  # the matcher's pool drops alice
    removed = env.seekers()[alice]
    assert isinstance(removed, SeekerRemoved) and removed.reason == "opted_out"


def _index_state(env: Env, users: list[str]) -> dict[str, Any]:
    stored = env.index().fetch(users)
    return {u: ({k: v for k, v in r.metadata.items() if k != "updated_at"},
                r.vector.round(6).tolist()) for u, r in stored.items()}


def test_replaying_the_topic_gives_the_same_index_state(env: Env) -> None:
    users = [env.user(n) for n in ("a", "b", "c")]
    for user in users:
        env.seed(user)
    env.produce(opt_in(users[0], 1), opt_in(users[1], 2), opt_out(users[1], 3),
                opt_in(users[2], 4))
    assert env.run().fatal is None
    before, seekers_before = _index_state(env, users), env.seekers()
    assert set(before) == {users[0], users[2]}
    replay = env.settings.embedding_agent.model_copy(update={"group_id": f"replay-{env.unique}"})
    env.settings = env.settings.model_copy(update={"embedding_agent": replay})
    report = env.run()
    assert report.fatal is None and report.records == 4
    assert report.outcomes.get("indexed", 0) == 0  # nothing re-embedded
    assert _index_state(env, users) == before
    after = env.seekers()
    assert {u: encode_without_time(e) for u, e in after.items()} == {
        u: encode_without_time(e) for u, e in seekers_before.items()}


def encode_without_time(event: Event | None) -> Any:
    if event is None:
        return None
    data = event.to_dict()
    data.pop("occurred_at")
    return data


def test_poison_is_dead_lettered_and_the_next_event_processed(env: Env) -> None:
    alice, ghost = env.user("alice"), env.user("aborted")
    env.seed(alice)
    env.seed(ghost)
    # An aborted transaction's opt-in must never be seen (consumer reads read_committed).
    txn = make_transactional_producer(env.settings, f"txn-{env.unique}")
    with pytest.raises(RuntimeError), transaction(txn):
        produce_event(txn, env.catalog.optin, opt_in(ghost, 0))
        txn.flush(10)
        raise RuntimeError("abort")
    before = metric("mosaic_embedding_events_total", type="undecodable", outcome="dead_lettered")
    env.produce(opt_in(alice, 2), raw=[(alice.encode(), b"\x00garbage"), (b"tomb", None)])
    report = env.run()
    assert report.fatal is None and report.outcomes == {"dead_lettered": 2, "indexed": 1}
    letters = {letter.source_key: letter for letter in env.dead_letters()}
    assert set(letters) == {alice.encode(), b"tomb"}
    letter = letters[alice.encode()]
    assert letter.source_topic == env.catalog.optin.name and letter.source_value == b"\x00garbage"
    assert letter.source_offset >= 0 and letter.reason and letter.consumer_group
    assert letters[b"tomb"].source_value is None  # a null value is not skipped silently
    assert isinstance(env.seekers()[alice], SeekerUpdated)
    assert not env.index().fetch([ghost])
    assert metric("mosaic_embedding_events_total", type="undecodable",
                  outcome="dead_lettered") == before + 2


def test_a_bug_stops_the_worker_without_acknowledging_the_batch(env: Env) -> None:
    alice = env.user("alice")
    env.seed(alice)
    env.produce(opt_in(alice, 1))
    wiring = build_wiring(env.settings, session=env.session, s3_client=env.s3)
    real = wiring.pipeline.handle_batch

    def broken(records: Any) -> Any:
        raise ZeroDivisionError("a bug")

    wiring.pipeline.handle_batch = broken  # type: ignore[method-assign]
    try:
        report = env.run(pipeline=wiring.pipeline)
        assert report.stop_reason == "fatal" and "ZeroDivisionError" in (report.fatal or "")
        assert all(o < 0 for o in env.committed())  # the failed batch was not committed
        wiring.pipeline.handle_batch = real  # type: ignore[method-assign]
        again = env.run(pipeline=wiring.pipeline)
    finally:
        wiring.close()
    assert again.fatal is None and again.outcomes == {"indexed": 1}
    assert isinstance(env.seekers()[alice], SeekerUpdated)


def test_user_without_insights_gets_profile_failed_and_no_dead_letter(env: Env) -> None:
    nobody = env.user("nobody")
    env.produce(opt_in(nobody, 1))
    report = env.run()
    assert report.fatal is None and report.outcomes == {"profile_failed": 1}
    assert env.dead_letters() == []
    row = env.state(nobody)
    assert row.state == "profile_failed" and "no usable insights" in row.detail
    removed = env.seekers()[nobody]
    assert isinstance(removed, SeekerRemoved) and removed.reason == "embedding_failed"


def test_block_is_recorded_for_the_matcher(env: Env) -> None:
    a, b, c = env.user("a"), env.user("b"), env.user("c")
    block = BlockRequested(event_id=new_event_id(), occurred_at=T0, request_id="b1",
                           user_id=b, blocked_user_id=a)
    env.produce(block)
    assert env.run().outcomes == {"blocked": 1}
    store = CassandraBlockStore(env.session)
    assert store.blocked_pairs([a, b, c]) == {tuple(sorted((a, b)))}
    assert store.blocked_pairs([a, c]) == set()


def test_embedder_outage_is_retried_without_committing_past_it(
        env: Env, standin: VertexStandin) -> None:
    alice = env.user("alice")
    env.seed(alice)
    standin.fail_next(6, status=503)  # 3 batch attempts x 2 SDK attempts
    retries = metric("mosaic_embedding_retries_total", stage="index")
    env.produce(opt_in(alice, 1))
    reports: list[WorkerReport] = []
    worker = threading.Thread(target=lambda: reports.append(env.run()))
    worker.start()
    try:
        until(lambda: metric("mosaic_embedding_retries_total", stage="index") > retries)
        assert all(o < 0 for o in env.committed())  # nothing committed mid-outage
    finally:
        worker.join(90)
    assert reports[0].fatal is None and reports[0].outcomes == {"indexed": 1}
    assert sum(o for o in env.committed() if o > 0) == 1
    assert isinstance(env.seekers()[alice], SeekerUpdated)



def test_top_chats_of_the_opt_in_decides_the_trait_text(env: Env) -> None:
    """Two users with the same three analysed chats: one asks for 1 chat, one for 3. On
    the real S3 and through the agent, their trait texts (and so vectors) differ, and
    each traits cache entry records its own count."""
    one, three = env.user("one-chat"), env.user("three-chats")
    store = S3InsightStore(env.s3, env.settings.s3.insights_bucket)
    for i in range(3):
        insight = ParticipantInsight((f"trait{i}",), (f"interest{i}",), ("honesty",),
                                     "short messages")
        at = T0 + timedelta(days=i)
        store.put_chat_insights(ChatInsights(f"{one}-{i}".replace(".", "_"), at,
                                             (one, three), {one: insight, three: insight}),
                                at)
    env.produce(opt_in(one, 1, top_chats=1), opt_in(three, 2, top_chats=3))
    report = env.run()
    assert report.outcomes == {"indexed": 2}, report
    seekers = env.seekers()
    first, second = seekers[one], seekers[three]
    assert isinstance(first, SeekerUpdated) and isinstance(second, SeekerUpdated)
    assert first.traits_hash != second.traits_hash and first.vector != second.vector
    cache = S3TraitsCache(env.s3, env.settings.s3.traits_cache_bucket)
    cached_one, cached_three = cache.get(one), cache.get(three)
    assert cached_one is not None and cached_three is not None
    assert (cached_one.top_n, cached_three.top_n) == (1, 3)
    assert "trait2" in cached_one.text and "trait0" not in cached_one.text
    assert all(f"trait{i}" in cached_three.text for i in range(3))


def test_the_agent_runs_against_pinecone(env: Env) -> None:
    """The same agent with the vector index on Pinecone (the stand-in, through the
    ``pinecone`` SDK): opt-ins are upserted with their metadata, an opt-out deletes, and
    the seekers records carry the vectors Pinecone stored."""
    from standins.pinecone import PineconeStandin

    with PineconeStandin(dimension=DIM, api_key="agent-key") as pinecone:
        settings = env.settings.model_copy(update={"vector_index": VectorIndexSettings(
            backend="pinecone", pinecone_api_key=SecretStr("agent-key"),
            pinecone_host=pinecone.url, pinecone_namespace="seekers")})
        alice, bob = env.user("alice"), env.user("bob")
        env.seed(alice, "curious", "warm")
        env.seed(bob, "calm", "patient")
        env.produce(opt_in(alice, 1), opt_in(bob, 2), opt_out(bob, 3))
        report = run_embedding_worker(settings, stop_after_idle_seconds=3, max_seconds=90,
                                      session=env.session, s3_client=env.s3)
        assert report.fatal is None, report
        index = PineconeVectorIndex.connect(api_key="agent-key", host=pinecone.url, dim=DIM,
                                            namespace="seekers")
        assert index.list_ids() == [alice]
        stored = index.fetch([alice])[alice]
        assert stored.metadata["status"] == "waiting" and stored.metadata["pool"] == "eu"
        event = env.seekers()[alice]
        assert isinstance(event, SeekerUpdated)
        assert np.allclose(event.vector, stored.vector, atol=1e-6)
        assert isinstance(env.seekers()[bob], SeekerRemoved)
        assert {r.path for r in pinecone.requests} >= {"/vectors/upsert", "/vectors/fetch"}
