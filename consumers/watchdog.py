"""A consumer's progress check: no silent stalls.

At a cadence (``limit / 4``, at most every 5 s) the runner hands the watchdog its assigned
partitions' positions and their FRESH end offsets from the broker (not the fetcher's
cache, which can say "caught up" while the group is stuck), or ``None`` when the broker
did not answer. The consumer is healthy while a position moves, or while every position
has reached its end. Records beyond the position (or an unreachable broker) with no
movement for ``limit`` seconds is a stall: the runner logs an ERROR naming the agent,
the partitions and how long, then rebuilds its consumer; after ``max_rebuilds`` rebuilds
without recovering it raises :class:`ConsumerStalled` and the process exits non-zero, so
its supervisor restarts it.

Positions, not committed offsets, are compared with the end: a transaction's commit
marker takes an offset after its last record, so a caught-up consumer's committed
offset stays one short of the end of a transactionally written partition, while its
position moves past the marker.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from mosaic.errors import ExternalServiceError

TopicPartitionKey = tuple[str, int]


class ConsumerStalled(ExternalServiceError):
    """A consumer made no progress through every rebuild the watchdog tried."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


@dataclass(frozen=True)
class Stall:
    agent: str
    seconds: float
    behind: Mapping[TopicPartitionKey, int]  # records beyond the position, per partition
    reachable: bool  # False: the broker did not answer the end-offset query

    def describe(self) -> str:
        if not self.reachable:
            names = ", ".join(f"{t}[{p}]" for t, p in sorted(self.behind)) or "none"
            where = f"broker unreachable; assigned {names}"
        else:
            where = ", ".join(f"{t}[{p}] {n} records behind"
                              for (t, p), n in sorted(self.behind.items()))
        return f"{self.agent}: no progress for {self.seconds:.0f} s ({where})"


class Watchdog:
    """Decides, from positions and fresh end offsets, whether a consumer is stalled."""

    def __init__(self, agent: str, limit_seconds: float, *, max_rebuilds: int = 3,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.agent = agent
        self.limit = limit_seconds
        self.every = max(0.5, min(5.0, limit_seconds / 4))
        self.max_rebuilds = max_rebuilds
        self.rebuilds = 0
        self._clock = clock
        self._healthy_at = self._checked_at = clock()
        self._positions: dict[TopicPartitionKey, int] = {}

    def due(self) -> bool:
        return self._clock() - self._checked_at >= self.every

    def progressed(self) -> None:
        """A batch was handled and committed."""
        self._healthy(self._clock())

    def _healthy(self, now: float) -> None:
        self._healthy_at = now
        self.rebuilds = 0

    def observe(self, positions: Mapping[TopicPartitionKey, int],
                ends: Mapping[TopicPartitionKey, int] | None) -> Stall | None:
        """One check: ``ends`` None when the broker did not answer. A stall once the
        consumer has been neither moving nor caught up for ``limit`` seconds."""
        now = self._checked_at = self._clock()
        moved = any(pos > self._positions.get(tp, pos) for tp, pos in positions.items())
        self._positions = dict(positions)
        behind = ({} if ends is None else
                  {tp: ends[tp] - pos for tp, pos in positions.items()
                   if tp in ends and ends[tp] > pos})
        if moved or (ends is not None and not behind):
            self._healthy(now)
            return None
        stalled = now - self._healthy_at
        if stalled < self.limit:
            return None
        return Stall(self.agent, stalled, behind if ends is not None
                     else dict.fromkeys(positions, 0), ends is not None)

    def rebuilt(self) -> None:
        """The runner replaced its consumer: give the new one a whole limit."""
        self.rebuilds += 1
        self._healthy_at = self._clock()
        self._positions = {}

    def exhausted(self) -> bool:
        return self.rebuilds >= self.max_rebuilds

    @staticmethod
    def lag(positions: Mapping[TopicPartitionKey, int],
            ends: Mapping[TopicPartitionKey, int]) -> int:
        return sum(max(0, ends[tp] - pos) for tp, pos in positions.items() if tp in ends)
