"""The local OIDC issuer stand-in (standins/oidc.py) as a stack service.

Started only while ``identity.issuer`` is a loopback http URL (the local default); its key
pairs live in ``<data dir>/oidc/keys.json`` (0600) so restarts keep the published keys.
"""

from __future__ import annotations

import json
import sys
from urllib.parse import urlparse

from mosaic.errors import StackError
from stack.base import Service
from stack.nakama import http_call


class OidcIssuer(Service):
    name = "oidc"

    def _host_port(self) -> tuple[str, int]:
        parsed = urlparse(self.settings.identity.issuer)
        if parsed.scheme != "http" or parsed.hostname not in ("127.0.0.1", "localhost"):
            raise StackError(f"identity.issuer {self.settings.identity.issuer!r} is not a "
                             "loopback http URL: the stack starts no stand-in for it")
        return parsed.hostname or "127.0.0.1", parsed.port or 80

    @property
    def local(self) -> bool:
        try:
            self._host_port()
        except StackError:
            return False
        return True

    def install(self) -> None:
        """Nothing to install (pure Python, PyJWT + cryptography)."""

    def command(self) -> tuple[list[str], dict[str, str]]:
        host, port = self._host_port()
        return [sys.executable, "-m", "standins.oidc", "--host", host, "--port", str(port),
                "--issuer", self.settings.identity.issuer.rstrip("/"),
                "--audience", self.settings.identity.audience,
                "--state-file", str(self.data_dir / "keys.json")], {}

    def healthy(self) -> bool:
        if not self.local:
            return False
        status, body = http_call(self.settings.identity.issuer.rstrip("/"), "GET",
                                 "/.well-known/openid-configuration")
        try:
            return status == 200 and json.loads(body)["issuer"] == \
                self.settings.identity.issuer.rstrip("/")
        except (ValueError, KeyError, TypeError):
            return False

    def up(self) -> str:
        if not self.local:
            return f"{self.name}: skipped (identity.issuer is not local)"
        return super().up()

    def where(self) -> str:
        return self.settings.identity.issuer
