"""Topic ``pairs``: the matcher's per-seeker outcome of a cycle.

``PairMatched`` is keyed by ``pair_key``, ``SeekerUnmatched`` by ``user_id``. Event ids
are derived from the cycle and the pair/user, so a rerun of a cycle repeats them.
"""

from __future__ import annotations

from streams.events.base import Event, check_pair, event_type
from streams.events.optin import DEFAULT_POOL

# SeekerUnmatched.reason values are the matcher core's UnmatchedReason (plus the service's
# "invalid_vector"); kept as a plain string so new reasons never break old readers.


@event_type
class PairMatched(Event):
    cycle_id: str
    pair_key: str
    user_a: str
    user_b: str
    score: float
    similarity: float
    pool: str = DEFAULT_POOL
    # The paired seekers records' versions (SeekerUpdated.version; 0 = unknown): post-match
    # orders each user's "matched" after the opt-in it ends (mosaic/user_state.py).
    version_a: int = 0
    version_b: int = 0

    def __post_init__(self) -> None:
        Event.__post_init__(self)
        check_pair(self.schema_name, self.pair_key, self.user_a, self.user_b)

    def key(self) -> str:
        return self.pair_key


@event_type
class SeekerUnmatched(Event):
    cycle_id: str
    user_id: str
    reason: str
    missed_cycles: int
    pool: str = DEFAULT_POOL
    version: int = 0  # the seekers record version the seeker waited with (0 = unknown)

    def key(self) -> str:
        return self.user_id
