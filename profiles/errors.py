"""Typed outcomes of the profile pipeline that a consumer turns into a dead letter.

Both are ``ValidationError``s: retrying the same record will not help until the
upstream analysis writes new insights.
"""

from __future__ import annotations

from mosaic.errors import MosaicError, ValidationError


class NoInsightsError(ValidationError):
    """The user has no usable insights (no chat index, or every chat was unusable)."""

    def __init__(self, user_id: str, reason: str,
                 skipped: tuple[tuple[str, str], ...] = ()) -> None:
        detail = f"; skipped {len(skipped)} chat(s): " + "; ".join(
            f"{chat}: {why}" for chat, why in skipped[:5]) if skipped else ""
        super().__init__(f"no usable insights for user {user_id!r}: {reason}{detail}")
        self.user_id = user_id
        self.reason = reason
        self.skipped = skipped


class MalformedInsightError(ValidationError):
    """A stored insight or index document is not valid JSON or breaks the schema."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"malformed document {key!r}: {reason}")
        self.key = key
        self.reason = reason


class BlobConflictError(MosaicError):
    """A conditional write lost a race (the object changed since it was read)."""
