"""``mosaic db migrate`` on the real Cassandra: versions, idempotence, concurrency, the
start-up check of every Cassandra adapter, and the audit tables' TTL."""

from __future__ import annotations

import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from consumers.audit import CassandraAuditStore
from consumers.blocks import CassandraBlockStore
from mosaic.cassandra import connect
from mosaic.migrations import (
    AUDIT_TTL_SECONDS,
    MIGRATIONS,
    SCHEMA_VERSION,
    SchemaVersionError,
    applied_versions,
    current_version,
    migrate,
    migrate_keyspace,
)
from mosaic.settings import Settings
from mosaic.user_state import CassandraUserStateStore, CassandraUserStateWriter
from stack.base import Service

pytestmark = pytest.mark.integration

TABLES = {"user_state", "cycle_audit", "cycle_status", "blocks", "schema_migrations", "erasures",
          "ingress_nonces"}


@pytest.fixture
def admin(settings: Settings, cassandra_stack: Service) -> Iterator[Any]:
    """A session bound to no keyspace; drops every keyspace a test names in ``made``."""
    session = connect(settings.cassandra, use_keyspace=False)
    session.made = []
    yield session
    for keyspace in session.made:
        # Schema changes wait for the node to flush; slow on a busy 2-core machine.
        session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=120)
    session.cluster.shutdown()


def _keyspace(admin: Any) -> str:
    name = f"mig_{uuid.uuid4().hex[:10]}"
    admin.made.append(name)
    return name


def _tables(admin: Any, keyspace: str) -> dict[str, int]:
    rows = admin.execute("SELECT table_name, default_time_to_live FROM system_schema.tables "
                         "WHERE keyspace_name = %s", (keyspace,))
    return {r.table_name: r.default_time_to_live for r in rows}


def test_migrate_on_an_empty_keyspace_creates_everything_and_records_versions(
        admin: Any) -> None:
    keyspace = _keyspace(admin)
    assert current_version(admin, keyspace) == 0
    assert migrate(admin, keyspace) == [m.version for m in MIGRATIONS]
    assert set(_tables(admin, keyspace)) == TABLES
    rows = applied_versions(admin, keyspace)
    assert sorted(rows) == list(range(1, SCHEMA_VERSION + 1))
    assert all(rows[m.version].description == m.description and rows[m.version].applied_at
               for m in MIGRATIONS)
    assert current_version(admin, keyspace) == SCHEMA_VERSION


