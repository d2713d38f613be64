"""A user's top N chats aggregated into one trait text, cached in S3 for 24 h.

Aggregation is a pure function: the same insights always give the same text. Each item
(trait, interest, value, style) scores the sum of the recency weights of the chats that
mention it; weights halve every ``half_life_seconds`` counted back from the user's newest
chat (not from "now", so the text does not drift while nothing changes). Items are
de-duplicated case-insensitively, ordered by score then alphabetically, and capped, so
stale one-off mentions fall off first.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from mosaic.errors import ExternalServiceError
from profiles.blobs import BlobStore, MemoryBlobs, S3Blobs
from profiles.errors import MalformedInsightError, NoInsightsError
from profiles.insights import ChatRef, InsightStore, ParticipantInsight, check_user_id

log = logging.getLogger(__name__)

CACHE_SCHEMA_VERSION = 1
MAX_ITEM_CHARS = 80
_SECTIONS = (("traits", "Traits"), ("interests", "Interests"), ("values", "Values"))


@dataclass(frozen=True)
class UserTraits:
    user_id: str
    text: str
    chat_hashes: tuple[str, ...]
    top_n: int
    computed_at: float  # epoch seconds
    skipped: tuple[tuple[str, str], ...] = ()  # (chat_hash, reason) left out
    from_cache: bool = False

    @property
    def fingerprint(self) -> str:
        """Changes exactly when the text does: lets a consumer skip re-embedding."""
        return hashlib.sha256(self.text.encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": CACHE_SCHEMA_VERSION, "user_id": self.user_id,
                "text": self.text, "chat_hashes": list(self.chat_hashes),
                "top_n": self.top_n, "computed_at": self.computed_at,
                "skipped": [list(s) for s in self.skipped]}

    @classmethod
    def from_dict(cls, doc: Any) -> UserTraits:
        """Raises ValueError/TypeError/KeyError on anything unexpected."""
        if not isinstance(doc, dict) or doc.get("schema_version") != CACHE_SCHEMA_VERSION:
            raise ValueError("unsupported cache entry")
        text, at, top_n = doc["text"], doc["computed_at"], doc["top_n"]
        if not isinstance(text, str) or not text or isinstance(top_n, bool):
            raise TypeError("bad text or top_n")
        chats = doc["chat_hashes"]
        if not isinstance(chats, list) or not all(isinstance(c, str) for c in chats):
            raise TypeError("bad chat_hashes")
        skipped = tuple((str(s[0]), str(s[1])) for s in doc.get("skipped", []))
        return cls(user_id=str(doc["user_id"]), text=text, chat_hashes=tuple(chats),
                   top_n=int(top_n), computed_at=float(at), skipped=skipped)


# -- aggregation (pure) ----------------------------------------------------------------


def normalize_item(item: str) -> str:
    return " ".join(item.split()).strip(" .,;:").casefold()[:MAX_ITEM_CHARS].rstrip()


def _ranked(weighted: Sequence[tuple[float, Sequence[str]]], limit: int) -> list[str]:
    scores: dict[str, float] = {}
    for weight, items in weighted:
        for item in dict.fromkeys(normalize_item(i) for i in items):  # once per chat
            if item:
                scores[item] = scores.get(item, 0.0) + weight
    ranked = sorted(scores, key=lambda k: (-round(scores[k], 9), k))
    return ranked[:limit]


def recency_weights(refs: Sequence[ChatRef], half_life_seconds: float) -> list[float]:
    newest = max(r.last_activity.timestamp() for r in refs)
    return [math.pow(0.5, (newest - r.last_activity.timestamp()) / half_life_seconds)
            for r in refs]


def aggregate_traits(chats: Sequence[tuple[ChatRef, ParticipantInsight]], *,
                     half_life_seconds: float = 30 * 86400.0, max_items: int = 12) -> str:
    """One deterministic trait text from a user's chats; '' when there is nothing."""
    if not chats:
        return ""
    ordered = sorted(chats, key=lambda c: (-c[0].last_activity.timestamp(), c[0].chat_hash))
    weights = recency_weights([ref for ref, _ in ordered], half_life_seconds)
    lines = []
    for attr, label in _SECTIONS:
        items = _ranked([(w, getattr(p, attr)) for w, (_, p) in zip(weights, ordered,
                                                                  strict=True)], max_items)
        if items:
            lines.append(f"{label}: {', '.join(items)}.")
    styles = _ranked([(w, [p.communication_style]) for w, (_, p) in zip(weights, ordered,
                                                                        strict=True)], 3)
    if styles:
        lines.append(f"Communication style: {'; '.join(styles)}.")
    return "\n".join(lines)


# -- cache -----------------------------------------------------------------------------


def traits_key(user_id: str) -> str:
    return f"users/{user_id}/traits.json"


class TraitsCache(ABC):
    @abstractmethod
    def get(self, user_id: str) -> UserTraits | None:
        """The stored entry regardless of age; None when absent or unreadable."""

    @abstractmethod
    def put(self, traits: UserTraits) -> None: ...

    @abstractmethod
    def invalidate(self, user_id: str) -> None: ...


