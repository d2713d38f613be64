"""The ordered list of stack services (dependencies first)."""

from __future__ import annotations

import importlib
from collections.abc import Iterator

from mosaic.errors import StackError
from mosaic.settings import Settings
from stack.base import Service

# name -> "module:Class"; order is start order (PostgreSQL before Nakama).
SERVICES: dict[str, str] = {
    "kafka": "stack.kafka:Kafka",
    "cassandra": "stack.cassandra:Cassandra",
    "postgres": "stack.postgres:Postgres",
    "oidc": "stack.oidc:OidcIssuer",
    "authhook": "stack.authhook:AuthHook",
    "nakama": "stack.nakama:Nakama",
    "s3": "stack.s3:S3",
    "prometheus": "stack.prometheus:Prometheus",
}
# Started only when named (``mosaic stack up prometheus``): its first build takes minutes.
OPTIONAL: tuple[str, ...] = ("prometheus",)


def build(settings: Settings, only: list[str] | None = None, *,
          include_optional: bool = False) -> list[Service]:
    names = only if only else [n for n in SERVICES if include_optional or n not in OPTIONAL]
    brokers = settings.kafka.brokers
    single = {f"kafka-{i}" for i in range(1, brokers + 1)} if brokers > 1 else set()
    if any(n in single for n in names):  # a node of a local cluster: `stack logs kafka-2`
        from stack.kafka import Kafka

        rest = [n for n in names if n not in single]
        picked: list[Service] = [Kafka(settings, node=int(n.split("-")[1]))
                                 for n in names if n in single]
        return picked + (build(settings, rest) if rest else [])
    unknown = [n for n in names if n not in SERVICES]
    if unknown:
        raise StackError(f"unknown service(s) {unknown}; choose from {list(SERVICES)}")
    services: list[Service] = []
    for name, target in SERVICES.items():
        if name not in names:
            continue
        if name == "kafka" and settings.kafka.brokers > 1:
            from stack.kafka import nodes

            services.extend(nodes(settings))  # a local cluster: kafka-1..N
            continue
        module_name, cls_name = target.split(":")
        cls = getattr(importlib.import_module(module_name), cls_name)
        services.append(cls(settings))
    return services


def up_all(services: list[Service]) -> Iterator[str]:
    """``up`` each service in order, yielding its line as soon as it is up (a cold start
    takes minutes; nothing should wait for the last service to say anything); the nodes of
    a Kafka cluster start together (a node is healthy only once a majority of the
    controller quorum runs)."""
    from concurrent.futures import ThreadPoolExecutor

    from stack.kafka import Kafka

    cluster = [s for s in services if isinstance(s, Kafka) and s.cluster]
    for service in services:
        if service in cluster:
            if service is cluster[0]:
                with ThreadPoolExecutor(len(cluster)) as pool:
                    yield from list(pool.map(lambda node: node.up(), cluster))
            continue
        yield service.up()
