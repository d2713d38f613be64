"""Post-match's index-state agent with the vector index on Pinecone (the stand-in, through
the ``pinecone`` SDK), the audit and user_state on the real Cassandra: a cycle's matched
users are marked in Pinecone with one fetch per 100 users (not one per user), a missed
cycle is counted, a user gone from the index is reported absent, the audit records it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from consumers.audit import CassandraAuditStore
from consumers.postmatch.handlers import IndexStateHandler
from consumers.runner import Item
from mosaic.settings import Settings
from mosaic.user_state import CassandraUserStateWriter
from profiles.index import VectorRecord
from profiles.pinecone_index import PineconeVectorIndex
from stack.base import Service
from standins.pinecone import PineconeStandin
from streams.deadletter import RawRecord
from streams.events import PairMatched, SeekerUnmatched, derive_event_id, pair_key
from tests.support import migrated_session

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
CYCLE = "default:pinecone1"


@pytest.fixture(scope="module")
def session(settings: Settings, cassandra_stack: Service) -> Iterator[Any]:
    keyspace = f"pmpc_{uuid.uuid4().hex[:10]}"
    session = migrated_session(settings, keyspace)
    yield session
    session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}")
    session.cluster.shutdown()


def _pair(a: str, b: str) -> PairMatched:
    return PairMatched(event_id=derive_event_id("t", a, b), occurred_at=T0, cycle_id=CYCLE,
                       pair_key=pair_key(a, b), user_a=min(a, b), user_b=max(a, b),
                       score=0.9, similarity=0.85)


def test_a_cycle_updates_pinecone_in_batches(session: Any) -> None:
    users = [f"pc-{i:03d}" for i in range(120)]
    with PineconeStandin(dimension=3, api_key="pm-key") as pinecone:
        index = PineconeVectorIndex.connect(api_key="pm-key", host=pinecone.url, dim=3,
                                            namespace="seekers")
        index.upsert([VectorRecord(u, np.array([1.0, i, 0.0], dtype=np.float32),
                                   {"status": "waiting", "missed_cycles": 0})
                      for i, u in enumerate(users[:-1])])  # the last one opted out
        keyspace = session.keyspace
        handler = IndexStateHandler(CassandraAuditStore(session), index,
                                    CassandraUserStateWriter(session, keyspace),
                                    clock=lambda: T0)
        pinecone.reset_requests()
        pairs = [_pair(users[i], users[i + 1]) for i in range(0, 118, 2)]
        events = [*pairs, _pair(users[118], users[119]),
                  SeekerUnmatched(event_id=derive_event_id("u"), occurred_at=T0,
                                  cycle_id=CYCLE, user_id=users[0], reason="odd_one_out",
                                  missed_cycles=2)]
        items = [Item(e, RawRecord("t", 0, i, None, b"")) for i, e in enumerate(events)]
        assert handler.handle(items) == [None] * len(items)
        paths = [r.path for r in pinecone.requests]
        # 120 matched users: 2 existence fetches of <= 100 ids, 119 updates; the
        # unmatched user: one fetch and one update.
        assert paths.count("/vectors/fetch") == 3, paths.count("/vectors/fetch")
        assert paths.count("/vectors/update") == 120
        stored = index.fetch(users)
        assert len(stored) == 119 and users[119] not in stored
        assert all(r.metadata["status"] == "matched" for r in stored.values())
        assert stored[users[0]].metadata["missed_cycles"] == 2
        row = CassandraAuditStore(session).get(CYCLE, pairs[0].pair_key)
        assert row is not None and row.pinecone_metadata_updated
