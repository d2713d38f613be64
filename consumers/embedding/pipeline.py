"""The embedding agent's work on one batch of opt-in topic records (no Kafka client here).

Per batch, in this order:

1. decode; undecodable or invalid records (wrong event type, key != user id, bad ids)
   go to the dead-letter topic with their coordinates;
2. blocks are recorded in the block store;
3. opt-ins and opt-outs get their versions in log order (consumers/request_order.py; a
   request ordered before is ``stale`` and skipped); when a version had to move past the
   request's own time, the ingress' user_state write of it may have lost to an earlier
   request's, so the request's state is written again at its version;
4. per user only the LAST opt-in/opt-out of the batch counts (records of one key share
   a partition, so batch order is offset order): an opt-out after an opt-in wins;
5. opt-outs: delete from the index, erase the cached traits, publish ``SeekerRemoved``;
6. opt-ins, in one ``index_users`` call (one embed call for the whole batch): publish
   ``SeekerUpdated`` with the vector, then write user_state ``waiting``. No insights /
   malformed insights are outcomes, not dead letters: the user is taken out of the pool
   (index delete + ``SeekerRemoved(embedding_failed)``) and gets ``profile_failed``.

Every stage is idempotent and retried on outages by :class:`StageRetry`, so the caller
acknowledges the batch only when this returns. Event ids derive from the source event,
and user_state writes carry the request's version, so a replay changes nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Protocol

from consumers.blocks import BlockStore, sorted_pair
from consumers.embedding.metrics import BATCH_SIZE, count_events, timed
from consumers.embedding.outputs import DeadLetters, SeekerSink, StageRetry
from consumers.embedding.traits import PrefetchingTraitsService
from consumers.request_order import RequestVersions, order, request_millis
from mosaic.errors import ExternalServiceError, SerializationError, ValidationError
from mosaic.user_state import (
    DELAYED_DELAY,
    INSIGHTS_UNREADABLE,
    NO_INSIGHTS,
    PROFILE_UNAVAILABLE,
    STAGE_DELAY,
    UserState,
    UserStateWriter,
)
from profiles.errors import MalformedInsightError, NoInsightsError
from profiles.index import check_id
from profiles.insights import check_user_id
from profiles.pipeline import IndexedProfile, IndexRequest, Outcome, ProfileIndexer
from streams.deadletter import RawRecord
from streams.events import (
    BlockRequested,
    Event,
    OptInRequested,
    OptOutRequested,
    SeekerRemoved,
    SeekerUpdated,
    derive_event_id,
    from_millis,
)
from streams.events.seekers import REMOVED_EMBEDDING_FAILED, REMOVED_OPTED_OUT
from streams.serde import AvroSerde, default_serde

log = logging.getLogger(__name__)

# user_state writes use the request's version (ms) plus STAGE_DELAY as the Cassandra write
# time: replays change nothing, they follow the ingress's own projection of the same
# request, and stay before the user's next request (mosaic/user_state.py).
STATE_DELAY = STAGE_DELAY
PROFILE_ERRORS = (NoInsightsError, MalformedInsightError)
# What status may show for each (user_state.REASON_MESSAGES); the raw error is kept in detail.
PROFILE_CODES = {NoInsightsError: NO_INSIGHTS, MalformedInsightError: INSIGHTS_UNREADABLE}


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _named(event: Event) -> tuple[str, ...]:
    """The users an opt-in topic event names."""
    if isinstance(event, BlockRequested):
        return event.user_id, event.blocked_user_id
    if isinstance(event, OptInRequested | OptOutRequested):
        return (event.user_id,)
    return ()


class Erasures(Protocol):
    """When users were erased (:class:`mosaic.erasures.CassandraErasures`)."""

    def erased_at(self, user_ids: Iterable[str]) -> dict[str, datetime]: ...


@dataclass(frozen=True)
class Request:
    """An opt-in or opt-out with the version the log order gave it."""

    record: RawRecord
    event: OptInRequested | OptOutRequested
    version: int

    def at(self, delay: timedelta = timedelta(0)) -> datetime:
        """The user_state write time of this request's stage ``delay`` after it."""
        return from_millis(self.version) + delay

    @property
    def moved(self) -> bool:
        """Ordered after a request whose host's clock was ahead of this one's."""
        return self.version != request_millis(self.event)


