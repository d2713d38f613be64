"""No secret on a command line, none in a log or an error message (real stack)."""

from __future__ import annotations

import json
import logging
import os
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import BaseModel, SecretStr

from mosaic.nakama_client import LocalIssuer, NakamaClient
from mosaic.settings import IngressSettings, Settings
from producers.bootstrap import build_production_app, serve_in_thread
from producers.signing import signed_headers
from stack.base import Service
from stack.services import build

pytestmark = pytest.mark.integration

# An AWS access key id names a key, it is not one (and "mosaic-local" is also the local
# Cassandra cluster name, which Cassandra logs).
NOT_SECRET = {"s3.access_key_id"}


def configured_secrets(settings: Settings) -> dict[str, str]:
    found: dict[str, str] = {}

    def walk(model: BaseModel, prefix: str) -> None:
        for name in type(model).model_fields:
            value = getattr(model, name)
            if isinstance(value, SecretStr) and value.get_secret_value():
                found[prefix + name] = value.get_secret_value()
            elif isinstance(value, dict):  # previous HMAC keys: key id -> key
                found.update({f"{prefix}{name}[{k}]": v.get_secret_value()
                              for k, v in value.items()
                              if isinstance(v, SecretStr) and v.get_secret_value()})
            elif isinstance(value, BaseModel):
                walk(value, f"{prefix}{name}.")

    walk(settings, "")
    return {k: v for k, v in found.items() if k not in NOT_SECRET}


def _cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
        errors="replace")


def _group(pid: int) -> list[int]:
    """The service's process and everything in its process group (runuser children)."""
    pgid = os.getpgid(pid)
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getpgid(int(entry.name)) == pgid:
                    pids.append(int(entry.name))
            except ProcessLookupError:
                continue
    return pids


@pytest.fixture(scope="module")
def services(settings: Settings, nakama_stack: Service) -> list[Service]:
    return build(settings, ["postgres", "oidc", "authhook", "nakama"])


def test_no_secret_on_any_stack_command_line(settings: Settings,
                                            services: list[Service]) -> None:
    secrets = configured_secrets(settings)
    assert {"nakama.http_key", "nakama.server_key", "postgres.password",
            "ingress.hmac_key", "identity.hook_hmac_key"} <= set(secrets)
    checked = 0
    for service in services:
        pid = service.pid()
        assert pid is not None, f"{service.name} is not running from our pid file"
        for member in _group(pid):
            line = _cmdline(member)
            leaked = [name for name, value in secrets.items() if value in line]
            assert not leaked, f"{service.name} pid {member} shows {leaked} in its cmdline"
            checked += 1
    assert checked >= len(services)
    nakama_pid = services[-1].pid()
    assert nakama_pid is not None
    assert "--config" in _cmdline(nakama_pid)


def test_nakama_reads_its_secrets_from_a_private_file(settings: Settings,
                                                      services: list[Service]) -> None:
    config = settings.stack.data_dir / "nakama" / "config.yml"
    mode = stat.S_IMODE(config.stat().st_mode)
    assert mode == 0o600, oct(mode)
    text = config.read_text()
    assert settings.nakama.http_key.get_secret_value() in text
    assert settings.postgres.password.get_secret_value() in text


@pytest.fixture
def ingress_url(settings: Settings, kafka_stack: Service) -> Iterator[str]:
    local = settings.model_copy(update={"ingress": IngressSettings(
        **{**settings.ingress.model_dump(), "state_store": "memory",
           "hmac_key": settings.ingress.hmac_key})})
    server = serve_in_thread(build_production_app(local))
    yield f"http://127.0.0.1:{server.port}"
    server.stop()


def test_no_secret_in_logs_or_error_messages(
        settings: Settings, services: list[Service], ingress_url: str,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secrets = configured_secrets(settings)
    issuer = LocalIssuer(settings.identity)
    sub = str(uuid.uuid4())
    tokens = [issuer.mint(sub), issuer.mint(sub, ttl_seconds=-300),
              issuer.mint(str(uuid.uuid4()))]
    answers: list[str] = []
    nakama = NakamaClient(settings.nakama, id_tokens=issuer)
    try:
        for token in tokens:  # one good login, two refused ones
            answers.append(nakama.authenticate(sub, token).text)
        answers.append(nakama.authenticate(sub, tokens[0] + "x").text)
        session = nakama.login(sub, tokens[0])
        # Opt-in goes through Nakama -> ingress; nothing listens on the configured port
        # unless another test runs one, so this is usually the "unavailable" path.
        answers.append(nakama._http.post(
            "/v2/rpc/rpc_opt_in_match", headers={"Authorization": f"Bearer {session.token}"},
            content=json.dumps("{}")).text)
    finally:
        nakama.close()
    with httpx.Client(trust_env=False, timeout=10) as http:
        hook = f"http://{settings.identity.hook_host}:{settings.identity.hook_port}"
        body = json.dumps({"custom_id": sub, "id_token": tokens[0]}).encode()
        wrong = signed_headers(b"not-the-key", "POST", "/auth/v1/custom", body)
        answers.append(http.post(f"{hook}/auth/v1/custom", content=body, headers=wrong).text)
        path = f"/user/{sub}/opt-in-embedding"
        for key in (b"not-the-key", settings.ingress.hmac_key.get_secret_value().encode()):
            headers = signed_headers(key, "POST", path, b"{bad json")
            answers.append(http.post(ingress_url + path, content=b"{bad json",
                                     headers=headers).text)
            answers.append(http.post(ingress_url + path, content=b"{}",
                                     headers={**headers, "x-mosaic-signature": "0" * 64}).text)
    assert any("invalid identity token" in a for a in answers)
    logs = {p.name: p.read_text(errors="replace")
            for p in (settings.stack.data_dir / "logs").glob("*.log")}
    logs["pytest caplog"] = caplog.text
    logs["error answers"] = "\n".join(answers)
    assert {"nakama.log", "authhook.log", "oidc.log", "postgres.log"} <= set(logs)
    for where, text in logs.items():
        leaked = [name for name, value in secrets.items() if value in text]
        assert not leaked, f"{where} contains {leaked}"
        assert not any(token in text for token in tokens), f"{where} contains an ID token"
