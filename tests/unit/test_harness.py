"""The matcher harness without Kafka: pool folding, snapshots, constraints, history,
parameter hashing and the events a cycle publishes."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import numpy as np
import pytest

from matcher.core.model import MatchParams, Pair, RecentPairing, Unmatched, UnmatchedReason
from matcher.harness import CycleOutcome, CyclePlan, params_hash, plan_cycle, stable_digest
from matcher.pool import CycleHistory, LogRecord, PoolState, build_constraints
from matcher.snapshot import REASON_INVALID_VECTOR, build_snapshot
from mosaic.errors import ValidationError
from mosaic.settings import MatcherSettings, Settings
from producers.ticker import make_tick
from streams.events import (
    CycleCompleted,
    Event,
    PairMatched,
    SeekerRemoved,
    SeekerUnmatched,
    SeekerUpdated,
    derive_event_id,
    pair_key,
)
from streams.kafka import Encoded, encode_event
from streams.serde import MAGIC, default_serde, encode, encode_record
from streams.topics import build_catalog
from tests.support import T0

pytestmark = pytest.mark.unit

TICK = make_tick("default", T0, 3600)


def seeker(user: str, vector: tuple[float, ...] = (1.0, 0.0), **fields: object
           ) -> SeekerUpdated:
    values: dict[str, object] = {
        "event_id": derive_event_id("t", user, str(fields)), "occurred_at": T0,
        "user_id": user, "opted_in_at": T0 - timedelta(hours=1), "vector": vector,
        "model": "m", "traits_hash": "h"}
    values.update(fields)
    return SeekerUpdated(**values)  # type: ignore[arg-type]


def removed(user: str) -> SeekerRemoved:
    return SeekerRemoved(event_id=derive_event_id("r", user), occurred_at=T0, user_id=user,
                         reason="opted_out")


def records(*items: Event | tuple[str, None], partition: int = 0) -> list[LogRecord]:
    out = []
    for offset, item in enumerate(items):
        if isinstance(item, tuple):
            out.append(LogRecord(partition, offset, item[0].encode(), None))
        else:
            key = item.key()
            assert isinstance(key, str)
            out.append(LogRecord(partition, offset, key.encode(), encode(item), 1000 + offset))
    return out


def folded(*items: Event | tuple[str, None]) -> PoolState:
    state = PoolState()
    state.apply_all(records(*items))
    return state


# -- folding the seekers changelog ------------------------------------------------------

FOLD_CASES = [
    ("latest record per user wins", [seeker("a", missed_cycles=0),
                                     seeker("a", missed_cycles=4)], {"a": 4}),
    ("SeekerRemoved drops the user", [seeker("a"), seeker("b"), removed("a")], {"b": 0}),
    ("a tombstone drops the user", [seeker("a"), seeker("b"), ("b", None)], {"a": 0}),
    ("opting in again after removal", [seeker("a"), removed("a"), seeker("a", missed_cycles=1)],
     {"a": 1}),
    ("paused users are not waiting", [seeker("a"), seeker("b", status="paused")], {"a": 0}),
    ("other pools are not this pool", [seeker("a"), seeker("b", pool="fr")], {"a": 0}),
    ("removal of an unknown user is harmless", [removed("zz"), seeker("a")], {"a": 0}),
]


@pytest.mark.parametrize(("name", "items", "waiting"), FOLD_CASES)
def test_fold(name: str, items: list[Event | tuple[str, None]], waiting: dict[str, int]
              ) -> None:
    got = {s.user_id: s.record.missed_cycles for s in folded(*items).waiting("default")}
    assert got == waiting, name


def test_fold_counts_bad_records_and_sets_their_user_aside() -> None:
    state = PoolState()
    state.apply_all([LogRecord(0, 0, b"x", b"garbage"), *records(seeker("a"))[0:1]])
    # The undecodable record's user stays visible (to be reported), but never usable.
    assert [(s.user_id, s.poison is None) for s in state.waiting("default")] == \
        [("a", True), ("x", False)]
    assert state.bad_records == 1
    assert build_snapshot(state.waiting("default"), T0).snapshot.user_ids == ("a",)


def test_waiting_is_sorted_and_keeps_the_exact_record() -> None:
    original = seeker("b", vector=(0.1, -0.7, 3.5), blocked_user_ids=("a",))
    state = folded(seeker("c"), original, seeker("a"))
    assert [s.user_id for s in state.waiting("default")] == ["a", "b", "c"]
    b = state.waiting("default")[1]
    assert b.vector.dtype == np.float32
    assert encode(b.event()) == encode(original)  # float32 round-trips exactly


def test_changed_since_the_snapshot() -> None:
    state = folded(seeker("a"), seeker("b"), seeker("c"))
    ends = {0: 3}
    state.apply_all(records(seeker("x"), seeker("x"), seeker("x"), removed("a"),
                            seeker("b", status="paused")))
    assert state.changed_since(["a", "b", "c"], ends) == {"a", "b"}


# -- snapshot ---------------------------------------------------------------------------

def test_snapshot_rows_waits_and_missed_cycles_come_from_the_records() -> None:
    state = folded(seeker("b", opted_in_at=T0 - timedelta(days=2), missed_cycles=3),
                   seeker("a", opted_in_at=T0 + timedelta(minutes=5)))
    cycle = build_snapshot(state.waiting("default"), T0)
    snap = cycle.snapshot
    assert snap.user_ids == ("a", "b")
    assert snap.wait_seconds.tolist() == [0.0, 2 * 86400.0]  # never negative
    assert snap.missed_cycles is not None and snap.missed_cycles.tolist() == [0, 3]
    assert snap.vectors.shape == (2, 2) and cycle.invalid == ()


def test_snapshot_sets_aside_unusable_vectors() -> None:
    state = folded(seeker("a"), seeker("b", vector=(0.0, 1.0)), seeker("z", vector=(0.0, 0.0)),
                   seeker("w", vector=(1.0, 2.0, 3.0)))
    cycle = build_snapshot(state.waiting("default"), T0)
    assert cycle.snapshot.user_ids == ("a", "b")
    assert sorted(s.user_id for s in cycle.invalid) == ["w", "z"]


def test_snapshot_sets_aside_another_model_of_the_same_dimension() -> None:
    """A model swap of the same size must not mix two embedding spaces: the pool's space
    is the most common (model, dimension), whatever the dimension says."""
    state = folded(seeker("a"), seeker("b", vector=(0.0, 1.0)),
                   seeker("n", vector=(0.6, 0.8), model="new-model"))
    cycle = build_snapshot(state.waiting("default"), T0)
    assert cycle.snapshot.user_ids == ("a", "b")
    assert [s.user_id for s in cycle.invalid] == ["n"]


def test_empty_snapshot() -> None:
    cycle = build_snapshot([], T0)
    assert len(cycle.snapshot) == 0 and cycle.snapshot.vectors.shape[0] == 0


# -- constraints ------------------------------------------------------------------------

def test_constraints_merge_store_records_and_history_inside_the_pool() -> None:
    state = folded(seeker("a", blocked_user_ids=("c", "outsider")),
                   seeker("b", recent_partner_ids=("a",)), seeker("c"))
    members = state.waiting("default")
    constraints = build_constraints(
        members, blocked={("b", "c"), ("c", "gone")},
        recent=[RecentPairing("a", "c", 2), RecentPairing("a", "nobody", 1)])
    assert constraints.blocks == (("a", "c"), ("b", "c"))
    assert constraints.recent == (RecentPairing("a", "c", 2), RecentPairing("b", "a", 1))


def test_constraints_are_the_same_whatever_the_input_order() -> None:
    state = folded(seeker("a"), seeker("b"), seeker("c"))
    members = state.waiting("default")
    one = build_constraints(members, [("a", "b"), ("b", "c")], [RecentPairing("a", "c", 1)])
    two = build_constraints(members[::-1], [("b", "c"), ("a", "b")],
                            (RecentPairing("a", "c", 1),))
    assert one == two


# -- cycle history ----------------------------------------------------------------------

def summary(cycle: str, pool: str = "default") -> CycleCompleted:
    return CycleCompleted(event_id=derive_event_id("c", cycle), occurred_at=T0,
                          cycle_id=cycle, pairs=1, pool=pool)


def matched(cycle: str, a: str, b: str, pool: str = "default") -> PairMatched:
    return PairMatched(event_id=derive_event_id("p", cycle, a, b), occurred_at=T0,
                       cycle_id=cycle, pair_key=pair_key(a, b), user_a=min(a, b),
                       user_b=max(a, b), score=1.0, similarity=0.9, pool=pool)


def test_history_keeps_the_last_cycles_of_each_pool() -> None:
    history = CycleHistory(history_cycles=2)
    for record in records(summary("c1"), summary("c2"), summary("f1", "fr"), summary("c3")):
        history.apply_cycle(record)
    unmatched = SeekerUnmatched(event_id=derive_event_id("u"), occurred_at=T0, cycle_id="c3",
                                user_id="q", reason="odd_one_out", missed_cycles=1)
    for record in records(matched("c1", "a", "b"), matched("c2", "a", "c"),
                          matched("c3", "d", "e"), matched("f1", "a", "b", "fr"), unmatched,
                          matched("c4", "x", "y")):
        history.apply_pair(record)
    assert all(history.is_completed(c) for c in ("c1", "c2", "c3", "f1"))
    assert not history.is_completed("c4")
    assert history.recent("default") == (RecentPairing("a", "c", 2),
                                         RecentPairing("d", "e", 1))
    assert history.recent("fr") == (RecentPairing("a", "b", 1),)
    assert history.oldest_recent_timestamp_ms() == 1001


def test_history_ignores_a_repeated_summary() -> None:
    history = CycleHistory(history_cycles=2)
    for record in records(summary("c1"), summary("c2"), summary("c1")):
        history.apply_cycle(record)
    history.apply_pair(records(matched("c1", "a", "b"))[0])
    assert history.recent("default") == (RecentPairing("a", "b", 2),)


def test_history_zero_cycles_remembers_only_completion() -> None:
    history = CycleHistory(history_cycles=0)
    history.apply_cycle(records(summary("c1"))[0])
    history.apply_pair(records(matched("c1", "a", "b"))[0])
    assert history.is_completed("c1") and history.recent("default") == ()
    assert history.oldest_recent_timestamp_ms() is None


# -- parameters -------------------------------------------------------------------------

def test_params_hash_is_stable_and_sensitive() -> None:
    params = MatchParams.from_settings(MatcherSettings())
    assert params_hash(params) == params_hash(MatchParams.from_settings(MatcherSettings()))
    assert params_hash(params) == stable_digest(dataclasses.asdict(params))
    # Pinned: the digest must not change across processes or releases.
    assert stable_digest({"b": [0.5, None], "a": 1, "c": True}) == "sha256:6222c79d085ca1a2"
    assert stable_digest({"a": 1}) != stable_digest({"a": 1.5})
    changed = [dataclasses.replace(params, wait_boost=0.2),
               dataclasses.replace(params, min_similarity=0.3),
               dataclasses.replace(params, history_cycles=1),
               dataclasses.replace(params, standardize=True)]
    assert len({params_hash(p) for p in [params, *changed]}) == 5


# -- the cycle's events -----------------------------------------------------------------

def _plan_inputs() -> tuple[PoolState, CycleOutcome]:
    state = folded(seeker("a", missed_cycles=2), seeker("b"), seeker("c", missed_cycles=1),
                   seeker("z", vector=(0.0, 0.0)))
    outcome = CycleOutcome(
        pairs=(Pair("a", "b", 1.05, 0.95),),
        unmatched=(Unmatched("c", UnmatchedReason.ODD_ONE_OUT, 3600.0, 1),))
    return state, outcome


def _plan() -> tuple[PoolState, CyclePlan]:
    state, outcome = _plan_inputs()
    cycle = build_snapshot(state.waiting("default"), TICK.occurred_at)
    return state, plan_cycle(TICK, cycle, outcome, snapshot_offsets={1: 5, 0: 3},
                             params_digest="sha256:x", phase_seconds={"match": 0.5})


def test_plan_publishes_pairs_leftovers_pool_updates_and_a_summary() -> None:
    _, plan = _plan()
    events = plan.events()
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["PairMatched", "SeekerUnmatched", "SeekerUnmatched", "SeekerRemoved",
                     "SeekerRemoved", "SeekerUpdated", "SeekerUpdated", "CycleCompleted"]
    (pair,), (unmatched_c, unmatched_z) = plan.pairs, plan.unmatched
    removed_a, (update_c, _), done = plan.removals[0], plan.updates, plan.summary
    assert events == [pair, unmatched_c, unmatched_z, *plan.removals, *plan.updates, done]
    assert (pair.key(), pair.cycle_id, pair.occurred_at) == ("a|b", TICK.cycle_id, T0)
    assert pair.event_id == derive_event_id("PairMatched", TICK.cycle_id, "a|b")
    assert (unmatched_c.user_id, unmatched_c.reason, unmatched_c.missed_cycles) == \
           ("c", "odd_one_out", 2)
    assert (unmatched_z.user_id, unmatched_z.reason) == ("z", REASON_INVALID_VECTOR)
    assert removed_a.reason == f"matched:{TICK.cycle_id}" and removed_a.cycle_id == TICK.cycle_id
    assert (update_c.user_id, update_c.missed_cycles, update_c.occurred_at) == ("c", 2, T0)
    assert update_c.vector == (1.0, 0.0)
    assert (done.pairs, done.seekers, done.unmatched_by_reason) == \
           (1, 4, {"invalid_vector": 1, "odd_one_out": 1})
    assert (done.score_mean, done.score_min, done.score_max) == (1.05, 1.05, 1.05)
    assert done.snapshot_offsets == {0: 3, 1: 5} and done.params_hash == "sha256:x"
    assert done.event_id == derive_event_id("CycleCompleted", TICK.cycle_id)


def test_outcomes_carry_the_versions_of_the_records_they_end() -> None:
    """Post-match orders each user's state write after the opt-in behind the record."""
    state = folded(seeker("a", version=11), seeker("b", version=22), seeker("c", version=33))
    outcome = CycleOutcome(pairs=(Pair("a", "b", 1.0, 0.9),),
                           unmatched=(Unmatched("c", UnmatchedReason.ODD_ONE_OUT, 60.0, 0),))
    cycle = build_snapshot(state.waiting("default"), TICK.occurred_at)
    plan = plan_cycle(TICK, cycle, outcome, snapshot_offsets={}, params_digest="sha256:x",
                      phase_seconds={})
    (pair,), (unmatched,) = plan.pairs, plan.unmatched
    assert (pair.version_a, pair.version_b, unmatched.version) == (11, 22, 33)


