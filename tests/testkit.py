"""Test helpers: a client that signs requests like the Nakama module, a topic reader."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from producers.signing import signed_headers
from streams.events import Event
from streams.serde import default_serde


@dataclass
class SignedClient:
    """Signs every request like the Nakama module does."""

    base_url: str
    key: bytes
    timeout_seconds: float = 30.0

    def __post_init__(self) -> None:
        self.client = httpx.Client(base_url=self.base_url, timeout=self.timeout_seconds,
                                   trust_env=False)

    def request(self, method: str, path: str, body: Any = None, *,
                raw: bytes | None = None, headers: dict[str, str] | None = None,
                now: float | None = None) -> httpx.Response:
        data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
        signed = signed_headers(self.key, method, path, data, now=now)
        return self.client.request(method, path, content=data,
                                   headers={"content-type": "application/json",
                                            **signed, **(headers or {})})

    def close(self) -> None:
        self.client.close()


@dataclass(frozen=True)
class Record:
    key: str
    partition: int
    offset: int
    event: Event


class TopicReader:
    """Reads a topic from the offsets it had when the reader was made."""

    def __init__(self, bootstrap_servers: str, topic: str) -> None:
        from confluent_kafka import Consumer, TopicPartition

        self._serde = default_serde()
        self._consumer = Consumer({"bootstrap.servers": bootstrap_servers,
                                   "group.id": "unused", "enable.auto.commit": False,
                                   "isolation.level": "read_committed"})
        meta = self._consumer.list_topics(topic, timeout=10).topics[topic]
        starts = []
        for partition in meta.partitions:
            _, high = self._consumer.get_watermark_offsets(TopicPartition(topic, partition),
                                                           timeout=10)
            starts.append(TopicPartition(topic, partition, high))
        self._consumer.assign(starts)

    def read(self, until: Callable[[list[Record]], bool], timeout_seconds: float = 30.0,
             ) -> list[Record]:
        """Poll until ``until(records so far)`` is true or the timeout passes."""
        records: list[Record] = []
        deadline = time.monotonic() + timeout_seconds
        while not until(records) and time.monotonic() < deadline:
            msg = self._consumer.poll(0.5)
            if msg is None or msg.error() is not None:
                continue
            key = (msg.key() or b"").decode()
            records.append(Record(key, msg.partition() or 0, msg.offset() or 0,
                                  self._serde.decode(msg.value())))
        return records

    def close(self) -> None:
        self._consumer.close()
