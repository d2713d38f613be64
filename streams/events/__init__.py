"""Every event as a frozen dataclass, one module per topic.

Names follow the flow: requests from users are ``...Requested`` (commands to the
system), everything the system did is past tense (``PairMatched``, ``RoomCreated``).
"""

from __future__ import annotations

from streams.events.base import (
    PAIR_SEPARATOR,
    Event,
    derive_event_id,
    event_ids,
    from_millis,
    new_event_id,
    pair_key,
    split_pair_key,
    to_millis,
)
from streams.events.cycles import CycleCompleted
from streams.events.deadletters import DeadLettered
from streams.events.notifications import UserNotified
from streams.events.optin import (
    DEFAULT_POOL,
    DEFAULT_TOP_CHATS,
    BlockRequested,
    OptInRequested,
    OptOutRequested,
)
from streams.events.pairs import PairMatched, SeekerUnmatched
from streams.events.rooms import RoomCreated
from streams.events.seekers import SeekerRemoved, SeekerUpdated
from streams.events.ticks import CycleTick

EVENT_TYPES: tuple[type[Event], ...] = (
    OptInRequested,
    OptOutRequested,
    BlockRequested,
    SeekerUpdated,
    SeekerRemoved,
    CycleTick,
    PairMatched,
    SeekerUnmatched,
    CycleCompleted,
    RoomCreated,
    UserNotified,
    DeadLettered,
)

__all__ = [
    "DEFAULT_POOL",
    "DEFAULT_TOP_CHATS",
    "EVENT_TYPES",
    "PAIR_SEPARATOR",
    "BlockRequested",
    "CycleCompleted",
    "CycleTick",
    "DeadLettered",
    "Event",
    "OptInRequested",
    "OptOutRequested",
    "PairMatched",
    "RoomCreated",
    "SeekerRemoved",
    "SeekerUnmatched",
    "SeekerUpdated",
    "UserNotified",
    "derive_event_id",
    "event_ids",
    "from_millis",
    "new_event_id",
    "pair_key",
    "split_pair_key",
    "to_millis",
]
