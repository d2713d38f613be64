"""EventPublisher on confluent-kafka: idempotent producer, acks=all, no per-request flush.

``produce`` is called on the event loop; one background thread polls the producer and each
delivery report settles an asyncio future through ``call_soon_threadsafe``. So a request
awaits exactly its own broker confirmation while librdkafka batches many in one write.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any

from producers.publisher import PublishFailed

log = logging.getLogger(__name__)

Headers = list[tuple[str, str | bytes | None]]
Serialize = Callable[[object], tuple[bytes, Headers]]


def producer_config(bootstrap_servers: str, *, delivery_timeout_seconds: float,
                    client_id: str = "mosaic-ingress") -> dict[str, Any]:
    return {
        "bootstrap.servers": bootstrap_servers,
        "client.id": client_id,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 2,
        "compression.type": "lz4",
        # Bounded: past it the request fails with 503 instead of hanging.
        "message.timeout.ms": int(delivery_timeout_seconds * 1000),
        "queue.buffering.max.messages": 200_000,
        "reconnect.backoff.max.ms": 1000,
        "retry.backoff.max.ms": 1000,
    }


def _settle(future: asyncio.Future[None], err: Any) -> None:
    if future.done():  # the waiter went away (cancelled)
        return
    if err is None:
        future.set_result(None)
    else:
        retryable = bool(getattr(err, "retriable", lambda: True)())
        future.set_exception(PublishFailed(str(err), retryable=retryable))


class KafkaEventPublisher:
    def __init__(self, config: dict[str, Any], serialize: Serialize,
                 *, poll_seconds: float = 0.05) -> None:
        from confluent_kafka import Producer

        self._broker_down = False
        self._producer = Producer({**config, "error_cb": self._on_error})
        self._serialize = serialize
        self._poll_seconds = poll_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll_loop, name="kafka-poll", daemon=True)
        self._thread.start()

    def _on_error(self, err: Any) -> None:
        from confluent_kafka import KafkaError

        if err.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT):
            self._broker_down = True
        log.warning("kafka client error: %s", err)

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(self._poll_seconds)

    async def publish(self, topic: str, key: str, event: object) -> None:
        from confluent_kafka import KafkaException

        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        value, headers = self._serialize(event)

        def on_delivery(err: Any, _msg: Any) -> None:
            if err is None:
                self._broker_down = False
            loop.call_soon_threadsafe(_settle, future, err)

        try:
            self._producer.produce(topic, value=value, key=key.encode(), headers=headers,
                                   on_delivery=on_delivery)
        except BufferError as exc:
            raise PublishFailed("producer queue full") from exc
        except KafkaException as exc:
            raise PublishFailed(str(exc)) from exc
        await future

    def healthy(self) -> bool:
        return not self._broker_down

    def pending(self) -> int:
        return len(self._producer)

    async def close(self, timeout_seconds: float = 30.0) -> None:
        loop = asyncio.get_running_loop()
        left = await loop.run_in_executor(None, self._producer.flush, timeout_seconds)
        self._stop.set()
        await loop.run_in_executor(None, self._thread.join, 5.0)
        if left:
            log.warning("%d events still unconfirmed at shutdown", left)