class BlobTraitsCache(TraitsCache):
    def __init__(self, blobs: BlobStore) -> None:
        self.blobs = blobs

    def get(self, user_id: str) -> UserTraits | None:
        blob = self.blobs.get(traits_key(user_id))
        if blob is None:
            return None
        try:
            traits = UserTraits.from_dict(json.loads(blob.data))
        except (ValueError, TypeError, KeyError, IndexError) as exc:
            log.warning("ignoring unreadable traits cache entry for %s: %s", user_id, exc)
            return None
        return traits if traits.user_id == user_id else None

    def put(self, traits: UserTraits) -> None:
        data = json.dumps(traits.to_dict(), sort_keys=True, ensure_ascii=False).encode()
        self.blobs.put(traits_key(traits.user_id), data)

    def invalidate(self, user_id: str) -> None:
        self.blobs.delete(traits_key(user_id))


class InMemoryTraitsCache(BlobTraitsCache):
    def __init__(self) -> None:
        super().__init__(MemoryBlobs())


class S3TraitsCache(BlobTraitsCache):
    def __init__(self, client: Any, bucket: str) -> None:
        super().__init__(S3Blobs(client, bucket))


# -- the service the embedding agent calls ---------------------------------------------


class TraitsService:
    """Cached trait text per user. ``clock`` returns epoch seconds (time.time)."""

    def __init__(self, store: InsightStore, cache: TraitsCache, *, top_n: int = 5,
                 ttl_seconds: float = 24 * 3600.0, half_life_seconds: float = 30 * 86400.0,
                 max_items: int = 12, clock: Callable[[], float] = time.time,
                 clock_skew_seconds: float = 300.0) -> None:
        if top_n < 1 or ttl_seconds < 0 or half_life_seconds <= 0:
            raise ValueError("top_n >= 1, ttl_seconds >= 0, half_life_seconds > 0")
        self.store, self.cache = store, cache
        self.top_n, self.ttl_seconds = top_n, ttl_seconds
        self.half_life_seconds, self.max_items = half_life_seconds, max_items
        self.clock, self.clock_skew_seconds = clock, clock_skew_seconds

    def user_traits(self, user_id: str, *, top_n: int | None = None,
                    force_refresh: bool = False) -> UserTraits:
        """Fresh cache entry, else rebuild from insights and store it.

        ``force_refresh`` skips the cache read and replaces the entry. Raises
        NoInsightsError / MalformedInsightError (both ValidationError) or
        ExternalServiceError when the insight store is unreachable.
        """
        check_user_id(user_id)
        n = top_n or self.top_n
        now = self.clock()
        if not force_refresh:
            cached = self._cached(user_id)
            if cached is not None and self._fresh(cached, n, now):
                return replace(cached, from_cache=True)
        traits = self.build(user_id, n, now)
        try:
            self.cache.put(traits)
        except ExternalServiceError as exc:  # the cache is an optimisation only
            log.warning("could not cache traits for %s: %s", user_id, exc)
        return traits

    def _cached(self, user_id: str) -> UserTraits | None:
        try:
            return self.cache.get(user_id)
        except ExternalServiceError as exc:
            log.warning("traits cache unavailable for %s: %s", user_id, exc)
            return None

    def _fresh(self, cached: UserTraits, n: int, now: float) -> bool:
        age = now - cached.computed_at
        return cached.top_n == n and -self.clock_skew_seconds <= age < self.ttl_seconds

    def build(self, user_id: str, top_n: int, now: float) -> UserTraits:
        """Read up to 4*top_n chats, newest first, until top_n usable ones are found."""
        refs = self.store.user_chats(user_id)
        if not refs:
            raise NoInsightsError(user_id, "the user has no chat index (no analysed chats)")
        usable: list[tuple[ChatRef, ParticipantInsight]] = []
        skipped: list[tuple[str, str]] = []
        for ref in refs[: 4 * top_n]:
            insight, reason = self._insight(user_id, ref.chat_hash)
            if insight is None:
                skipped.append((ref.chat_hash, reason))
                continue
            usable.append((ref, insight))
            if len(usable) == top_n:
                break
        text = aggregate_traits(usable, half_life_seconds=self.half_life_seconds,
                                max_items=self.max_items)
        if not text:
            raise NoInsightsError(user_id, f"none of {len(refs)} chat(s) had usable insights",
                                  tuple(skipped))
        return UserTraits(user_id=user_id, text=text, top_n=top_n, computed_at=now,
                          chat_hashes=tuple(r.chat_hash for r, _ in usable),
                          skipped=tuple(skipped))

    def _insight(self, user_id: str, chat_hash: str) -> tuple[ParticipantInsight | None, str]:
        try:
            chat = self.store.chat_insights(chat_hash)
        except MalformedInsightError as exc:
            return None, exc.reason
        if chat is None:
            return None, "insights.json is missing"
        mine = chat.for_user(user_id)
        if mine is None:
            return None, "no insights for this user in the chat"
        if mine.empty:
            return None, "insights are empty"
        return mine, ""
