"""One way to open a Cassandra session on the project's keyspace.

Adapters (audit, user state, vector index) take a session from here so connection
settings, timeouts, consistency levels and keyspace replication live in one place.

Consistency: every statement runs at LOCAL_QUORUM (writes and reads), so with a replication
factor of 3 a read sees the last acknowledged write while one replica is down, and no data
centre waits on another. Each table has a reader that must see the last write (docs/
architecture.md, "Consistency"), so no table uses a weaker level; the driver's default,
LOCAL_ONE, let the next cycle's check miss a block written a moment before.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Hashable, Sequence
from typing import Any, TypeVar

from mosaic.errors import ExternalServiceError
from mosaic.retry import is_cassandra_unavailable
from mosaic.settings import CassandraSettings

log = logging.getLogger(__name__)
T = TypeVar("T")


def cassandra_call(what: str, call: Callable[[], T]) -> T:
    """Run a driver call; failures become ExternalServiceError, retryable when transient
    (timeouts, unavailable, no host) so the caller retries instead of stopping."""
    from cassandra import DriverException

    try:
        return call()
    except DriverException as exc:
        raise ExternalServiceError(f"{what}: {exc}",
                                   retryable=is_cassandra_unavailable(exc)) from exc
    except Exception as exc:
        if not is_cassandra_unavailable(exc):  # NoHostAvailable is not a DriverException
            raise
        raise ExternalServiceError(f"{what}: {exc}") from exc


async def execute_async(session: Any, statement: Any, params: Sequence[Any]) -> Any:
    """Run ``statement`` on the driver's own threads and await its first page of rows (a
    list) on the running event loop, which never blocks on Cassandra."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def settle(result: Any, exc: BaseException | None) -> None:
        if not future.done():
            if exc is not None:
                future.set_exception(exc)
            else:
                future.set_result(result)

    session.execute_async(statement, params or None).add_callbacks(
        lambda rows: loop.call_soon_threadsafe(settle, rows, None),
        lambda exc: loop.call_soon_threadsafe(settle, None, exc))
    return await future


def security_options(settings: CassandraSettings) -> dict[str, Any]:
    """Password authentication and TLS for the driver (none for the local stack)."""
    options: dict[str, Any] = {}
    if settings.username:
        from cassandra.auth import PlainTextAuthProvider

        options["auth_provider"] = PlainTextAuthProvider(
            username=settings.username, password=settings.password.get_secret_value())
    if settings.ssl_ca_file is not None or settings.ssl_cert_file is not None:
        import ssl

        context = ssl.create_default_context(
            cafile=str(settings.ssl_ca_file) if settings.ssl_ca_file else None)
        context.check_hostname = settings.ssl_check_hostname
        if settings.ssl_cert_file is not None:
            context.load_cert_chain(str(settings.ssl_cert_file),
                                    str(settings.ssl_key_file) if settings.ssl_key_file else None)
        options["ssl_context"] = context  # the driver checks each node's own host name
    return options