@dataclass
class BatchReport:
    """(event type, outcome) per record, in batch order of decision."""

    outcomes: list[tuple[str, str]] = field(default_factory=list)

    def add(self, kind: str, outcome: str) -> None:
        self.outcomes.append((kind, outcome))

    def count(self, outcome: str) -> int:
        return sum(1 for _, o in self.outcomes if o == outcome)


class EmbeddingPipeline:
    def __init__(self, indexer: ProfileIndexer, blocks: BlockStore, states: UserStateWriter,
                 seekers: SeekerSink, dead_letters: DeadLetters, *, retry: StageRetry,
                 serde: AvroSerde | None = None,
                 clock: Callable[[], datetime] = _utc_now,
                 test_pause_after_publish_seconds: float = 0.0,
                 erasures: Erasures | None = None, versions: RequestVersions,
                 stale_request_seconds: float = 120.0) -> None:
        self.indexer, self.blocks, self.states = indexer, blocks, states
        self.erasures, self.versions = erasures, versions
        self._stale_ms = round(stale_request_seconds * 1000)
        self.seekers, self.dead_letters, self.retry = seekers, dead_letters, retry
        self._serde = serde or default_serde()
        self._clock = clock
        self._test_pause = test_pause_after_publish_seconds

    def handle_batch(self, records: Sequence[RawRecord]) -> BatchReport:
        report = BatchReport()
        BATCH_SIZE.observe(len(records))
        decoded = [d for d in (self._decode(r, report) for r in records) if d is not None]
        decoded = self._not_erased(decoded, report)
        self._blocks([(r, e) for r, e in decoded if isinstance(e, BlockRequested)], report)
        latest: dict[str, Request] = {}
        for request in self._order(decoded, report):
            replaced = latest.pop(request.event.user_id, None)
            if replaced is not None:
                report.add(replaced.event.schema_name, "superseded")
            latest[request.event.user_id] = request
        now = self._clock()
        self._opt_outs([r for r in latest.values() if isinstance(r.event, OptOutRequested)],
                       now, report)
        self._opt_ins([r for r in latest.values() if isinstance(r.event, OptInRequested)],
                      now, report)
        count_events(report.outcomes)
        return report

    # -- decoding and dead letters -------------------------------------------------------

    def _decode(self, record: RawRecord, report: BatchReport
                ) -> tuple[RawRecord, Event] | None:
        try:
            event = self._serde.decode(record.value)
            _check(event, record)
        except (SerializationError, ValidationError) as exc:
            self._dead_letter(record, exc, self._kind(record), report)
            return None
        return record, event

    def _kind(self, record: RawRecord) -> str:
        try:
            return self._serde.schema_name(record.value)
        except SerializationError:
            return "undecodable"

    def _dead_letter(self, record: RawRecord, error: BaseException, kind: str,
                     report: BatchReport) -> None:
        self.retry.run("deadletter", lambda: self.dead_letters.publish(record, error))
        report.add(kind, "dead_lettered")

    def _not_erased(self, decoded: list[tuple[RawRecord, Event]], report: BatchReport
                    ) -> list[tuple[RawRecord, Event]]:
        """Without the records naming an erased user written before the erasure (a
        replay): such a record must not bring them back (mosaic/erasures.py)."""
        erasures = self.erasures
        named = {u for _, e in decoded for u in _named(e)}
        if erasures is None or not named:
            return decoded
        erased = self.retry.run("erasures", lambda: erasures.erased_at(named))
        kept = []
        for record, event in decoded:
            if any(u in erased and event.occurred_at <= erased[u] for u in _named(event)):
                report.add(event.schema_name, "erased")
            else:
                kept.append((record, event))
        return kept

    # -- the order of each user's requests ------------------------------------------------

    def _order(self, decoded: list[tuple[RawRecord, Event]], report: BatchReport
               ) -> list[Request]:
        """The opt-ins and opt-outs with their versions, in log order, without the stale
        ones; each user's last request stored before anything is published, so a batch
        retried after a crash gets the same versions."""
        items = [(r, e) for r, e in decoded if isinstance(e, OptInRequested | OptOutRequested)]
        if not items:
            return []
        users = {e.user_id for _, e in items}
        last = self.retry.run("versions", lambda: self.versions.last(users))
        versions, changed = order(items, last, self._stale_ms)
        if changed:
            self.retry.run("versions", lambda: self.versions.record(changed))
        ordered = []
        for (record, event), version in zip(items, versions, strict=True):
            if version is None:
                report.add(event.schema_name, "stale")
            else:
                ordered.append(Request(record, event, version))
        return ordered

    def _restate(self, moved: list[Request]) -> None:
        """The requests' own states again, at their versions (see the module doc, 3)."""
        for request in moved:
            event = request.event
            if isinstance(event, OptInRequested):
                state = UserState(event.user_id, "preparing_profile", pool=event.pool,
                                  opted_in_at=event.opted_in_at, updated_at=request.at())
            else:
                state = UserState(event.user_id, "opted_out", pool=event.pool,
                                  updated_at=request.at())
            self.retry.run("state", partial(self.states.requested, state))

    # -- blocks ----------------------------------------------------------------------------

    def _blocks(self, items: list[tuple[RawRecord, BlockRequested]], report: BatchReport
                ) -> None:
        for _, event in items:
            self.retry.run("blocks", partial(self.blocks.add, event.user_id,
                                             event.blocked_user_id, event.occurred_at))
            report.add(event.schema_name, "blocked")

    # -- opt-outs --------------------------------------------------------------------------

    def _opt_outs(self, items: list[Request], now: datetime, report: BatchReport) -> None:
        if not items:
            return
        ids = [r.event.user_id for r in items]
        self.retry.run("index", lambda: self.indexer.index.delete(ids))
        self.retry.run("traits", lambda: self._erase_traits(ids))
        removals = [_removed(r, REMOVED_OPTED_OUT, now) for r in items]
        self.retry.run("publish", lambda: self.seekers.publish(removals))
        self._restate([r for r in items if r.moved])
        for request in items:
            report.add(request.event.schema_name, "removed")

    def _erase_traits(self, user_ids: Sequence[str]) -> None:
        for user_id in user_ids:
            self.indexer.traits.cache.invalidate(user_id)

    # -- opt-ins ---------------------------------------------------------------------------

    def _opt_ins(self, items: list[Request], now: datetime, report: BatchReport) -> None:
        if not items:
            return
        self._restate([r for r in items if r.moved])
        events = [r.event for r in items if isinstance(r.event, OptInRequested)]
        outcomes = self.retry.run("index", lambda: self._index(events),
                                  on_retry=self._delay_notice(items))
        done: list[tuple[Request, IndexedProfile]] = []
        failed: list[tuple[Request, ValidationError]] = []
        for request, outcome in zip(items, outcomes, strict=True):
            if isinstance(outcome, IndexedProfile):
                done.append((request, outcome))
            elif isinstance(outcome, PROFILE_ERRORS):
                failed.append((request, outcome))
            else:
                self._dead_letter(request.record, outcome, request.event.schema_name, report)
        updates = self.retry.run("index", lambda: self._updates(done, now))
        removals = [_removed(r, REMOVED_EMBEDDING_FAILED, now) for r, _ in failed]
        if failed:
            self.retry.run("index", lambda: self.indexer.index.delete(
                [r.event.user_id for r, _ in failed]))
        self.retry.run("publish", lambda: self.seekers.publish([*updates, *removals]))
        if self._test_pause > 0 and updates:
            # Test hook (settings.embedding_agent.test_pause_after_publish_seconds): the
            # seekers records are out, the batch is not acknowledged yet; a test kills -9.
            log.warning("TEST HOOK: paused after publishing %d seekers for %.1fs",
                        len(updates), self._test_pause)
            time.sleep(self._test_pause)
        self.retry.run("state", lambda: self._record_states(done, failed))
        for request, profile in done:
            report.add(request.event.schema_name,
                       "indexed" if profile.embedded else "unchanged")
        for request, _ in failed:
            report.add(request.event.schema_name, "profile_failed")

    def _delay_notice(self, items: list[Request]) -> Callable[[Exception], None]:
        """At the first retry of the batch's profiles (a throttled or unreachable embedder,
        index or S3), tell its users they are delayed, not failed. Best effort: the notice
        must not hold up the retry, and the outcome write replaces it."""
        told = False

        def notice(error: Exception) -> None:
            nonlocal told
            if told:
                return
            told = True
            log.warning("profiles of %d users delayed: %s", len(items), error)
            for request in items:
                user_id = request.event.user_id
                try:
                    self.states.profile_delayed(user_id, at=request.at(DELAYED_DELAY))
                except Exception as exc:  # noqa: BLE001 - a notice, not the outcome
                    log.warning("could not mark %s delayed: %s", user_id, exc)

        return notice

    def _index(self, events: list[OptInRequested]) -> list[Outcome]:
        requests = [_request(e) for e in events]
        traits = self.indexer.traits
        if isinstance(traits, PrefetchingTraitsService):
            traits.prefetch([(r.user_id, r.top_n, r.force_refresh) for r in requests])
        try:
            return self.indexer.index_users(requests)
        except ValidationError:
            if len(requests) == 1:
                raise
            # One bad record failed the whole batch (e.g. in the upsert): isolate it.
            return [self._index_one(r) for r in requests]
        finally:
            if isinstance(traits, PrefetchingTraitsService):
                traits.forget()

    def _index_one(self, request: IndexRequest) -> Outcome:
        try:
            (outcome,) = self.indexer.index_users([request])
        except ValidationError as exc:
            return exc
        return outcome

    def _updates(self, done: list[tuple[Request, IndexedProfile]], now: datetime
                 ) -> list[SeekerUpdated]:
        if not done:
            return []
        stored = self.indexer.index.fetch([r.event.user_id for r, _ in done])
        updates = []
        for request, profile in done:
            event = request.event
            assert isinstance(event, OptInRequested)
            record = stored.get(event.user_id)
            if record is None:  # just written: an eventually consistent index lags
                raise ExternalServiceError(f"{event.user_id} missing from the index "
                                           "right after its upsert")
            updates.append(SeekerUpdated(
                event_id=derive_event_id("SeekerUpdated", event.event_id), occurred_at=now,
                user_id=event.user_id, opted_in_at=event.opted_in_at,
                vector=tuple(float(x) for x in record.vector.tolist()), model=profile.model,
                traits_hash=profile.traits.fingerprint, pool=event.pool, missed_cycles=0,
                version=request.version))
        return updates

    def _record_states(self, done: list[tuple[Request, IndexedProfile]],
                       failed: list[tuple[Request, ValidationError]]) -> None:
        with timed("state"):
            for request, _ in done:
                event = request.event
                assert isinstance(event, OptInRequested)
                self.states.waiting(event.user_id, pool=event.pool,
                                    waiting_since=event.opted_in_at, missed_cycles=0,
                                    at=request.at(STATE_DELAY))
            for request, error in failed:
                # The raw cause (it can name other users) stays in the log and the row.
                log.info("profile of %s failed: %s", request.event.user_id, error)
                self.states.profile_failed(
                    request.event.user_id, reason=str(error), at=request.at(STATE_DELAY),
                    code=PROFILE_CODES.get(type(error), PROFILE_UNAVAILABLE))


