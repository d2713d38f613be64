"""Cycle ticks: which schedule slot a moment falls in, and publishing one tick per slot.

The cycle id is derived from the slot (``"<pool>:<slot start>"``), never from the wall
clock at publish time, so a tick published twice for one slot (a restarted ticker, two
tickers, a manual ``mosaic tick``) names the same cycle and the matcher runs it once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

from confluent_kafka import Producer

from mosaic.errors import ValidationError
from mosaic.settings import Settings
from streams.events import CycleTick, derive_event_id
from streams.events.optin import DEFAULT_POOL
from streams.kafka import make_producer, produce_and_wait
from streams.topics import build_catalog

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
Sleep = Callable[[float], None]
Publish = Callable[[CycleTick], None]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _utc_now() -> datetime:
    return datetime.now(UTC)


def slot_start(at: datetime, cycle_seconds: int) -> datetime:
    """The start of the schedule slot containing ``at`` (slots are aligned to the epoch)."""
    if cycle_seconds <= 0:
        raise ValidationError(f"cycle_seconds must be positive, got {cycle_seconds}")
    if at.tzinfo is None:
        raise ValidationError(f"naive datetime {at!r}: use an aware UTC datetime")
    elapsed = (at - _EPOCH) // timedelta(seconds=1)
    return _EPOCH + timedelta(seconds=elapsed - elapsed % cycle_seconds)


def cycle_id(pool: str, slot: datetime) -> str:
    """``"<pool>:<YYYYmmddTHHMMSSZ>"``: one id per pool and slot."""
    if not pool or ":" in pool:
        raise ValidationError(f"pool {pool!r} is empty or contains ':'")
    return f"{pool}:{slot.astimezone(UTC):%Y%m%dT%H%M%SZ}"


def make_tick(pool: str, at: datetime, cycle_seconds: int) -> CycleTick:
    """The tick for the slot containing ``at``; ``occurred_at`` is ``at`` on whole
    milliseconds (what the wire keeps), and the event id follows the cycle id."""
    slot = slot_start(at, cycle_seconds)
    cycle = cycle_id(pool, slot)
    when = at.astimezone(UTC).replace(microsecond=at.microsecond // 1000 * 1000)
    return CycleTick(event_id=derive_event_id("CycleTick", cycle), occurred_at=when,
                     cycle_id=cycle, slot_start=slot, pool=pool)


def kafka_publish(settings: Settings, producer: Producer | None = None) -> Publish:
    """A :data:`Publish` that writes to the tick topic and waits for the broker."""
    topic = build_catalog(settings).ticks
    client = producer or make_producer(settings)

    def publish(tick: CycleTick) -> None:
        produce_and_wait(client, topic, tick)
        log.info("published tick %s to %s", tick.cycle_id, topic.name)

    return publish


def publish_tick(settings: Settings, pool: str = DEFAULT_POOL, at: datetime | None = None,
                 *, cycle_seconds: int | None = None) -> CycleTick:
    """Publish one tick (``mosaic tick``) and return it."""
    seconds = cycle_seconds or settings.matcher.cycle_seconds
    tick = make_tick(pool, at or _utc_now(), seconds)
    kafka_publish(settings)(tick)
    return tick


class Ticker:
    """Publishes a tick per pool at every slot boundary.

    On start it publishes the current slot at once (a restart mid-slot re-sends a tick
    the matcher already ran: it is ignored), then one at each boundary, stamped with the
    boundary itself so the cycle does not depend on how late the process woke up.
    """

    def __init__(self, publish: Publish, pools: Sequence[str], cycle_seconds: int, *,
                 clock: Clock = _utc_now, sleep: Sleep = time.sleep) -> None:
        if not pools:
            raise ValidationError("a ticker needs at least one pool")
        slot_start(_EPOCH, cycle_seconds)  # validates the cadence
        self._publish, self._pools, self._seconds = publish, tuple(pools), cycle_seconds
        self._clock, self._sleep = clock, sleep

    def run(self, max_ticks: int | None = None, should_stop: Callable[[], bool] = lambda: False
            ) -> list[CycleTick]:
        """Tick until ``should_stop()`` or ``max_ticks`` slots; returns what was sent."""
        sent: list[CycleTick] = []
        now = self._clock()
        sent += self._fire(now)
        slot = slot_start(now, self._seconds)
        while (max_ticks is None or len(sent) < max_ticks * len(self._pools)) \
                and not should_stop():
            boundary = slot + timedelta(seconds=self._seconds)
            # Sleep in short steps so a stop request is honoured promptly.
            while (delay := (boundary - self._clock()).total_seconds()) > 0:
                if should_stop():
                    return sent
                self._sleep(min(delay, 1.0))
            # After a stall (suspend, long GC) skip the missed slots: one cycle, not a burst.
            slot = slot_start(self._clock(), self._seconds)
            sent += self._fire(slot)
        return sent

    def _fire(self, at: datetime) -> list[CycleTick]:
        ticks = [make_tick(pool, at, self._seconds) for pool in self._pools]
        for tick in ticks:
            self._publish(tick)
        return ticks
