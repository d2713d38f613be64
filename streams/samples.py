"""One valid, deterministic example of every event, for tests and demos.

Values are chosen to survive the wire exactly: times on whole milliseconds, vector
components representable as 32-bit floats.
"""

from __future__ import annotations

from datetime import UTC, datetime

from streams.events import (
    BlockRequested,
    CycleCompleted,
    CycleTick,
    DeadLettered,
    Event,
    OptInRequested,
    OptOutRequested,
    PairMatched,
    RoomCreated,
    SeekerRemoved,
    SeekerUnmatched,
    SeekerUpdated,
    UserNotified,
    derive_event_id,
    pair_key,
)

USER_A = "0b6c5f0e-2d6a-4f7e-9a51-6a1f0c7d2e11"
USER_B = "9f3e1d2c-7b4a-4c8d-8e6f-1a2b3c4d5e6f"
CYCLE = "default-20250101T1000Z"
AT = datetime(2025, 1, 1, 10, 0, 0, 123000, tzinfo=UTC)
PAIR = pair_key(USER_A, USER_B)


def _id(name: str) -> str:
    return derive_event_id("sample", name)


def sample_events() -> list[Event]:
    """Exactly one instance of each event type, in ``EVENT_TYPES`` order."""
    return [
        OptInRequested(event_id=_id("optin"), occurred_at=AT, request_id="req-1",
                       user_id=USER_A, opted_in_at=AT, top_chats=7, force_refresh=True,
                       pool="en"),
        OptOutRequested(event_id=_id("optout"), occurred_at=AT, request_id="req-2",
                        user_id=USER_A),
        BlockRequested(event_id=_id("block"), occurred_at=AT, request_id="req-3",
                       user_id=USER_A, blocked_user_id=USER_B),
        SeekerUpdated(event_id=_id("seeker"), occurred_at=AT, user_id=USER_A,
                      opted_in_at=AT, vector=(0.5, -0.25, 1.0, 0.0), model="local-e5",
                      traits_hash="sha256:abc", missed_cycles=2,
                      blocked_user_ids=(USER_B,), recent_partner_ids=("u-old",)),
        SeekerRemoved(event_id=_id("removed"), occurred_at=AT, user_id=USER_A,
                      reason="matched", cycle_id=CYCLE),
        CycleTick(event_id=_id("tick"), occurred_at=AT, cycle_id=CYCLE, slot_start=AT),
        PairMatched(event_id=_id("pair"), occurred_at=AT, cycle_id=CYCLE, pair_key=PAIR,
                    user_a=USER_A, user_b=USER_B, score=0.91, similarity=0.83),
        SeekerUnmatched(event_id=_id("unmatched"), occurred_at=AT, cycle_id=CYCLE,
                        user_id=USER_B, reason="odd_one_out", missed_cycles=3),
        CycleCompleted(event_id=_id("cycle"), occurred_at=AT, cycle_id=CYCLE, pairs=1,
                       seekers=3, unmatched_by_reason={"odd_one_out": 1},
                       score_mean=0.91, score_min=0.91, score_max=0.91,
                       snapshot_offsets={0: 12, 5: 3}, params_hash="p1",
                       phase_seconds={"snapshot": 0.25, "match": 0.5}),
        RoomCreated(event_id=_id("room"), occurred_at=AT, cycle_id=CYCLE, pair_key=PAIR,
                    group_id="g-1", user_a=USER_A, user_b=USER_B,
                    group_name=f"mosaic-{CYCLE}-1", channel_id="c-1"),
        UserNotified(event_id=_id("notified"), occurred_at=AT, cycle_id=CYCLE,
                     pair_key=PAIR, user_id=USER_A, partner_id=USER_B, group_id="g-1"),
        DeadLettered(event_id=_id("dead"), occurred_at=AT, reason="bad bytes",
                     error_type="SerializationError", source_topic="mosaic.optin",
                     source_partition=2, source_offset=41, source_key=b"k",
                     source_value=b"\x00\x01", consumer_group="g", attempts=1),
    ]
