"""Personality insights that the upstream AI analysis writes to S3, one document per chat.

Layout of the insights bucket (see docs/profiles.md for the full contract)::

    <chat_hash>/insights.json      one chat's analysis, per participant
    users/<user_id>/chats.json     the user's chat index: chat_hash + last_activity

A user's top N chats are the first N entries of their index ordered by
``last_activity`` (newest first, ties by chat_hash). The index exists because S3 cannot
list "the chats of user X" without scanning the whole bucket.
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from mosaic.errors import ValidationError
from profiles.blobs import BlobStore, MemoryBlobs, S3Blobs
from profiles.errors import BlobConflictError, MalformedInsightError

SCHEMA_VERSION = 1
MAX_DOCUMENT_BYTES = 1 << 20
USER_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$")
CHAT_HASH_RE = re.compile(r"^[A-Za-z0-9_-]{8,128}$")
_LIST_FIELDS = ("traits", "interests", "values")


def insights_key(chat_hash: str) -> str:
    return f"{chat_hash}/insights.json"


def user_index_key(user_id: str) -> str:
    return f"users/{user_id}/chats.json"


def check_user_id(user_id: str) -> str:
    if not isinstance(user_id, str) or not USER_ID_RE.match(user_id):
        raise ValidationError(f"invalid user id {user_id!r}")
    return user_id


@dataclass(frozen=True)
class ParticipantInsight:
    """What the analysis found about one participant of one chat."""

    traits: tuple[str, ...] = ()
    interests: tuple[str, ...] = ()
    values: tuple[str, ...] = ()
    communication_style: str = ""

    @property
    def empty(self) -> bool:
        return not (self.traits or self.interests or self.values
                    or self.communication_style.strip())

    def to_dict(self) -> dict[str, Any]:
        return {"traits": list(self.traits), "interests": list(self.interests),
                "values": list(self.values), "communication_style": self.communication_style}


@dataclass(frozen=True)
class ChatInsights:
    chat_hash: str
    updated_at: datetime
    participants: tuple[str, ...]
    insights: Mapping[str, ParticipantInsight] = field(default_factory=dict)

    def for_user(self, user_id: str) -> ParticipantInsight | None:
        return self.insights.get(user_id)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "chat_hash": self.chat_hash,
            "updated_at": format_time(self.updated_at),
            "participants": list(self.participants),
            "insights": {u: i.to_dict() for u, i in sorted(self.insights.items())},
        }


@dataclass(frozen=True, order=True)
class ChatRef:
    """One entry of a user's chat index."""

    chat_hash: str
    last_activity: datetime