def test_plan_is_byte_identical_on_a_rerun() -> None:
    _, one = _plan()
    _, two = _plan()
    assert [encode(e) for e in one.events()] == [encode(e) for e in two.events()]


@pytest.mark.parametrize(("left", "withdrawn"), [((), ()), (("c",), ()), ((), ("a|b",))])
def test_plan_records_are_its_events_encoded(left: tuple[str, ...],
                                             withdrawn: tuple[str, ...]) -> None:
    """What the service produces (``plan.records``: removals written from their values)
    is byte for byte ``encode_event`` of each event, in the same order."""
    state, outcome = _plan_inputs()
    cycle = build_snapshot(state.waiting("default"), TICK.occurred_at)
    plan = plan_cycle(TICK, cycle, outcome, snapshot_offsets={0: 3}, params_digest="sha256:x",
                      phase_seconds={"match": 0.5}, left=left, withdrawn=withdrawn)
    catalog = build_catalog(Settings())
    expected = [encode_event(catalog.for_event(e), e) for e in plan.events()]
    assert plan.records(catalog, Encoded) == expected
    assert len(plan.removals) == (0 if withdrawn else 2)


def test_plan_does_not_re_add_users_who_changed_meanwhile() -> None:
    _, plan = _plan()
    trimmed = plan.without_updates_for({"c"})
    assert [u.user_id for u in trimmed.updates] == ["z"]
    assert trimmed.skipped_updates == ("c",)
    assert len(trimmed.unmatched) == 2  # the cycle's outcome itself is unchanged


