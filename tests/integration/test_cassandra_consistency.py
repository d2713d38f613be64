"""Consistency levels and replication on the real Cassandra node (issue 22.6).

One node cannot lose a replica, but it can show which level a statement runs at: give a
keyspace 2 replicas in the node's data centre and LOCAL_QUORUM (2 of 2) is unavailable on a
single node while LOCAL_ONE still answers. So a write that fails there ran at LOCAL_QUORUM.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from cassandra import ConsistencyLevel
from cassandra.query import SimpleStatement

from consumers.blocks import CassandraBlockStore
from mosaic.cassandra import connect
from mosaic.migrations import migrate_keyspace
from mosaic.settings import Settings
from mosaic.user_state import CassandraUserStateWriter
from stack.base import Service

pytestmark = pytest.mark.integration

QUORUM_UNAVAILABLE = "Cannot achieve consistency level LOCAL_QUORUM"


@pytest.fixture
def keyspace(settings: Settings, cassandra_stack: Service) -> Iterator[tuple[str, Any]]:
    name = f"cl_{uuid.uuid4().hex[:10]}"
    migrate_keyspace(settings.cassandra, name)
    admin = connect(settings.cassandra, use_keyspace=False)
    yield name, admin
    admin.execute(f"DROP KEYSPACE IF EXISTS {name}", timeout=120)
    admin.cluster.shutdown()


def test_migrate_replicates_a_new_keyspace_per_data_centre(
        settings: Settings, keyspace: tuple[str, Any]) -> None:
    name, admin = keyspace
    row = admin.execute("SELECT replication FROM system_schema.keyspaces "
                        "WHERE keyspace_name = %s", (name,)).one()
    assert row.replication == {
        "class": "org.apache.cassandra.locator.NetworkTopologyStrategy",
        settings.cassandra.datacenter: str(settings.cassandra.replication_factor)}


def test_reads_and_writes_run_at_local_quorum(settings: Settings,
                                              keyspace: tuple[str, Any]) -> None:
    name, admin = keyspace
    session = connect(settings.cassandra, keyspace=name)
    try:
        # Built while the keyspace still has one replica (they check its schema version).
        states = CassandraUserStateWriter(session, name)
        blocks = CassandraBlockStore(session)
        admin.execute(f"ALTER KEYSPACE {name} WITH replication = {{'class': "
                      f"'NetworkTopologyStrategy', '{settings.cassandra.datacenter}': 2}}",
                      timeout=120)
        now = datetime.now(UTC)
        # The driver reports the node's Unavailable inside NoHostAvailable (or the store
        # wraps it): what counts is the level the node could not reach.
        with pytest.raises(Exception, match=QUORUM_UNAVAILABLE):
            states.waiting("u-1", pool="p", waiting_since=now, missed_cycles=0, at=now)
        with pytest.raises(Exception, match=QUORUM_UNAVAILABLE):
            blocks.add("u-1", "u-2", now)
        with pytest.raises(Exception, match=QUORUM_UNAVAILABLE):
            session.execute("SELECT state FROM user_state WHERE user_id = 'u-1'")
        # The same node answers at LOCAL_ONE: the failures above are the level's.
        one = SimpleStatement("SELECT state FROM user_state WHERE user_id = 'u-1'",
                              consistency_level=ConsistencyLevel.LOCAL_ONE)
        assert session.execute(one).one() is None
    finally:
        session.cluster.shutdown()
