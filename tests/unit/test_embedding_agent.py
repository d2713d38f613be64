"""The embedding agent's batch logic on fakes: per-user order, outcomes, dead letters,
outage retries without loss, idempotent replays, and the block store contract."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import pytest

from consumers.embedding.outputs import (
    StageRetry,
    StopRequested,
)
from consumers.embedding.pipeline import STATE_DELAY, EmbeddingPipeline
from consumers.embedding.traits import PrefetchingTraitsService
from consumers.embedding.worker import QuotaShare
from mosaic.errors import ExternalServiceError, ValidationError
from mosaic.ratelimit import TokenBucket
from mosaic.user_state import (
    DELAY_MESSAGES,
    DELAYED_DELAY,
    PROFILE_DELAYED,
    UserState,
    reason_message,
)
from profiles.insights import ChatInsights, InMemoryInsightStore, ParticipantInsight
from profiles.pipeline import ProfileIndexer
from profiles.traits import InMemoryTraitsCache
from streams.deadletter import RawRecord
from streams.events import (
    BlockRequested,
    Event,
    OptInRequested,
    OptOutRequested,
    SeekerRemoved,
    SeekerUpdated,
    derive_event_id,
    to_millis,
)
from streams.serde import encode
from tests.fakes import (
    FakeEmbedder,
    InMemoryVectorIndex,
    MemoryBlockStore,
    MemoryDeadLetters,
    MemoryRequestVersions,
    MemorySeekerSink,
    MemoryUserStateWriter,
)

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 1, tzinfo=UTC)
T0_MS = to_millis(T0)
TOPIC = "t.optin"


class Harness:
    def __init__(self, *users: str) -> None:
        self.store = InMemoryInsightStore()
        for i, user in enumerate(users):
            self.store.put_chat_insights(ChatInsights(f"chat-{i:04d}", T0, (user,), {
                user: ParticipantInsight((f"trait {user}",), ("jazz",))}), T0)
        self.embedder = FakeEmbedder(dim=16)
        self.cache = InMemoryTraitsCache()
        traits = PrefetchingTraitsService(self.store, self.cache, clock=T0.timestamp)
        self.index = InMemoryVectorIndex(16)
        self.indexer = ProfileIndexer(traits, self.embedder, self.index, clock=lambda: 42.0)
        self.blocks = MemoryBlockStore()
        self.states = MemoryUserStateWriter()
        self.seekers = MemorySeekerSink()
        self.letters = MemoryDeadLetters()
        self.versions = MemoryRequestVersions()
        self.stop = threading.Event()
        self.retry = StageRetry(backoff_seconds=0.001, max_backoff_seconds=0.001,
                                stop=self.stop)
        self.pipeline = EmbeddingPipeline(self.indexer, self.blocks, self.states,
                                          self.seekers, self.letters, retry=self.retry,
                                          clock=lambda: T0 + timedelta(hours=1),
                                          versions=self.versions)
        self.offset = 0

    def record(self, event: Event | None = None, *, value: bytes | None = None,
               key: bytes | None = None) -> RawRecord:
        self.offset += 1
        raw_key = key if key is not None or event is None else str(event.key()).encode()
        return RawRecord(TOPIC, 0, self.offset, raw_key,
                         encode(event) if event is not None else value)

    def run(self, *items: Event | RawRecord) -> list[tuple[str, str]]:
        records = [i if isinstance(i, RawRecord) else self.record(i) for i in items]
        return self.pipeline.handle_batch(records).outcomes


def opt_in(user: str, n: int = 0, pool: str = "eu", force: bool = False) -> OptInRequested:
    at = T0 + timedelta(seconds=n)
    return OptInRequested(event_id=derive_event_id("in", user, str(n)), occurred_at=at,
                          request_id=f"r{n}", user_id=user, opted_in_at=at, pool=pool,
                          force_refresh=force)


def opt_out(user: str, n: int = 0) -> OptOutRequested:
    return OptOutRequested(event_id=derive_event_id("out", user, str(n)),
                           occurred_at=T0 + timedelta(seconds=n), request_id=f"o{n}",
                           user_id=user, pool="eu")


def block(user: str, other: str, n: int = 0) -> BlockRequested:
    return BlockRequested(event_id=derive_event_id("block", user, other, str(n)),
                          occurred_at=T0 + timedelta(seconds=n), request_id=f"b{n}",
                          user_id=user, blocked_user_id=other)


def test_opt_in_indexes_publishes_the_vector_and_marks_waiting() -> None:
    h = Harness("alice", "bob")
    assert h.run(opt_in("alice"), opt_in("bob")) == [
        ("OptInRequested", "indexed"), ("OptInRequested", "indexed")]
    assert len(h.embedder.calls) == 1  # one embed call for the whole batch
    updates = [e for e in h.seekers.events if isinstance(e, SeekerUpdated)]
    assert [u.user_id for u in updates] == ["alice", "bob"]
    stored = h.index.fetch(["alice"])["alice"]
    assert updates[0].vector == pytest.approx(tuple(stored.vector.tolist()))
    assert updates[0].traits_hash == stored.metadata["fingerprint"]
    assert stored.metadata["status"] == "waiting" and stored.metadata["pool"] == "eu"
    assert stored.metadata["opted_in_at"] == T0.timestamp()
    row = h.states.rows["alice"]
    assert row["state"] == "waiting" and row["waiting_since"] == T0
    assert row["missed_cycles"] == 0 and row["_state_at"] == T0 + STATE_DELAY


def test_opt_out_after_opt_in_in_one_batch_wins() -> None:
    h = Harness("alice")
    assert h.run(opt_in("alice", 1), opt_out("alice", 2)) == [
        ("OptInRequested", "superseded"), ("OptOutRequested", "removed")]
    assert h.index.count() == 0 and not h.embedder.calls
    (removed,) = h.seekers.events
    assert isinstance(removed, SeekerRemoved) and removed.reason == "opted_out"
    assert "alice" not in h.states.rows


def test_opt_in_after_opt_out_in_one_batch_wins() -> None:
    h = Harness("alice")
    h.run(opt_out("alice", 1), opt_in("alice", 2))
    assert h.index.list_ids() == ["alice"]
    assert [type(e) for e in h.seekers.events] == [SeekerUpdated]


def test_opt_out_removes_index_record_and_cached_traits() -> None:
    h = Harness("alice")
    h.run(opt_in("alice", 1))
    assert h.cache.get("alice") is not None
    h.run(opt_out("alice", 2))
    assert h.index.count() == 0 and h.cache.get("alice") is None
    assert isinstance(h.seekers.events[-1], SeekerRemoved)


def test_no_insights_is_profile_failed_not_a_dead_letter() -> None:
    h = Harness("alice")
    assert h.run(opt_in("ghost"), opt_in("alice")) == [
        ("OptInRequested", "indexed"), ("OptInRequested", "profile_failed")]
    assert not h.letters.letters
    row = h.states.rows["ghost"]
    assert row["state"] == "profile_failed" and "no chat index" in row["detail"]
    removed = [e for e in h.seekers.events if isinstance(e, SeekerRemoved)]
    assert [(r.user_id, r.reason) for r in removed] == [("ghost", "embedding_failed")]


@pytest.mark.parametrize(("name", "make"), [
    ("garbage bytes", lambda h: h.record(value=b"\x00not avro", key=b"x")),
    ("null value", lambda h: h.record(value=None, key=b"x")),
    ("key is not the user", lambda h: h.record(opt_in("alice"), key=b"mallory")),
    ("wrong topic's event", lambda h: h.record(value=encode(SeekerRemoved(
        event_id=derive_event_id("x"), occurred_at=T0, user_id="x", reason="r")), key=b"x")),
    ("bad user id", lambda h: h.record(opt_in("bad id"))),
    ("self block", lambda h: h.record(block("alice", "alice"))),
])
def test_poison_is_dead_lettered_and_the_next_record_still_processed(
        name: str, make: Callable[[Harness], RawRecord]) -> None:
    h = Harness("alice", "bob")
    poison = make(h)
    outcomes = h.run(poison, opt_in("bob"))
    assert outcomes[-1] == ("OptInRequested", "indexed"), name
    assert [o for _, o in outcomes].count("dead_lettered") == 1
    ((record, reason),) = h.letters.letters
    assert record == poison and reason


def test_blocks_are_recorded_symmetrically_for_the_pool() -> None:
    h = Harness()
    h.run(block("alice", "bob"), block("carol", "alice"), block("dave", "zed"))
    assert h.blocks.blocked_pairs(["alice", "bob", "carol", "dave"]) == {
        ("alice", "bob"), ("alice", "carol")}
    assert h.blocks.blocked_pairs(["bob"]) == set()


class Flaky:
    """Wraps a callable: fails ``n`` times with a retryable error, then delegates."""

    def __init__(self, inner: Callable[..., Any], n: int) -> None:
        self.inner, self.n = inner, n

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.n > 0:
            self.n -= 1
            raise ExternalServiceError("outage")
        return self.inner(*args, **kwargs)


def test_outages_are_retried_and_nothing_is_lost() -> None:
    h = Harness("alice")
    h.embedder._embed = Flaky(h.embedder._embed, 2)  # type: ignore[method-assign]
    h.seekers.publish = Flaky(h.seekers.publish, 1)  # type: ignore[method-assign]
    h.states.waiting = Flaky(h.states.waiting, 1)  # type: ignore[method-assign]
    assert h.run(opt_in("alice")) == [("OptInRequested", "indexed")]
    assert h.retry.retries == 4
    assert [e.key() for e in h.seekers.events] == ["alice"]  # published once
    assert h.states.rows["alice"]["state"] == "waiting"


def test_stop_during_an_outage_raises_instead_of_finishing() -> None:
    h = Harness("alice")
    h.embedder._embed = Flaky(h.embedder._embed, 10**6)  # type: ignore[method-assign]
    threading.Timer(0.05, h.stop.set).start()
    with pytest.raises(StopRequested):
        h.run(opt_in("alice"))
    assert not h.seekers.events
    # Only the delay notice was written; the state stays the ingress' preparing_profile.
    assert h.states.rows["alice"] == {"reason_code": "profile_delayed",
                                      "_reason_code_at": T0 + DELAYED_DELAY}


def test_a_throttled_embedder_marks_the_batch_delayed_then_waiting() -> None:
    h = Harness("alice", "bob")
    seen: list[dict[str, Any]] = []
    throttled = ExternalServiceError("429 RESOURCE_EXHAUSTED", throttled=True,
                                     retry_after_seconds=0.01)
    inner = h.embedder._embed

    def embed(texts: list[str]) -> Any:
        if len(seen) < 2:
            seen.append(dict(h.states.rows.get("alice", {})))
            raise throttled
        return inner(texts)

    h.embedder._embed = embed  # type: ignore[method-assign]
    assert h.run(opt_in("alice"), opt_in("bob", 1)) == [("OptInRequested", "indexed")] * 2
    assert seen[0] == {}  # the first attempt: nothing said yet
    during = seen[1]  # the retry: delayed, not failed, and no other state written
    assert during["reason_code"] == PROFILE_DELAYED and "state" not in during
    code, message = reason_message(UserState("alice", "preparing_profile",
                                             reason_code=during["reason_code"]))
    assert code == PROFILE_DELAYED and message == DELAY_MESSAGES[PROFILE_DELAYED]
    assert DELAYED_DELAY < STATE_DELAY  # the notice is written before the outcome's time
    for user in ("alice", "bob"):  # the outcome, written later in time, replaces the notice
        assert h.states.rows[user]["state"] == "waiting"
        assert h.states.rows[user]["reason_code"] is None
    assert len(h.embedder.calls) == 1


def test_bug_is_raised_not_retried_or_dead_lettered() -> None:
    h = Harness("alice")
    h.embedder._embed = Flaky(lambda texts: 1 / 0, 0)  # type: ignore[method-assign]
    with pytest.raises(ZeroDivisionError):
        h.run(opt_in("alice"))
    assert not h.letters.letters and not h.seekers.events


def test_replay_changes_nothing() -> None:
    h = Harness("alice", "bob")
    batch = [h.record(e) for e in (opt_in("alice", 1), opt_in("bob", 2), opt_out("bob", 3),
                                   block("alice", "bob"))]
    h.run(*batch)
    index_before = {r: h.index.fetch([r])[r].metadata for r in h.index.list_ids()}
    rows_before = {u: dict(r) for u, r in h.states.rows.items()}
    events_before = list(h.seekers.events)
    # The log read again: bob's opt-in was ordered before his opt-out, so it is stale.
    assert h.run(*batch).count(("OptInRequested", "stale")) == 1
    assert {r: h.index.fetch([r])[r].metadata for r in h.index.list_ids()} == index_before
    assert h.states.rows == rows_before
    assert [e.event_id for e in h.seekers.events] == 2 * [e.event_id for e in events_before]
    assert len(h.embedder.calls) == 1  # unchanged traits are not embedded again


def test_a_validation_error_for_the_whole_batch_is_isolated_per_record() -> None:
    h = Harness("alice", "bob")
    real = h.index.upsert

    def upsert(records: Any) -> int:
        if any(r.id == "bob" for r in records):
            raise ValidationError("bob's vector is zero")
        return real(records)

    h.index.upsert = upsert  # type: ignore[method-assign]
    outcomes = h.run(opt_in("alice"), opt_in("bob"))
    assert ("OptInRequested", "indexed") in outcomes
    assert ("OptInRequested", "dead_lettered") in outcomes
    assert h.index.list_ids() == ["alice"]


def test_traits_of_a_batch_are_prefetched_in_parallel_and_used_once() -> None:
    h = Harness("alice", "bob", "carol")
    seen: list[str] = []
    real = h.store.user_chats

    def user_chats(user_id: str) -> Any:
        seen.append(threading.current_thread().name)
        return real(user_id)

    h.store.user_chats = user_chats  # type: ignore[method-assign]
    outcomes = h.run(opt_in("alice"), opt_in("bob"), opt_in("carol"), opt_in("ghost"))
    assert [o for _, o in outcomes].count("indexed") == 3
    assert len(seen) == 4  # each user's insights read once, by the prefetch pool
    assert all(name != threading.current_thread().name for name in seen)


def test_a_stage_retry_waits_the_services_retry_after() -> None:
    h = Harness()
    waits: list[float] = []
    h.stop.wait = lambda timeout=None: waits.append(timeout or 0.0) or False  # type: ignore[method-assign]
    calls = iter([ExternalServiceError("429", throttled=True, retry_after_seconds=4.0)])

    def call() -> str:
        error = next(calls, None)
        if error is not None:
            raise error
        return "done"

    assert h.retry.run("index", call) == "done"
    assert waits == [4.0]  # not the 1 ms backoff


def test_each_worker_takes_its_partitions_share_of_the_quota() -> None:
    class TP(NamedTuple):
        topic: str
        partition: int

    buckets = [TokenBucket.per_minute(600) for _ in range(3)]
    shares = [QuotaShare([b], "t.optin", 6) for b in buckets]
    assert all(b.rate == pytest.approx(10 / 6) for b in buckets)  # before an assignment
    for i, share in enumerate(shares):
        share.update([TP("t.optin", 2 * i), TP("t.optin", 2 * i + 1), TP("t.other", 0)])
    assert [b.rate for b in buckets] == pytest.approx([10 / 3] * 3)
    assert sum(b.rate for b in buckets) == pytest.approx(10.0)  # the quota, not 3x it
    shares[0].update([TP("t.optin", p) for p in range(6)])  # the others left the group
    assert buckets[0].rate == pytest.approx(10.0) and buckets[0].capacity == 10


def test_top_chats_of_each_opt_in_decides_how_many_chats_feed_the_traits() -> None:
    h = Harness()
    for i in range(3):  # three chats of alice and bob, the same insights for both
        insight = ParticipantInsight((f"trait{i}",), (f"interest{i}",))
        h.store.put_chat_insights(ChatInsights(f"chat-{i:04d}", T0 + timedelta(days=i),
                                               ("alice", "bob"),
                                               {"alice": insight, "bob": insight}),
                                  T0 + timedelta(days=i))

    def asking(user: str, top: int, n: int = 0) -> OptInRequested:
        return replace(opt_in(user, n), top_chats=top,
                       event_id=derive_event_id("in", user, str(n), str(top)))

    h.run(asking("alice", 1), asking("bob", 3))
    texts = {call_text for call in h.embedder.calls for call_text in call}
    alice, bob = (h.cache.get(u) for u in ("alice", "bob"))
    assert alice is not None and bob is not None
    assert (alice.top_n, bob.top_n) == (1, 3) and len(texts) == 2
    assert "trait2" in alice.text and "trait0" not in alice.text  # the newest chat only
    assert all(f"trait{i}" in bob.text for i in range(3))
    h.run(asking("alice", 3, 1))  # asks for more: a new text, embedded again
    again = h.cache.get("alice")
    assert again is not None and again.text == bob.text and again.top_n == 3
    assert len(h.embedder.calls) == 2


def test_an_opt_out_stamped_before_the_opt_in_it_follows_on_the_log_still_wins() -> None:
    """Issue 22.5: two ingress hosts, the opt-out's 500 ms behind the opt-in's. Versions
    follow the log, so the opt-out's is higher, and its state is written again at it (the
    ingress' write at its own time lost to the opt-in's)."""
    h = Harness("alice")
    late_clock = opt_out("alice", 0)
    h.run(opt_in("alice", 1))
    h.run(replace(late_clock, occurred_at=T0 + timedelta(milliseconds=500)))
    update, removal = h.seekers.events
    assert isinstance(update, SeekerUpdated) and isinstance(removal, SeekerRemoved)
    assert (update.version, removal.version) == (1000 + T0_MS, 1001 + T0_MS)
    assert h.states.rows["alice"]["state"] == "opted_out"
    assert h.states.rows["alice"]["_state_at"] == T0 + timedelta(milliseconds=1001)


def test_a_request_ordered_after_a_faster_clock_keeps_its_place_in_the_pool() -> None:
    """An opt-in after an opt-out from a host ahead: waiting at the opt-in's version, and a
    new episode (the opt-out's columns replaced)."""
    h = Harness("alice")
    h.run(opt_out("alice", 5))
    h.run(opt_in("alice", 4))
    update = h.seekers.events[-1]
    assert isinstance(update, SeekerUpdated) and update.version == 5001 + T0_MS
    row = h.states.rows["alice"]
    assert row["state"] == "waiting" and row["_state_at"] == T0 + timedelta(
        seconds=5, milliseconds=1) + STATE_DELAY
    assert row["opted_in_at"] == T0 + timedelta(seconds=4)
