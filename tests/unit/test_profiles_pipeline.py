"""ProfileIndexer (traits -> embed -> upsert) on fakes, and the settings bootstrap."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from mosaic.errors import ConfigError, ExternalServiceError
from mosaic.settings import Settings, VectorIndexSettings
from profiles.bootstrap import build_vector_index
from profiles.errors import NoInsightsError
from profiles.insights import ChatInsights, InMemoryInsightStore, ParticipantInsight
from profiles.pipeline import IndexedProfile, IndexRequest, ProfileIndexer
from profiles.traits import InMemoryTraitsCache, TraitsService
from tests.fakes import FakeEmbedder, InMemoryVectorIndex

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 1, tzinfo=UTC)
WAITING = {"status": "waiting", "pool": "eu", "opted_in_at": 1.7e9, "missed_cycles": 0}


def indexer(*users: str) -> tuple[ProfileIndexer, InMemoryInsightStore, FakeEmbedder]:
    store = InMemoryInsightStore()
    for i, user in enumerate(users):
        store.put_chat_insights(ChatInsights(f"chat-{i:04d}", T0, (user,), {
            user: ParticipantInsight((f"trait {user}",), ("jazz",))}), T0)
    emb = FakeEmbedder(dim=16)
    traits = TraitsService(store, InMemoryTraitsCache(), clock=T0.timestamp)
    return ProfileIndexer(traits, emb, InMemoryVectorIndex(16), clock=lambda: 42.0), store, emb


def test_batch_embeds_once_and_upserts_with_bookkeeping_metadata() -> None:
    pipe, _, emb = indexer("alice", "bob")
    out = pipe.index_users([IndexRequest("alice", WAITING), IndexRequest("bob", WAITING)])
    assert all(isinstance(o, IndexedProfile) and o.embedded for o in out)
    assert len(emb.calls) == 1 and len(emb.calls[0]) == 2
    rec = pipe.index.fetch(["alice"])["alice"]
    assert rec.metadata == {**WAITING, "model": "fake-hash", "updated_at": 42.0,
                            "fingerprint": out[0].traits.fingerprint}  # type: ignore[union-attr]


def test_unchanged_traits_only_refresh_metadata() -> None:
    pipe, _, emb = indexer("alice")
    pipe.index_user("alice", WAITING)
    again = pipe.index_user("alice", {**WAITING, "missed_cycles": 2})
    assert not again.embedded and len(emb.calls) == 1
    assert pipe.index.fetch(["alice"])["alice"].metadata["missed_cycles"] == 2
    forced = pipe.index_user("alice", WAITING, force_refresh=True)
    assert forced.embedded and len(emb.calls) == 2


def test_bad_users_are_outcomes_not_crashes() -> None:
    pipe, _, _ = indexer("alice")
    out = pipe.index_users([IndexRequest("ghost", WAITING), IndexRequest("alice", WAITING),
                            IndexRequest("alice2", {"colour": "red"})])
    assert isinstance(out[0], NoInsightsError)
    assert isinstance(out[1], IndexedProfile)
    assert isinstance(out[2], Exception)
    assert pipe.index.list_ids() == ["alice"]
    with pytest.raises(NoInsightsError):
        pipe.index_user("ghost", WAITING)


def test_repeated_user_in_a_batch_takes_the_last_request() -> None:
    pipe, _, _ = indexer("alice")
    out = pipe.index_users([IndexRequest("alice", WAITING),
                            IndexRequest("alice", {**WAITING, "pool": "us"})])
    assert out[0] is out[1]
    assert pipe.index.fetch(["alice"])["alice"].metadata["pool"] == "us"


def test_dimension_mismatch_is_refused() -> None:
    pipe, _, _ = indexer()
    with pytest.raises(ValueError, match="dim"):
        ProfileIndexer(pipe.traits, FakeEmbedder(dim=8), InMemoryVectorIndex(16))


def test_pinecone_backend_needs_a_host() -> None:
    settings = Settings(vector_index=VectorIndexSettings(backend="pinecone"))
    with pytest.raises(ConfigError, match="PINECONE_HOST"):
        build_vector_index(settings, dim=16)


class _FailingOnce:
    """Wraps a callable: the ``nth`` call (1-based) raises a retryable error once."""

    def __init__(self, fn: Any, nth: int) -> None:
        self.fn, self.nth, self.count = fn, nth, 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.count += 1
        if self.count == self.nth:
            raise ExternalServiceError("429 RESOURCE_EXHAUSTED", throttled=True)
        return self.fn(*args, **kwargs)


def test_a_retry_after_a_failed_embed_request_embeds_only_what_failed() -> None:
    users = [f"user{i}" for i in range(5)]
    pipe, _, emb = indexer(*users)
    emb.batch_size = 2  # 3 requests: 2 + 2 + 1 texts
    emb._embed = _FailingOnce(emb._embed, nth=2)  # type: ignore[method-assign]
    requests = [IndexRequest(u, WAITING) for u in users]
    with pytest.raises(ExternalServiceError):
        pipe.index_users(requests)
    out = pipe.index_users(requests)  # what the agent's stage retry does
    assert all(isinstance(o, IndexedProfile) and o.embedded for o in out)
    embedded = [t for call in emb.calls for t in call]
    assert len(embedded) == len(set(embedded)) == 5, emb.calls
    assert sorted(pipe.index.list_ids()) == users


def test_a_retry_after_a_failed_upsert_embeds_nothing_again() -> None:
    pipe, _, emb = indexer("alice", "bob")
    pipe.index._upsert = _FailingOnce(pipe.index._upsert, nth=1)  # type: ignore[method-assign]
    requests = [IndexRequest("alice", WAITING), IndexRequest("bob", WAITING)]
    with pytest.raises(ExternalServiceError):
        pipe.index_users(requests)
    assert len(emb.calls) == 1
    pipe.index_users(requests)
    assert len(emb.calls) == 1 and pipe.index.list_ids() == ["alice", "bob"]
    # Indexed: the kept vectors are gone, a forced refresh embeds again.
    pipe.index_user("alice", WAITING, force_refresh=True)
    assert len(emb.calls) == 2