def test_twice_and_concurrently_is_a_no_op(admin: Any, settings: Settings) -> None:
    keyspace = _keyspace(admin)
    results: list[list[int]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(migrate_keyspace(settings.cassandra, keyspace))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    # Both may have applied a version (the statements are idempotent); together, all.
    assert set(results[0]) | set(results[1]) == {m.version for m in MIGRATIONS}
    before = applied_versions(admin, keyspace)
    assert migrate(admin, keyspace) == []  # a third run: nothing to do
    assert applied_versions(admin, keyspace).keys() == before.keys()
    assert set(_tables(admin, keyspace)) == TABLES


def test_existing_tables_from_before_migrations_keep_their_rows(admin: Any) -> None:
    """A keyspace whose tables the old start-up code made (user_state without ``detail``)."""
    keyspace = _keyspace(admin)
    admin.execute(f"CREATE KEYSPACE {keyspace} WITH replication = "
                  "{'class': 'SimpleStrategy', 'replication_factor': 1}")
    admin.execute(f"CREATE TABLE {keyspace}.user_state (user_id text PRIMARY KEY, state text, "
                  "opted_in_at timestamp, waiting_since timestamp, missed_cycles int, "
                  "cycle_id text, room_id text, pool text, updated_at timestamp)")
    admin.execute(f"INSERT INTO {keyspace}.user_state (user_id, state) VALUES ('u1', 'waiting')")
    assert migrate(admin, keyspace) == [m.version for m in MIGRATIONS]
    row = admin.execute(f"SELECT state, detail FROM {keyspace}.user_state "
                        "WHERE user_id = 'u1'").one()
    assert (row.state, row.detail) == ("waiting", None)


def test_processes_refuse_an_unmigrated_keyspace_with_the_clear_error(
        admin: Any, settings: Settings) -> None:
    keyspace = _keyspace(admin)
    with pytest.raises(SchemaVersionError, match=f"keyspace {keyspace} does not exist"):
        connect(settings.cassandra, keyspace=keyspace)
    # The keyspace exists (made by hand, or by an older code's migrate) but is behind.
    admin.execute(f"CREATE KEYSPACE {keyspace} WITH replication = "
                  "{'class': 'SimpleStrategy', 'replication_factor': 1}")
    session = connect(settings.cassandra, keyspace=keyspace)
    try:
        needs = (f"keyspace {keyspace} is at schema version 0, this code needs "
                 f"{SCHEMA_VERSION}: run `mosaic db migrate --keyspace {keyspace}`")
        for build in (lambda: CassandraAuditStore(session),
                      lambda: CassandraBlockStore(session),
                      lambda: CassandraUserStateStore(session, keyspace),
                      lambda: CassandraUserStateWriter(session, keyspace)):
            with pytest.raises(SchemaVersionError) as caught:
                build()
            assert str(caught.value) == needs
        # One version behind: the message names it; no table was created on the way.
        migrate(admin, keyspace)
        admin.execute(f"DELETE FROM {keyspace}.schema_migrations WHERE version = %s",
                      (SCHEMA_VERSION,))
        with pytest.raises(SchemaVersionError, match=f"at schema version {SCHEMA_VERSION - 1}, "
                                                     f"this code needs {SCHEMA_VERSION}"):
            CassandraAuditStore(session)
        migrate(admin, keyspace)
        CassandraAuditStore(session)
        CassandraBlockStore(session)
        CassandraUserStateWriter(session, keyspace)
    finally:
        session.cluster.shutdown()


def test_a_process_started_against_an_unmigrated_keyspace_exits_with_the_error(
        admin: Any, settings: Settings) -> None:
    """The real CLI path (``mosaic reconcile`` opens the audit store, then stops)."""
    keyspace = _keyspace(admin)
    admin.execute(f"CREATE KEYSPACE {keyspace} WITH replication = "
                  "{'class': 'SimpleStrategy', 'replication_factor': 1}")
    code = ("import sys; from mosaic.settings import Settings; "
            "from mosaic.cassandra import connect; "
            "from consumers.audit import CassandraAuditStore; "
            f"CassandraAuditStore(connect(Settings().cassandra, keyspace={keyspace!r}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode != 0
    assert (f"keyspace {keyspace} is at schema version 0, this code needs {SCHEMA_VERSION}: "
            f"run `mosaic db migrate --keyspace {keyspace}`") in done.stderr


def test_cli_migrate_and_status(admin: Any) -> None:
    keyspace = _keyspace(admin)
    mosaic = [str(Path(sys.executable).with_name("mosaic"))]
    status = subprocess.run([*mosaic, "db", "status", "--keyspace", keyspace],
                            capture_output=True, text=True, timeout=120, check=False)
    assert status.returncode == 1 and "pending" in status.stdout, status
    out = subprocess.run([*mosaic, "db", "migrate", "--keyspace", keyspace],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    assert f"now at schema version {SCHEMA_VERSION}" in out
    again = subprocess.run([*mosaic, "db", "migrate", "--keyspace", keyspace],
                           capture_output=True, text=True, timeout=120, check=True).stdout
    assert "up to date" in again
    status = subprocess.run([*mosaic, "db", "status", "--keyspace", keyspace],
                            capture_output=True, text=True, timeout=120, check=False)
    assert status.returncode == 0 and "up to date" in status.stdout, status


def test_audit_tables_expire_and_the_others_do_not(admin: Any) -> None:
    keyspace = _keyspace(admin)
    migrate(admin, keyspace)
    ttl = _tables(admin, keyspace)
    assert ttl["cycle_audit"] == ttl["cycle_status"] == AUDIT_TTL_SECONDS == 180 * 86400
    assert ttl["user_state"] == ttl["blocks"] == ttl["schema_migrations"] == ttl["erasures"] == 0
    session = connect(Settings().cassandra, keyspace=keyspace)
    try:
        session.execute("INSERT INTO cycle_status (cycle_id, pairs) VALUES ('c1', 2)")
        left = session.execute("SELECT TTL(pairs) AS t FROM cycle_status "
                               "WHERE cycle_id = 'c1'").one().t
        assert AUDIT_TTL_SECONDS - 60 < left <= AUDIT_TTL_SECONDS
    finally:
        session.cluster.shutdown()
