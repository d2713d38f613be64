"""The one place that builds the ingress from settings (adapters, limits, app, server)."""

from __future__ import annotations

import contextlib
import gc
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI

from mosaic.ratelimit import KeyedRateLimiter, TokenBucket
from mosaic.settings import IngressSettings, Settings
from mosaic.user_state import CassandraUserStateStore, InMemoryUserStateStore, UserStateStore
from producers.api import Ingress
from producers.http import create_app
from producers.metrics import IngressMetrics, MeteredPublisher
from producers.nonces import CassandraNonces, SharedNonces
from producers.projection import StateProjector
from producers.publisher import EventPublisher
from producers.service import IngressService, Limiters
from producers.signing import NonceCache, Verifier, keyring

log = logging.getLogger(__name__)


def optin_topic(settings: Settings) -> str:
    from streams.topics import build_catalog

    return build_catalog(settings).optin.name


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
              on_close: Callable[[], None] | None = None, fast_path: bool = True,
              shared_nonces: SharedNonces | None = None) -> FastAPI:
    """``shared_nonces``: none keeps nonces in this process only (one instance)."""
    cfg = settings.ingress
    metrics = IngressMetrics.create()
    metered = MeteredPublisher(publisher, metrics)
    nonces = NonceCache(window_seconds=cfg.clock_skew_seconds,
                        max_entries=cfg.nonce_cache_max_entries, clock=clock)
    verifier = Verifier(keyring(cfg.hmac_key_id, cfg.hmac_key, cfg.hmac_previous_keys), nonces,
                        skew_seconds=cfg.clock_skew_seconds, clock=clock)
    projector = StateProjector(store, max_pending=cfg.state_max_pending,
                               on_drop=metrics.state_writes_dropped.inc,
                               on_failure=metrics.state_write_failures.inc)
    service = IngressService(publisher=metered, store=store, topic=optin_topic(settings),
                             limiters=build_limiters(cfg, clock), clock=clock,
                             recent_max_entries=cfg.recent_requests_max_entries,
                             retry_after_seconds=cfg.retry_after_seconds, projector=projector)
    ingress = Ingress(service, verifier, nonces, metrics, max_body_bytes=cfg.max_body_bytes,
                      clock=clock, healthy=metered.healthy, shared_nonces=shared_nonces)
    app = create_app(ingress, fast_path=fast_path)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await service.drain()
        await metered.close()
        if on_close is not None:
            on_close()

    app.router.lifespan_context = lifespan
    return app


def ensure_optin_topic(settings: Settings) -> str:
    """Create the optin topic from the catalog if missing (no broker auto-create)."""
    from streams.admin import apply
    from streams.kafka import make_admin
    from streams.topics import build_catalog

    topic = build_catalog(settings).optin
    apply([topic], make_admin(settings))
    return topic.name


def build_production_app(settings: Settings, *, fast_path: bool = True) -> FastAPI:
    from producers.kafka_publisher import KafkaEventPublisher, ingress_producer_config
    from streams.serde import default_serde

    ensure_optin_topic(settings)
    serde = default_serde()
    publisher = KafkaEventPublisher(ingress_producer_config(settings), serde.encode)
    if settings.ingress.state_store == "memory":  # one instance: nonces in this process
        return build_app(settings, publisher=publisher, store=InMemoryUserStateStore(),
                         fast_path=fast_path)
    store, nonces = cassandra_stores(settings)
    return build_app(settings, publisher=publisher, store=store, on_close=store.close,
                     fast_path=fast_path, shared_nonces=nonces)


def cassandra_stores(settings: Settings) -> tuple[CassandraUserStateStore, CassandraNonces]:
    """User states and nonces on one Cassandra session, shared by every instance."""
    from mosaic.cassandra import connect

    session, cfg = connect(settings.cassandra), settings.ingress
    nonces = CassandraNonces(session, settings.cassandra.keyspace,
                             window_seconds=cfg.clock_skew_seconds,
                             retry_after_seconds=cfg.retry_after_seconds)
    return CassandraUserStateStore(session, settings.cassandra.keyspace), nonces


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


def uvicorn_config(app: Any, host: str, port: int) -> Any:
    import uvicorn

    return uvicorn.Config(app, host=host, port=port, loop="uvloop", http="httptools",
                          lifespan="on", log_level="warning", access_log=False,
                          proxy_headers=False, server_header=False, date_header=False,
                          timeout_keep_alive=30, backlog=4096)


def freeze_heap() -> None:
    """Move everything built so far (imports, app, schemas) out of the GC's reach, and
    collect the young generation less often: most request garbage dies by refcount, and
    each collection promotes survivors toward costly full collections. Measured under load:
    worst pause from ~400 ms to ~40 ms, total GC time down about 3x."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 5, 10)


def serve(app: FastAPI, host: str, port: int) -> None:
    import uvicorn

    freeze_heap()
    log.info("ingress listening on http://%s:%d", host, port)
    uvicorn.Server(uvicorn_config(app.state.front, host, port)).run()


def serve_in_thread(app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> RunningServer:
    import uvicorn

    server = uvicorn.Server(uvicorn_config(app.state.front, host, port))
    thread = threading.Thread(target=server.run, name="ingress-http", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"ingress did not start on {host}:{port}")
        time.sleep(0.05)
    return RunningServer(server, thread)
