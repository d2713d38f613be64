"""The real single-node Kafka: transactions commit and abort, read_committed hides aborts."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from mosaic.settings import Settings
from stack.base import Service
from tests.support import assert_up_reuses

pytestmark = pytest.mark.integration


# The ignore on the NewTopic import: its documented home is confluent_kafka.admin, whose
# stubs do not re-export it.


def _create_topic(settings: Settings, topic: str) -> None:
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap_servers})
    futures = admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    futures[topic].result(timeout=30)


def _read_all_committed(settings: Settings, topic: str, group: str) -> list[bytes]:
    consumer = Consumer({
        "bootstrap.servers": settings.kafka.bootstrap_servers,
        "group.id": group,
        "isolation.level": "read_committed",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    })
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        seen: list[bytes] = []
        deadline = time.monotonic() + 30
        # After the last commit/abort marker the stable offset equals the high watermark.
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            value = msg.value() if msg is not None and msg.error() is None else None
            if value is not None:
                seen.append(value)
            (pos,) = consumer.position([TopicPartition(topic, 0)])
            if pos.offset >= high:
                return seen
        raise AssertionError(f"consumer stuck before offset {high}: saw {seen}")
    finally:
        consumer.close()


def test_transactions_commit_and_abort(settings: Settings, kafka_stack: Service,
                                       unique: str) -> None:
    topic = f"test.stack.tx.{unique}"
    _create_topic(settings, topic)
    producer = Producer({
        "bootstrap.servers": settings.kafka.bootstrap_servers,
        "transactional.id": f"test-stack-{unique}",
    })
    producer.init_transactions(30)

    producer.begin_transaction()
    for i in range(3):
        producer.produce(topic, value=f"committed-{i}".encode())
    producer.commit_transaction(30)

    producer.begin_transaction()
    for i in range(2):
        producer.produce(topic, value=f"aborted-{i}".encode())
    producer.flush(10)  # the aborted records really reach the log before the abort
    producer.abort_transaction(30)

    seen = _read_all_committed(settings, topic, f"test-stack-{unique}")
    assert seen == [b"committed-0", b"committed-1", b"committed-2"]


@pytest.mark.stack_scripts
def test_up_twice_reuses_running_broker(kafka_stack: Service) -> None:
    assert_up_reuses(kafka_stack)
