"""``/metrics`` (the default Prometheus registry, process metrics included) and
``/health`` for a long-running process, on a small background HTTP server."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

HealthCheck = Callable[[], tuple[bool, dict[str, Any]]]


class OpsServer:
    """Serves until :meth:`close`. ``health`` returns (ready, details); not ready -> 503."""

    def __init__(self, host: str, port: int, health: HealthCheck) -> None:
        check = health

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/metrics":
                    self._send(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)
                elif self.path == "/health":
                    try:
                        ready, details = check()
                    except Exception as exc:  # noqa: BLE001 - a failing check is "not ready"
                        ready, details = False, {"error": str(exc)}
                    body = json.dumps({"ready": ready, **details}).encode()
                    self._send(200 if ready else 503, body, "application/json")
                else:
                    self._send(404, b"not found\n", "text/plain")

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # scrapes every few seconds would drown the log

        self._server = ThreadingHTTPServer((host, port), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="ops-http", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
