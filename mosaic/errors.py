"""One exception root for the whole project.

Errors that come from a Kafka record carry its coordinates so a dead letter or a log
line can point at the exact message.
"""

from __future__ import annotations


class MosaicError(Exception):
    """Root of every error this project raises on purpose."""


class ConfigError(MosaicError):
    """Settings are missing or inconsistent."""


class StackError(MosaicError):
    """A local stack service could not be installed, started or reached."""


class SerializationError(MosaicError):
    """Bytes could not be decoded into an event, or an event could not be encoded."""


class ValidationError(MosaicError):
    """Input is well-formed but not acceptable (bad ids, NaN vectors, duplicates...)."""


class ExternalServiceError(MosaicError):
    """An outside system (S3, embedder, vector index, Nakama) failed; usually retryable."""

    def __init__(self, message: str, *, retryable: bool = True,
                 retry_after_seconds: float | None = None, throttled: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.throttled = throttled  # the service refused for quota (HTTP 429), not broken
        # The service's own pushback (HTTP Retry-After on a 429/503): wait at least this.
        self.retry_after_seconds = retry_after_seconds


class RecordError(MosaicError):
    """Processing one Kafka record failed; carries the record's coordinates."""

    def __init__(
        self,
        message: str,
        *,
        topic: str,
        partition: int,
        offset: int,
        cause: BaseException | None = None,
    ) -> None:
        super().__init__(f"{message} (topic={topic} partition={partition} offset={offset})")
        self.reason = message
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.cause = cause
