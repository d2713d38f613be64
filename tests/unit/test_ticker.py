"""Cycle ids from schedule slots, and the scheduler on a fake clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from mosaic.errors import ValidationError
from producers.ticker import Ticker, cycle_id, make_tick, slot_start
from streams.events import CycleTick
from streams.serde import decode, encode

pytestmark = pytest.mark.unit

T0 = datetime(2025, 3, 1, 10, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("name", "at", "seconds", "slot"),
    [
        ("on the boundary", T0, 3600, T0),
        ("inside the slot", T0 + timedelta(minutes=59, seconds=59), 3600, T0),
        ("next slot", T0 + timedelta(hours=1), 3600, T0 + timedelta(hours=1)),
        ("five minutes", T0 + timedelta(minutes=7, seconds=3), 300, T0 + timedelta(minutes=5)),
        ("sub-second is floored", T0 + timedelta(microseconds=999_999), 1, T0),
        ("other time zone", datetime(2025, 3, 1, 12, 30, tzinfo=timezone(timedelta(hours=2))),
         3600, T0),
        ("daily slots align to UTC midnight", T0, 86400, datetime(2025, 3, 1, tzinfo=UTC)),
    ],
)
def test_slot_start(name: str, at: datetime, seconds: int, slot: datetime) -> None:
    assert slot_start(at, seconds) == slot, name


@pytest.mark.parametrize(
    ("name", "pool", "slot", "expected"),
    [
        ("default pool", "default", T0, "default:20250301T100000Z"),
        ("other pool", "en-gb", T0 + timedelta(seconds=5), "en-gb:20250301T100005Z"),
        ("aware non-UTC slot", "x", T0.astimezone(timezone(timedelta(hours=-5))),
         "x:20250301T100000Z"),
    ],
)
def test_cycle_id(name: str, pool: str, slot: datetime, expected: str) -> None:
    assert cycle_id(pool, slot) == expected, name


@pytest.mark.parametrize(
    ("name", "call"),
    [
        ("zero cadence", lambda: slot_start(T0, 0)),
        ("naive time", lambda: slot_start(datetime(2025, 1, 1), 60)),
        ("empty pool", lambda: cycle_id("", T0)),
        ("colon in pool", lambda: cycle_id("a:b", T0)),
    ],
)
def test_rejects(name: str, call: object) -> None:
    with pytest.raises(ValidationError):
        call()  # type: ignore[operator]


def test_ticks_in_one_slot_name_the_same_cycle_and_event() -> None:
    first = make_tick("default", T0 + timedelta(minutes=1), 3600)
    again = make_tick("default", T0 + timedelta(minutes=42, microseconds=1500), 3600)
    assert (first.cycle_id, first.event_id, first.slot_start) == \
           (again.cycle_id, again.event_id, again.slot_start)
    assert again.occurred_at == T0 + timedelta(minutes=42, microseconds=1000)  # whole ms
    assert decode(encode(again)) == again


class FakeTime:
    def __init__(self, now: datetime) -> None:
        self.now = now
        self.slept: list[float] = []

    def clock(self) -> datetime:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += timedelta(seconds=seconds)


def test_ticker_fires_now_then_at_each_boundary() -> None:
    fake = FakeTime(T0 + timedelta(seconds=130))
    sent: list[CycleTick] = []
    ticker = Ticker(sent.append, ["a", "b"], 60, clock=fake.clock, sleep=fake.sleep)
    returned = ticker.run(max_ticks=3)
    assert returned == sent
    assert [t.cycle_id for t in sent] == [
        "a:20250301T100200Z", "b:20250301T100200Z",
        "a:20250301T100300Z", "b:20250301T100300Z",
        "a:20250301T100400Z", "b:20250301T100400Z",
    ]
    # Scheduled ticks carry the boundary itself, not the moment the process woke.
    assert [t.occurred_at for t in sent[2:]] == [T0 + timedelta(minutes=m) for m in (3, 3, 4, 4)]
    assert max(fake.slept) <= 1.0


def test_ticker_skips_missed_slots_after_a_stall() -> None:
    fake = FakeTime(T0)
    sent: list[CycleTick] = []

    def publish(tick: CycleTick) -> None:
        sent.append(tick)
        if len(sent) == 1:
            fake.now += timedelta(minutes=5, seconds=30)  # e.g. the machine slept

    Ticker(publish, ["p"], 60, clock=fake.clock, sleep=fake.sleep).run(max_ticks=2)
    assert [t.cycle_id for t in sent] == ["p:20250301T100000Z", "p:20250301T100500Z"]


def test_ticker_stops_when_asked() -> None:
    fake = FakeTime(T0)
    sent: list[CycleTick] = []
    ticker = Ticker(sent.append, ["p"], 3600, clock=fake.clock, sleep=fake.sleep)
    ticker.run(should_stop=lambda: len(fake.slept) >= 3)
    assert len(sent) == 1
