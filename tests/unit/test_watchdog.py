"""The consumer watchdog's decision (pure: positions, fresh end offsets, an injected clock)
and the delivery-error classification by code."""

from __future__ import annotations

import logging
import threading
import time

import pytest
from confluent_kafka import KafkaError

from consumers.watchdog import Watchdog
from streams.kafka import delivery_retryable

pytestmark = pytest.mark.unit

P0, P1 = ("t.pairs", 0), ("t.pairs", 1)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _dog(limit: float = 60.0) -> tuple[Watchdog, Clock]:
    clock = Clock()
    return Watchdog("rooms", limit, clock=clock), clock


@pytest.mark.parametrize("name,positions,ends,stalled", [
    ("caught up (the position is past a commit marker)", {P0: 6}, {P0: 6}, False),
    ("records waiting, position still", {P0: 5, P1: 3}, {P0: 9, P1: 3}, True),
    ("broker unreachable", {P0: 5}, None, True),
    ("nothing assigned, broker there", {}, {}, False),
    ("nothing assigned, broker away", {}, None, True),
])
def test_a_stall_is_no_movement_with_records_waiting_or_no_broker(
        name: str, positions: dict[tuple[str, int], int],
        ends: dict[tuple[str, int], int] | None, stalled: bool) -> None:
    dog, clock = _dog()
    dog.observe(positions, ends)
    clock.now = 59.0
    assert dog.observe(positions, ends) is None, name  # within the limit
    clock.now = 61.0
    assert (dog.observe(positions, ends) is not None) is stalled, name


def test_the_stall_names_the_agent_the_partitions_and_how_long() -> None:
    dog, clock = _dog()
    dog.observe({P0: 5, P1: 3}, {P0: 9, P1: 3})
    clock.now = 75.0
    stall = dog.observe({P0: 5, P1: 3}, {P0: 9, P1: 3})
    assert stall is not None
    assert stall.describe() == "rooms: no progress for 75 s (t.pairs[0] 4 records behind)"
    clock.now = 80.0
    away = dog.observe({P0: 5}, None)
    assert away is not None
    assert away.describe() == ("rooms: no progress for 80 s (broker unreachable; "
                               "assigned t.pairs[0])")


def test_moving_positions_or_a_handled_batch_reset_the_clock() -> None:
    dog, clock = _dog()
    dog.observe({P0: 5}, {P0: 900})
    clock.now = 50.0
    dog.observe({P0: 6}, {P0: 900})  # slow but moving
    clock.now = 100.0
    assert dog.observe({P0: 6}, {P0: 900}) is None
    dog.progressed()
    clock.now = 150.0
    assert dog.observe({P0: 6}, {P0: 900}) is None
    clock.now = 161.0
    assert dog.observe({P0: 6}, {P0: 900}) is not None


def test_rebuilds_get_a_whole_limit_each_and_run_out() -> None:
    dog, clock = _dog(limit=10)
    assert dog.every == 2.5
    for n in range(1, 4):
        clock.now += 11
        assert dog.observe({P0: 1}, None) is not None
        dog.rebuilt()
        assert dog.rebuilds == n
        assert dog.observe({P0: 1}, None) is None  # the new consumer's limit starts now
    assert dog.exhausted()
    dog.observe({P0: 2}, {P0: 2})
    assert not dog.exhausted() and dog.rebuilds == 0


def test_lag_counts_records_beyond_each_position() -> None:
    assert Watchdog.lag({P0: 5, P1: 3}, {P0: 9, P1: 3}) == 4


@pytest.mark.parametrize("code,retryable", [
    (KafkaError._MSG_TIMED_OUT, True),
    (KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER, True),
    (KafkaError.UNKNOWN_PRODUCER_ID, True),
    (KafkaError._TRANSPORT, True),
    (KafkaError.NOT_ENOUGH_REPLICAS, True),
    (KafkaError.MSG_SIZE_TOO_LARGE, False),
    (KafkaError.TOPIC_AUTHORIZATION_FAILED, False),
    (KafkaError._UNKNOWN_TOPIC, False),
])
def test_delivery_errors_are_classified_by_code(code: int, retryable: bool) -> None:
    # librdkafka's delivery reports never say retriable(): the code decides.
    assert delivery_retryable(KafkaError(code)) is retryable


def test_a_loop_blocked_in_a_call_is_reported_with_where(
        caplog: pytest.LogCaptureFixture) -> None:
    from consumers.runner import BatchRunner
    from mosaic.settings import Settings
    from streams.kafka import BatchPublisher
    from tests.fakes import BlockingConsumer

    consumer = BlockingConsumer()
    runner = BatchRunner(Settings(), "rooms", [], handler=None,  # type: ignore[arg-type]
                         publisher=BatchPublisher(None),  # type: ignore[arg-type]
                         consumer=consumer,  # type: ignore[arg-type]
                         watchdog=Watchdog("rooms", 1.0))
    stop = threading.Event()
    thread = threading.Thread(target=runner.run, kwargs={"stop": stop.is_set}, daemon=True)
    with caplog.at_level(logging.ERROR, logger="consumers.runner"):
        thread.start()
        deadline = time.monotonic() + 5
        while not caplog.records and time.monotonic() < deadline:
            time.sleep(0.05)
        stop.set()
        consumer.release.set()
        thread.join(10)
    (record,) = [r for r in caplog.records if "has not come back" in r.getMessage()]
    message = record.getMessage()
    assert message.startswith("rooms: its loop has not come back for ")
    assert "consume (fakes.py:" in message


def test_client_errors_are_logged_with_repeats_folded(caplog: pytest.LogCaptureFixture) -> None:
    from streams.kafka import log_client_errors

    error_cb = log_client_errors("g", every_seconds=3600)
    with caplog.at_level(logging.WARNING, logger="streams.kafka"):
        for _ in range(5):
            error_cb(KafkaError(KafkaError._TRANSPORT))  # a reconnect every 100 ms
        error_cb(KafkaError(KafkaError._ALL_BROKERS_DOWN))
    assert [r.getMessage().split(":")[1].strip() for r in caplog.records] == [
        "kafka client error _TRANSPORT", "kafka client error _ALL_BROKERS_DOWN"]
