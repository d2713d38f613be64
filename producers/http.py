"""The ingress HTTP API (FastAPI). Thin: read + verify + decode -> command -> service.

The body is read raw because the signature covers its exact bytes; it is parsed only after
the signature checked out. Errors map to JSON ``{"error": code, "message": ...}``.
"""

from __future__ import annotations

import logging
import time
from typing import Annotated, Any

from fastapi import FastAPI, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from producers.api import (
    COMMAND_ROUTES,
    CommandRoute,
    Ingress,
    accepted_body,
    auth_headers,
    check_length,
    describe,
    error_body,
    raw_path,
    raw_query,
)
from producers.domain import USER_ID_PATTERN, GetStatus
from producers.errors import IngressError, InvalidRequest, PayloadTooLarge
from producers.fastpath import CommandFastPath
from producers.metrics import IngressMetrics
from producers.schema import AcceptedBody, ErrorBody, StatusBody, status_body

log = logging.getLogger(__name__)

UserId = Annotated[str, Path(pattern=USER_ID_PATTERN, min_length=6, max_length=128)]

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (401, 409, 413, 422, 429, 503)}
_API_DOC = (
    "Opt-in, opt-out, block and status for matching cycles, called by the Nakama runtime.\n\n"
    "Every /user request is signed: X-Mosaic-Signature = hex HMAC-SHA256(key, METHOD\\nPATH"
    "\\nCANONICAL_QUERY\\nKEY_ID\\nTIMESTAMP\\nNONCE\\nSHA256_HEX(BODY)), with "
    "X-Mosaic-Key-Id (which active key), X-Mosaic-Timestamp (Unix seconds, +/-300 s) and a "
    "single-use X-Mosaic-Nonce. 202 means the event is on Kafka.")
_SIGNATURE_HEADERS = ("key-id", "timestamp", "nonce", "signature")
_SECURITY: list[dict[str, list[str]]] = [{name: [] for name in _SIGNATURE_HEADERS}]


async def read_body(request: Request, limit: int) -> bytes:
    check_length(request.headers.get("content-length"), limit)
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge(f"body over {limit} bytes")
    return body


def _error_response(exc: IngressError) -> Response:
    body, headers = error_body(exc)
    return Response(body, status_code=exc.status, headers=headers,
                    media_type="application/json")


def create_app(ingress: Ingress, *, fast_path: bool = True) -> FastAPI:
    app = FastAPI(title="Mosaic Match ingress", version="1.0.0", description=_API_DOC,
                  docs_url=None, redoc_url=None, redirect_slashes=False,
                  telemetry={"tracing": False, "metrics": False, "logs": False})
    app.state.ingress = ingress
    _install_error_handlers(app, ingress)
    # Served in front of FastAPI (not as its middleware) so a command skips FastAPI's
    # per-request wrappers entirely; lifespan and other routes pass through.
    inner: ASGIApp = CommandFastPath(app, ingress) if fast_path else app
    app.state.front = _MetricsMiddleware(_CanonicalPaths(inner), ingress.metrics)
    for route in COMMAND_ROUTES:
        _command_route(app, route, ingress)
    _install_read_routes(app, ingress)
    _install_openapi(app)
    return app


def _install_error_handlers(app: FastAPI, ingress: Ingress) -> None:
    @app.exception_handler(IngressError)
    async def ingress_error(_: Request, exc: IngressError) -> Response:
        ingress.metrics.rejections.labels(exc.code).inc()
        log.debug("refused: %s %s", exc.status, exc.code)
        return _error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> Response:
        ingress.metrics.rejections.labels("invalid").inc()
        return _error_response(InvalidRequest(describe(list(exc.errors()))))


class _CanonicalPaths:
    """Signed routes answer only their canonical spelling: the signature covers the raw
    path while routing sees the decoded one, so any percent-encoding (``%0A``, ``%2F``,
    ``%41``) under ``/user/`` is refused with 404 before routing on either path."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/user/"):
            raw = raw_path(scope)
            if raw != scope["path"] or not raw.isascii() or not raw.isprintable():
                scope["mosaic.route"] = "non_canonical"
                body = b'{"error": "not_found", "message": "no such route"}'
                await send({"type": "http.response.start", "status": 404, "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self._app(scope, receive, send)


class _MetricsMiddleware:
    """Pure ASGI (cheaper than BaseHTTPMiddleware): counts and times every request."""

    def __init__(self, app: ASGIApp, metrics: IngressMetrics) -> None:
        self._app = app
        self._metrics = metrics
        self._cache: dict[tuple[str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self._app(scope, receive, capture)
        finally:
            name = str(scope.get("mosaic.route")
                       or getattr(scope.get("route"), "name", "unmatched"))
            count, seconds = self._children(name, status[0])
            count.inc()
            seconds.observe(time.perf_counter() - started)

    def _children(self, route: str, status: int) -> tuple[Any, Any]:
        # labels() costs a lock and a tuple key per call; cache the labelled children.
        key = (route, status)
        found = self._cache.get(key)
        if found is None:
            found = (self._metrics.requests.labels(route, str(status)),
                     self._metrics.request_seconds.labels(route))
            self._cache[key] = found
        return found


def _command_route(app: FastAPI, route: CommandRoute, ingress: Ingress) -> None:
    async def endpoint(user_id: UserId, request: Request) -> Response:
        body = await read_body(request, ingress.max_body_bytes)
        result = await ingress.command(route, user_id, raw_path(request.scope),
                                       auth_headers(request.scope), body,
                                       query=raw_query(request.scope))
        return Response(accepted_body(result), status_code=202, media_type="application/json")

    app.add_api_route(
        f"/user/{{user_id}}/{route.suffix}", endpoint, methods=["POST"], name=route.name,
        status_code=202, response_model=AcceptedBody, responses=_ERRORS,
        openapi_extra={"security": _SECURITY, "requestBody": {
            "required": False,
            "content": {"application/json": {"schema": route.model.model_json_schema()}}}})


def _install_read_routes(app: FastAPI, ingress: Ingress) -> None:
    @app.get("/user/{user_id}/status", name="status", response_model=StatusBody,
             responses=_ERRORS, openapi_extra={"security": _SECURITY})
    async def status(user_id: UserId, request: Request) -> JSONResponse:
        body = await read_body(request, ingress.max_body_bytes)
        admit = ingress.authenticate("GET", raw_path(request.scope),
                                     auth_headers(request.scope), body,
                                     query=raw_query(request.scope))
        state = await ingress.service.status(GetStatus(user_id), admit=admit)
        return JSONResponse(status_body(state))

    @app.get("/health", name="health")
    async def health() -> JSONResponse:
        ok = ingress.healthy()
        return JSONResponse({"status": "ok" if ok else "degraded", "kafka": ok},
                            status_code=200 if ok else 503)

    @app.get("/metrics", name="metrics", include_in_schema=False)
    async def metrics() -> Response:
        ingress.metrics.nonce_entries.set(len(ingress.nonces))
        return Response(generate_latest(ingress.metrics.registry),
                        media_type=CONTENT_TYPE_LATEST)


def _install_openapi(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            schema = get_openapi(title=app.title, version=app.version,
                                 description=app.description, routes=app.routes)
            schema.setdefault("components", {})["securitySchemes"] = {
                name: {"type": "apiKey", "in": "header", "name": f"X-Mosaic-{name.title()}"}
                for name in _SIGNATURE_HEADERS}
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
