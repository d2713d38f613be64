"""Nakama 3.x built from the Go module proxy, served on loopback, backed by ``Postgres``.

``go install module@version`` needs the proxy's ``@v/list`` (a deprecation lookup) and
fails where that is refused, so the source comes from ``go mod download -json`` and is
built in place; the binary is cached per version in the cache dir. Lua modules are read
from ``<repo>/nakama/modules``; their configuration arrives as runtime env values
(``ctx.env`` in Lua), never as literals in code. Secrets reach Nakama through a 0600
config file (``--config``), never through its command line (``ps`` shows that).
"""

from __future__ import annotations

import http.client
import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlparse

from pydantic import SecretStr

from mosaic.errors import StackError
from mosaic.settings import IdentitySettings, IngressSettings, Settings
from stack.base import Service, require_tool, run
from stack.postgres import Postgres

MODULE = "github.com/heroiclabs/nakama/v3"
MODULES_DIR = Path(__file__).resolve().parents[1] / "nakama" / "modules"
PING_RPC = "mosaic_ping"
GO_HINT = ("Nakama is built from source with Go (its go.mod asks for 1.26.5; an older go "
           "fetches that toolchain itself unless GOTOOLCHAIN=local): install Go from "
           "https://go.dev/dl and put 'go' on PATH, or copy a prebuilt nakama to {binary}")


class Nakama(Service):
    name = "nakama"

    # -- install --------------------------------------------------------------------------
    @property
    def version(self) -> str:
        return self.settings.stack.nakama_version

    @property
    def binary(self) -> Path:
        return self.cache_dir / f"nakama-{self.version}" / "nakama"

    def install(self) -> None:
        if self.binary.is_file() and os.access(self.binary, os.X_OK):
            return
        go = require_tool("go", GO_HINT.format(binary=self.binary))
        build_binary(go, self.version, self.binary)

    # -- configure / run ----------------------------------------------------------------------
    def up(self) -> str:
        from stack.authhook import AuthHook

        Postgres(self.settings).up()  # Nakama cannot start (nor migrate) without it
        AuthHook(self.settings).up()  # custom-id logins are verified there (mosaic_auth.lua)
        return super().up()

    def database_address(self) -> str:
        pg = self.settings.postgres
        user, password = quote(pg.user, safe=""), quote(pg.password.get_secret_value(), safe="")
        return f"{user}:{password}@{pg.host}:{pg.port}/{pg.database}"

    @property
    def config_file(self) -> Path:
        return self.data_dir / "config.yml"

    def prepare(self) -> None:
        if not MODULES_DIR.is_dir():
            raise StackError(f"Nakama runtime modules folder {MODULES_DIR} is missing")
        write_private(self.config_file, json.dumps(self.config(), indent=2) + "\n")
        run([str(self.binary), "migrate", "up", "--config", str(self.config_file)],
            what="nakama migrate up", timeout=300)

    def config(self) -> dict[str, Any]:
        """Nakama's YAML config (written as JSON, a subset of YAML), secrets included.

        It goes to a 0600 file passed with ``--config``, never onto the command line, where
        every local user could read it through ``ps``.
        """
        nk, ingress, identity = self.settings.nakama, self.settings.ingress, self.settings.identity
        host, port = self._checked_host_port()
        return {
            "name": nk.node_name,
            "data_dir": str(self.data_dir / "data"),
            "logger": {"level": "INFO"},
            "database": {"address": [self.database_address()], "max_open_conns": 50},
            "runtime": {
                "path": str(MODULES_DIR),
                "http_key": nk.http_key.get_secret_value(),
                "env": [
                    f"mosaic_ingress_url={ingress_url(ingress)}",
                    f"mosaic_ingress_hmac_key={ingress.hmac_key.get_secret_value()}",
                    f"mosaic_ingress_hmac_key_id={ingress.hmac_key_id}",
                    f"mosaic_auth_url={hook_url(identity)}",
                    f"mosaic_auth_hmac_key={identity.hook_hmac_key.get_secret_value()}",
                    f"mosaic_auth_hmac_key_id={identity.hook_hmac_key_id}",
                    f"mosaic_session_max_lifetime_sec={nk.session_max_lifetime_seconds}",
                    f"mosaic_room_name_key={nk.room_name_key.get_secret_value()}",
                    *_previous_room_keys(nk.room_name_previous_keys),
                ],
            },
            "socket": {"address": host, "port": port,
                       "server_key": nk.server_key.get_secret_value()},
            "session": {
                "token_expiry_sec": nk.session_token_expiry_seconds,
                "refresh_token_expiry_sec": nk.refresh_token_expiry_seconds,
                "encryption_key": nk.session_encryption_key.get_secret_value(),
                "refresh_encryption_key": nk.session_refresh_encryption_key.get_secret_value(),
            },
            "console": {
                "address": nk.console_host, "port": nk.console_port,
                "username": nk.console_username,
                "password": nk.console_password.get_secret_value(),
                "signing_key": nk.console_signing_key.get_secret_value(),
            },
        }

    def _api_host_port(self) -> tuple[str, int]:
        parsed = urlparse(self.settings.nakama.url)
        return parsed.hostname or "127.0.0.1", parsed.port or 7350

    def _checked_host_port(self) -> tuple[str, int]:
        host, port = self._api_host_port()
        if self.settings.nakama.grpc_port != port - 1:
            raise StackError(f"Nakama serves gRPC on its API port - 1: set "
                             f"MOSAIC_NAKAMA__GRPC_PORT={port - 1} (or change MOSAIC_NAKAMA__URL)")
        return host, port

    def command(self) -> tuple[list[str], dict[str, str]]:
        # Everything, secrets included, comes from the 0600 config file written by prepare.
        return [str(self.binary), "--config", str(self.config_file)], {}

    # -- health -----------------------------------------------------------------------------
    def healthy(self) -> bool:
        """``GET /`` is 200 and the ``mosaic_ping`` RPC answers server-to-server."""
        key = quote(self.settings.nakama.http_key.get_secret_value(), safe="")
        if http_call(self.settings.nakama.url, "GET", "/")[0] != 200:
            return False
        status, body = http_call(self.settings.nakama.url, "POST",
                                 f"/v2/rpc/{PING_RPC}?unwrap&http_key={key}", b"{}")
        try:
            reply = json.loads(body) if status == 200 else None
        except ValueError:
            return False
        return isinstance(reply, dict) and reply.get("ok") is True

    def where(self) -> str:
        nk = self.settings.nakama
        host, _ = self._api_host_port()
        return (f"{nk.url} (gRPC {host}:{nk.grpc_port}, "
                f"console http://{host}:{nk.console_port})")


