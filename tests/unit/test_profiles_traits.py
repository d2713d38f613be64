"""Trait aggregation (pure) and the cached TraitsService on in-memory fakes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from mosaic.errors import ExternalServiceError
from profiles.errors import MalformedInsightError, NoInsightsError
from profiles.insights import ChatInsights, ChatRef, InMemoryInsightStore, ParticipantInsight
from profiles.traits import (
    InMemoryTraitsCache,
    TraitsService,
    UserTraits,
    aggregate_traits,
    traits_key,
)

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 1, tzinfo=UTC)
DAY = 86400.0


class Clock:
    def __init__(self, now: float = T0.timestamp()) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def ref(h: str, days_ago: float = 0) -> ChatRef:
    return ChatRef(h, T0 - timedelta(days=days_ago))


def p(traits: tuple[str, ...] = (), interests: tuple[str, ...] = (),
      values: tuple[str, ...] = (), style: str = "") -> ParticipantInsight:
    return ParticipantInsight(traits, interests, values, style)


# -- aggregation -----------------------------------------------------------------------

AGGREGATION_CASES = {
    "one chat, all sections": (
        [(ref("c1"), p(("Warm",), ("Jazz", "hiking"), ("honesty",), "Short, playful."))],
        "Traits: warm.\nInterests: hiking, jazz.\nValues: honesty.\n"
        "Communication style: short, playful."),
    "duplicates merge case- and space-insensitively": (
        [(ref("c1"), p(("Curious ", "curious", "  WARM"),)),
         (ref("c2", 1), p(("curious",),))],
        "Traits: curious, warm."),
    "mentioned in more chats ranks first": (
        [(ref("c1"), p(("a-trait",),)), (ref("c2"), p(("z-trait",),)),
         (ref("c3"), p(("z-trait",),))],
        "Traits: z-trait, a-trait."),
    "recent beats old at equal counts": (
        [(ref("old", 90), p(("stoic",),)), (ref("new"), p(("playful",),))],
        "Traits: playful, stoic."),
    "two old mentions beat one recent past two half-lives": (
        [(ref("new"), p(("x",),)), (ref("o1", 10), p(("y",),)), (ref("o2", 10), p(("y",),))],
        "Traits: y, x."),
    "empty sections are left out": (
        [(ref("c1"), p(interests=("chess",)))], "Interests: chess."),
    "nothing at all": ([], ""),
}


@pytest.mark.parametrize("case", AGGREGATION_CASES)
def test_aggregation(case: str) -> None:
    chats, expected = AGGREGATION_CASES[case]
    assert aggregate_traits(chats, half_life_seconds=30 * DAY) == expected


def test_aggregation_ignores_input_order_and_now() -> None:
    chats = [(ref(f"c{i}", i), p((f"t{i % 3}", "common"), (f"i{i}",))) for i in range(6)]
    assert aggregate_traits(chats) == aggregate_traits(list(reversed(chats)))


def test_aggregation_caps_each_section() -> None:
    chats = [(ref("c1"), p(tuple(f"trait {i:02d}" for i in range(30)),))]
    text = aggregate_traits(chats, max_items=5)
    assert text == "Traits: trait 00, trait 01, trait 02, trait 03, trait 04."


# -- service ---------------------------------------------------------------------------


def seeded_store(*chats: tuple[str, float, ParticipantInsight]) -> InMemoryInsightStore:
    store = InMemoryInsightStore()
    for chat_hash, days_ago, insight in chats:
        at = T0 - timedelta(days=days_ago)
        store.put_chat_insights(ChatInsights(chat_hash, at, ("alice",), {"alice": insight}), at)
    return store


def service(store: InMemoryInsightStore, clock: Clock | None = None,
            cache: InMemoryTraitsCache | None = None, top_n: int = 2) -> TraitsService:
    return TraitsService(store, cache or InMemoryTraitsCache(), top_n=top_n,
                         ttl_seconds=DAY, clock=clock or Clock())


def test_top_n_newest_chats_are_used() -> None:
    store = seeded_store(("chat-0001", 3, p(("old",))), ("chat-0002", 1, p(("mid",))),
                         ("chat-0003", 0, p(("new",))))
    traits = service(store).user_traits("alice")
    assert traits.chat_hashes == ("chat-0003", "chat-0002")
    assert traits.text == "Traits: new, mid."
    assert not traits.from_cache


def test_cache_hit_within_ttl_then_rebuild_after() -> None:
    store, clock = seeded_store(("chat-0001", 0, p(("warm",)))), Clock()
    svc = service(store, clock)
    first = svc.user_traits("alice")
    store.put_chat_insights(ChatInsights("chat-0002", T0, ("alice",), {"alice": p(("new",))}),
                            T0 + timedelta(hours=1))
    clock.now += DAY - 1
    cached = svc.user_traits("alice")
    assert cached.from_cache and cached.text == first.text
    clock.now += 1
    rebuilt = svc.user_traits("alice")
    assert not rebuilt.from_cache and "new" in rebuilt.text
    assert rebuilt.computed_at == clock.now


def test_force_refresh_bypasses_and_replaces_the_entry() -> None:
    store, clock, cache = seeded_store(("chat-0001", 0, p(("warm",)))), Clock(), \
        InMemoryTraitsCache()
    svc = service(store, clock, cache)
    svc.user_traits("alice")
    store.put_chat_insights(ChatInsights("chat-0002", T0, ("alice",), {"alice": p(("new",))}),
                            T0 + timedelta(hours=1))
    forced = svc.user_traits("alice", force_refresh=True)
    assert not forced.from_cache and "new" in forced.text
    stored = cache.get("alice")
    assert stored is not None and stored.text == forced.text
    assert svc.user_traits("alice").from_cache


def test_a_different_top_n_is_a_cache_miss() -> None:
    store = seeded_store(("chat-0001", 1, p(("a",))), ("chat-0002", 0, p(("b",))))
    svc = service(store, top_n=1)
    assert svc.user_traits("alice").text == "Traits: b."
    wider = svc.user_traits("alice", top_n=2)
    assert not wider.from_cache and wider.text == "Traits: b, a."  # newer first


def test_unusable_chats_are_skipped_with_reasons_and_replaced() -> None:
    store = seeded_store(("chat-0003", 3, p(("kept",))))
    store.put_raw("chat-0001/insights.json", b"{oops")
    store.record_chat("alice", ChatRef("chat-0001", T0))
    store.record_chat("alice", ChatRef("chat-0002", T0 - timedelta(days=1)))  # no document
    traits = service(store, top_n=1).user_traits("alice")
    assert traits.text == "Traits: kept."
    assert [h for h, _ in traits.skipped] == ["chat-0001", "chat-0002"]
    assert "not JSON" in traits.skipped[0][1] and "missing" in traits.skipped[1][1]


def test_no_index_is_a_typed_outcome() -> None:
    with pytest.raises(NoInsightsError, match="no chat index") as info:
        service(InMemoryInsightStore()).user_traits("alice")
    assert info.value.user_id == "alice"


def test_all_chats_unusable_is_a_typed_outcome() -> None:
    store = seeded_store(("chat-0001", 0, p()))  # empty insights
    store.put_chat_insights(ChatInsights("chat-0002", T0, ("alice", "bob"),
                                         {"bob": p(("x",))}), T0)  # nothing about alice
    with pytest.raises(NoInsightsError) as info:
        service(store).user_traits("alice")
    reasons = dict(info.value.skipped)
    assert reasons == {"chat-0001": "insights are empty",
                       "chat-0002": "no insights for this user in the chat"}


def test_malformed_index_is_a_typed_error() -> None:
    store = InMemoryInsightStore()
    store.put_raw("users/alice/chats.json", b'{"schema_version": 1}')
    with pytest.raises(MalformedInsightError, match="user_id"):
        service(store).user_traits("alice")


def test_unreadable_cache_entry_is_a_miss_and_gets_replaced() -> None:
    store, cache = seeded_store(("chat-0001", 0, p(("warm",)))), InMemoryTraitsCache()
    cache.blobs.put(traits_key("alice"), b'{"schema_version": 1, "text": 5}')
    traits = service(store, cache=cache).user_traits("alice")
    assert not traits.from_cache
    assert json.loads(cache.blobs.get(traits_key("alice")).data)["text"] == traits.text  # type: ignore[union-attr]


class BrokenCache(InMemoryTraitsCache):
    def get(self, user_id: str) -> UserTraits | None:
        raise ExternalServiceError("S3 down")

    def put(self, traits: UserTraits) -> None:
        raise ExternalServiceError("S3 down")


def test_cache_outage_does_not_block_traits() -> None:
    store = seeded_store(("chat-0001", 0, p(("warm",))))
    assert service(store, cache=BrokenCache()).user_traits("alice").text == "Traits: warm."


def test_fingerprint_follows_the_text() -> None:
    a = UserTraits("u", "Traits: warm.", ("c",), 5, 0.0)
    b = UserTraits("u", "Traits: warm.", ("d",), 3, 9.0)
    c = UserTraits("u", "Traits: cold.", ("c",), 5, 0.0)
    assert a.fingerprint == b.fingerprint != c.fingerprint
    assert UserTraits.from_dict(a.to_dict()) == a
