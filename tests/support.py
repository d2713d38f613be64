"""Helpers shared by integration tests (fixtures live in conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from mosaic.settings import Settings
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

