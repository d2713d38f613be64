"""The ID-token check behind Nakama's before-authenticate hook (nakama/modules/mosaic_auth.lua).

    POST /auth/v1/custom   {"custom_id": <Cognito sub>, "id_token": <Cognito ID token>}
      200 {"ok": true, "signature": <hex>}   the token proves this custom id
      403 {"error": "invalid_token", ...}    it does not (reason in "message", no token data)
      401 {"error": "unauthorized", ...}     the HMAC signature is wrong (operator problem)
      503 {"error": "unavailable", ...}      no signing keys (JWKS down and nothing cached)
    GET  /health           {"ok": true, "keys": <cached signing keys>}

Requests are signed exactly like the ingress' (producers/signing.py: key id, query string and
all) but with their own keys (``identity.hook_hmac_key`` under ``hook_hmac_key_id``, plus
``hook_hmac_previous_keys`` during a rotation): whoever holds one can only ask "is this token
valid?". A repeated signature header is 401, as at the ingress.
It is a separate process from the ingress so logins depend on neither Kafka nor Cassandra.
``python -m producers.authhook`` serves it on ``identity.hook_host:hook_port``; the local
stack starts it (stack/authhook.py).

A 200 is signed too (:func:`answer_signature`: the request's key, bound to its nonce and
custom id), and Nakama's hook checks it before it lets the login through: whatever else
answers on the hook's URL (a wrong service, a man in the middle) or replays an earlier
answer cannot log anyone in.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from starlette.types import Receive, Scope, Send

from mosaic.settings import Settings
from producers.domain import valid_user_id
from producers.errors import AuthError, IngressError
from producers.idtoken import (
    Clock,
    FetchJson,
    IdTokenVerifier,
    InvalidIdToken,
    JwksUnavailable,
    build_verifier,
)
from producers.signing import (
    KEY_ID_HEADER,
    NONCE_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    NonceCache,
    Verifier,
    keyring,
)

log = logging.getLogger(__name__)

PATH = "/auth/v1/custom"
MAX_BODY_BYTES = 16 * 1024

Handler = Callable[[str, str, dict[str, str], bytes], Awaitable[tuple[int, dict[str, Any]]]]


def answer_signature(key: bytes, key_id: str, nonce: str, custom_id: str) -> str:
    """Hex HMAC-SHA256 of the hook's "ok" to one request (mosaic_signing.lua builds the same):

        "mosaic-auth-answer" \n KEY_ID \n NONCE \n CUSTOM_ID \n "ok"
    """
    text = "\n".join(("mosaic-auth-answer", key_id, nonce, custom_id, "ok"))
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


class AuthHookApp:
    """Raw ASGI: two routes, no framework needed. ``keys``: the verifier's keys by id, which
    also sign the answers."""

    def __init__(self, signatures: Verifier, tokens: IdTokenVerifier,
                 keys: Mapping[str, bytes]) -> None:
        self.signatures = signatures
        self.tokens = tokens
        self.keys = dict(keys)
        self.counts: dict[str, int] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"]
        raw = (scope.get("raw_path") or path.encode()).decode("latin-1").split("?", 1)[0]
        query = bytes(scope.get("query_string") or b"").decode("latin-1")
        headers, repeated = _headers(scope["headers"])
        if method == "GET" and path == "/health":
            await _respond(send, 200, {"ok": True, "keys": len(self.tokens.jwks)})
            return
        if path != PATH or raw != PATH:
            await _respond(send, 404, {"error": "not_found", "message": "no such route"})
            return
        if method != "POST":
            await _respond(send, 405, {"error": "method", "message": "POST only"})
            return
        body = await _read(receive, MAX_BODY_BYTES)
        if body is None:
            status, answer = 413, {"error": "too_large", "message": "body too large"}
        elif repeated:  # which copy counts would depend on the parser: refuse, as the ingress
            status, answer = 401, {"error": "unauthorized", "message": "repeated signature header"}
        else:
            status, answer = await self.check(raw, headers, body, query=query)
        self.counts[answer.get("error", "ok")] = self.counts.get(answer.get("error", "ok"), 0) + 1
        await _respond(send, status, answer)

    async def check(self, path: str, headers: dict[str, str], body: bytes, *,
                    query: str = "") -> tuple[int, dict[str, Any]]:
        try:
            self.signatures.verify("POST", path, headers, body, query=query)
        except IngressError as exc:
            log.warning("auth hook: refused an unsigned call (%s)", exc)
            return exc.status, {"error": exc.code, "message": str(exc)}
        try:
            request = json.loads(body)
            custom_id, token = request["custom_id"], request["id_token"]
            if not (isinstance(custom_id, str) and isinstance(token, str)):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            return 403, {"error": "invalid_token", "message": "an ID token is required"}
        if not valid_user_id(custom_id):
            return 403, {"error": "invalid_token", "message": "malformed custom id"}
        try:
            await self.tokens.verify(token, custom_id)
        except InvalidIdToken as exc:
            log.info("auth hook: login refused: %s", exc)
            return 403, {"error": "invalid_token", "message": str(exc)}
        except JwksUnavailable as exc:
            log.error("auth hook: %s", exc)
            return 503, {"error": "unavailable", "message": "identity provider unreachable"}
        key_id = headers[KEY_ID_HEADER]  # present and known: the signature checked out
        return 200, {"ok": True, "signature": answer_signature(
            self.keys[key_id], key_id, headers[NONCE_HEADER], custom_id)}


_SIGNATURE_HEADERS = frozenset({KEY_ID_HEADER, TIMESTAMP_HEADER, NONCE_HEADER, SIGNATURE_HEADER})


def _headers(raw: Iterable[tuple[bytes, bytes]]) -> tuple[dict[str, str], bool]:
    """The headers as a dict, and whether a signature header came more than once."""
    headers: dict[str, str] = {}
    repeated = False
    for name, value in raw:
        key = name.decode("latin-1").lower()
        repeated = repeated or (key in _SIGNATURE_HEADERS and key in headers)
        headers[key] = value.decode("latin-1")
    return headers, repeated


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _read(receive: Receive, limit: int) -> bytes | None:
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return body
        body += bytes(message.get("body", b""))
        if len(body) > limit:
            return None
        if not message.get("more_body", False):
            return body


async def _respond(send: Send, status: int, payload: dict[str, Any]) -> None:
    data = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


def build_app(settings: Settings, *, fetch: FetchJson | None = None,
              clock: Clock = time.time) -> AuthHookApp:
    cfg = settings.identity
    skew = settings.ingress.clock_skew_seconds
    nonces = NonceCache(window_seconds=skew, max_entries=1_000_000, clock=clock)
    keys = keyring(cfg.hook_hmac_key_id, cfg.hook_hmac_key, cfg.hook_hmac_previous_keys)
    signatures = Verifier(keys, nonces, skew_seconds=skew, clock=clock)
    return AuthHookApp(signatures, build_verifier(cfg, fetch), keys)


def main() -> None:
    import uvicorn

    settings = Settings()
    logging.basicConfig(level=settings.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = settings.identity
    app = build_app(settings)
    log.info("auth hook on http://%s:%d%s (issuer %s)", cfg.hook_host, cfg.hook_port, PATH,
             cfg.issuer)
    uvicorn.run(app, host=cfg.hook_host, port=cfg.hook_port, log_level="warning",
                access_log=False, server_header=False, proxy_headers=False, lifespan="on")


if __name__ == "__main__":
    main()


__all__ = ["PATH", "AuthError", "AuthHookApp", "answer_signature", "build_app", "main"]
