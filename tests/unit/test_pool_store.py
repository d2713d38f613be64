"""The pool's columnar vector store (matcher.pool_store.VectorRows) and what the pool and
the cycle's snapshot rely on: rows reused, vectors of another length kept aside, and a
snapshot whose vectors stay put while the pool changes under it."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from matcher.pool import LogRecord, PoolState, build_snapshot
from matcher.pool_store import VectorRows
from streams.events import SeekerRemoved, SeekerUpdated, derive_event_id
from streams.serde import encode
from tests.support import T0

pytestmark = pytest.mark.unit


def vec(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float32)


def test_rows_of_users_who_left_are_reused_across_blocks() -> None:
    store = VectorRows(block_rows=2)
    for i in range(5):
        store.put(f"u{i}", vec(i, -i))
    assert len(store) == 5 and store.bytes_used() == 3 * 2 * 2 * 4  # 3 blocks of 2 rows
    store.drop("u1")
    store.drop("u3")
    store.put("new", vec(7, 7))
    store.put("u4", vec(9, 9))  # an update overwrites the user's own row
    assert store.bytes_used() == 3 * 2 * 2 * 4  # no new block: a free row was reused
    assert "u1" not in store and len(store) == 4
    assert {u: store.vector(u).tolist() for u in store} == {
        "u0": [0, 0], "u2": [2, -2], "u4": [9, 9], "new": [7, 7]}
    with pytest.raises(ValueError, match="read-only"):
        store.vector("u0")[0] = 1.0


def test_vectors_of_another_length_are_kept_aside() -> None:
    store = VectorRows(block_rows=4)
    store.put("empty", vec())  # a poison record's stand-in, before any real vector
    store.put("a", vec(1, 2, 3))
    store.put("b", vec(1, 2))
    assert store.vector("empty").tolist() == [] and store.vector("b").tolist() == [1, 2]
    store.put("b", vec(4, 5, 6))  # re-embedded with the pool's dimension
    assert store.vector("b").tolist() == [4, 5, 6] and store.vector("a").tolist() == [1, 2, 3]


def _seeker(user: str, vector: tuple[float, ...], version: int) -> SeekerUpdated:
    return SeekerUpdated(event_id=derive_event_id("t", user, str(version)), occurred_at=T0,
                         user_id=user, opted_in_at=T0 - timedelta(hours=1), vector=vector,
                         model="m", traits_hash="h", version=version)


def test_a_snapshot_keeps_its_vectors_while_the_pool_reuses_their_rows() -> None:
    state = PoolState()
    state.apply_all([LogRecord(0, 0, b"a", encode(_seeker("a", (1.0, 0.0), 1))),
                     LogRecord(0, 1, b"b", encode(_seeker("b", (0.0, 1.0), 1))),
                     LogRecord(0, 2, b"z", encode(_seeker("z", (1.0, 0.0, 0.0), 1)))])
    cycle = build_snapshot(state.waiting("default"), T0)
    (invalid,) = cycle.invalid
    # During the publish phase, "a" and "z" leave and others take their rows.
    removed = [SeekerRemoved(event_id=derive_event_id("r", u), occurred_at=T0, user_id=u,
                             reason="opted_out", version=2) for u in ("a", "z")]
    state.apply_all([LogRecord(0, 3 + i, e.user_id.encode(), encode(e))
                     for i, e in enumerate(removed)])
    state.apply_all([LogRecord(0, 5, b"c", encode(_seeker("c", (0.5, 0.5), 1))),
                     LogRecord(0, 6, b"d", encode(_seeker("d", (9.0, 9.0), 1)))])
    assert [s.vector.tolist() for s in cycle.seekers] == [[1.0, 0.0], [0.0, 1.0]]
    assert invalid.vector.tolist() == [1.0, 0.0, 0.0]
    assert cycle.snapshot.vectors.tolist() == [[1.0, 0.0], [0.0, 1.0]]
    assert [s.user_id for s in state.waiting("default")] == ["b", "c", "d"]
