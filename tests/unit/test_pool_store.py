"""The pool's columnar vector store (matcher.pool_store.VectorRows) and what the pool and
the cycle's snapshot rely on: rows reused, vectors of another length kept aside, and a
snapshot whose vectors stay put while the pool changes under it."""

from __future__ import annotations

import gc
import pickle
import weakref
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


def test_a_snapshot_keeps_the_unchanged_users_rows_while_rows_are_reused() -> None:
    state = PoolState()
    state.apply_all([LogRecord(0, 0, b"a", encode(_seeker("a", (1.0, 0.0), 1))),
                     LogRecord(0, 1, b"b", encode(_seeker("b", (0.0, 2.0), 1))),
                     LogRecord(0, 2, b"z", encode(_seeker("z", (1.0, 0.0, 0.0), 1)))])
    cycle = snapshot_of(state, "default", T0)
    (invalid,) = cycle.invalid
    # The core's matrix (unit rows) is now the store of a's and b's vectors.
    assert cycle.snapshot.vectors.tolist() == [[1.0, 0.0], [0.0, 1.0]]
    assert state.get("b").vector.tolist() == [0.0, 1.0]  # type: ignore[union-attr]
    # During the publish phase, "a" and "z" leave and others take their rows.
    removed = [SeekerRemoved(event_id=derive_event_id("r", u), occurred_at=T0, user_id=u,
                             reason="opted_out", version=2) for u in ("a", "z")]
    state.apply_all([LogRecord(0, 3 + i, e.user_id.encode(), encode(e))
                     for i, e in enumerate(removed)])
    state.apply_all([LogRecord(0, 5, b"c", encode(_seeker("c", (0.5, 0.5), 1))),
                     LogRecord(0, 6, b"d", encode(_seeker("d", (9.0, 9.0), 1)))])
    # "b" did not change: its row, the unit vector the core paired, is still its own
    # (what its carry-over repeats); "a"'s row went to a newcomer.
    assert cycle.seekers[1].user_id == "b" and cycle.seekers[1].vector.tolist() == [0.0, 1.0]
    assert cycle.snapshot.vectors.tolist()[0] == [9.0, 9.0]  # the last row freed
    assert invalid.vector.tolist() == [1.0, 0.0, 0.0]  # a copy
    # The one usable seeker whose row was given away is one the cycle drops as "left".
    assert state.changed_since([s.user_id for s in cycle.seekers], {0: 3}) == {"a"}
    assert {s.user_id: s.vector.tolist() for s in state.waiting("default")} == {
        "b": [0.0, 1.0], "c": [0.5, 0.5], "d": [9.0, 9.0]}
    with pytest.raises(ValueError, match="read-only"):
        cycle.snapshot.vectors[1, 0] = 1.0


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


def test_an_adopted_matrix_is_the_store_of_its_users_and_the_old_rows_are_freed() -> None:
    store = VectorRows(block_rows=2)
    for i in range(5):
        store.put(f"u{i}", vec(i, -i))
    store.put("odd", vec(1, 2, 3))
    old_blocks = [weakref.ref(b) for b in store._blocks]
    matrix = np.array([[0.5, 0.5], [3.0, 3.0]], dtype=np.float32)  # u3's, then u1's
    assert store.adopt(["u3", "u1"], matrix)
    assert all(ref() is None for ref in old_blocks)  # nothing keeps the old rows alive
    assert {u: store.vector(u).tolist() for u in store} == {
        "u3": [0.5, 0.5], "u1": [3, 3], "u0": [0, 0], "u2": [2, -2], "u4": [4, -4],
        "odd": [1, 2, 3]}
    assert store.bytes_used() == matrix.nbytes + 2 * (2 * 2 * 4) + 3 * 4  # 3 others: 2 blocks
    store.put("u1", vec(7, 8))  # an update writes the user's row of the matrix
    assert matrix[1].tolist() == [7, 8]
    store.drop("u3")
    store.put("new", vec(6, 6))  # the freed row of the matrix is reused
    assert matrix[0].tolist() == [6, 6]
    users = ["u0", "new", "odd", "u1", "u4"]
    gathered, others = store.rows(users)
    assert gathered.tolist() == [[0, 0], [6, 6], [0, 0], [7, 8], [4, -4]]
    assert {i: v.tolist() for i, v in others.items()} == {2: [1, 2, 3]}
    assert [store.vector(u).tolist() for u in users] == [
        [0, 0], [6, 6], [1, 2, 3], [7, 8], [4, -4]]
    copy = pickle.loads(pickle.dumps(store))  # a checkpoint of a store with a matrix
    assert {u: copy.vector(u).tolist() for u in copy} == {u: store.vector(u).tolist()
                                                           for u in store}
    copy.put("more", vec(1, 1))
    copy.put("u0", vec(5, 5))
    assert copy.vector("more").tolist() == [1, 1] and copy.vector("u0").tolist() == [5, 5]


