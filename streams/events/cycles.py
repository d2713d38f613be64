"""Topic ``cycles`` (key ``cycle_id``): one summary per finished cycle.

Published in the same transaction as the cycle's pairs, so a committed summary means
every pair of that cycle is on the ``pairs`` topic too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Self

from mosaic.errors import SerializationError
from streams.events.base import Event, FieldReader, to_millis
from streams.events.optin import DEFAULT_POOL


@dataclass(frozen=True, kw_only=True, slots=True)
class CycleCompleted(Event):
    schema_name: ClassVar[str] = "CycleCompleted"
    event_id: str
    occurred_at: datetime
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

    def key(self) -> str:
        return self.cycle_id

    def to_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "occurred_at": to_millis(self.occurred_at),
            "cycle_id": self.cycle_id,
            "pool": self.pool,
            "seekers": self.seekers,
            "pairs": self.pairs,
            "unmatched_by_reason": dict(self.unmatched_by_reason),
            "score_mean": self.score_mean,
            "score_min": self.score_min,
            "score_max": self.score_max,
            # Avro map keys are strings.
            "snapshot_offsets": {str(p): o for p, o in self.snapshot_offsets.items()},
            "params_hash": self.params_hash,
            "phase_seconds": dict(self.phase_seconds),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        r = FieldReader(cls.schema_name, data)
        return cls(
            event_id=r.string("event_id"),
            occurred_at=r.time("occurred_at"),
            cycle_id=r.string("cycle_id"),
            pool=r.string("pool", DEFAULT_POOL),
            seekers=r.integer("seekers", 0),
            pairs=r.integer("pairs"),
            unmatched_by_reason=r.int_map("unmatched_by_reason", {}),
            score_mean=r.opt_number("score_mean"),
            score_min=r.opt_number("score_min"),
            score_max=r.opt_number("score_max"),
            snapshot_offsets=_partition_keys(r.int_map("snapshot_offsets", {})),
            params_hash=r.string("params_hash", ""),
            phase_seconds=r.float_map("phase_seconds", {}),
        )


def _partition_keys(offsets: Mapping[str, int]) -> dict[int, int]:
    if not all(p.isascii() and p.isdigit() for p in offsets):
        raise SerializationError(f"CycleCompleted.snapshot_offsets: bad partition in {offsets}")
    return {int(p): o for p, o in offsets.items()}
