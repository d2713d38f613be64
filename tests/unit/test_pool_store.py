"""The pool's columnar vector store (matcher.pool_store.VectorRows) and what the pool and
the cycle's snapshot rely on: rows reused, vectors of another length kept aside, and a
snapshot whose vectors stay put while the pool changes under it."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import numpy as np
import pytest

from matcher.core.prepare import normalised
from matcher.pool import LogRecord, PoolState, Seeker
from matcher.pool_store import VectorRows
from matcher.snapshot import MIN_NORM, build_snapshot, snapshot_of
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


def test_a_snapshot_keeps_its_rows_and_the_unchanged_users_vectors_while_rows_are_reused(
        ) -> None:
    state = PoolState()
    state.apply_all([LogRecord(0, 0, b"a", encode(_seeker("a", (1.0, 0.0), 1))),
                     LogRecord(0, 1, b"b", encode(_seeker("b", (0.0, 2.0), 1))),
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
    # The core's matrix: unit rows, a copy the pool's changes do not reach.
    assert cycle.snapshot.vectors.tolist() == [[1.0, 0.0], [0.0, 1.0]]
    # "b" did not change: its recorded vector (not normalised) is still its own.
    assert cycle.seekers[1].user_id == "b" and cycle.seekers[1].vector.tolist() == [0.0, 2.0]
    assert invalid.vector.tolist() == [1.0, 0.0, 0.0]
    # The one usable seeker whose row was given away is one the cycle drops as "left".
    assert state.changed_since([s.user_id for s in cycle.seekers], {0: 3}) == {"a"}
    assert [s.user_id for s in state.waiting("default")] == ["b", "c", "d"]


def test_views_are_each_users_vector_read_only() -> None:
    store = VectorRows(block_rows=2)
    for i in range(5):
        store.put(f"u{i}", vec(i, -i))
    store.put("odd", vec(1, 2, 3))
    users = ["u4", "odd", "u0", "u3"]
    views = store.views(users)
    assert [v.tolist() for v in views] == [store.vector(u).tolist() for u in users]
    for view in views:
        assert not view.flags.writeable
        with pytest.raises(ValueError):
            view[0] = 7.0
    assert store.vector("u4").tolist() == [4, -4] and store.vector("odd").tolist() == [1, 2, 3]


def test_rows_copies_the_users_vectors_at_once() -> None:
    store = VectorRows(block_rows=2)
    for i in range(5):
        store.put(f"u{i}", vec(i, -i))
    store.put("odd", vec(1, 2, 3))
    matrix, others = store.rows(["u4", "odd", "u0", "u3"])
    assert matrix.dtype == np.float32 and matrix.tolist() == [[4, -4], [0, 0], [0, 0], [3, -3]]
    assert {i: v.tolist() for i, v in others.items()} == {1: [1, 2, 3]}
    store.drop("u4")
    store.put("new", vec(8, 8))  # takes u4's row: the copy keeps u4's values
    assert matrix[0].tolist() == [4, -4] and store.rows([])[0].shape == (0, 2)
    with pytest.raises(KeyError):
        store.rows(["u4"])


# -- the snapshot: snapshot_of (rows gathered from the store) against build_snapshot (a
# Seeker per user) and against the rules applied one seeker at a time ---------------------

def _reference(seekers: list[Seeker]) -> tuple[list[str], list[str]]:
    """Usable and set-aside user ids, one seeker at a time (the rules of build_snapshot)."""
    spaces = Counter((s.record.model, len(s.vector)) for s in seekers
                     if s.poison is None and np.any(s.vector))
    model, dim = (max(spaces.items(), key=lambda kv: (kv[1], kv[0][1], kv[0][0]))[0]
                  if spaces else ("", 0))

    def usable(s: Seeker) -> bool:
        if s.poison is not None or s.record.model != model or len(s.vector) != dim or not dim:
            return False
        with np.errstate(all="ignore"):
            norm = np.sqrt(np.einsum("i,i->", s.vector, s.vector))
        return bool(np.isfinite(norm) and norm >= MIN_NORM)

    return [s.user_id for s in seekers if usable(s)], [s.user_id for s in seekers if not usable(s)]


def _record(user: str, vector: tuple[float, ...], **fields: object) -> LogRecord:
    values: dict[str, object] = {
        "event_id": derive_event_id("t", user), "occurred_at": T0, "user_id": user,
        "opted_in_at": T0 - timedelta(minutes=len(user)), "vector": vector, "model": "m",
        "traits_hash": "h", "missed_cycles": len(user) % 3, **fields}
    return LogRecord(0, 0, user.encode(), encode(SeekerUpdated(**values)))  # type: ignore[arg-type]


SNAPSHOT_CASES = [
    ("plain", [_record(f"u{i}", (float(i), 1.0)) for i in range(7)]),
    ("zero, tiny, huge and another model", [
        _record("a", (1.0, 0.0)), _record("b", (0.0, 1.0)), _record("zero", (0.0, -0.0)),
        _record("tiny", (1e-30, 1e-30)),  # squares underflow: still counts for the space
        _record("huge", (3e38, 3e38)), _record("other", (0.6, 0.8), model="m2"),
        _record("c", (0.5, 0.5))]),
    ("other lengths and a record that did not decode", [
        _record("a", (1.0, 0.0)), _record("b", (0.0, 1.0)), _record("long", (1.0, 2.0, 3.0)),
        _record("none", ()), LogRecord(0, 0, b"bad", b"garbage"), _record("c", (3.0, 4.0))]),
    ("the store's first length is not the pool's (a rollout)", [
        _record("old1", (1.0, 2.0, 3.0)), _record("old2", (0.0, 0.0, 0.0)),
        *[_record(f"new{i}", (1.0, float(i))) for i in range(3)],
        _record("new-zero", (0.0, 0.0))]),
    ("only unusable vectors", [_record("z1", (0.0, 0.0)), _record("z2", (0.0, 0.0))]),
    ("a tie between two models: the larger dimension, then the model name", [
        _record("a", (1.0, 0.0), model="x"), _record("b", (1.0, 0.0, 0.0), model="y"),
        _record("c", (0.0, 1.0), model="x"), _record("d", (0.0, 1.0, 0.0), model="y")]),
    ("other pools and paused users are not in it", [
        _record("a", (1.0, 0.0)), _record("b", (1.0, 1.0), pool="fr"),
        _record("c", (1.0, 2.0), status="paused"), _record("d", (2.0, 1.0))]),
    ("empty", []),
]


@pytest.mark.parametrize(("name", "items"), SNAPSHOT_CASES)
def test_a_snapshot_from_the_store_is_the_snapshot_of_the_seekers(
        name: str, items: list[LogRecord]) -> None:
    state = PoolState()
    state.apply_all(items)
    seekers = state.waiting("default")
    usable, invalid = _reference(seekers)
    one, two = snapshot_of(state, "default", T0), build_snapshot(seekers, T0)
    for cycle in (one, two):
        assert list(cycle.snapshot.user_ids) == usable, name
        assert [s.user_id for s in cycle.seekers] == usable, name
        assert [s.user_id for s in cycle.invalid] == invalid, name
        rows = [s.vector.tolist() for s in seekers if s.user_id in usable]
        assert cycle.snapshot.vectors.dtype == np.float32, name
        # Unit rows, bit for bit as the core normalises a copy; the seekers as recorded.
        if rows:
            unit = normalised(np.asarray(rows, dtype=np.float32), len(rows))
            assert cycle.snapshot.vectors.tolist() == unit.tolist(), name
            assert normalised(cycle.snapshot.vectors, len(rows)) is cycle.snapshot.vectors
        else:
            assert cycle.snapshot.vectors.shape[0] == 0, name
        assert [s.vector.tolist() for s in cycle.seekers] == rows, name
        assert [s.vector.tolist() for s in cycle.invalid] == \
            [s.vector.tolist() for s in seekers if s.user_id in invalid], name
        assert [s.poison for s in cycle.invalid] == \
            [s.poison for s in seekers if s.user_id in invalid], name
        assert cycle.snapshot.wait_seconds.tolist() == \
            [(T0 - s.record.opted_in_at).total_seconds() for s in cycle.seekers], name
        assert cycle.snapshot.missed_cycles is not None
        assert cycle.snapshot.missed_cycles.tolist() == \
            [s.record.missed_cycles for s in cycle.seekers], name
    assert one.snapshot.vectors.shape == two.snapshot.vectors.shape, name


def test_a_snapshot_from_the_store_keeps_its_rows_while_rows_are_reused() -> None:
    state = PoolState()
    state.apply_all([_record("a", (1.0, 0.0)), _record("b", (0.0, 3.0)),
                     _record("z", (0.0, 0.0))])
    cycle = snapshot_of(state, "default", T0)
    state.apply_all([LogRecord(0, 3, b"a", encode(SeekerRemoved(
        event_id=derive_event_id("r", "a"), occurred_at=T0, user_id="a", reason="x"))),
        _record("c", (9.0, 9.0)), _record("z", (5.0, 5.0))])
    assert cycle.snapshot.vectors.tolist() == [[1.0, 0.0], [0.0, 1.0]]
    assert [s.vector.tolist() for s in cycle.seekers[1:]] == [[0.0, 3.0]]  # b: unchanged
    assert [s.vector.tolist() for s in cycle.invalid] == [[0.0, 0.0]]  # z: a copy
    assert state.changed_since(["a", "b"], {0: 3}) == {"a"}  # left: the cycle drops it


def test_compaction_in_place_spans_several_gathers() -> None:
    from matcher.snapshot import _compact

    rng = np.random.default_rng(6)
    matrix = rng.standard_normal((7_000, 3)).astype(np.float32)
    for keep in (np.flatnonzero(rng.random(7_000) < 0.8), np.flatnonzero(rng.random(7_000) < 0.3)):
        want = matrix[keep].copy()
        assert np.array_equal(_compact(matrix.copy(), keep), want)
