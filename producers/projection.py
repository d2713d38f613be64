"""Writes what the ingress knows about a user's state behind the requests, in batches.

The event on Kafka is the record of truth; this projection only lets status answer before
later stages caught up. So it never slows a request down: states queue (the newest per
user wins), one task writes them in batches, and past ``max_pending`` new ones are dropped
(counted) rather than queued without bound.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from mosaic.user_state import UserState, UserStateStore

log = logging.getLogger(__name__)


def _noop() -> None:
    return None


class StateProjector:
    def __init__(self, store: UserStateStore, *, max_pending: int = 10_000,
                 batch_size: int = 100, on_drop: Callable[[], None] = _noop,
                 on_failure: Callable[[], None] = _noop) -> None:
        self._store = store
        self._max = max_pending
        self._batch = batch_size
        self._on_drop = on_drop
        self._on_failure = on_failure
        self._pending: dict[str, UserState] = {}
        self._task: asyncio.Task[None] | None = None

    def submit(self, state: UserState) -> None:
        if state.user_id not in self._pending and len(self._pending) >= self._max:
            self._on_drop()
            return
        old = self._pending.get(state.user_id)
        if old is None or _not_newer(old, state):
            self._pending[state.user_id] = state
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while self._pending:
            batch = []
            for user_id in list(self._pending)[: self._batch]:
                batch.append(self._pending.pop(user_id))
            try:
                await self._store.record_many(batch)
            except Exception as exc:  # noqa: BLE001 - a projection failure must not spread
                self._on_failure()
                log.warning("user_state batch of %d not written: %s", len(batch),
                            type(exc).__name__)

    async def drain(self) -> None:
        """Wait until everything submitted so far is written (shutdown, tests)."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)


def _not_newer(old: UserState, new: UserState) -> bool:
    if old.updated_at is None or new.updated_at is None:
        return True
    return new.updated_at >= old.updated_at
