"""The versions of one user's requests (consumers/request_order.py): log order, replays."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from consumers.request_order import order, version_of
from mosaic.user_state import LastRequest
from streams.deadletter import RawRecord
from streams.events import OptInRequested, OptOutRequested, derive_event_id, to_millis

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 1, tzinfo=UTC)
MS = to_millis(T0)
STALE_MS = 120_000


def _event(kind: str, ms: int, event_id: str, user: str = "alice"
           ) -> OptInRequested | OptOutRequested:
    at, event_id = T0 + timedelta(milliseconds=ms), _id(event_id)
    if kind == "in":
        return OptInRequested(event_id=event_id, occurred_at=at, request_id="r0000000",
                              user_id=user, opted_in_at=at, pool="eu")
    return OptOutRequested(event_id=event_id, occurred_at=at, request_id="r0000000",
                           user_id=user, pool="eu")


def _id(name: str) -> str:
    return derive_event_id("test", name)


def _record(offset: int, partition: int = 0) -> RawRecord:
    return RawRecord("t.optin", partition, offset, b"alice", b"")


LAST = LastRequest(partition=0, offset=10, version=MS + 5_000, event_id=_id("e10"))

CASES = {
    # name: (last, partition, offset, request ms, event id, expected version)
    "first request: its own time": (None, 0, 3, 7, "e3", MS + 7),
    "later on the log, clock ahead: its own time": (LAST, 0, 11, 9_000, "e11", MS + 9_000),
    "later on the log, clock behind: after the last": (LAST, 0, 11, 4_500, "e11",
                                                        MS + 5_001),
    "the same request again: same version": (LAST, 0, 10, 4_000, "e10", MS + 5_000),
    "sent again later on the log: same version": (LAST, 0, 30, 4_000, "e10", MS + 5_000),
    "behind the last on the log: stale": (LAST, 0, 9, 4_000, "e9", None),
    "behind on the log but newer than the last: a recreated topic": (LAST, 0, 2, 6_000, "x",
                                                                      MS + 6_000),
    "another partition: after the last": (LAST, 3, 1, 4_000, "e1", MS + 5_001),
    "far older than the last: an old request sent again": (LAST, 0, 40, 5_000 - 120_001,
                                                           "old", None),
    "older, within the window: a new request": (LAST, 0, 40, 5_000 - 119_999, "new",
                                                MS + 5_001),
}


@pytest.mark.parametrize("name", list(CASES))
def test_version_of(name: str) -> None:
    last, partition, offset, ms, event_id, expected = CASES[name]
    event = _event("in", ms, event_id)
    assert version_of(_record(offset, partition), event, last, STALE_MS) == expected


def test_a_batch_is_ordered_in_log_order_and_only_changes_are_stored() -> None:
    items = [(_record(1), _event("in", 1_000, "a")), (_record(2), _event("out", 400, "b")),
             (_record(3), _event("in", 300, "c"))]
    versions, changed = order(items, {}, STALE_MS)
    assert versions == [MS + 1_000, MS + 1_001, MS + 1_002]
    assert changed == {"alice": LastRequest(0, 3, MS + 1_002, _id("c"))}
    again, unchanged = order(items, changed, STALE_MS)
    assert again == [None, None, MS + 1_002] and unchanged == {}
