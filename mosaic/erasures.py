"""The ``erasures`` table: which users were erased, and when. This module is its one owner.

``mosaic users erase ID`` (app/ops/erase.py) records the erasure here before it removes
anything, and the embedding agent refuses every opt-in topic record of an erased user
written before the erasure (a replay, an offset reset, a dead letter sent back), so an
erased user never comes back into the index, the seekers topic or user_state by replay.

The row keeps no user id: the key is :func:`user_hash` (SHA-256 of the id, hex). Ids are
Cognito subs (random UUIDs), so the hash cannot be reversed by trying ids; whoever already
holds an id can only learn that it was erased. Migration 5 in ``mosaic/migrations.py``.
It sits in ``mosaic/`` (the bottom layer) because app/ and consumers/ both use it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from mosaic.cassandra import cassandra_call
from mosaic.migrations import require


def user_hash(user_id: str) -> str:
    return hashlib.sha256(user_id.encode("utf-8")).hexdigest()


class CassandraErasures:
    """``<keyspace>.erasures`` (the session's keyspace unless given)."""

    def __init__(self, session: Any, keyspace: str | None = None) -> None:
        self._session = session
        name = keyspace or session.keyspace
        cassandra_call("erasures", lambda: require(session, name))
        self._insert = session.prepare(
            f"INSERT INTO {name}.erasures (user_hash, erased_at) VALUES (?, ?)")
        self._select = session.prepare(
            f"SELECT user_hash, erased_at FROM {name}.erasures WHERE user_hash IN ?")

    def record(self, user_id: str, at: datetime) -> None:
        """Mark ``user_id`` erased at ``at``; a later erasure of the same id moves it on."""
        cassandra_call("erasures", lambda: self._session.execute(
            self._insert, (user_hash(user_id), at)))

    def erased_at(self, user_ids: Iterable[str]) -> dict[str, datetime]:
        """When each of ``user_ids`` that was erased was erased (others are absent)."""
        by_hash = {user_hash(u): u for u in set(user_ids)}
        if not by_hash:
            return {}
        rows = cassandra_call("erasures", lambda: list(self._session.execute(
            self._select, (list(by_hash),))))
        return {by_hash[r.user_hash]: _utc(r.erased_at) for r in rows}


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value
