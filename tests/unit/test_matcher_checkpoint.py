"""The matcher's pool checkpoint (matcher/checkpoint.py): a checkpoint plus the records
after it folds to the same pool as every record from the beginning, and a checkpoint that
does not belong (another topic, topic id, pool set, format, too old, damaged) is refused."""

from __future__ import annotations

import json
import logging
import random
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from matcher.checkpoint import MAGIC, Checkpoints, offsets_refusal
from matcher.pool import LogRecord, PoolState
from streams.events import SeekerRemoved, SeekerUpdated, derive_event_id
from streams.serde import encode
from tests.support import T0

pytestmark = pytest.mark.unit

DAY = 86_400.0


def random_log(seed: int, n: int = 400) -> list[LogRecord]:
    """Opt-ins (versioned and not), re-embeddings, opt-outs, matcher carry-overs and
    removals, stale replays, tombstones, undecodable records and other pools."""
    rng = random.Random(seed)
    users = [f"u{i:02d}" for i in range(40)]
    versions: dict[str, int] = {}
    records: list[LogRecord] = []
    for offset in range(n):
        user = rng.choice(users)
        kind = rng.random()
        version = versions.get(user, 0)
        if kind < 0.45:
            version = versions[user] = version + rng.choice([0, 1, 2])  # 0: stale replay
            dim = 4 if rng.random() > 0.05 else 3
            value: bytes | None = encode(SeekerUpdated(
                event_id=derive_event_id("opt-in", user, str(offset)), occurred_at=T0,
                user_id=user, opted_in_at=T0 - timedelta(hours=offset % 7),
                vector=tuple(rng.uniform(-1, 1) for _ in range(dim)), model="m",
                traits_hash="h", pool=rng.choice(["default", "default", "other"]),
                missed_cycles=rng.randrange(3), version=version,
                cycle_id=rng.choice([None, None, "default:c1"])))
        elif kind < 0.75:
            value = encode(SeekerRemoved(
                event_id=derive_event_id("out", user, str(offset)), occurred_at=T0,
                user_id=user, reason=rng.choice(["opted_out", "matched:c1"]),
                version=max(0, version - rng.randrange(2))))
        elif kind < 0.9:
            value = None  # a tombstone
        else:
            value = b"\x00not avro"
        records.append(LogRecord(offset % 3, offset, user.encode(), value))
    return records


def folded(records: list[LogRecord], pools: frozenset[str] | None = None) -> PoolState:
    state = PoolState(pools=pools)
    state.apply_all(records)
    return state


def contents(state: PoolState) -> dict[str, object]:
    """What a pool means, whatever rows its store gave the users."""
    seekers = {s.user_id: (s.record, s.vector.tolist(), s.partition, s.offset, s.poison)
               for pool in ("default", "other") for s in state.waiting(pool)}
    return {"seekers": seekers, "versions": dict(state._versions), "len": len(state),
            "bad": state.bad_records, "stale": state.stale_records}


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("pools", [None, frozenset({"default"})])
def test_a_checkpoint_and_the_records_after_it_fold_like_the_whole_log(
        tmp_path: Path, seed: int, pools: frozenset[str] | None) -> None:
    records = random_log(seed)
    whole = contents(folded(records, pools))
    for cut in (0, 1, 137, 250, len(records)):
        checkpoints = Checkpoints(tmp_path, f"m{seed}-{cut}")
        checkpoints.save(folded(records[:cut], pools), "t", "id1", {0: cut})
        loaded = checkpoints.load("t", "id1", pools, DAY)
        assert loaded is not None and loaded.meta.positions == {0: cut}
        loaded.pool.apply_all(records[cut:])
        assert contents(loaded.pool) == whole, f"seed {seed}, checkpoint after {cut}"


