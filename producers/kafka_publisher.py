"""EventPublisher on confluent-kafka: idempotent producer, acks=all, no per-request flush.

``produce`` is called on the event loop; one background thread polls the producer and each
delivery report settles an asyncio future through ``call_soon_threadsafe``. So a request
awaits exactly its own broker confirmation while librdkafka batches many in one write.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from mosaic.settings import Settings
from producers.publisher import PublishFailed

log = logging.getLogger(__name__)

Serialize = Callable[[Any], bytes]
_PROBE_SECONDS = 2.0


def ingress_producer_config(settings: Settings) -> dict[str, Any]:
    """The project's idempotent producer config (acks=all), tuned for the ingress."""
    from streams.kafka import producer_config

    return producer_config(settings, {
        "client.id": "mosaic-ingress",
        # Bounded: past it the request fails with 503 instead of hanging.
        "delivery.timeout.ms": int(settings.ingress.delivery_timeout_seconds * 1000),
        # Batches form by themselves while a produce request is in flight; a long
        # linger would only add latency.
        "linger.ms": 1,
        "batch.num.messages": 10_000,
        "queue.buffering.max.messages": 200_000,
        "reconnect.backoff.max.ms": 1000,
        "retry.backoff.max.ms": 1000,
    })


def _settle(future: asyncio.Future[None], err: Any) -> None:
    if future.done():  # the waiter went away (cancelled)
        return
    if err is None:
        future.set_result(None)
    else:
        retryable = bool(getattr(err, "retriable", lambda: True)())
        future.set_exception(PublishFailed(str(err), retryable=retryable))


def _settle_all(items: list[tuple[asyncio.Future[None], Any]]) -> None:
    for future, err in items:
        _settle(future, err)


class KafkaEventPublisher:
    def __init__(self, config: dict[str, Any], serialize: Serialize,
                 *, poll_seconds: float = 0.05) -> None:
        from confluent_kafka import KafkaException, Producer

        self._kafka_exception = KafkaException
        self._broker_down = False
        self._producer = Producer({**config, "error_cb": self._on_error})
        self._serialize = serialize
        self._poll_seconds = poll_seconds
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._settled: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None], Any]] = []
        self._thread = threading.Thread(target=self._poll_loop, name="kafka-poll", daemon=True)
        self._thread.start()

    def _on_error(self, err: Any) -> None:
        from confluent_kafka import KafkaError

        if err.code() == KafkaError._ALL_BROKERS_DOWN:
            self._broker_down = True
        log.warning("kafka client error: %s", err)

    def _poll_loop(self) -> None:
        # Delivery callbacks run inside poll(); they queue their results and one
        # call_soon_threadsafe per poll hands the whole batch to the event loop.
        last_probe = 0.0
        while not self._stop.is_set():
            self._producer.poll(self._poll_seconds)
            self._hand_over()
            if self._broker_down and time.monotonic() - last_probe > _PROBE_SECONDS:
                last_probe = time.monotonic()
                self._probe()

    def _probe(self) -> None:
        # Without traffic no delivery report would ever clear the flag; a metadata
        # request tells whether a broker answers again.
        try:
            self._producer.list_topics(timeout=1.0)
        except self._kafka_exception:
            return
        self._broker_down = False

    def _hand_over(self) -> None:
        with self._lock:
            batch, self._settled = self._settled, []
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[None], Any]]] = {}
        for loop, future, err in batch:
            by_loop.setdefault(loop, []).append((future, err))
        for loop, items in by_loop.items():
            if not loop.is_closed():
                loop.call_soon_threadsafe(_settle_all, items)

    async def publish(self, topic: str, key: str, event: object) -> None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        value = self._serialize(event)

        def on_delivery(err: Any, _msg: Any) -> None:
            if err is None:
                self._broker_down = False
            with self._lock:
                self._settled.append((loop, future, err))

        try:
            self._producer.produce(topic, value=value, key=key.encode(),
                                   on_delivery=on_delivery)
        except BufferError as exc:
            raise PublishFailed("producer queue full") from exc
        except self._kafka_exception as exc:
            raise PublishFailed(str(exc)) from exc
        await future

    def healthy(self) -> bool:
        return not self._broker_down

    def pending(self) -> int:
        return len(self._producer)

    async def close(self, timeout_seconds: float = 30.0) -> None:
        loop = asyncio.get_running_loop()
        left = await loop.run_in_executor(None, self._producer.flush, timeout_seconds)
        self._hand_over()  # callbacks that ran inside flush()
        self._stop.set()
        await loop.run_in_executor(None, self._thread.join, 5.0)
        if left:
            log.warning("%d events still unconfirmed at shutdown", left)
