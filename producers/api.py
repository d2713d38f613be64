"""The transport-independent core of the HTTP API: verify -> decode -> command -> service.

Both entry points (the FastAPI routes and the raw ASGI fast path) call ``Ingress.command``
with the raw method, path, headers and body, so they cannot drift apart.
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pydantic

from producers.domain import Accepted, BlockUser, Command, OptIn, OptOut, valid_user_id
from producers.errors import AuthError, IngressError, InvalidRequest, PayloadTooLarge
from producers.metrics import IngressMetrics
from producers.nonces import SharedNonces
from producers.schema import BlockBody, ErrorBody, OptInBody, OptOutBody, new_request_id
from producers.service import IngressService
from producers.signing import NonceCache, SignedRequest, Verifier


def _opt_in(user_id: str, body: OptInBody, at: datetime) -> Command:
    return OptIn(user_id, body.request_id or new_request_id(), at, top_chats=body.top_chats,
                 force_refresh=body.force_refresh, pool=body.pool)


def _opt_out(user_id: str, body: OptOutBody, at: datetime) -> Command:
    return OptOut(user_id, body.request_id or new_request_id(), at, pool=body.pool)


def _block(user_id: str, body: BlockBody, at: datetime) -> Command:
    return BlockUser(user_id, body.checked_blocked(user_id),
                     body.request_id or new_request_id(), at)


@dataclass(frozen=True)
class CommandRoute:
    name: str
    suffix: str
    model: type[pydantic.BaseModel]
    build: Callable[[str, Any, datetime], Command]


COMMAND_ROUTES = (
    CommandRoute("opt_in", "opt-in-embedding", OptInBody, _opt_in),
    CommandRoute("opt_out", "opt-out", OptOutBody, _opt_out),
    CommandRoute("block", "block", BlockBody, _block),
)
ROUTES_BY_SUFFIX = {r.suffix: r for r in COMMAND_ROUTES}


def describe(errors: list[Any]) -> str:
    # Locations and messages only: never echo the input back.
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}"
                     for e in errors[:5])


def check_length(declared: str | None, limit: int) -> None:
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise PayloadTooLarge(f"body over {limit} bytes")


def error_body(exc: IngressError) -> tuple[bytes, dict[str, str]]:
    headers = {}
    if exc.retry_after_seconds is not None:
        headers["retry-after"] = str(max(1, round(exc.retry_after_seconds + 0.499)))
    body = ErrorBody(error=exc.code, message=str(exc)).model_dump()
    return json.dumps(body).encode(), headers


def accepted_body(result: Accepted) -> bytes:
    return json.dumps({"status": "accepted", "event_id": result.event_id,
                       "request_id": result.request_id,
                       "duplicate": result.duplicate}).encode()


_AUTH_HEADERS = frozenset({b"x-mosaic-key-id", b"x-mosaic-timestamp", b"x-mosaic-nonce",
                           b"x-mosaic-signature", b"content-length"})


def auth_headers(scope: Mapping[str, Any]) -> dict[str, str]:
    """The signature headers (and content-length) from the raw ASGI list. A repeated one is
    refused: which copy counts would depend on the parser (first or last), so both entry
    points refuse it the same way."""
    found: dict[str, str] = {}
    for name, value in scope["headers"]:
        if name in _AUTH_HEADERS:
            key = name.decode("latin-1")
            if key in found:
                raise AuthError("repeated signature header")
            found[key] = value.decode("latin-1")
    return found


def raw_path(scope: Mapping[str, Any]) -> str:
    """The path as sent (the signature covers it), without the query string."""
    raw = scope.get("raw_path") or scope["path"].encode()
    return str(raw.decode("latin-1").split("?", 1)[0])


def raw_query(scope: Mapping[str, Any]) -> str:
    """The query string as sent (the signature covers it in its canonical form)."""
    return bytes(scope.get("query_string") or b"").decode("latin-1")


class Ingress:
    """What both HTTP entry points need: the service, the verifier, limits and metrics."""

    def __init__(self, service: IngressService, verifier: Verifier, nonces: NonceCache,
                 metrics: IngressMetrics, *, max_body_bytes: int, clock: Callable[[], float],
                 healthy: Callable[[], bool], shared_nonces: SharedNonces | None = None,
                 ) -> None:
        self.service = service
        self.verifier = verifier
        self.nonces = nonces
        self.shared_nonces = shared_nonces
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.clock = clock
        self.healthy = healthy

    def received_at(self) -> datetime:
        # Whole milliseconds (the event schema stores timestamp-millis), rounded down: the
        # state written at this time must not pass the later stages of the same request,
        # which write at its event's millisecond + microseconds (mosaic/user_state.py).
        millis = math.floor(self.clock() * 1000)
        return datetime.fromtimestamp(millis // 1000, UTC) + timedelta(milliseconds=millis % 1000)

    def authenticate(self, method: str, path: str, headers: Mapping[str, str],
                     body: bytes, *, query: str = "") -> Callable[[], Awaitable[None]]:
        """Check the signature; returns the step that stores the nonce, which the service
        runs only after the rate limits let the request through."""
        if len(body) > self.max_body_bytes:
            raise PayloadTooLarge(f"body over {self.max_body_bytes} bytes")
        signed = self.verifier.authenticate(method, path, headers, body, query=query)
        return lambda: self._admit(signed)

    async def _admit(self, signed: SignedRequest) -> None:
        """Use the nonce up: in this process first (a twin here is refused without a round
        trip), then in the shared store (another instance, or this one before a restart)."""
        self.verifier.remember(signed)
        if self.shared_nonces is not None and not await self.shared_nonces.claim(
                signed.timestamp, signed.nonce):
            raise AuthError("replayed nonce")

    async def command(self, route: CommandRoute, user_id: str, path: str,
                      headers: Mapping[str, str], body: bytes, *, query: str = "",
                      ) -> Accepted:
        if not valid_user_id(user_id):
            raise InvalidRequest("user_id: malformed")
        admit = self.authenticate("POST", path, headers, body, query=query)
        try:
            decoded = route.model.model_validate_json(body or b"{}")
        except pydantic.ValidationError as exc:
            raise InvalidRequest(describe(exc.errors())) from exc
        return await self.service.handle(route.build(user_id, decoded, self.received_at()),
                                         admit=admit)
