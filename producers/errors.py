"""Errors of the ingress. Each carries the HTTP status it maps to, so the HTTP layer
translates them without knowing the rules that raised them."""

from __future__ import annotations

from mosaic.errors import MosaicError


class IngressError(MosaicError):
    """A request the ingress refuses; ``status`` is the HTTP answer, ``code`` a stable word."""

    status = 400
    code = "invalid"

    def __init__(self, message: str, *, status: int | None = None,
                 retry_after_seconds: float | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status
        self.retry_after_seconds = retry_after_seconds


class AuthError(IngressError):
    status = 401
    code = "unauthorized"


class InvalidRequest(IngressError):
    status = 422
    code = "invalid"


class PayloadTooLarge(IngressError):
    status = 413
    code = "too_large"


class RateLimited(IngressError):
    status = 429
    code = "rate_limited"


class Conflict(IngressError):
    status = 409
    code = "conflict"


class Unavailable(IngressError):
    """The broker did not confirm the write: nothing was acknowledged, the client may retry."""

    status = 503
    code = "unavailable"
