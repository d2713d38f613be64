"""Insights, user chat index and the traits cache against the real S3 endpoint (moto
server started by the project's stack code). Every test uses its own user and chats."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from mosaic.errors import ExternalServiceError
from mosaic.s3 import s3_client
from mosaic.settings import S3Settings, Settings
from profiles.bootstrap import build_insight_store, build_traits_service
from profiles.errors import MalformedInsightError, NoInsightsError
from profiles.insights import ChatInsights, ChatRef, ParticipantInsight, S3InsightStore
from profiles.traits import S3TraitsCache, traits_key
from stack.base import Service

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 1, tzinfo=UTC)


@pytest.fixture
def client(settings: Settings, s3_stack: Service) -> Any:
    return s3_client(settings.s3)


def seed(store: S3InsightStore, user: str, unique: str, n: int,
         start: datetime = T0) -> list[str]:
    hashes = []
    for i in range(n):
        h = f"{unique}-chat{i:02d}"
        at = start + timedelta(days=i)
        insight = ParticipantInsight((f"trait{i}", "kind"), (f"hobby{i}",), ("honesty",),
                                     "warm and brief")
        store.put_chat_insights(ChatInsights(h, at, (user, f"{user}-friend"),
                                             {user: insight}), at)
        hashes.append(h)
    return hashes


def test_objects_land_at_the_documented_keys(settings: Settings, client: Any,
                                             unique: str) -> None:
    store = build_insight_store(settings, s3_client=client)
    user = f"u-{unique}"
    (chat,) = seed(store, user, unique, 1)
    bucket = settings.s3.insights_bucket
    doc = json.loads(client.get_object(Bucket=bucket, Key=f"{chat}/insights.json")["Body"].read())
    assert doc["participants"] == [user, f"{user}-friend"]
    assert doc["insights"][user]["traits"] == ["trait0", "kind"]
    index = json.loads(client.get_object(Bucket=bucket,
                                         Key=f"users/{user}/chats.json")["Body"].read())
    assert index == {"schema_version": 1, "user_id": user,
                     "chats": [{"chat_hash": chat, "last_activity": "2026-11-01T00:00:00Z"}]}
    assert [r.chat_hash for r in store.user_chats(f"{user}-friend")] == [chat]


def test_concurrent_index_updates_use_conditional_writes(settings: Settings, client: Any,
                                                         unique: str) -> None:
    store = build_insight_store(settings, s3_client=client)
    store._max_index_retries = 50
    user = f"u-{unique}"

    def add(i: int) -> None:
        store.record_chat(user, ChatRef(f"{unique}-c{i:02d}", T0 + timedelta(minutes=i)))

    threads = [threading.Thread(target=add, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(store.user_chats(user)) == 8


def test_malformed_document_is_a_typed_error(settings: Settings, client: Any,
                                             unique: str) -> None:
    store = build_insight_store(settings, s3_client=client)
    client.put_object(Bucket=settings.s3.insights_bucket, Key=f"{unique}-bad/insights.json",
                      Body=b'{"schema_version": 1, "chat_hash": "other"}')
    with pytest.raises(MalformedInsightError, match="!= key"):
        store.chat_insights(f"{unique}-bad")
    assert store.chat_insights(f"{unique}-none") is None


def test_traits_cached_in_s3_with_ttl_and_force_refresh(settings: Settings, client: Any,
                                                        unique: str) -> None:
    now = [T0.timestamp()]
    service = build_traits_service(settings, s3_client=client, clock=lambda: now[0])
    user = f"u-{unique}"
    store = build_insight_store(settings, s3_client=client)
    seed(store, user, unique, 7)
    first = service.user_traits(user)
    assert first.chat_hashes == tuple(f"{unique}-chat{i:02d}" for i in (6, 5, 4, 3, 2))
    assert first.text.startswith("Traits: kind, trait6, trait5")
    cached = json.loads(client.get_object(Bucket=settings.s3.traits_cache_bucket,
                                          Key=traits_key(user))["Body"].read())
    assert cached["text"] == first.text and cached["computed_at"] == now[0]

    seed(store, user, f"{unique}-later", 1, T0 + timedelta(days=30))  # a new chat arrives
    now[0] += settings.s3.traits_cache_ttl_seconds - 60
    assert service.user_traits(user).from_cache
    forced = service.user_traits(user, force_refresh=True)
    assert not forced.from_cache and forced.chat_hashes[0] == f"{unique}-later-chat00"
    now[0] += settings.s3.traits_cache_ttl_seconds
    assert not service.user_traits(user).from_cache


def test_user_without_insights_is_a_typed_outcome(settings: Settings, client: Any,
                                                  unique: str) -> None:
    service = build_traits_service(settings, s3_client=client)
    with pytest.raises(NoInsightsError):
        service.user_traits(f"nobody-{unique}")


def test_missing_bucket_is_an_external_error(settings: Settings, client: Any) -> None:
    cache = S3TraitsCache(client, "no-such-bucket-anywhere")
    with pytest.raises(ExternalServiceError) as info:
        cache.get("x")
    assert not info.value.retryable


def test_default_ttl_is_a_day() -> None:
    assert S3Settings().traits_cache_ttl_seconds == 24 * 3600