@pytest.mark.parametrize("seed", range(3))
def test_a_pool_that_adopted_a_snapshot_checkpoints_as_itself(tmp_path: Path, seed: int
                                                               ) -> None:
    """After a cycle the store holds the snapshot's unit rows in an adopted matrix, the
    other users in blocks: saved and loaded, then fed the same records, the loaded pool
    stays the live one."""
    from matcher.snapshot import snapshot_of

    records = random_log(seed)
    cut = len(records) // 2
    live = folded(records[:cut])
    cycle = snapshot_of(live, "default", T0)
    assert len(cycle.seekers) > 0 and live._vectors._head.shape[0] == len(cycle.seekers)
    checkpoints = Checkpoints(tmp_path, f"a{seed}")
    checkpoints.save(live, "t", "id1", {0: cut})
    loaded = checkpoints.load("t", "id1", None, DAY)
    assert loaded is not None
    assert contents(loaded.pool) == contents(live)
    for state in (live, loaded.pool):
        state.apply_all(records[cut:])
    assert contents(loaded.pool) == contents(live)


def test_the_loaded_pool_keeps_reusing_rows_and_adding_blocks(tmp_path: Path) -> None:
    state = PoolState()
    state._vectors = type(state._vectors)(block_rows=2)
    for i in range(5):
        state.apply(LogRecord(0, i, f"u{i}".encode(), encode(SeekerUpdated(
            event_id=derive_event_id("x", str(i)), occurred_at=T0, user_id=f"u{i}",
            opted_in_at=T0, vector=(float(i), 1.0), model="m", traits_hash="h",
            version=1))))
    Checkpoints(tmp_path, "m").save(state, "t", "id", {0: 5})
    loaded = Checkpoints(tmp_path, "m").load("t", "id", None, DAY)
    assert loaded is not None
    pool = loaded.pool
    pool.apply(LogRecord(0, 5, b"u1", None))
    for i in (7, 8, 9):
        pool.apply(LogRecord(0, i, f"n{i}".encode(), encode(SeekerUpdated(
            event_id=derive_event_id("y", str(i)), occurred_at=T0, user_id=f"n{i}",
            opted_in_at=T0, vector=(float(i), 2.0), model="m", traits_hash="h",
            version=1))))
    vectors = {s.user_id: s.vector.tolist() for s in pool.waiting("default")}
    assert vectors == {"u0": [0, 1], "u2": [2, 1], "u3": [3, 1], "u4": [4, 1],
                       "n7": [7, 2], "n8": [8, 2], "n9": [9, 2]}
    assert pool.vector_bytes() == 4 * 2 * 2 * 4  # u1's row reused, then one more block


def saved(tmp_path: Path) -> Checkpoints:
    checkpoints = Checkpoints(tmp_path, "m")
    checkpoints.save(folded(random_log(1), frozenset({"default"})), "t", "id1", {0: 400})
    return checkpoints


@pytest.mark.parametrize(("topic", "topic_id", "pools", "max_age", "why"), [
    ("other", "id1", frozenset({"default"}), DAY, "it is of topic t"),
    ("t", "id2", frozenset({"default"}), DAY, "earlier topic t (id id1, now id2)"),
    ("t", "id1", None, DAY, "it is of pools ['default'], this matcher serves None"),
    ("t", "id1", frozenset({"default"}), -1.0, "past the topic's delete.retention.ms"),
])
def test_a_checkpoint_that_does_not_belong_is_refused(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, topic: str, topic_id: str,
        pools: frozenset[str] | None, max_age: float, why: str) -> None:
    checkpoints = saved(tmp_path)
    assert checkpoints.load(topic, topic_id, pools, max_age) is None
    assert why in caplog.text and "reading" in caplog.text
    assert checkpoints.load("t", "id1", frozenset({"default"}), DAY) is not None


def rewrite_meta(path: Path, **changes: object) -> None:
    data = path.read_bytes()
    end = data.index(b"\n", len(MAGIC)) + 1
    meta = {**json.loads(data[len(MAGIC):end]), **changes}
    path.write_bytes(MAGIC + json.dumps(meta).encode() + b"\n" + data[end:])


