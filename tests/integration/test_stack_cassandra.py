"""The real single-node Cassandra 5.0: lightweight transactions, vectors, SAI, ANN."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
from cassandra.policies import RoundRobinPolicy

from mosaic.settings import Settings
from stack.base import Service
from tests.support import assert_up_reuses

pytestmark = pytest.mark.integration


@pytest.fixture
def session(settings: Settings, cassandra_stack: Service, unique: str) -> Iterator[Any]:
    """A session bound to a fresh keyspace, dropped afterwards."""
    profile = ExecutionProfile(load_balancing_policy=RoundRobinPolicy(), request_timeout=30)
    cluster = Cluster(list(settings.cassandra.hosts), port=settings.cassandra.port,
                      execution_profiles={EXEC_PROFILE_DEFAULT: profile})
    session = cluster.connect()
    keyspace = f"test_stack_{unique}"
    session.execute(
        f"CREATE KEYSPACE {keyspace} WITH replication = "
        "{'class': 'SimpleStrategy', 'replication_factor': 1}"
    )
    session.set_keyspace(keyspace)
    try:
        yield session
    finally:
        session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}")
        cluster.shutdown()


def test_insert_if_not_exists_applies_once(session: Any) -> None:
    session.execute("CREATE TABLE claims (pair_key text PRIMARY KEY, cycle_id text)")
    insert = session.prepare("INSERT INTO claims (pair_key, cycle_id) VALUES (?, ?) IF NOT EXISTS")

    first = session.execute(insert, ("a|b", "cycle-1")).one()
    second = session.execute(insert, ("a|b", "cycle-2")).one()

    assert first.applied is True
    assert second.applied is False
    assert second.cycle_id == "cycle-1"  # the losing write sees the row that won


def test_vector_sai_ann_query(session: Any) -> None:
    session.execute("CREATE TABLE seekers (user_id text PRIMARY KEY, v vector<float, 3>)")
    session.execute(
        "CREATE INDEX seekers_v ON seekers (v) USING 'sai' "
        "WITH OPTIONS = {'similarity_function': 'cosine'}"
    )
    insert = session.prepare("INSERT INTO seekers (user_id, v) VALUES (?, ?)")
    for user, vector in {"east": [1.0, 0.0, 0.0], "north": [0.0, 1.0, 0.0],
                         "up": [0.0, 0.0, 1.0], "north-east": [0.7, 0.7, 0.0]}.items():
        session.execute(insert, (user, vector))

    rows = session.execute(
        "SELECT user_id, similarity_cosine(v, [0.9, 0.1, 0.0]) AS score "
        "FROM seekers ORDER BY v ANN OF [0.9, 0.1, 0.0] LIMIT 2"
    ).all()

    assert [r.user_id for r in rows] == ["east", "north-east"]
    assert rows[0].score > rows[1].score


@pytest.mark.stack_scripts
def test_up_twice_reuses_running_node(cassandra_stack: Service) -> None:
    assert_up_reuses(cassandra_stack)
