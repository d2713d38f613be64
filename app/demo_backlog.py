"""What the demo's embedding stage waits behind: earlier records on the shared opt-in topic.

The demo writes to the stack's own topics (``mosaic.optin`` by default, since Nakama's Lua
module calls the one ingress) and its embedding agent consumes them in the shared group
(``mosaic-embedding``). Anything an earlier run left unconsumed there (a benchmark's
opt-ins, a stopped agent's backlog) is worked through first. This module measures that
backlog from the broker (the group's committed offsets against the end offsets taken just
before the demo's own opt-ins), so the demo can say so and show it shrinking instead of a
bar frozen at 0.
"""

from __future__ import annotations

from dataclasses import dataclass

from confluent_kafka import TopicPartition as KafkaTopicPartition

from mosaic.settings import Settings
from streams.kafka import make_consumer
from streams.topics import build_catalog


@dataclass(frozen=True)
class Backlog:
    topic: str
    group: str
    start: dict[int, int]  # the group's position per partition when measured
    limit: dict[int, int]  # end offsets before the demo's own records

    @property
    def earlier(self) -> int:
        return sum(max(0, self.limit[p] - self.start.get(p, 0)) for p in self.limit)

    def consumed(self, settings: Settings) -> int:
        """Records of the backlog the group has committed past since it was measured."""
        now = _committed(settings, self.group, self.topic, self.limit)
        return sum(max(0, min(now[p], self.limit[p]) - self.start.get(p, 0))
                   for p in self.limit)


def end_offsets(settings: Settings) -> dict[int, int]:
    """The opt-in topic's end offset per partition (take it before writing)."""
    topic = build_catalog(settings).optin.name
    consumer = make_consumer(settings, "mosaic-demo-probe")  # never subscribes nor commits
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return {p: int(consumer.get_watermark_offsets(KafkaTopicPartition(topic, p), 10,
                                                      cached=False)[1])
                for p in sorted(partitions)}
    finally:
        consumer.close()


def measure(settings: Settings, limit: dict[int, int]) -> Backlog:
    topic = build_catalog(settings).optin.name
    group = settings.embedding_agent.group_id
    return Backlog(topic, group, _committed(settings, group, topic, limit), dict(limit))


def _committed(settings: Settings, group: str, topic: str,
               partitions: dict[int, int]) -> dict[int, int]:
    """The group's committed offset per partition; a partition without one starts at its
    low watermark (the agent reads from the earliest record)."""
    # A consumer with the group's id that never subscribes: it only asks the coordinator
    # for the group's offsets; it does not join the group nor commit anything.
    consumer = make_consumer(settings, group)
    try:
        tps = [KafkaTopicPartition(topic, p) for p in partitions]
        out = {}
        for tp in consumer.committed(tps, timeout=10):
            if tp.offset >= 0:
                out[tp.partition] = int(tp.offset)
            else:
                out[tp.partition] = int(consumer.get_watermark_offsets(
                    KafkaTopicPartition(topic, tp.partition), 10, cached=False)[0])
        return out
    finally:
        consumer.close()
