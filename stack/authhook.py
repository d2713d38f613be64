"""The ID-token verifier Nakama's before-authenticate hook calls (producers/authhook.py).

Configured from the environment like every entry point (``MOSAIC_IDENTITY__*``), so no
secret is on its command line.
"""

from __future__ import annotations

import json
import sys

from stack.base import Service
from stack.nakama import http_call


class AuthHook(Service):
    name = "authhook"

    def _base(self) -> str:
        cfg = self.settings.identity
        return f"http://{cfg.hook_host}:{cfg.hook_port}"

    def install(self) -> None:
        """Nothing to install (Python, from this repository)."""

    def command(self) -> tuple[list[str], dict[str, str]]:
        return [sys.executable, "-m", "producers.authhook"], {}

    def up(self) -> str:
        from stack.oidc import OidcIssuer

        OidcIssuer(self.settings).up()  # local logins need the local issuer
        return super().up()

    def healthy(self) -> bool:
        status, body = http_call(self._base(), "GET", "/health")
        try:
            return status == 200 and json.loads(body)["ok"] is True
        except (ValueError, KeyError, TypeError):
            return False

    def where(self) -> str:
        return f"{self._base()}/auth/v1/custom"
