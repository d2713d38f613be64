"""A small threaded JSON HTTP server: the shared base of the stand-ins.

Each stand-in binds 127.0.0.1 on an ephemeral port, serves every request on its own
thread (so injected latency overlaps like a real service), counts and records requests,
and can be told to fail the next N requests (or the next N whose body contains a text)
with a status code and a ``Retry-After``.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

Reply = tuple[int, Any]


@dataclass(frozen=True)
class RawReply:
    """A reply body that is not JSON (an HTML page, a redirect), as a handler's answer."""

    body: bytes
    content_type: str = "text/html; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any
    status: int = 0
    at: float = 0.0  # time.monotonic() when the request arrived (after the latency)


@dataclass
class _Fault:
    status: int
    retry_after: float | None = None
    match: str = ""  # only requests whose body contains this text
    remaining: int = 1


@dataclass
class _State:
    requests: list[Recorded] = field(default_factory=list)
    faults: deque[_Fault] = field(default_factory=deque)
    matching: list[_Fault] = field(default_factory=list)


class StandinServer(ABC):
    def __init__(self, *, latency_seconds: float = 0.0, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.latency_seconds = latency_seconds
        self._address = (host, port)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._state = _State()

    # -- lifecycle --------------------------------------------------------------------
    def start(self) -> Self:
        if self._server is None:
            server = _QuietServer(self._address, _handler_for(self))
            self._server = server
            self._thread = threading.Thread(target=server.serve_forever, daemon=True,
                                            name=f"{type(self).__name__}-http")
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("stand-in is not running: call start()")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- test controls ----------------------------------------------------------------
    def fail_next(self, count: int, status: int = 429, *,
                  retry_after: float | None = None) -> None:
        """The next ``count`` requests get ``status`` (in the API's error format)."""
        with self._lock:
            self._state.faults.extend(_Fault(status, retry_after) for _ in range(count))

    def fail_matching(self, text: str, count: int, status: int = 429, *,
                      retry_after: float | None = None) -> None:
        """The next ``count`` requests whose body contains ``text`` (e.g. one user's
        profile text) get ``status``, wherever they fall in the traffic."""
        with self._lock:
            self._state.matching.append(_Fault(status, retry_after, text, count))

    def _matching_fault(self, raw_body: bytes) -> _Fault | None:  # under the lock
        body = raw_body.decode("utf-8", "replace")
        for fault in self._state.matching:
            if fault.remaining > 0 and fault.match in body:
                fault.remaining -= 1
                return fault
        return None

    @property
    def requests(self) -> list[Recorded]:
        with self._lock:
            return list(self._state.requests)

    def most_requests_in(self, window_seconds: float, *, status: int | None = None) -> int:
        """The most requests (of ``status``, or all) that arrived within any
        ``window_seconds``: what a quota over that window would have counted."""
        times = sorted(r.at for r in self.requests if status is None or r.status == status)
        best, start = 0, 0
        for end, at in enumerate(times):
            while times[start] <= at - window_seconds:
                start += 1
            best = max(best, end - start + 1)
        return best

    @property
    def request_count(self) -> int:
        with self._lock:
            return len(self._state.requests)

    def reset_requests(self) -> None:
        with self._lock:
            self._state.requests.clear()
            self._state.faults.clear()
            self._state.matching.clear()

    # -- to implement -----------------------------------------------------------------
    @abstractmethod
    def handle(self, method: str, path: str, query: dict[str, list[str]],
               headers: dict[str, str], body: Any) -> Reply:
        """Answer one request: (status, JSON-able body)."""

    @abstractmethod
    def error(self, status: int, message: str) -> Any:
        """The API's error body for ``status``."""

    def parse_body(self, headers: dict[str, str], raw_body: bytes) -> Any:
        """The request body as the handler gets it (JSON here); ValueError when malformed."""
        return json.loads(raw_body) if raw_body else None

    # -- plumbing ---------------------------------------------------------------------
    def _serve(self, method: str, raw_path: str, headers: dict[str, str],
               raw_body: bytes) -> tuple[int, Any, dict[str, str]]:
        if self.latency_seconds > 0:
            time.sleep(self.latency_seconds)
        arrived = time.monotonic()
        parts = urlsplit(raw_path)
        query = parse_qs(parts.query, keep_blank_values=True)
        with self._lock:
            fault = self._matching_fault(raw_body) or (
                self._state.faults.popleft() if self._state.faults else None)
        extra: dict[str, str] = {}
        try:
            body = self.parse_body(headers, raw_body)
        except ValueError:
            status, reply = 400, self.error(400, "request body is not JSON")
        else:
            if fault is not None:
                status, reply = fault.status, self.error(fault.status, "injected failure")
                if fault.retry_after is not None:
                    extra["Retry-After"] = f"{fault.retry_after:g}"
            else:
                status, reply = self.handle(method, parts.path, query, headers, body)
        with self._lock:
            self._state.requests.append(Recorded(method, parts.path, query, headers, body,
                                                 status, arrived))
        return status, reply, extra


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients dropping keep-alive connections at shutdown are not errors here.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def _handler_for(standin: StandinServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, reply, extra = standin._serve(self.command, self.path, headers, raw)
            if isinstance(reply, RawReply):
                data, content_type = reply.body, reply.content_type
                extra = {**extra, **reply.headers}
            else:
                data, content_type = json.dumps(reply).encode(), "application/json"
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for name, value in extra.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _any

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: tests inspect .requests instead

    return Handler
