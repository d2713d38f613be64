"""The ordered list of stack services (dependencies first)."""

from __future__ import annotations

import importlib

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
    unknown = [n for n in names if n not in SERVICES]
    if unknown:
        raise StackError(f"unknown service(s) {unknown}; choose from {list(SERVICES)}")
    services: list[Service] = []
    for name, target in SERVICES.items():
        if name not in names:
            continue
        module_name, cls_name = target.split(":")
        cls = getattr(importlib.import_module(module_name), cls_name)
        services.append(cls(settings))
    return services