def format_time(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def top_chats(refs: Sequence[ChatRef], n: int | None = None) -> list[ChatRef]:
    """Newest first; ties broken by chat_hash so the choice is deterministic."""
    ordered = sorted(refs, key=lambda r: (-r.last_activity.timestamp(), r.chat_hash))
    return ordered if n is None else ordered[:n]


# -- parsing: every failure becomes MalformedInsightError with the reason -------------


def _load(key: str, data: bytes) -> dict[str, Any]:
    if len(data) > MAX_DOCUMENT_BYTES:
        raise MalformedInsightError(key, f"larger than {MAX_DOCUMENT_BYTES} bytes")
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedInsightError(key, f"not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise MalformedInsightError(key, "top level is not an object")
    version = doc.get("schema_version")
    if version != SCHEMA_VERSION:
        raise MalformedInsightError(key, f"unsupported schema_version {version!r}")
    return doc


def _time(key: str, value: Any, name: str) -> datetime:
    if not isinstance(value, str):
        raise MalformedInsightError(key, f"{name} must be an ISO-8601 string")
    try:
        at = datetime.fromisoformat(value)
    except ValueError as exc:
        raise MalformedInsightError(key, f"{name} {value!r} is not ISO-8601") from exc
    if at.tzinfo is None:
        raise MalformedInsightError(key, f"{name} {value!r} has no time zone")
    return at


def _strings(key: str, value: Any, name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise MalformedInsightError(key, f"{name} must be a list of strings")
    return tuple(value)


def _participant(key: str, user: str, value: Any) -> ParticipantInsight:
    if not isinstance(value, dict):
        raise MalformedInsightError(key, f"insights[{user!r}] is not an object")
    style = value.get("communication_style") or ""
    if not isinstance(style, str):
        raise MalformedInsightError(key, f"insights[{user!r}].communication_style not a string")
    lists = {n: _strings(key, value.get(n), f"insights[{user!r}].{n}") for n in _LIST_FIELDS}
    return ParticipantInsight(communication_style=style, **lists)


def parse_chat_insights(chat_hash: str, data: bytes) -> ChatInsights:
    key = insights_key(chat_hash)
    doc = _load(key, data)
    if doc.get("chat_hash") != chat_hash:
        raise MalformedInsightError(key, f"chat_hash {doc.get('chat_hash')!r} != key")
    participants = _strings(key, doc.get("participants"), "participants")
    if not participants or not all(USER_ID_RE.match(p) for p in participants):
        raise MalformedInsightError(key, "participants must be a non-empty list of user ids")
    raw = doc.get("insights")
    if not isinstance(raw, dict):
        raise MalformedInsightError(key, "insights must be an object keyed by user id")
    unknown = sorted(set(raw) - set(participants))
    if unknown:
        raise MalformedInsightError(key, f"insights for non-participants {unknown}")
    return ChatInsights(
        chat_hash=chat_hash,
        updated_at=_time(key, doc.get("updated_at"), "updated_at"),
        participants=participants,
        insights={u: _participant(key, u, v) for u, v in raw.items()},
    )


def parse_user_index(user_id: str, data: bytes) -> list[ChatRef]:
    key = user_index_key(user_id)
    doc = _load(key, data)
    if doc.get("user_id") != user_id:
        raise MalformedInsightError(key, f"user_id {doc.get('user_id')!r} != key")
    chats = doc.get("chats")
    if not isinstance(chats, list):
        raise MalformedInsightError(key, "chats must be a list")
    refs: dict[str, ChatRef] = {}
    for i, entry in enumerate(chats):
        if not isinstance(entry, dict) or not isinstance(entry.get("chat_hash"), str):
            raise MalformedInsightError(key, f"chats[{i}] needs a chat_hash string")
        chat_hash = entry["chat_hash"]
        if not CHAT_HASH_RE.match(chat_hash):
            raise MalformedInsightError(key, f"chats[{i}].chat_hash {chat_hash!r} is invalid")
        at = _time(key, entry.get("last_activity"), f"chats[{i}].last_activity")
        if chat_hash not in refs or refs[chat_hash].last_activity < at:
            refs[chat_hash] = ChatRef(chat_hash, at)  # duplicates: keep the newest
    return top_chats(list(refs.values()))


def user_index_document(user_id: str, refs: Sequence[ChatRef]) -> dict[str, Any]:
    return {"schema_version": SCHEMA_VERSION, "user_id": user_id,
            "chats": [{"chat_hash": r.chat_hash, "last_activity": format_time(r.last_activity)}
                      for r in top_chats(refs)]}


def _dumps(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, ensure_ascii=False).encode()


# -- the store -------------------------------------------------------------------------


class InsightStore(ABC):
    @abstractmethod
    def user_chats(self, user_id: str) -> list[ChatRef]:
        """The user's chats, newest first; [] when the user has no index.
        Raises MalformedInsightError when the index document is broken."""

    @abstractmethod
    def chat_insights(self, chat_hash: str) -> ChatInsights | None:
        """One chat's insights; None when absent. Raises MalformedInsightError."""

    @abstractmethod
    def put_chat_insights(self, insights: ChatInsights, last_activity: datetime) -> None:
        """Write a chat's insights and record it in every participant's index
        (what the upstream analysis does; used by tests, the demo and backfills)."""


class BlobInsightStore(InsightStore):
    """The documented layout over any BlobStore."""

    def __init__(self, blobs: BlobStore, *, max_index_retries: int = 5) -> None:
        self.blobs = blobs
        self._max_index_retries = max_index_retries

    def user_chats(self, user_id: str) -> list[ChatRef]:
        blob = self.blobs.get(user_index_key(check_user_id(user_id)))
        return [] if blob is None else parse_user_index(user_id, blob.data)

    def chat_insights(self, chat_hash: str) -> ChatInsights | None:
        if not CHAT_HASH_RE.match(chat_hash):
            raise MalformedInsightError(insights_key(chat_hash), "invalid chat hash")
        blob = self.blobs.get(insights_key(chat_hash))
        return None if blob is None else parse_chat_insights(chat_hash, blob.data)

    def put_chat_insights(self, insights: ChatInsights, last_activity: datetime) -> None:
        if not CHAT_HASH_RE.match(insights.chat_hash):
            raise MalformedInsightError(insights_key(insights.chat_hash), "invalid chat hash")
        data = _dumps(insights.to_dict())
        parse_chat_insights(insights.chat_hash, data)  # never write what we cannot read
        self.blobs.put(insights_key(insights.chat_hash), data)
        for user_id in insights.participants:
            self.record_chat(user_id, ChatRef(insights.chat_hash, last_activity))

    def record_chat(self, user_id: str, ref: ChatRef) -> None:
        """Add or refresh one chat in a user's index with optimistic concurrency."""
        key = user_index_key(check_user_id(user_id))
        for _ in range(self._max_index_retries):
            blob = self.blobs.get(key)
            refs = [] if blob is None else parse_user_index(user_id, blob.data)
            merged = {r.chat_hash: r for r in refs}
            old = merged.get(ref.chat_hash)
            if old is None or old.last_activity < ref.last_activity:
                merged[ref.chat_hash] = ref
            data = _dumps(user_index_document(user_id, list(merged.values())))
            try:
                if blob is None:
                    self.blobs.put(key, data, if_absent=True)
                else:
                    self.blobs.put(key, data, if_match=blob.etag)
                return
            except BlobConflictError:
                continue  # someone else wrote the index in between: re-read and merge
        raise BlobConflictError(f"{key}: gave up after {self._max_index_retries} conflicts")


class InMemoryInsightStore(BlobInsightStore):
    """The fake for unit tests: same layout and parsing, objects in a dict."""

    def __init__(self) -> None:
        super().__init__(MemoryBlobs())

    def put_raw(self, key: str, data: bytes) -> None:
        """Store arbitrary bytes (tests of malformed documents)."""
        self.blobs.put(key, data)


class S3InsightStore(BlobInsightStore):
    def __init__(self, client: Any, bucket: str) -> None:
        super().__init__(S3Blobs(client, bucket))
