"""The one place that builds the ingress from settings (adapters, limits, app, server)."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI

from mosaic.settings import IngressSettings, Settings
from producers.http import Ingress, create_app
from producers.metrics import IngressMetrics, MeteredPublisher
from producers.publisher import EventPublisher
from producers.ratelimit import KeyedRateLimiter, TokenBucket
from producers.service import IngressService, Limiters
from producers.signing import NonceCache, Verifier
from producers.state import InMemoryUserStateStore, UserStateStore

log = logging.getLogger(__name__)


def optin_topic(settings: Settings) -> str:
    return f"{settings.kafka.topic_prefix}optin"


def build_limiters(cfg: IngressSettings, clock: Callable[[], float]) -> Limiters:
    return Limiters(
        per_user=KeyedRateLimiter(capacity=cfg.per_user_rate_per_minute,
                                  rate_per_second=cfg.per_user_rate_per_minute / 60,
                                  max_keys=cfg.rate_limiter_max_users, clock=clock),
        status_per_user=KeyedRateLimiter(capacity=cfg.status_rate_per_minute,
                                         rate_per_second=cfg.status_rate_per_minute / 60,
                                         max_keys=cfg.rate_limiter_max_users, clock=clock),
        global_=TokenBucket(capacity=cfg.global_rate_per_second,
                            rate_per_second=cfg.global_rate_per_second, clock=clock),
    )


def build_app(settings: Settings, *, publisher: EventPublisher, store: UserStateStore,
              clock: Callable[[], float] = time.time,
              on_close: Callable[[], None] | None = None) -> FastAPI:
    cfg = settings.ingress
    metrics = IngressMetrics.create()
    metered = MeteredPublisher(publisher, metrics)
    nonces = NonceCache(window_seconds=cfg.clock_skew_seconds,
                        max_entries=cfg.nonce_cache_max_entries, clock=clock)
    verifier = Verifier(cfg.hmac_key.get_secret_value().encode(), nonces,
                        skew_seconds=cfg.clock_skew_seconds, clock=clock)
    service = IngressService(publisher=metered, store=store, topic=optin_topic(settings),
                             limiters=build_limiters(cfg, clock), clock=clock,
                             recent_max_entries=cfg.recent_requests_max_entries,
                             retry_after_seconds=cfg.retry_after_seconds)
    ingress = Ingress(service, verifier, nonces, metrics, max_body_bytes=cfg.max_body_bytes,
                      clock=clock, healthy=metered.healthy)
    app = create_app(ingress)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await service.drain()
        await metered.close()
        if on_close is not None:
            on_close()

    app.router.lifespan_context = lifespan
    return app


def ensure_optin_topic(settings: Settings, partitions: int = 6) -> str:
    """Create the optin topic if missing (the broker does not auto-create topics)."""
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    topic = optin_topic(settings)
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap_servers})
    if topic in admin.list_topics(timeout=10).topics:
        return topic
    new = NewTopic(topic, num_partitions=partitions,
                   replication_factor=settings.kafka.replication_factor)
    for future in admin.create_topics([new]).values():
        with contextlib.suppress(Exception):  # created concurrently by someone else
            future.result(15)
    return topic


def build_production_app(settings: Settings) -> FastAPI:
    from producers.avro import serialize
    from producers.kafka_publisher import KafkaEventPublisher, producer_config

    ensure_optin_topic(settings)
    publisher = KafkaEventPublisher(
        producer_config(settings.kafka.bootstrap_servers,
                        delivery_timeout_seconds=settings.ingress.delivery_timeout_seconds),
        serialize)
    store, close_store = _state_store(settings)
    return build_app(settings, publisher=publisher, store=store, on_close=close_store)


def _state_store(settings: Settings) -> tuple[UserStateStore, Callable[[], None] | None]:
    if settings.ingress.state_store == "memory":
        return InMemoryUserStateStore(), None
    from mosaic.cassandra import connect
    from producers.state import CassandraUserStateStore

    store = CassandraUserStateStore(connect(settings.cassandra), settings.cassandra.keyspace)
    return store, store.close


@dataclass
class RunningServer:
    """A uvicorn server on a background thread (tests, bench)."""

    server: Any
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.servers[0].sockets[0].getsockname()[1])

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def uvicorn_config(app: FastAPI, host: str, port: int) -> Any:
    import uvicorn

    return uvicorn.Config(app, host=host, port=port, loop="uvloop", http="httptools",
                          lifespan="on", log_level="warning", access_log=False,
                          timeout_keep_alive=30, backlog=4096)


def serve(app: FastAPI, host: str, port: int) -> None:
    import uvicorn

    uvicorn.Server(uvicorn_config(app, host, port)).run()


def serve_in_thread(app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> RunningServer:
    import uvicorn

    server = uvicorn.Server(uvicorn_config(app, host, port))
    thread = threading.Thread(target=server.run, name="ingress-http", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"ingress did not start on {host}:{port}")
        time.sleep(0.05)
    return RunningServer(server, thread)
