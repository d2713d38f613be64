"""Topic ``pairs``: the matcher's per-seeker outcome of a cycle.

``PairMatched`` is keyed by ``pair_key``, ``SeekerUnmatched`` by ``user_id``. Event ids
are derived from the cycle and the pair/user, so a rerun of a cycle repeats them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Self

from streams.events.base import Event, FieldReader, check_pair, to_millis
from streams.events.optin import DEFAULT_POOL

# SeekerUnmatched.reason values are the matcher core's UnmatchedReason (plus the service's
# "invalid_vector"); kept as a plain string so new reasons never break old readers.


@dataclass(frozen=True, kw_only=True, slots=True)
class PairMatched(Event):
    schema_name: ClassVar[str] = "PairMatched"
    event_id: str
    occurred_at: datetime
    cycle_id: str
    pair_key: str
    user_a: str
    user_b: str
    score: float
    similarity: float
    pool: str = DEFAULT_POOL

    def __post_init__(self) -> None:
        Event.__post_init__(self)
        check_pair(self.schema_name, self.pair_key, self.user_a, self.user_b)

    def key(self) -> str:
        return self.pair_key

    def to_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "occurred_at": to_millis(self.occurred_at),
            "cycle_id": self.cycle_id,
            "pool": self.pool,
            "pair_key": self.pair_key,
            "user_a": self.user_a,
            "user_b": self.user_b,
            "score": self.score,
            "similarity": self.similarity,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        r = FieldReader(cls.schema_name, data)
        return cls(
            event_id=r.string("event_id"),
            occurred_at=r.time("occurred_at"),
            cycle_id=r.string("cycle_id"),
            pool=r.string("pool", DEFAULT_POOL),
            pair_key=r.string("pair_key"),
            user_a=r.string("user_a"),
            user_b=r.string("user_b"),
            score=r.number("score"),
            similarity=r.number("similarity"),
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class SeekerUnmatched(Event):
    schema_name: ClassVar[str] = "SeekerUnmatched"
    event_id: str
    occurred_at: datetime
    cycle_id: str
    user_id: str
    reason: str
    missed_cycles: int
    pool: str = DEFAULT_POOL

    def key(self) -> str:
        return self.user_id

    def to_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "occurred_at": to_millis(self.occurred_at),
            "cycle_id": self.cycle_id,
            "pool": self.pool,
            "user_id": self.user_id,
            "reason": self.reason,
            "missed_cycles": self.missed_cycles,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        r = FieldReader(cls.schema_name, data)
        return cls(
            event_id=r.string("event_id"),
            occurred_at=r.time("occurred_at"),
            cycle_id=r.string("cycle_id"),
            pool=r.string("pool", DEFAULT_POOL),
            user_id=r.string("user_id"),
            reason=r.string("reason"),
            missed_cycles=r.integer("missed_cycles"),
        )
