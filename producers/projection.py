"""Writes what the ingress knows about a user's state behind the requests, in batches.

The event on Kafka is the record of truth; this projection lets status answer before the
later stages caught up, and status must never regress (a user who got 202 never reads
``not_opted_in`` afterwards). So:

- a command reserves a slot before it is published (:meth:`StateProjector.reserve`); when
  ``max_pending`` states are queued or being written the ingress answers 503 with
  Retry-After (backpressure) instead of accepting a request whose state it would drop;
- states queue (the newest per user wins) and one task writes them in batches; a failed
  batch is queued again (a newer state of the same user wins) and retried with backoff,
  never dropped;
- until its write is done, a state answers status (:meth:`StateProjector.lookup`), so the
  window between the 202 and the Cassandra write shows the new state too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from mosaic.retry import Backoff
from mosaic.user_state import UserState, UserStateStore

log = logging.getLogger(__name__)

RETRY_BACKOFF_SECONDS = 0.2
RETRY_MAX_BACKOFF_SECONDS = 5.0
RETRY_BACKOFF = Backoff(RETRY_BACKOFF_SECONDS, RETRY_MAX_BACKOFF_SECONDS)


def _noop() -> None:
    return None


class StateProjector:
    def __init__(self, store: UserStateStore, *, max_pending: int = 10_000,
                 batch_size: int = 100, on_drop: Callable[[], None] = _noop,
                 on_failure: Callable[[], None] = _noop) -> None:
        self._store = store
        self._max = max_pending
        self._batch = batch_size
        self._on_drop = on_drop  # a request refused because the projection is full
        self._on_failure = on_failure
        self._pending: dict[str, UserState] = {}
        self._inflight: dict[str, UserState] = {}
        self._reserved = 0
        self._task: asyncio.Task[None] | None = None

    @property
    def backlog(self) -> int:
        return len(self._pending) + len(self._inflight) + self._reserved

    def reserve(self) -> bool:
        """Room for one more state? False: refuse the request (503), nothing published."""
        if self.backlog >= self._max:
            self._on_drop()
            return False
        self._reserved += 1
        return True

    def release(self) -> None:
        """A reserved request was not published after all."""
        self._reserved = max(0, self._reserved - 1)

    def submit(self, state: UserState, *, reserved: bool = True) -> None:
        if reserved:
            self.release()
        old = self._pending.get(state.user_id)
        if old is None or _not_newer(old, state):
            self._pending[state.user_id] = state
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    def lookup(self, user_id: str) -> UserState | None:
        """The newest state of ``user_id`` not yet confirmed written, if any."""
        queued, writing = self._pending.get(user_id), self._inflight.get(user_id)
        if queued is None or writing is None:
            return queued or writing
        return queued if _not_newer(writing, queued) else writing

    async def _run(self) -> None:
        failures = 0
        while self._pending:
            batch = []
            for user_id in list(self._pending)[: self._batch]:
                state = self._pending.pop(user_id)
                self._inflight[user_id] = state
                batch.append(state)
            try:
                await self._store.record_many(batch)
            except Exception as exc:  # noqa: BLE001 - a projection failure must not spread
                self._on_failure()
                failures += 1
                log.warning("user_state batch of %d not written (attempt %d), retrying: %s",
                            len(batch), failures, type(exc).__name__)
                for state in batch:  # back in the queue unless a newer state is there
                    old = self._pending.get(state.user_id)
                    if old is None or not _not_newer(state, old):
                        self._pending[state.user_id] = state
                    self._inflight.pop(state.user_id, None)
                await asyncio.sleep(RETRY_BACKOFF.delay(failures))
                continue
            failures = 0
            for state in batch:
                if self._inflight.get(state.user_id) is state:
                    del self._inflight[state.user_id]

    async def drain(self) -> None:
        """Wait until everything submitted so far is written (shutdown, tests)."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)


def _not_newer(old: UserState, new: UserState) -> bool:
    if old.updated_at is None or new.updated_at is None:
        return True
    return new.updated_at >= old.updated_at
