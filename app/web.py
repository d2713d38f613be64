"""``mosaic web [--port N]``: serves the web client (web/, docs/web.md) on loopback.

The page is the esbuild bundle in ``web/dist`` (``./dev`` builds it during set-up); this
server adds ``config.json`` from the settings: Nakama's URL and the server key its clients
send (a public client key, not a secret: every Nakama client app ships it), and the OIDC
issuer, client id (the ID tokens' audience) and the redirect URI (the page itself).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import mimetypes
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mosaic.errors import MosaicError
from mosaic.settings import Settings

DEFAULT_PORT = 8095
STATUS_POLL_SECONDS = 5
DIST = Path(__file__).resolve().parent.parent / "web" / "dist"
REQUIRED = ("index.html", "app.js")


def register(subparsers: Any) -> None:
    web = subparsers.add_parser(
        "web", help="serve the web client on loopback",
        description="Serves the built web client (web/dist, docs/web.md) on 127.0.0.1 with a "
                    "config.json generated from the settings (Nakama URL and client key, "
                    "OIDC issuer, client id and redirect URI).")
    web.add_argument("--port", type=int, default=DEFAULT_PORT,
                     help=f"loopback port to serve on (default {DEFAULT_PORT}; 0 = any free)")
    web.add_argument("--dist", type=Path, default=DIST, help="the built client's folder")
    web.set_defaults(func=_main)


def client_config(settings: Settings, origin: str) -> dict[str, Any]:
    """The page's ``config.json``."""
    nakama = urlsplit(settings.nakama.url)
    ssl = nakama.scheme == "https"
    return {
        "nakama": {"host": nakama.hostname or "127.0.0.1",
                   "port": str(nakama.port or (443 if ssl else 80)), "useSSL": ssl,
                   "serverKey": settings.nakama.server_key.get_secret_value()},
        "oidc": {"issuer": settings.identity.issuer.rstrip("/"),
                 "clientId": settings.identity.audience,
                 "redirectUri": f"{origin}/", "scope": "openid"},
        "statusPollSeconds": STATUS_POLL_SECONDS,
    }


class WebServer:
    """The built client plus ``config.json`` on 127.0.0.1; ``start()`` returns at once."""

    def __init__(self, settings: Settings, *, port: int = DEFAULT_PORT,
                 dist: Path = DIST) -> None:
        missing = [name for name in REQUIRED if not (dist / name).is_file()]
        if missing:
            raise MosaicError(
                f"the web client is not built ({dist}: no {', '.join(missing)}): run ./dev "
                "once (its set-up runs npm ci and the build), or `npm ci && npm run build` "
                "in web/")
        self._settings = settings
        self._dist = dist.resolve()
        try:
            self._server = ThreadingHTTPServer(("127.0.0.1", port), _handler(self))
        except OSError as exc:
            raise MosaicError(f"cannot serve the web client on 127.0.0.1:{port}: {exc}") from exc
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def config(self) -> bytes:
        return json.dumps(client_config(self._settings, self.url), indent=2).encode()

    def file(self, path: str) -> Path | None:
        """The file under dist for a URL path; None outside it or missing."""
        relative = "index.html" if path in ("", "/") else path.lstrip("/")
        candidate = (self._dist / relative).resolve()
        if not candidate.is_relative_to(self._dist) or not candidate.is_file():
            return None
        return candidate

    def start(self) -> WebServer:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="mosaic-web")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def serve_forever(self) -> None:
        try:
            self._server.serve_forever()
        finally:
            self._server.server_close()


def _handler(web: WebServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = urlsplit(self.path).path
            if path == "/config.json":
                self._send(200, web.config(), "application/json")
                return
            found = web.file(path)
            if found is None:
                self._send(404, b"not found\n", "text/plain")
                return
            kind = mimetypes.guess_type(found.name)[0] or "application/octet-stream"
            self._send(200, found.read_bytes(), kind)

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # a page load is a dozen requests; nothing worth a log line

    return Handler


def _main(args: argparse.Namespace) -> int:
    server = WebServer(Settings(), port=args.port, dist=args.dist)
    print(f"web client: {server.url}/  (sign in through {Settings().identity.issuer}; "
          "Ctrl-C stops)", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0
