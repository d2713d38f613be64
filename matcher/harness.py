"""A cycle's result as events: what the matcher publishes in one transaction.

Pure and deterministic: event ids are derived from the cycle id and the pair or user,
times come from the tick, so running a cycle again on the same snapshot yields
byte-identical ``PairMatched`` / ``SeekerUnmatched`` / ``SeekerRemoved`` /
``SeekerUpdated`` records. Only ``CycleCompleted.phase_seconds`` (measured durations)
differs between runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from matcher.core.model import MatchParams, MatchStats, Pair, Unmatched
from matcher.pool import Seeker
from matcher.snapshot import REASON_INVALID_VECTOR, CycleInput, collection_paused
from mosaic.errors import ValidationError
from streams.events import (
    CycleCompleted,
    CycleTick,
    Event,
    PairMatched,
    SeekerRemoved,
    SeekerUnmatched,
    SeekerUpdated,
    derive_event_id,
    event_ids,
    pair_key,
)
from streams.events.seekers import REMOVED_MATCHED
from streams.serde import AvroSerde, default_serde
from streams.topics import TopicCatalog

# Snapshot users whose record changed before the commit: no pair, no update from us.
REASON_LEFT_DURING_CYCLE = "left_during_cycle"
# Their partners (and both users of a pair blocked during the cycle): back in the pool.
REASON_PARTNER_CHANGED = "partner_changed"


def params_hash(params: MatchParams) -> str:
    """A digest of the parameters, to tell cycles run with different settings apart in
    ``CycleCompleted``."""
    return stable_digest(dataclasses.asdict(params))


def stable_digest(values: Mapping[str, Any]) -> str:
    """``sha256:`` + 16 hex digits of the sorted-key, compact JSON of ``values``: the same
    in every process and release (unlike ``hash()``)."""
    canonical = json.dumps(values, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()[:16]


class Phases:
    """Wall-clock seconds per named phase of a cycle (for the summary and metrics)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def measure(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - started
            self.seconds[name] = round(self.seconds.get(name, 0.0) + elapsed, 6)


# SeekerRemoved's fields that differ per user (CyclePlan.records writes them without an
# event per user; the others are the cycle's).
_REMOVED_FIELDS = ("event_id", "user_id", "version")


_Key = str | bytes | None
_R = TypeVar("_R")


def _named(names: Sequence[str], values: Sequence[Any]) -> dict[str, Any]:
    return dict(zip(names, values, strict=True))


@dataclass(frozen=True)
class CyclePlan:
    """Everything one cycle publishes; :meth:`events` gives the publishing order and
    :meth:`records` the same encoded."""

    tick: CycleTick
    pairs: tuple[PairMatched, ...]
    unmatched: tuple[SeekerUnmatched, ...]
    matched: tuple[tuple[str, int], ...]  # (user id, paired record's version), sorted
    updates: tuple[SeekerUpdated, ...]
    summary: CycleCompleted
    skipped_updates: tuple[str, ...] = field(default=())

    @property
    def removals(self) -> tuple[SeekerRemoved, ...]:
        """A ``SeekerRemoved`` per matched user (built on each call)."""
        shared = self._removal_fields()
        return tuple(SeekerRemoved(**shared, **_named(_REMOVED_FIELDS, values))
                     for values in self._removal_values())

    def _removal_fields(self) -> dict[str, Any]:
        tick = self.tick
        return {"occurred_at": tick.occurred_at, "pool": tick.pool, "cycle_id": tick.cycle_id,
                "reason": f"{REMOVED_MATCHED}:{tick.cycle_id}"}

    def _removal_values(self) -> Iterator[tuple[str, str, int]]:
        # The version of the record that was paired: a newer opt-in outranks this removal.
        derive = event_ids("SeekerRemoved", self.tick.cycle_id)
        for user, version in self.matched:
            yield derive(user), user, version

    def events(self) -> list[Event]:
        """Outcomes first and the summary last (its presence means the rest is there)."""
        return [*self.pairs, *self.unmatched, *self.removals, *self.updates, self.summary]

    @collection_paused()
    def records(self, catalog: TopicCatalog, make: Callable[[str, _Key, bytes], _R],
                serde: AvroSerde | None = None) -> list[_R]:
        """``make(topic, key, value)`` of each of :meth:`events`, in that order, byte for
        byte as ``encode_event`` writes them (``make=Encoded`` gives its records); the
        removals (a million at a million seekers) are written from their values, without
        an event each."""
        codec = serde or default_serde()
        out = [make(catalog.for_event(e).name, e.key(), codec.encode(e))
               for e in (*self.pairs, *self.unmatched)]
        removed = codec.values_writer(SeekerRemoved, _REMOVED_FIELDS, self._removal_fields())
        seekers = catalog.for_event(SeekerRemoved).name
        out += [make(seekers, values[1], removed(values)) for values in self._removal_values()]
        out += [make(catalog.for_event(e).name, e.key(), codec.encode(e))
                for e in (*self.updates, self.summary)]
        return out

    def without_updates_for(self, user_ids: Collection[str]) -> CyclePlan:
        """Drop pool updates for users whose record changed after the snapshot (an
        opt-out must not be overwritten by our ``missed_cycles + 1``)."""
        keep = tuple(u for u in self.updates if u.user_id not in user_ids)
        skipped = tuple(sorted(u.user_id for u in self.updates if u.user_id in user_ids))
        return dataclasses.replace(self, updates=keep, skipped_updates=skipped)


@dataclass(frozen=True)
class CycleOutcome:
    """What the core decided for a cycle (its ``MatchResult`` without statistics)."""

    pairs: tuple[Pair, ...] = ()
    unmatched: tuple[Unmatched, ...] = ()
    stats: MatchStats | None = field(default=None, compare=False)
    """The core's statistics (candidate recall, widening), for the report and metrics."""


@collection_paused()
def plan_cycle(tick: CycleTick, cycle: CycleInput, outcome: CycleOutcome, *,
               snapshot_offsets: Mapping[int, int], params_digest: str,
               phase_seconds: Mapping[str, float], left: Collection[str] = (),
               withdrawn: Collection[str] = ()) -> CyclePlan:
    """The events of one cycle (see the module docstring for the determinism rules).

    ``left``: users whose seekers record changed after the snapshot (opted out, paused,
    re-embedded): they get nothing from this cycle (no pair, no pool update) and are
    counted as :data:`REASON_LEFT_DURING_CYCLE`. ``withdrawn``: pair keys that must not
    be published (a block recorded after the snapshot). A pair with a left user or a
    withdrawn pair is dropped; its remaining users go back to the pool as leftovers
    with :data:`REASON_PARTNER_CHANGED` (``missed_cycles + 1``: priority next cycle).
    Users whose latest record did not decode are reported but get no pool update.
    """
    _check_covers(cycle, outcome)
    gone = set(left)
    by_id = {s.user_id: s for s in (*cycle.seekers, *cycle.invalid)}
    kept_pairs, orphans = [], []
    for pair in outcome.pairs:
        key = pair_key(pair.user_a, pair.user_b)
        if key in withdrawn or pair.user_a in gone or pair.user_b in gone:
            orphans += [u for u in (pair.user_a, pair.user_b) if u not in gone]
        else:
            kept_pairs.append((pair, key))
    leftovers = [(by_id[u.user_id], u.reason.value) for u in outcome.unmatched]
    leftovers += [(s, REASON_INVALID_VECTOR) for s in cycle.invalid]
    leftovers += [(by_id[u], REASON_PARTNER_CHANGED) for u in orphans]
    leftovers = [(s, r) for s, r in leftovers if s.user_id not in gone]
    leftovers.sort(key=lambda item: item[0].user_id)
    derive = event_ids("PairMatched", tick.cycle_id)
    pairs = tuple(sorted((_pair_event(tick, p, key, derive(key), by_id) for p, key in kept_pairs),
                         key=lambda e: e.pair_key))
    paired = {u for p in pairs for u in (p.user_a, p.user_b)}
    matched = [(u, by_id[u].record.version)  # the snapshot's order: sorted already, mostly
               for u in sorted(u for u in cycle.snapshot.user_ids if u in paired)]
    summary = _summary(tick, pairs, leftovers, offsets=snapshot_offsets,
                       digest=params_digest, phase_seconds=phase_seconds, seekers=len(by_id),
                       left=len(gone & by_id.keys()),
                       recall=outcome.stats.candidate_recall if outcome.stats else None)
    return CyclePlan(
        tick=tick,
        pairs=pairs,
        unmatched=tuple(_unmatched_event(tick, s, reason) for s, reason in leftovers),
        matched=tuple(matched),
        updates=tuple(_missed_event(tick, s) for s, _ in leftovers if s.poison is None),
        summary=summary,
        skipped_updates=tuple(sorted(gone & by_id.keys())),
    )


def _check_covers(cycle: CycleInput, outcome: CycleOutcome) -> None:
    """Every snapshot user is paired or left out exactly once; anything else is a core
    bug, and publishing it would lose or duplicate users."""
    seen = [u for p in outcome.pairs for u in (p.user_a, p.user_b)]
    seen += [u.user_id for u in outcome.unmatched]
    ids = cycle.snapshot.user_ids
    distinct = set(seen)
    if len(ids) == len(seen) == len(distinct) and distinct == set(ids):
        return  # the same ids, each once (a set check: sorting a million ids is slower)
    if sorted(seen) != sorted(ids):
        raise ValidationError(f"core result covers {len(seen)} users ({len(set(seen))} "
                              f"distinct), the snapshot has {len(cycle.snapshot)}")


def _pair_event(tick: CycleTick, pair: Pair, key: str, event_id: str,
                by_id: Mapping[str, Seeker]) -> PairMatched:
    user_a, user_b = ((pair.user_a, pair.user_b) if pair.user_a < pair.user_b
                      else (pair.user_b, pair.user_a))
    # The records' versions let post-match order "matched" after the opt-in it ends, even
    # when that opt-in came after the tick time (before the snapshot).
    return PairMatched(event_id=event_id,
                       occurred_at=tick.occurred_at, cycle_id=tick.cycle_id, pair_key=key,
                       user_a=user_a, user_b=user_b, score=float(pair.score),
                       similarity=float(pair.similarity), pool=tick.pool,
                       version_a=by_id[user_a].record.version,
                       version_b=by_id[user_b].record.version)


def _unmatched_event(tick: CycleTick, seeker: Seeker, reason: str) -> SeekerUnmatched:
    user = seeker.user_id
    return SeekerUnmatched(event_id=derive_event_id("SeekerUnmatched", tick.cycle_id, user),
                           occurred_at=tick.occurred_at, cycle_id=tick.cycle_id, user_id=user,
                           reason=reason, missed_cycles=seeker.record.missed_cycles + 1,
                           pool=tick.pool, version=seeker.record.version)


def _missed_event(tick: CycleTick, seeker: Seeker) -> SeekerUpdated:
    # Same version as the record it copies, marked with the cycle: readers apply it only
    # while the user still waits with that version (never over a newer opt-out).
    user = seeker.user_id
    return dataclasses.replace(  # one event, one check of its vector (seeker.event() is two)
        seeker.record, vector=tuple(seeker.vector.tolist()),
        event_id=derive_event_id("SeekerUpdated", tick.cycle_id, user),
        occurred_at=tick.occurred_at, missed_cycles=seeker.record.missed_cycles + 1,
        cycle_id=tick.cycle_id)


def _summary(tick: CycleTick, pairs: Sequence[PairMatched],
             leftovers: Sequence[tuple[Seeker, str]], *, offsets: Mapping[int, int],
             digest: str, phase_seconds: Mapping[str, float], seekers: int, left: int = 0,
             recall: float | None = None) -> CycleCompleted:
    scores = [p.score for p in pairs]
    reasons = Counter(reason for _, reason in leftovers)
    if left:
        reasons[REASON_LEFT_DURING_CYCLE] = left
    return CycleCompleted(
        event_id=derive_event_id("CycleCompleted", tick.cycle_id),
        occurred_at=tick.occurred_at, cycle_id=tick.cycle_id, pool=tick.pool,
        seekers=seekers, pairs=len(pairs), unmatched_by_reason=dict(sorted(reasons.items())),
        score_mean=sum(scores) / len(scores) if scores else None,
        score_min=min(scores) if scores else None,
        score_max=max(scores) if scores else None,
        snapshot_offsets=dict(sorted(offsets.items())), params_hash=digest,
        phase_seconds=dict(phase_seconds), candidate_recall=recall)
