"""Which broker errors :func:`streams.kafka.wrap_kafka_error` calls retryable, and that
:func:`streams.kafka.watermarks` rides them out (a leader just elected after a broker of a
cluster was killed answers OFFSET_NOT_AVAILABLE until its high watermark catches up)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from streams.kafka import watermarks, wrap_kafka_error

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("code", [KafkaError.OFFSET_NOT_AVAILABLE,
                                  KafkaError.FENCED_LEADER_EPOCH,
                                  KafkaError.UNKNOWN_LEADER_EPOCH,
                                  KafkaError.NOT_LEADER_FOR_PARTITION])
def test_leader_change_errors_are_retryable(code: int) -> None:
    assert wrap_kafka_error("x", KafkaException(KafkaError(code))).retryable


@pytest.mark.parametrize("code", [KafkaError.TOPIC_AUTHORIZATION_FAILED,
                                  KafkaError.INVALID_CONFIG])
def test_permanent_errors_are_not(code: int) -> None:
    assert not wrap_kafka_error("x", KafkaException(KafkaError(code))).retryable


class NewLeaderConsumer:
    """Answers watermarks like a partition whose new leader is still catching up."""

    def __init__(self, refusals: int) -> None:
        self.refusals = refusals

    def list_topics(self, name: str, _timeout: float) -> Any:
        topic = SimpleNamespace(error=None, partitions={0: None, 1: None})
        return SimpleNamespace(topics={name: topic})

    def get_watermark_offsets(self, tp: Any, _timeout: float, cached: bool) -> tuple[int, int]:
        assert not cached
        if self.refusals:
            self.refusals -= 1
            raise KafkaException(KafkaError(KafkaError.OFFSET_NOT_AVAILABLE,
                                            "Leader high watermark is not caught up"))
        return (0, 10 + tp.partition)


def test_watermarks_wait_for_a_new_leader_to_catch_up() -> None:
    consumer = NewLeaderConsumer(refusals=3)
    assert watermarks(consumer, "t", 5.0) == {0: (0, 10), 1: (0, 11)}  # type: ignore[arg-type]
    assert consumer.refusals == 0
