"""Topic ``seekers`` (compacted, key ``user_id``): the waiting pool as a changelog.

The latest record per user is that user's state: ``SeekerUpdated`` while waiting,
``SeekerRemoved`` once gone (a later null-value tombstone may erase it for good).
"""

from __future__ import annotations

import math
from datetime import datetime

from mosaic.errors import ValidationError
from streams.events.base import Event, event_type
from streams.events.optin import DEFAULT_POOL

STATUS_WAITING = "waiting"
STATUS_PAUSED = "paused"

REMOVED_MATCHED = "matched"
REMOVED_OPTED_OUT = "opted_out"
REMOVED_EMBEDDING_FAILED = "embedding_failed"
REMOVED_EXPIRED = "expired"

FLOAT32_MAX = 3.4028234663852886e38


@event_type
class SeekerUpdated(Event):
    user_id: str
    opted_in_at: datetime
    vector: tuple[float, ...]  # float32 on the wire
    model: str
    traits_hash: str
    pool: str = DEFAULT_POOL
    missed_cycles: int = 0
    status: str = STATUS_WAITING
    blocked_user_ids: tuple[str, ...] = ()
    recent_partner_ids: tuple[str, ...] = ()
    # Per-user order (ms of the request behind the record, moved past the user's previous
    # request in log order: consumers/request_order.py); 0 = unversioned (offset order).
    version: int = 0
    # Set on the matcher's carry-over copy (missed_cycles + 1): the cycle that wrote it.
    cycle_id: str | None = None

    def __post_init__(self) -> None:
        Event.__post_init__(self)
        # Avro "float" is 32-bit: larger values would silently become infinity.
        if not all(math.isfinite(x) and abs(x) <= FLOAT32_MAX for x in self.vector):
            raise ValidationError(f"SeekerUpdated {self.user_id}: vector has NaN/inf/huge values")

    def key(self) -> str:
        return self.user_id


@event_type
class SeekerRemoved(Event):
    user_id: str
    reason: str
    pool: str = DEFAULT_POOL
    cycle_id: str | None = None
    version: int = 0  # see SeekerUpdated.version: a removal ends this version and older

    def key(self) -> str:
        return self.user_id
