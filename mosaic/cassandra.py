"""One way to open a Cassandra session on the project's keyspace.

Adapters (audit, user state, vector index) take a session from here so connection
settings, timeouts and keyspace replication live in one place.
"""

from __future__ import annotations

import logging
from typing import Any

from mosaic.errors import ExternalServiceError
from mosaic.settings import CassandraSettings

log = logging.getLogger(__name__)


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
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, NoHostAvailable
    from cassandra.policies import ExponentialReconnectionPolicy, RoundRobinPolicy

    # Silence the driver's per-connection warnings about protocol negotiation.
    logging.getLogger("cassandra").setLevel(logging.ERROR)
    profile = ExecutionProfile(load_balancing_policy=RoundRobinPolicy(), request_timeout=20)
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
