"""Readiness checks shared by the long-running processes' ``/health``.

Cheap on purpose (Prometheus and the supervisor poll them): a TCP connect to each
dependency, never a query. A process is ready while it runs and what it needs answers.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mosaic.settings import Settings

if TYPE_CHECKING:
    from mosaic.ops_http import OpsServer

log = logging.getLogger(__name__)


def _reachable(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _host_port(address: str, default_port: int) -> tuple[str, int]:
    host, _, port = address.strip().rpartition(":")
    return (host or address.strip(), int(port)) if port.isdigit() else (address, default_port)


def kafka_reachable(settings: Settings) -> bool:
    """True when any bootstrap broker accepts a connection."""
    return any(_reachable(*_host_port(a, 9092))
               for a in settings.kafka.bootstrap_servers.split(",") if a.strip())


def cassandra_reachable(settings: Settings) -> bool:
    return any(_reachable(h, settings.cassandra.port) for h in settings.cassandra.hosts)


def readiness(settings: Settings, stop: threading.Event, *, cassandra: bool = False,
              extra: Callable[[], dict[str, Any]] | None = None
              ) -> Callable[[], tuple[bool, dict[str, Any]]]:
    """A ``/health`` check: not stopping, Kafka reachable (and Cassandra when asked)."""

    def check() -> tuple[bool, dict[str, Any]]:
        deps = {"kafka": kafka_reachable(settings)}
        if cassandra:
            deps["cassandra"] = cassandra_reachable(settings)
        details: dict[str, Any] = {"stopping": stop.is_set(), "dependencies": deps}
        if extra is not None:
            details.update(extra())
        return (not stop.is_set() and all(deps.values())), details

    return check


def start_ops_server(settings: Settings, process: str,
                     check: Callable[[], tuple[bool, dict[str, Any]]]) -> OpsServer | None:
    """``/metrics`` and ``/health`` on the process's port: ``MOSAIC_METRICS_PORT`` or its
    default in :mod:`mosaic.ops.ports`; -1 turns it off. A busy default port (a second
    copy of the process on the machine) logs a warning instead of stopping the process.
    """
    from mosaic.ops.ports import ops_port
    from mosaic.ops_http import OpsServer

    port = ops_port(settings, process)
    if port < 0:
        return None
    try:
        ops = OpsServer("127.0.0.1", port, check)
    except OSError as exc:
        if settings.metrics_port:
            raise
        log.warning("%s: /metrics and /health off: port %d: %s", process, port, exc)
        return None
    log.info("%s: /metrics and /health on http://127.0.0.1:%d", process, ops.port)
    return ops