def _check(event: Event, record: RawRecord) -> None:
    """Only the opt-in topic's events, keyed by their user, with usable ids."""
    if not isinstance(event, OptInRequested | OptOutRequested | BlockRequested):
        raise ValidationError(f"the opt-in topic does not carry {event.schema_name}")
    key = record.key.decode("utf-8", "replace") if record.key is not None else None
    if key != event.user_id:
        # Per-user order relies on the key: a record keyed otherwise may be out of order.
        raise ValidationError(f"record key {key!r} is not the user id {event.user_id!r}")
    check_id(check_user_id(event.user_id))
    if isinstance(event, BlockRequested):
        sorted_pair(event.user_id, check_user_id(event.blocked_user_id))


def _request(event: OptInRequested) -> IndexRequest:
    metadata = {"status": "waiting", "pool": event.pool,
                "opted_in_at": event.opted_in_at.timestamp(), "missed_cycles": 0}
    # top_chats: how many of the user's newest usable chats feed the trait text (the
    # traits cache entry records it; another value rebuilds the text).
    return IndexRequest(event.user_id, metadata, force_refresh=event.force_refresh,
                        top_n=event.top_chats)


def _removed(request: Request, reason: str, now: datetime) -> SeekerRemoved:
    event = request.event
    return SeekerRemoved(event_id=derive_event_id("SeekerRemoved", event.event_id),
                         occurred_at=now, user_id=event.user_id, reason=reason,
                         pool=event.pool, version=request.version)