@pytest.mark.parametrize(("users", "matrix"), [
    (["u0"], np.zeros((1, 3), dtype=np.float32)),  # not the store's width
    (["u0"], np.zeros((1, 2), dtype=np.float64)),
    (["u0", "u1"], np.zeros((4, 2), dtype=np.float32)[::2]),  # not contiguous
    (["u0", "u0"], np.zeros((2, 2), dtype=np.float32)),
    (["u0", "ghost"], np.zeros((2, 2), dtype=np.float32)),
    (["u0", "odd"], np.zeros((2, 2), dtype=np.float32)),  # odd's vector is kept aside
])
def test_adopt_refuses_a_matrix_it_cannot_keep(users: list[str], matrix: np.ndarray) -> None:
    store = VectorRows(block_rows=2)
    store.put("u0", vec(1, 1))
    store.put("u1", vec(2, 2))
    store.put("odd", vec(1, 2, 3))
    assert not store.adopt(users, matrix)
    assert {u: store.vector(u).tolist() for u in store} == {
        "u0": [1, 1], "u1": [2, 2], "odd": [1, 2, 3]}


def test_a_second_snapshot_of_an_unchanged_pool_is_the_first_bit_for_bit() -> None:
    """The pool keeps the first snapshot's unit rows; scaling them again changes no bit,
    so a cycle retried in the same process sees what a restarted matcher (which folds
    the records, recorded vectors or carry-overs of unit ones) sees."""
    rng = np.random.default_rng(3)
    rows = rng.standard_normal((300, 24)).astype(np.float32) * 7
    records = [_record(f"u{i:03d}", tuple(v.tolist())) for i, v in enumerate(rows)]
    state = PoolState()
    state.apply_all(records)
    first = snapshot_of(state, "default", T0)
    assert state.vector_bytes() == first.snapshot.vectors.nbytes  # held once
    second = snapshot_of(state, "default", T0)
    assert second.snapshot.vectors.tobytes() == first.snapshot.vectors.tobytes()
    fresh = PoolState()  # a restart: the pool folded again from the records
    fresh.apply_all(records)
    assert snapshot_of(fresh, "default", T0).snapshot.vectors.tobytes() == \
        first.snapshot.vectors.tobytes()
    carried = PoolState()  # a restart after the carry-overs: unit vectors recorded
    carried.apply_all([_record(s.user_id, tuple(s.vector.tolist())) for s in first.seekers])
    assert snapshot_of(carried, "default", T0).snapshot.vectors.tobytes() == \
        first.snapshot.vectors.tobytes()
    # The second snapshot's matrix took over: once the first cycle is dropped, nothing
    # keeps the first matrix alive, so a later cycle holds the vectors once too.
    owner = first.snapshot.vectors.base
    assert owner is not None
    gone = weakref.ref(owner)
    del first, owner
    gc.collect()
    assert gone() is None
    assert state.vector_bytes() == second.snapshot.vectors.nbytes


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
        # Unit rows, bit for bit as the core normalises a copy; the seekers' are theirs.
        if rows:
            unit = normalised(np.asarray(rows, dtype=np.float32), len(rows))
            assert cycle.snapshot.vectors.tolist() == unit.tolist(), name
            assert normalised(cycle.snapshot.vectors, len(rows)) is cycle.snapshot.vectors
            assert [s.vector.tolist() for s in cycle.seekers] == unit.tolist(), name
        else:
            assert cycle.snapshot.vectors.shape[0] == 0, name
            assert not cycle.seekers, name
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


def test_a_snapshot_of_seekers_keeps_its_rows_while_rows_are_reused() -> None:
    state = PoolState()
    state.apply_all([_record("a", (1.0, 0.0)), _record("b", (0.0, 3.0)),
                     _record("z", (0.0, 0.0))])
    cycle = build_snapshot(state.waiting("default"), T0)  # not the store's: a copy
    state.apply_all([LogRecord(0, 3, b"a", encode(SeekerRemoved(
        event_id=derive_event_id("r", "a"), occurred_at=T0, user_id="a", reason="x"))),
        _record("c", (9.0, 9.0)), _record("z", (5.0, 5.0))])
    assert cycle.snapshot.vectors.tolist() == [[1.0, 0.0], [0.0, 1.0]]
    assert [s.vector.tolist() for s in cycle.seekers[1:]] == [[0.0, 1.0]]  # b: unchanged
    assert [s.vector.tolist() for s in cycle.invalid] == [[0.0, 0.0]]  # z: a copy
    assert state.changed_since(["a", "b"], {0: 3}) == {"a"}  # left: the cycle drops it


def test_compaction_in_place_spans_several_gathers() -> None:
    from matcher.snapshot import _compact

    rng = np.random.default_rng(6)
    matrix = rng.standard_normal((7_000, 3)).astype(np.float32)
    for keep in (np.flatnonzero(rng.random(7_000) < 0.8), np.flatnonzero(rng.random(7_000) < 0.3)):
        want = matrix[keep].copy()
        assert np.array_equal(_compact(matrix.copy(), keep), want)