def test_the_cycle_summary_carries_the_measured_candidate_recall() -> None:
    from matcher.core import ExactSearch, match_pool
    from matcher.synthetic import clustered_pool

    result = match_pool(clustered_pool(40, 8, seed=1), params=MatchParams(),
                        search=ExactSearch())
    stats = dataclasses.replace(result.stats, candidate_recall=0.97)
    plan = plan_cycle(TICK, build_snapshot([], T0), CycleOutcome(stats=stats),
                      snapshot_offsets={}, params_digest="", phase_seconds={})
    assert plan.summary.candidate_recall == 0.97
    decoded = default_serde().decode(encode(plan.summary))
    assert getattr(decoded, "candidate_recall", None) == 0.97
    exact = plan_cycle(TICK, build_snapshot([], T0), CycleOutcome(), snapshot_offsets={},
                       params_digest="", phase_seconds={})
    assert exact.summary.candidate_recall is None


def test_empty_pool_still_completes_the_cycle() -> None:
    plan = plan_cycle(TICK, build_snapshot([], T0), CycleOutcome(), snapshot_offsets={},
                      params_digest="", phase_seconds={})
    assert [type(e).__name__ for e in plan.events()] == ["CycleCompleted"]
    assert plan.summary.score_mean is None and plan.summary.seekers == 0


