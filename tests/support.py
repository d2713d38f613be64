"""Helpers shared by integration tests (fixtures live in conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from mosaic.settings import CassandraSettings, Settings
from streams.admin import apply
from streams.kafka import make_admin
from streams.topics import TopicCatalog, build_catalog


def with_topic_prefix(settings: Settings, prefix: str) -> Settings:
    return settings.model_copy(update={
        "kafka": settings.kafka.model_copy(update={"topic_prefix": prefix})})


@contextmanager
def own_topics(settings: Settings) -> Iterator[TopicCatalog]:
    """Create the whole catalog under ``settings``' prefix; delete it afterwards."""
    catalog = build_catalog(settings)
    admin = make_admin(settings)
    apply(catalog, admin)
    try:
        yield catalog
    finally:
        futures = admin.delete_topics([t.name for t in catalog], operation_timeout=30)
        for future in futures.values():
            future.result(timeout=30)



def migrated(settings: Settings) -> Settings:
    """``settings`` after ``mosaic db migrate`` on its keyspace (for the processes a test
    starts against its own keyspace)."""
    from mosaic.migrations import migrate_keyspace

    migrate_keyspace(settings.cassandra)
    return settings


def migrated_session(settings: Settings | CassandraSettings, keyspace: str | None = None) -> Any:
    """``mosaic db migrate --keyspace K`` (creates K, or brings it to the code's schema
    version), then a session on K. Tests with their own keyspace open it with this; a
    process pointed at a keyspace nobody migrated refuses to start."""
    from mosaic.cassandra import connect
    from mosaic.migrations import migrate_keyspace

    cassandra = settings.cassandra if isinstance(settings, Settings) else settings
    migrate_keyspace(cassandra, keyspace)
    return connect(cassandra, keyspace=keyspace)
