"""The ingress use cases: accept a command (rate limits, idempotency, publish) and read status.

No HTTP here: the web layer decodes a request into a command and calls ``handle``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from mosaic.ratelimit import KeyedRateLimiter, TokenBucket
from mosaic.user_state import UserState, UserStateStore
from producers.domain import Accepted, Command, GetStatus, OptIn, OptOut, event_id_for
from producers.errors import Conflict, RateLimited, Unavailable
from producers.events import to_event
from producers.projection import StateProjector
from producers.publisher import EventPublisher, PublishFailed

log = logging.getLogger(__name__)

RequestKey = tuple[str, str, str]
Fingerprint = tuple[object, ...]
Outcome = asyncio.Future[Accepted] | tuple[str, str]  # in flight | (event_id, request_id)
Admit = Callable[[], Awaitable[None]]


async def _nothing() -> None:
    return None


@dataclass(frozen=True)
class Limiters:
    per_user: KeyedRateLimiter
    status_per_user: KeyedRateLimiter
    global_: TokenBucket


class RecentRequests:
    """Bounded LRU of request keys -> (fingerprint, outcome).

    While a request is in flight the outcome is its future (a retry awaits it); once
    accepted it becomes a tuple of strings, which the garbage collector stops tracking,
    so a full cache costs no GC pause.
    """

    def __init__(self, max_entries: int) -> None:
        self._max = max_entries
        self._items: OrderedDict[RequestKey, tuple[Fingerprint, Outcome]] = OrderedDict()

    def get(self, key: RequestKey) -> tuple[Fingerprint, Outcome] | None:
        item = self._items.get(key)
        if item is not None:
            self._items.move_to_end(key)
        return item

    def put(self, key: RequestKey, fingerprint: Fingerprint, outcome: Outcome) -> None:
        self._items[key] = (fingerprint, outcome)
        self._items.move_to_end(key)
        if len(self._items) > self._max:
            self._items.popitem(last=False)

    def forget(self, key: RequestKey) -> None:
        self._items.pop(key, None)


class IngressService:
    def __init__(self, *, publisher: EventPublisher, store: UserStateStore, topic: str,
                 limiters: Limiters, clock: Callable[[], float],
                 recent_max_entries: int = 100_000, retry_after_seconds: float = 5.0,
                 projector: StateProjector | None = None) -> None:
        self._publisher = publisher
        self._store = store
        self._topic = topic
        self._limiters = limiters
        self._clock = clock
        self._recent = RecentRequests(recent_max_entries)
        self._retry_after = retry_after_seconds
        self._projector = projector or StateProjector(store)

    async def handle(self, command: Command, *, admit: Admit = _nothing) -> Accepted:
        """``admit`` (store the request's nonce) runs only once the rate limits let the
        request through; a retry answered from memory changes nothing and runs neither."""
        key: RequestKey = (command.kind, command.user_id, command.request_id)
        seen = self._recent.get(key)
        if seen is not None:
            return await self._replay(command, *seen)
        self._take(self._limiters.per_user, command.user_id)
        if not self._limiters.global_.try_take():
            raise RateLimited("global rate limit",
                              retry_after_seconds=self._limiters.global_.retry_after_seconds())
        if isinstance(command, OptIn | OptOut):
            command, repeat = await self._sequence(command)
            if repeat:
                await admit()
                accepted = Accepted(event_id_for(command.kind, command.user_id,
                                                 command.request_id), command.request_id,
                                    duplicate=True)
                self._recent.put(key, command.fingerprint(),
                                 (accepted.event_id, accepted.request_id))
                return accepted
        projected = isinstance(command, OptIn | OptOut)
        if projected and not self._projector.reserve():
            # Backpressure: accepting it would mean a 202 whose state status cannot show.
            raise Unavailable("user state projection backlog full",
                              retry_after_seconds=self._retry_after)
        await admit()
        future: asyncio.Future[Accepted] = asyncio.get_running_loop().create_future()
        self._recent.put(key, command.fingerprint(), future)
        try:
            accepted = await self._publish(command)
        except BaseException as exc:
            if projected:
                self._projector.release()
            self._recent.forget(key)  # a retry with the same id publishes again
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters, if any, get it too
            raise
        future.set_result(accepted)
        self._recent.put(key, command.fingerprint(), (accepted.event_id, accepted.request_id))
        return accepted

    async def _replay(self, command: Command, fingerprint: Fingerprint,
                      outcome: Outcome) -> Accepted:
        if fingerprint != command.fingerprint():
            raise Conflict("request id already used for a different request")
        if isinstance(outcome, tuple):
            return Accepted(event_id=outcome[0], request_id=outcome[1], duplicate=True)
        accepted = await asyncio.shield(outcome)
        return replace(accepted, duplicate=True)

    def _take(self, limiter: KeyedRateLimiter, user_id: str) -> None:
        if not limiter.try_take(user_id):
            raise RateLimited("per-user rate limit",
                              retry_after_seconds=limiter.retry_after_seconds(user_id))

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    async def _publish(self, command: Command) -> Accepted:
        event_id = event_id_for(command.kind, command.user_id, command.request_id)
        # The request's time (maybe moved past this host's clock by _sequence), not the
        # publish time: the seekers version starts from it (consumers/request_order.py) and
        # it is the time the user_state projection is written at, the one the next request
        # orders itself after.
        event = to_event(command, event_id, command.received_at)
        try:
            await self._publisher.publish(self._topic, command.user_id, event)
        except PublishFailed as exc:
            raise Unavailable(f"event not confirmed by the broker: {exc}",
                              retry_after_seconds=self._retry_after) from exc
        self._project_state(command)
        return Accepted(event_id=event_id, request_id=command.request_id)

    def _project_state(self, command: Command) -> None:
        """Record what the ingress knows; best effort, the event is the record of truth."""
        if isinstance(command, OptIn):
            state = UserState(command.user_id, "preparing_profile",
                              opted_in_at=command.received_at, pool=command.pool,
                              updated_at=command.received_at)
        elif isinstance(command, OptOut):
            state = UserState(command.user_id, "opted_out", pool=command.pool,
                              updated_at=command.received_at)
        else:
            return  # a block never shows in anyone's status
        self._projector.submit(state)

    async def _sequence(self, command: OptIn | OptOut) -> tuple[OptIn | OptOut, bool]:
        """The command ordered after the user's last known request, and whether it is a
        repeat that changes nothing (see :func:`_keeps_place`)."""
        try:
            current = await self._latest(command.user_id)
        except Unavailable as exc:  # state unknown: a new request at this host's time
            log.warning("%s of %s accepted without its state: %s", command.kind,
                        command.user_id, exc)
            return command, False
        if isinstance(command, OptIn) and _keeps_place(command, current, self._now()):
            return command, True
        return _after(command, current), False

    async def status(self, query: GetStatus, *, admit: Admit = _nothing) -> UserState:
        """The stored row, or the ingress' own newer state not yet written (so a 202 is
        never followed by an older answer, e.g. ``not_opted_in``)."""
        self._take(self._limiters.status_per_user, query.user_id)
        await admit()
        return await self._latest(query.user_id) or UserState(query.user_id)

    async def _latest(self, user_id: str) -> UserState | None:
        unwritten = self._projector.lookup(user_id)
        try:
            found = await self._store.get(user_id)
        except Exception as exc:
            if unwritten is not None:
                return unwritten
            raise Unavailable(f"state store unavailable: {type(exc).__name__}",
                              retry_after_seconds=self._retry_after) from exc
        unwritten = self._projector.lookup(user_id) or unwritten
        if unwritten is not None and (found is None or _newer(unwritten, found)):
            return unwritten
        return found

    async def drain(self) -> None:
        """Wait for background state writes (on shutdown and in tests)."""
        await self._projector.drain()


PREPARING_STALE = timedelta(minutes=10)
REASON_INVALID_VECTOR = "invalid_vector"  # SeekerUnmatched.reason (matcher.pool's constant)
_MS = timedelta(milliseconds=1)


def _keeps_place(command: OptIn, current: UserState | None, now: datetime) -> bool:
    """A repeated opt-in (a double tap, a reload that retries) while the user's opt-in is
    still in effect in the same pool changes nothing: publishing it would start a new wait
    and throw away the user's place in line (``opted_in_at``, missed cycles) in the
    matcher and in status. A forced profile refresh is a new opt-in."""
    if command.force_refresh or current is None or current.pool != command.pool:
        return False
    if current.state == "waiting":
        # Set aside for a record the matcher could not read: only a new one helps.
        return current.unmatched_reason != REASON_INVALID_VECTOR
    # Preparing normally takes seconds; one stuck that long (its opt-in dead-lettered,
    # say) must not swallow every retry.
    return (current.state == "preparing_profile" and current.updated_at is not None
            and now - current.updated_at < PREPARING_STALE)


def _after(command: OptIn | OptOut, current: UserState | None) -> OptIn | OptOut:
    """A request's time (its user_state write time, and where its seekers version
    starts) is at least 1 ms after the user's last known state, whichever ingress host
    wrote it and whatever that host's clock said, so status shows the requests in order.
    Requests closer together than a state write are ordered by the embedding agent, in
    log order (consumers/request_order.py)."""
    last = current.updated_at if current is not None else None
    if last is None or command.received_at > last:
        return command
    moved = last.replace(microsecond=last.microsecond // 1000 * 1000) + _MS
    log.info("%s of %s ordered after its last state: %s -> %s", command.kind,
             command.user_id, command.received_at, moved)
    return replace(command, received_at=moved)


def _newer(candidate: UserState, stored: UserState) -> bool:
    if candidate.updated_at is None or stored.updated_at is None:
        return stored.updated_at is None
    return candidate.updated_at > stored.updated_at