@pytest.mark.parametrize(
    ("name", "outcome"),
    [
        ("a user is missing", CycleOutcome(pairs=(Pair("a", "b", 1.0, 0.9),))),
        ("a user is paired twice", CycleOutcome(
            pairs=(Pair("a", "b", 1.0, 0.9), Pair("a", "c", 1.0, 0.9)))),
        ("a stranger appears", CycleOutcome(
            pairs=(Pair("a", "b", 1.0, 0.9),),
            unmatched=(Unmatched("q", UnmatchedReason.ODD_ONE_OUT, 0.0, 0),
                       Unmatched("c", UnmatchedReason.ODD_ONE_OUT, 0.0, 0)))),
    ],
)
def test_plan_refuses_a_result_that_does_not_cover_the_pool(name: str, outcome: CycleOutcome
                                                             ) -> None:
    state, _ = _plan_inputs()
    cycle = build_snapshot(state.waiting("default"), T0)
    with pytest.raises(ValidationError):
        plan_cycle(TICK, cycle, outcome, snapshot_offsets={}, params_digest="",
                   phase_seconds={})


def test_fold_sets_aside_an_invalid_seeker_record() -> None:
    good = seeker("a")
    entry = default_serde().registry.current("SeekerUpdated")
    bad_id = MAGIC + entry.fingerprint + encode_record(entry, {**good.to_dict(), "event_id": "x"})
    state = PoolState()
    state.apply_all([LogRecord(0, 0, b"b", bad_id), *records(good)])
    usable = [s.user_id for s in state.waiting("default") if s.poison is None]
    assert usable == ["a"] and state.bad_records == 1
