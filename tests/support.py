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


def bulk_nakama_users(settings: Settings, count: int, prefix: str = "") -> dict[str, str]:
    """``count`` real Nakama accounts at once (custom id -> Nakama user id), inserted into
    Nakama's users table as AuthenticateCustom inserts them (id, username, custom_id).

    A login per account goes through the ID-token hook (tens of ms each on 2 cores);
    server-side steps only read these rows, so the accounts are real to them. Tests that
    check what a user sees log in through the client API as well."""
    from stack.postgres import Postgres

    if not all(c.isalnum() or c in "-_" for c in prefix):
        raise ValueError(f"prefix must be letters, digits, '-' or '_': {prefix!r}")
    rows = Postgres(settings).app_sql(
        "INSERT INTO users (id, username, custom_id) SELECT gen_random_uuid(), "
        "'mmb' || substr(md5(random()::text || n), 1, 16), "
        f"'{prefix}' || gen_random_uuid()::text "
        f"FROM generate_series(1, {int(count)}) AS n RETURNING custom_id, id")
    return dict((custom_id, uid) for custom_id, uid in rows)
