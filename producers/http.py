"""The ingress HTTP API (FastAPI). Thin: read + verify + decode -> command -> service.

The body is read raw because the signature covers its exact bytes; it is parsed only after
the signature checked out. Errors map to JSON ``{"error": code, "message": ...}``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

import pydantic
from fastapi import FastAPI, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from producers.domain import USER_ID_PATTERN, BlockUser, Command, GetStatus, OptIn, OptOut
from producers.errors import IngressError, InvalidRequest, PayloadTooLarge
from producers.metrics import IngressMetrics
from producers.schema import (
    AcceptedBody,
    BlockBody,
    ErrorBody,
    OptInBody,
    OptOutBody,
    StatusBody,
    new_request_id,
)
from producers.service import IngressService
from producers.signing import NonceCache, Verifier

log = logging.getLogger(__name__)

Body = TypeVar("Body", bound=pydantic.BaseModel)
UserId = Annotated[str, Path(pattern=USER_ID_PATTERN, min_length=6, max_length=128)]

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (401, 409, 413, 422, 429, 503)}
_API_DOC = (
    "Opt-in, opt-out, block and status for matching cycles, called by the Nakama runtime.\n\n"
    "Every /user request is signed: X-Mosaic-Signature = hex HMAC-SHA256(key, METHOD\\nPATH"
    "\\nTIMESTAMP\\nNONCE\\nSHA256_HEX(BODY)), with X-Mosaic-Timestamp (Unix seconds, "
    "+/-300 s) and a single-use X-Mosaic-Nonce. 202 means the event is on Kafka.")
_SECURITY: list[dict[str, list[str]]] = [{"timestamp": [], "nonce": [], "signature": []}]


class Ingress:
    """What the routes need: the service, the verifier, limits and metrics."""

    def __init__(self, service: IngressService, verifier: Verifier, nonces: NonceCache,
                 metrics: IngressMetrics, *, max_body_bytes: int, clock: Callable[[], float],
                 healthy: Callable[[], bool]) -> None:
        self.service = service
        self.verifier = verifier
        self.nonces = nonces
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.clock = clock
        self.healthy = healthy

    async def read_signed(self, request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit()
                                     or int(declared) > self.max_body_bytes):
            raise PayloadTooLarge(f"body over {self.max_body_bytes} bytes")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > self.max_body_bytes:
                raise PayloadTooLarge(f"body over {self.max_body_bytes} bytes")
        raw_path = request.scope.get("raw_path") or request.scope["path"].encode()
        path = raw_path.decode("latin-1").split("?", 1)[0]
        self.verifier.verify(request.method, path, request.headers, body)
        return body

    async def decode(self, request: Request, model: type[Body]) -> Body:
        body = await self.read_signed(request)
        try:
            return model.model_validate_json(body or b"{}")
        except pydantic.ValidationError as exc:
            raise InvalidRequest(_describe(exc)) from exc

    def received_at(self) -> datetime:
        # Millisecond precision: the event schema stores timestamp-millis.
        return datetime.fromtimestamp(round(self.clock(), 3), UTC)


def _describe(exc: pydantic.ValidationError) -> str:
    # Locations and messages only: never echo the input back.
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}"
                     for e in exc.errors()[:5])


def _error_response(exc: IngressError) -> JSONResponse:
    headers = {}
    if exc.retry_after_seconds is not None:
        headers["Retry-After"] = str(max(1, round(exc.retry_after_seconds + 0.499)))
    return JSONResponse(ErrorBody(error=exc.code, message=str(exc)).model_dump(),
                        status_code=exc.status, headers=headers)


def _accepted(result: Any) -> JSONResponse:
    body = AcceptedBody(event_id=result.event_id, request_id=result.request_id,
                        duplicate=result.duplicate)
    return JSONResponse(body.model_dump(), status_code=202)


def create_app(ingress: Ingress) -> FastAPI:
    app = FastAPI(title="Mosaic Match ingress", version="1.0.0", description=_API_DOC,
                  docs_url=None, redoc_url=None)
    app.state.ingress = ingress
    _install_error_handlers(app, ingress)
    app.add_middleware(_MetricsMiddleware, metrics=ingress.metrics)
    _install_command_routes(app, ingress)
    _install_read_routes(app, ingress)
    _install_openapi(app)
    return app


def _install_error_handlers(app: FastAPI, ingress: Ingress) -> None:
    @app.exception_handler(IngressError)
    async def ingress_error(_: Request, exc: IngressError) -> JSONResponse:
        ingress.metrics.rejections.labels(exc.code).inc()
        log.debug("refused: %s %s", exc.status, exc.code)
        return _error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        ingress.metrics.rejections.labels("invalid").inc()
        msg = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
        return _error_response(InvalidRequest(msg))


class _MetricsMiddleware:
    """Pure ASGI (cheaper than BaseHTTPMiddleware): counts and times every request."""

    def __init__(self, app: ASGIApp, metrics: IngressMetrics) -> None:
        self._app = app
        self._metrics = metrics

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
            name = getattr(scope.get("route"), "name", "unmatched")
            self._metrics.requests.labels(name, str(status[0])).inc()
            self._metrics.request_seconds.labels(name).observe(time.perf_counter() - started)


def _command_route(app: FastAPI, path: str, *, name: str, model: type[Body],
                   build: Callable[[str, Body, datetime], Command], ingress: Ingress) -> None:
    async def route(user_id: UserId, request: Request) -> JSONResponse:
        body = await ingress.decode(request, model)
        return _accepted(await ingress.service.handle(build(user_id, body,
                                                            ingress.received_at())))

    app.add_api_route(
        path, route, methods=["POST"], name=name, status_code=202,
        response_model=AcceptedBody, responses=_ERRORS,
        openapi_extra={"security": _SECURITY, "requestBody": {
            "required": False,
            "content": {"application/json": {"schema": model.model_json_schema()}}}})


def _opt_in(user_id: str, body: OptInBody, at: datetime) -> Command:
    return OptIn(user_id, body.request_id or new_request_id(), at, top_chats=body.top_chats,
                 force_refresh=body.force_refresh, pool=body.pool)


def _opt_out(user_id: str, body: OptOutBody, at: datetime) -> Command:
    return OptOut(user_id, body.request_id or new_request_id(), at, pool=body.pool)


def _block(user_id: str, body: BlockBody, at: datetime) -> Command:
    return BlockUser(user_id, body.checked_blocked(user_id),
                     body.request_id or new_request_id(), at)


def _install_command_routes(app: FastAPI, ingress: Ingress) -> None:
    _command_route(app, "/user/{user_id}/opt-in-embedding", name="opt_in", model=OptInBody,
                   build=_opt_in, ingress=ingress)
    _command_route(app, "/user/{user_id}/opt-out", name="opt_out", model=OptOutBody,
                   build=_opt_out, ingress=ingress)
    _command_route(app, "/user/{user_id}/block", name="block", model=BlockBody,
                   build=_block, ingress=ingress)


def _install_read_routes(app: FastAPI, ingress: Ingress) -> None:
    @app.get("/user/{user_id}/status", name="status", response_model=StatusBody,
             responses=_ERRORS, openapi_extra={"security": _SECURITY})
    async def status(user_id: UserId, request: Request) -> JSONResponse:
        await ingress.read_signed(request)
        state = await ingress.service.status(GetStatus(user_id))
        return JSONResponse(StatusBody.from_state(state).model_dump(mode="json"))

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
                for name in ("timestamp", "nonce", "signature")}
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