def connect(settings: CassandraSettings, *, keyspace: str | None = None,
            use_keyspace: bool = True) -> Any:
    """Open a session on ``keyspace`` (default: the configured one). The keyspace and its
    tables come from ``mosaic db migrate`` (mosaic/migrations.py), never from here; a
    missing keyspace is a :class:`~mosaic.migrations.SchemaVersionError`."""
    from cassandra import ConsistencyLevel
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, NoHostAvailable
    from cassandra.policies import (
        DCAwareRoundRobinPolicy,
        ExponentialReconnectionPolicy,
        TokenAwarePolicy,
    )

    # Silence the driver's per-connection warnings about protocol negotiation.
    logging.getLogger("cassandra").setLevel(logging.ERROR)
    profile = ExecutionProfile(
        load_balancing_policy=TokenAwarePolicy(
            DCAwareRoundRobinPolicy(local_dc=settings.datacenter)),
        request_timeout=20, consistency_level=ConsistencyLevel.LOCAL_QUORUM,
        serial_consistency_level=ConsistencyLevel.LOCAL_SERIAL)
    cluster = Cluster(
        list(settings.hosts), port=settings.port,
        execution_profiles={EXEC_PROFILE_DEFAULT: profile},
        connect_timeout=5, control_connection_timeout=5, protocol_version=5,
        # The driver's default waits up to 10 minutes between reconnects to a node that
        # went away; a restarted node should be back in use within seconds.
        reconnection_policy=ExponentialReconnectionPolicy(0.5, 5.0),
        **security_options(settings),
    )
    try:
        session = cluster.connect()
    except NoHostAvailable as exc:
        cluster.shutdown()
        raise ExternalServiceError(f"Cassandra unreachable at {settings.hosts}: {exc}") from exc
    if not use_keyspace:
        return session
    name = keyspace or settings.keyspace
    from mosaic.migrations import SchemaVersionError, keyspace_exists

    if not keyspace_exists(session, name):
        cluster.shutdown()
        raise SchemaVersionError(f"keyspace {name} does not exist (schema version 0): "
                                 f"run `mosaic db migrate --keyspace {name}`")
    session.set_keyspace(name)
    return session


def read_concurrent(session: Any, statement: Any, params: Sequence[Sequence[Any]], *,
                    concurrency: int = 32) -> list[Any]:
    """Every row of ``statement`` (prepared) for each parameter tuple of ``params``, with
    up to ``concurrency`` requests in flight: a read of many partitions costs a few round
    trips instead of one per query. Driver errors surface as a retryable
    :class:`ExternalServiceError`."""
    from cassandra import DriverException
    from cassandra.cluster import NoHostAvailable
    from cassandra.concurrent import execute_concurrent_with_args

    if not params:
        return []
    try:
        results = execute_concurrent_with_args(session, statement, params,
                                               concurrency=concurrency,
                                               raise_on_first_error=True)
        return [row for _ok, rows in results for row in rows]
    except (DriverException, NoHostAvailable, OSError) as exc:
        raise ExternalServiceError(f"Cassandra concurrent read failed: {exc}") from exc


def write_batched(session: Any, statement: Any, params: Sequence[Sequence[Any]], *,
                  partition: Callable[[Sequence[Any]], Hashable] | None = None,
                  size: int = 25, concurrency: int = 32) -> None:
    """Run many writes of one prepared statement as UNLOGGED batches, concurrently.

    Measured on the local node: ~1-3k single-row writes/s through the driver against
    ~20k rows/s in batches of 25 (the driver's per-request cost dominates). With
    ``partition`` (a row's partition key), each batch holds rows of one partition only,
    which is what Cassandra handles best on any cluster; without it, rows of different
    partitions share a batch of ``size`` (fine on few nodes; the coordinator fans out).
    Unlogged: each write is idempotent, so a batch retried after a failure is harmless.
    Driver errors surface as a retryable :class:`ExternalServiceError`."""
    from cassandra import DriverException
    from cassandra.cluster import NoHostAvailable
    from cassandra.concurrent import execute_concurrent
    from cassandra.query import BatchStatement, BatchType

    groups: dict[Hashable, list[Sequence[Any]]] = {}
    for row in params:
        groups.setdefault(partition(row) if partition else None, []).append(row)
    batches = []
    for rows in groups.values():
        for i in range(0, len(rows), size):
            batch = BatchStatement(batch_type=BatchType.UNLOGGED)
            for row in rows[i:i + size]:
                batch.add(statement, row)
            batches.append((batch, None))
    if not batches:
        return
    try:
        execute_concurrent(session, batches, concurrency=concurrency,
                           raise_on_first_error=True)
    except (DriverException, NoHostAvailable, OSError) as exc:
        raise ExternalServiceError(f"Cassandra batch write failed: {exc}") from exc