def _previous_room_keys(keys: list[SecretStr]) -> list[str]:
    """mosaic_room_name_previous_keys as a JSON list (mosaic_rooms.lua), only when set."""
    if not keys:
        return []
    return ["mosaic_room_name_previous_keys="
            + json.dumps([k.get_secret_value() for k in keys])]


def ingress_url(ingress: IngressSettings) -> str:
    """Where Nakama calls the ingress (mosaic_match.lua): url, else the local address."""
    return ingress.url or f"http://{ingress.host}:{ingress.port}"


def hook_url(identity: IdentitySettings) -> str:
    """Where Nakama calls the auth hook (mosaic_auth.lua): hook_url, else the local address."""
    return identity.hook_url or f"http://{identity.hook_host}:{identity.hook_port}"


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only (0600), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def http_call(base_url: str, method: str, path: str,
              body: bytes | None = None) -> tuple[int, bytes]:
    """One request without proxies and without logging the URL (it may carry a key).

    Returns (status, body); (0, b"") when nothing answered.
    """
    if not base_url.startswith(("http://", "https://")):
        raise StackError(f"Nakama URL must be http(s): {base_url!r}")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(base_url + path, data=body, method=method)  # noqa: S310
    try:
        with opener.open(request, timeout=3.0) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, b""
    except (OSError, http.client.HTTPException):
        return 0, b""


def build_binary(go: str, version: str, target: Path) -> float:
    """Download Nakama's module source and build it into ``target`` atomically.

    Returns the seconds spent. A temp file in the target's folder is renamed into place,
    so a concurrent reader never sees a half-written binary.
    """
    started = time.monotonic()
    target.parent.mkdir(parents=True, exist_ok=True)
    out = run([go, "mod", "download", "-json", f"{MODULE}@v{version}"],
              what=f"go mod download {MODULE}@v{version}", cwd=target.parent, timeout=900,
              expect="first use only; Nakama's source and its modules from the Go proxy, "
                     "usually a minute or two")
    try:
        source = Path(json.loads(out)["Dir"])
    except (ValueError, KeyError, TypeError) as exc:
        raise StackError(f"go mod download gave no source Dir:\n{out[-2000:]}") from exc
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    env = {**os.environ, "GOFLAGS": "-mod=mod -buildvcs=false"}
    try:
        run([go, "build", "-trimpath", "-ldflags", f"-X main.version={version}",
             "-o", str(tmp), "."],
            what=f"go build nakama {version} (in {source})", cwd=source, env=env, timeout=3600,
            expect="first use only; several minutes on 2 cores, the binary is cached in "
                   f"{target.parent}")
        tmp.chmod(0o755)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return time.monotonic() - started


def bulk_accounts(settings: Settings, count: int, prefix: str = "") -> dict[str, str]:
    """``count`` real Nakama accounts at once (custom id -> Nakama user id), for tests and
    benchmarks: inserted into Nakama's users table as AuthenticateCustom inserts them (id,
    username, custom_id; every other column keeps its default).

    A login per account goes through the ID-token hook (tens of ms each on 2 cores);
    server-side steps only read these rows, so the accounts are real to them."""
    if not all(c.isalnum() or c in "-_" for c in prefix):
        raise ValueError(f"prefix must be letters, digits, '-' or '_': {prefix!r}")
    rows = Postgres(settings).app_sql(
        "INSERT INTO users (id, username, custom_id) SELECT gen_random_uuid(), "
        "'mmb' || substr(md5(random()::text || n), 1, 16), "
        f"'{prefix}' || gen_random_uuid()::text "
        f"FROM generate_series(1, {int(count)}) AS n RETURNING custom_id, id")
    return dict((custom_id, uid) for custom_id, uid in rows)
