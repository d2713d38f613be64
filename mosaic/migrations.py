"""The Cassandra schema, as numbered migrations: the one place that creates or alters tables.

``mosaic db migrate [--keyspace K]`` (``mosaic/db_commands.py``; ``mosaic stack up`` runs it
for the default keyspace) creates the keyspace, then applies every migration the keyspace's
``schema_migrations`` table does not list yet, in order, recording each version after its
statements. Processes never create tables: each Cassandra adapter calls :func:`require` at
start-up, which fails with "keyspace X is at schema version 2, this code needs 3: run
`mosaic db migrate`" when the keyspace is behind. A keyspace *ahead* of the code is fine
(migrations only add), so migrate first, then roll out the code.

Adding a migration (docs/architecture.md, "Schema"): append ``Migration(N + 1, "what",
(...statements...))`` to ``MIGRATIONS``; never edit one that shipped. Every statement
must be idempotent (``CREATE ... IF NOT EXISTS``, ``ALTER TABLE ... ADD IF NOT EXISTS``,
``ALTER TABLE ... WITH ...``) because a run that stops half-way, or two runs at once, apply
the same statements again; ``{keyspace}`` is replaced by the keyspace name.

Not here: the vector index table (``profiles/cassandra_index.py``). Its name
(``vector_index.cassandra_table``) and its ``vector<float, dim>`` size are configuration
and follow the embedder (a new embedder gets a new table; tests use tables of several
sizes side by side), so it cannot be one fixed numbered statement; its adapter creates it
with ``IF NOT EXISTS`` and refuses a table of another size.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from mosaic.errors import ConfigError
from mosaic.settings import CassandraSettings

log = logging.getLogger(__name__)

# Audit rows are the record of a cycle's post-match steps: the reconciler needs them for
# hours, an operator for weeks; nobody after half a year. Without a TTL the two tables (and
# ``cycles()``' full scan of cycle_status) grow with every cycle forever.
AUDIT_TTL_SECONDS = 180 * 24 * 3600
# A schema change waits for the node to write its schema tables: seconds on a busy machine,
# longer than a query's usual 20 s timeout at worst.
DDL_TIMEOUT_SECONDS = 120.0


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "the tables processes created at start-up until now", (
        # mosaic/user_state.py
        """CREATE TABLE IF NOT EXISTS {keyspace}.user_state (
            user_id text PRIMARY KEY,
            state text,
            detail text,
            opted_in_at timestamp,
            waiting_since timestamp,
            missed_cycles int,
            cycle_id text,
            room_id text,
            pool text,
            updated_at timestamp
        )""",
        # a user_state made before ``detail`` existed
        "ALTER TABLE {keyspace}.user_state ADD IF NOT EXISTS detail text",
        # consumers/audit.py
        """CREATE TABLE IF NOT EXISTS {keyspace}.cycle_audit (
            cycle_id text,
            bucket int,
            pair_key text,
            user1_id text,
            user2_id text,
            pinecone_metadata_updated boolean,
            nakama_group_created boolean,
            nakama_group_id text,
            nakama_channel_id text,
            user1_notified boolean,
            user2_notified boolean,
            last_attempt_timestamp timestamp,
            matched_at timestamp,
            status text,
            last_error text,
            PRIMARY KEY ((cycle_id, bucket), pair_key)
        )""",
        """CREATE TABLE IF NOT EXISTS {keyspace}.cycle_status (
            cycle_id text PRIMARY KEY,
            pairs int,
            seekers int,
            committed_at timestamp,
            finished_at timestamp
        )""",
        # consumers/blocks.py
        """CREATE TABLE IF NOT EXISTS {keyspace}.blocks (
            blocker_id text,
            blocked_id text,
            blocked_at timestamp,
            PRIMARY KEY ((blocker_id), blocked_id)
        )""",
    )),
    Migration(2, f"cycle_audit and cycle_status expire after {AUDIT_TTL_SECONDS // 86400} days", (
        # Applies to rows written from now on; rows written before keep no TTL.
        f"ALTER TABLE {{keyspace}}.cycle_audit WITH default_time_to_live = {AUDIT_TTL_SECONDS}",
        f"ALTER TABLE {{keyspace}}.cycle_status WITH default_time_to_live = {AUDIT_TTL_SECONDS}",
    )),
    Migration(3, "cycle_status.last_activity: when post-match agents last worked on a cycle", (
        # The reconciler leaves a cycle alone while this is recent, without reading its rows.
        "ALTER TABLE {keyspace}.cycle_status ADD IF NOT EXISTS last_activity timestamp",
    )),
    Migration(4, "user_state: the last cycle, why it did not match, a user-safe failure code", (
        # mosaic/user_state.py: status answers these instead of the raw ``detail``.
        "ALTER TABLE {keyspace}.user_state ADD IF NOT EXISTS last_cycle_id text",
        "ALTER TABLE {keyspace}.user_state ADD IF NOT EXISTS unmatched_reason text",
        "ALTER TABLE {keyspace}.user_state ADD IF NOT EXISTS reason_code text",
    )),
    Migration(5, "erasures: which users were erased and when (their id hashed)", (
        # mosaic/erasures.py: a replayed request older than the erasure is refused.
        """CREATE TABLE IF NOT EXISTS {keyspace}.erasures (
            user_hash text PRIMARY KEY,
            erased_at timestamp
        )""",
    )),
    Migration(6, "ingress_nonces: signed-request nonces shared by every ingress instance", (
        # producers/nonces.py: rows carry a TTL of twice the signing window. Never deleted,
        # so expired rows need no long tombstone grace before compaction drops them.
        """CREATE TABLE IF NOT EXISTS {keyspace}.ingress_nonces (
            nonce text,
            signed_at bigint,
            PRIMARY KEY ((nonce, signed_at))
        ) WITH gc_grace_seconds = 3600""",
    )),
    Migration(7, "user_state: the last opt-in/opt-out the embedding agent ordered", (
        # mosaic/user_state.py (CassandraRequestVersions): the seekers versions follow the
        # log, not the ingress hosts' clocks (consumers/request_order.py).
        "ALTER TABLE {keyspace}.user_state ADD IF NOT EXISTS last_request_partition int",
        "ALTER TABLE {keyspace}.user_state ADD IF NOT EXISTS last_request_offset bigint",
        "ALTER TABLE {keyspace}.user_state ADD IF NOT EXISTS last_request_version bigint",
        "ALTER TABLE {keyspace}.user_state ADD IF NOT EXISTS last_request_event_id text",
    )),
)
SCHEMA_VERSION = MIGRATIONS[-1].version

_TABLE = """CREATE TABLE IF NOT EXISTS {keyspace}.schema_migrations (
    version int PRIMARY KEY,
    applied_at timestamp,
    description text
)"""


class SchemaVersionError(ConfigError):
    """The keyspace is missing or behind the code: run ``mosaic db migrate``."""


def _check_order() -> None:
    versions = [m.version for m in MIGRATIONS]
    if versions != list(range(1, len(versions) + 1)):
        raise AssertionError(f"migration versions must be 1..N in order, got {versions}")


_check_order()


def keyspace_exists(session: Any, keyspace: str) -> bool:
    return session.execute("SELECT keyspace_name FROM system_schema.keyspaces "
                           "WHERE keyspace_name = %s", (keyspace,)).one() is not None


def applied_versions(session: Any, keyspace: str) -> dict[int, Any]:
    """version -> its ``schema_migrations`` row; empty for a keyspace never migrated."""
    exists = session.execute("SELECT table_name FROM system_schema.tables WHERE "
                             "keyspace_name = %s AND table_name = 'schema_migrations'",
                             (keyspace,)).one()
    if exists is None:
        return {}
    rows = session.execute(
        f"SELECT version, applied_at, description FROM {keyspace}.schema_migrations")
    return {r.version: r for r in rows}


def current_version(session: Any, keyspace: str) -> int:
    """The highest version with every version below it applied (0: none)."""
    applied, version = applied_versions(session, keyspace), 0
    while version + 1 in applied:
        version += 1
    return version


def create_keyspace(session: Any, keyspace: str, replication_factor: int,
                    datacenter: str = "datacenter1") -> None:
    # NetworkTopologyStrategy: replicas per data centre, on distinct racks, which is what
    # the LOCAL_QUORUM of mosaic/cassandra.py counts (SimpleStrategy knows neither).
    session.execute(
        f"CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = "
        f"{{'class': 'NetworkTopologyStrategy', '{datacenter}': {replication_factor}}}",
        timeout=DDL_TIMEOUT_SECONDS)


def migrate(session: Any, keyspace: str, *, replication_factor: int = 1,
            datacenter: str = "datacenter1") -> list[int]:
    """Create ``keyspace`` if missing and apply the migrations it lacks, in order. Returns
    the versions applied by this call (empty: it was up to date). Safe to run twice or
    concurrently: every statement is idempotent and a version is recorded only after all
    of its statements ran."""
    create_keyspace(session, keyspace, replication_factor, datacenter)
    session.execute(_TABLE.format(keyspace=keyspace), timeout=DDL_TIMEOUT_SECONDS)
    done = applied_versions(session, keyspace)
    applied: list[int] = []
    for migration in MIGRATIONS:
        if migration.version in done:
            continue
        log.info("%s: applying schema migration %d (%s)", keyspace, migration.version,
                 migration.description)
        for statement in migration.statements:
            session.execute(statement.format(keyspace=keyspace), timeout=DDL_TIMEOUT_SECONDS)
        session.execute(f"INSERT INTO {keyspace}.schema_migrations (version, applied_at, "
                        "description) VALUES (%s, %s, %s)",
                        (migration.version, datetime.now(UTC), migration.description))
        applied.append(migration.version)
    return applied


def migrate_keyspace(settings: CassandraSettings, keyspace: str | None = None) -> list[int]:
    """``migrate`` on its own connection (``mosaic db migrate``, the stack, test set-ups)."""
    from mosaic.cassandra import connect

    session = connect(settings, keyspace=None, use_keyspace=False)
    try:
        return migrate(session, keyspace or settings.keyspace,
                       replication_factor=settings.replication_factor,
                       datacenter=settings.datacenter)
    finally:
        session.cluster.shutdown()


def require(session: Any, keyspace: str | None = None) -> int:
    """What a process does at start-up instead of creating tables: fail clearly unless
    ``keyspace`` (default: the session's) is at :data:`SCHEMA_VERSION` or newer."""
    name = keyspace or session.keyspace
    version = current_version(session, name)
    if version < SCHEMA_VERSION:
        raise SchemaVersionError(
            f"keyspace {name} is at schema version {version}, this code needs "
            f"{SCHEMA_VERSION}: run `mosaic db migrate --keyspace {name}`")
    return version
