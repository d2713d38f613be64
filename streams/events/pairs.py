"""Topic ``pairs``: the matcher's per-seeker outcome of a cycle.

``PairMatched`` is keyed by ``pair_key``, ``SeekerUnmatched`` by ``user_id``. Event ids
are derived from the cycle and the pair/user, so a rerun of a cycle repeats them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar

from streams.events.base import Event, check_pair
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
