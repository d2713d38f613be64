"""``mosaic db migrate`` / ``mosaic db status``: the Cassandra schema (mosaic/migrations.py)."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    db = subparsers.add_parser("db", help="Cassandra schema: migrate, status")
    sub = db.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    migrate = sub.add_parser(
        "migrate", help="create the keyspace and apply the missing schema migrations "
                        "(idempotent; safe to run again or from two places at once)")
    migrate.add_argument("--keyspace", help="default: MOSAIC_CASSANDRA__KEYSPACE")
    migrate.set_defaults(func=_migrate)
    status = sub.add_parser("status", help="the keyspace's schema version and migrations")
    status.add_argument("--keyspace", help="default: MOSAIC_CASSANDRA__KEYSPACE")
    status.set_defaults(func=_status)


def _migrate(args: argparse.Namespace) -> int:
    from mosaic.migrations import SCHEMA_VERSION, migrate_keyspace
    from mosaic.settings import Settings

    settings = Settings().cassandra
    keyspace = args.keyspace or settings.keyspace
    applied = migrate_keyspace(settings, keyspace)
    if applied:
        print(f"{keyspace}: applied {', '.join(map(str, applied))}; "
              f"now at schema version {SCHEMA_VERSION}")
    else:
        print(f"{keyspace}: up to date (schema version {SCHEMA_VERSION})")
    return 0


def _status(args: argparse.Namespace) -> int:
    from mosaic.cassandra import connect
    from mosaic.migrations import MIGRATIONS, SCHEMA_VERSION, applied_versions, keyspace_exists
    from mosaic.settings import Settings

    settings = Settings().cassandra
    keyspace = args.keyspace or settings.keyspace
    session = connect(settings, use_keyspace=False)
    try:
        applied = applied_versions(session, keyspace) if keyspace_exists(session, keyspace) \
            else {}
    finally:
        session.cluster.shutdown()
    for m in MIGRATIONS:
        row = applied.get(m.version)
        when = f"applied {row.applied_at:%Y-%m-%d %H:%M:%S}Z" if row else "pending"
        print(f"{m.version:>3}  {when:<28} {m.description}")
    missing = [m.version for m in MIGRATIONS if m.version not in applied]
    print(f"{keyspace}: code needs schema version {SCHEMA_VERSION}; "
          + (f"missing {missing}: run `mosaic db migrate --keyspace {keyspace}`" if missing
             else "up to date"))
    return 1 if missing else 0
