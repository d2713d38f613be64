"""Topic ``cycles`` (key ``cycle_id``): one summary per finished cycle.

Published in the same transaction as the cycle's pairs, so a committed summary means
every pair of that cycle is on the ``pairs`` topic too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import field

from streams.events.base import Event, event_type
from streams.events.optin import DEFAULT_POOL


@event_type
class CycleCompleted(Event):
    cycle_id: str
    pairs: int
    pool: str = DEFAULT_POOL
    seekers: int = 0
    unmatched_by_reason: Mapping[str, int] = field(default_factory=dict)
    score_mean: float | None = None
    score_min: float | None = None
    score_max: float | None = None
    # Seekers-topic partition -> offset the pool snapshot read up to (exclusive).
    snapshot_offsets: Mapping[int, int] = field(default_factory=dict)
    params_hash: str = ""
    phase_seconds: Mapping[str, float] = field(default_factory=dict)
    # The matcher's measured candidate recall@10 (None: exact candidates, not measured).
    candidate_recall: float | None = None

    def key(self) -> str:
        return self.cycle_id

