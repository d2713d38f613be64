"""A raw ASGI front for the three command routes; everything else goes to FastAPI.

FastAPI's per-request machinery (dependency solving, request objects, response classes)
costs about as much CPU as the whole command. These routes need none of it: the core
(``Ingress.command``) is the same one the FastAPI routes call, so behaviour is identical
(the HTTP tests run against both), and the OpenAPI document still comes from FastAPI.
"""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Receive, Scope, Send

from producers.api import (
    ROUTES_BY_SUFFIX,
    Ingress,
    accepted_body,
    auth_headers,
    check_length,
    error_body,
    raw_path,
    raw_query,
)
from producers.errors import IngressError, PayloadTooLarge

_COMMAND_PATH = re.compile(r"^/user/([^/]+)/(opt-in-embedding|opt-out|block)$")
_JSON = (b"content-type", b"application/json")


class CommandFastPath:
    def __init__(self, app: ASGIApp, ingress: Ingress) -> None:
        self._app = app
        self._ingress = ingress

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = None
        if scope["type"] == "http" and scope["method"] == "POST":
            match = _COMMAND_PATH.fullmatch(scope["path"])  # "$" would allow a final "\n"
        if match is None:
            await self._app(scope, receive, send)
            return
        route = ROUTES_BY_SUFFIX[match.group(2)]
        scope["mosaic.route"] = route.name
        try:
            headers = auth_headers(scope)
            body = await self._read(receive, headers.get("content-length"))
            result = await self._ingress.command(route, match.group(1), raw_path(scope),
                                                 headers, body, query=raw_query(scope))
        except IngressError as exc:
            self._ingress.metrics.rejections.labels(exc.code).inc()
            payload, extra = error_body(exc)
            await _respond(send, exc.status, payload, extra)
            return
        await _respond(send, 202, accepted_body(result), {})

    async def _read(self, receive: Receive, declared: str | None) -> bytes:
        limit = self._ingress.max_body_bytes
        check_length(declared, limit)
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            body += message.get("body", b"")
            if len(body) > limit:
                raise PayloadTooLarge(f"body over {limit} bytes")
            if not message.get("more_body", False):
                break
        return body


async def _respond(send: Send, status: int, body: bytes, extra: dict[str, str]) -> None:
    headers = [_JSON, (b"content-length", str(len(body)).encode())]
    headers += [(k.encode(), v.encode()) for k, v in extra.items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
