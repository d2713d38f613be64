"""The port the ingress writes events through, and an in-memory fake for unit tests.

``publish`` returns only once the broker confirmed the write (or raises PublishFailed);
that is what lets the HTTP layer answer 202 without ever acknowledging a lost event.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Protocol

from mosaic.errors import MosaicError


class PublishFailed(MosaicError):
    """The broker did not confirm the write; ``retryable`` if a later try may succeed."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class EventPublisher(Protocol):
    async def publish(self, topic: str, key: str, event: object) -> None:
        """Write one event and wait for the broker's confirmation."""

    def healthy(self) -> bool:
        """False while the broker is known to be unreachable."""

    async def close(self) -> None:
        """Deliver what is queued (bounded wait) and release resources."""


@dataclass
class InMemoryPublisher:
    """Records (topic, key, event); ``fail_with`` makes the next publishes fail."""

    published: list[tuple[str, str, object]] = field(default_factory=list)
    fail_with: PublishFailed | None = None
    delay_seconds: float = 0.0

    async def publish(self, topic: str, key: str, event: object) -> None:
        if self.delay_seconds:
            await asyncio.sleep(self.delay_seconds)
        if self.fail_with is not None:
            raise self.fail_with
        self.published.append((topic, key, event))

    def healthy(self) -> bool:
        return self.fail_with is None

    async def close(self) -> None:
        return None
