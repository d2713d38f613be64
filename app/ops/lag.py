"""Consumer lag per group, from the broker: ``mosaic_consumer_lag_records{group,topic}``.

A Prometheus collector that, when scraped, asks Kafka for every consumer group's committed
offsets on this deployment's topics (``kafka.topic_prefix``) and subtracts them from the
partitions' high watermarks. One view for every consumer (faust, confluent-kafka and the
matcher's transactional offsets alike), whoever runs it. Answers are cached for a few
seconds so frequent scrapes cost the broker little. ``mosaic run`` serves it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException
from confluent_kafka import TopicPartition as KafkaTopicPartition
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from mosaic.settings import Settings
from streams.kafka import make_admin, make_consumer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GroupLag:
    group: str
    topic: str
    partition: int
    committed: int
    end: int

    @property
    def lag(self) -> int:
        return max(self.end - self.committed, 0)


def consumer_lag(settings: Settings, timeout_seconds: float = 5.0) -> list[GroupLag]:
    """Every group's lag on every partition of this deployment's topics it committed on."""
    prefix = settings.kafka.topic_prefix
    admin = make_admin(settings)
    groups = [g.group_id for g in
              admin.list_consumer_groups(request_timeout=timeout_seconds).result().valid]
    committed: list[tuple[str, str, int, int]] = []
    for group in groups:
        futures = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)],
                                                    request_timeout=timeout_seconds)
        for future in futures.values():
            for tp in future.result().topic_partitions or []:
                if tp.topic.startswith(prefix) and tp.offset >= 0:
                    committed.append((group, tp.topic, tp.partition, tp.offset))
    if not committed:
        return []
    reader = make_consumer(settings, "mosaic-lag-probe")  # never subscribes nor commits
    try:
        ends: dict[tuple[str, int], int] = {}
        for _, topic, partition, _ in committed:
            if (topic, partition) not in ends:
                _, high = reader.get_watermark_offsets(
                    KafkaTopicPartition(topic, partition), timeout_seconds, cached=False)
                ends[(topic, partition)] = int(high)
    finally:
        reader.close()
    return [GroupLag(g, t, p, off, ends[(t, p)]) for g, t, p, off in committed]


class ConsumerLagCollector:
    """Register on a registry; each scrape reports the lag (cached ``ttl_seconds``)."""

    def __init__(self, settings: Settings, ttl_seconds: float = 4.0) -> None:
        self._settings = settings
        self._ttl = ttl_seconds
        self._lock = threading.Lock()
        self._at = -1e9
        self._rows: list[GroupLag] = []
        self._ok = False

    def describe(self) -> list[Metric]:
        return []  # no eager collect() at registration (it would call the broker)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            if time.monotonic() - self._at > self._ttl:
                try:
                    self._rows, self._ok = consumer_lag(self._settings), True
                except (KafkaException, OSError, RuntimeError) as exc:
                    log.debug("consumer lag unavailable: %s", exc)
                    self._ok = False
                self._at = time.monotonic()
            rows, ok = list(self._rows), self._ok
        lag = GaugeMetricFamily("mosaic_consumer_lag_records",
                                "Records between a group's committed offset and the end of "
                                "the topic, summed over partitions", labels=["group", "topic"])
        totals: dict[tuple[str, str], int] = {}
        for row in rows:
            totals[(row.group, row.topic)] = totals.get((row.group, row.topic), 0) + row.lag
        for (group, topic), value in sorted(totals.items()):
            lag.add_metric([group, topic], value)
        yield lag
        up = GaugeMetricFamily("mosaic_consumer_lag_up",
                               "1 when the last lag query reached the broker")
        up.add_metric([], 1.0 if ok else 0.0)
        yield up