@pytest.mark.parametrize(("changes", "why"), [
    ({"format": 99}, "format 99"),
    ({"schema": "0000"}, "other seekers schemas"),
    ({"written_at": time.time() + 3600}, "in the future"),
    ({"users": 1}, "does not hold the pool its header names"),
])
def test_a_checkpoint_of_another_format_schema_or_clock_is_refused(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, changes: dict[str, object],
        why: str) -> None:
    checkpoints = saved(tmp_path)
    rewrite_meta(checkpoints.path, **changes)
    assert checkpoints.load("t", "id1", frozenset({"default"}), DAY) is None
    assert why in caplog.text


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "missing"])
def test_a_damaged_or_missing_checkpoint_is_not_used(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str) -> None:
    caplog.set_level(logging.INFO, logger="matcher.checkpoint")
    checkpoints = saved(tmp_path)
    data = checkpoints.path.read_bytes()
    if damage == "truncated":
        checkpoints.path.write_bytes(data[: len(data) * 2 // 3])
    elif damage == "garbage":
        checkpoints.path.write_bytes(data[:60] + bytes(200) + data[260:])
    elif damage == "empty":
        checkpoints.path.write_bytes(b"")
    else:
        checkpoints.path.unlink()
    assert checkpoints.load("t", "id1", frozenset({"default"}), DAY) is None
    expected = "no checkpoint at" if damage == "missing" else "unreadable"
    assert expected in caplog.text


def test_a_save_replaces_the_file_whole(tmp_path: Path) -> None:
    checkpoints = saved(tmp_path)
    first = checkpoints.path.stat().st_ino
    checkpoints.save(PoolState(pools=frozenset({"default"})), "t", "id1", {0: 500})
    assert checkpoints.path.stat().st_ino != first  # renamed over, never written in place
    assert [p.name for p in tmp_path.iterdir()] == ["m.ckpt"]  # no temporary left
    loaded = checkpoints.load("t", "id1", frozenset({"default"}), DAY)
    assert loaded is not None and len(loaded.pool) == 0 and loaded.meta.positions == {0: 500}


@pytest.mark.parametrize(("positions", "watermarks", "why"), [
    ({0: 5, 1: 7}, {0: (0, 5), 1: (0, 9)}, None),
    ({0: 5}, {0: (0, 5), 1: (0, 9)}, "are not the topic's"),
    ({0: 6, 1: 7}, {0: (0, 5), 1: (0, 9)}, "partition 0 ends at 5"),
    ({0: 5, 1: 7}, {0: (0, 5), 1: (8, 9)}, "partition 1 starts at 8"),
])
def test_offsets_after_the_checkpoint_must_still_be_in_the_log(
        positions: dict[int, int], watermarks: dict[int, tuple[int, int]],
        why: str | None) -> None:
    refusal = offsets_refusal(positions, watermarks)
    assert (refusal is None) if why is None else (why in (refusal or ""))


def test_a_big_pool_round_trips_its_vectors_exactly(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    state = PoolState()
    vectors = rng.standard_normal((3000, 16)).astype(np.float32)
    for i, vector in enumerate(vectors):
        state.apply(LogRecord(i % 6, i, f"b{i:05d}".encode(), encode(SeekerUpdated(
            event_id=derive_event_id("big", str(i)), occurred_at=T0, user_id=f"b{i:05d}",
            opted_in_at=T0, vector=tuple(vector.tolist()), model="m", traits_hash="h",
            version=1))))
    Checkpoints(tmp_path, "m").save(state, "t", "id", {p: 500 for p in range(6)})
    loaded = Checkpoints(tmp_path, "m").load("t", "id", None, DAY)
    assert loaded is not None
    got = np.stack([s.vector for s in loaded.pool.waiting("default")])
    assert np.array_equal(got, vectors)
