"""Nakama (built from the Go module proxy) on our private PostgreSQL, over real HTTP."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from mosaic.nakama_client import LocalIssuer
from mosaic.settings import Settings
from stack.base import Service
from stack.postgres import Postgres
from tests.support import assert_up_reuses

pytestmark = pytest.mark.integration


@pytest.fixture
def http(settings: Settings, nakama_stack: Service) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=settings.nakama.url, timeout=10.0, trust_env=False) as client:
        yield client


def _authenticate(http: httpx.Client, settings: Settings, custom_id: str) -> str:
    reply = http.post(
        "/v2/account/authenticate/custom", params={"create": "true"},
        auth=(settings.nakama.server_key.get_secret_value(), ""),
        json={"id": custom_id,
              "vars": {"id_token": LocalIssuer(settings.identity).mint(custom_id)}},
    )
    assert reply.status_code == 200, reply.text
    token = reply.json()["token"]
    assert isinstance(token, str)
    return token


def _account_id(http: httpx.Client, token: str) -> str:
    reply = http.get("/v2/account", headers={"Authorization": f"Bearer {token}"})
    assert reply.status_code == 200, reply.text
    user_id = reply.json()["user"]["id"]
    assert isinstance(user_id, str)
    return user_id


def _ping_as_user(http: httpx.Client, token: str) -> dict[str, Any]:
    # Without ?unwrap the request body must be a JSON *string*; so is the reply payload.
    reply = http.post("/v2/rpc/mosaic_ping", headers={"Authorization": f"Bearer {token}"},
                      content=json.dumps("{}"))
    assert reply.status_code == 200, reply.text
    payload: dict[str, Any] = json.loads(reply.json()["payload"])
    return payload


def test_custom_auth_then_ping_returns_the_callers_id(
    http: httpx.Client, settings: Settings, unique: str,
) -> None:
    token = _authenticate(http, settings, f"mosaic-test-{unique}")
    payload = _ping_as_user(http, token)
    assert payload["ok"] is True
    assert payload["user_id"] == _account_id(http, token)
    assert payload["time_ms"] > 1_600_000_000_000


def test_same_custom_id_is_the_same_user(
    http: httpx.Client, settings: Settings, unique: str,
) -> None:
    first = _account_id(http, _authenticate(http, settings, f"mosaic-again-{unique}"))
    second = _account_id(http, _authenticate(http, settings, f"mosaic-again-{unique}"))
    assert first == second


def test_server_to_server_ping_with_http_key(http: httpx.Client, settings: Settings) -> None:
    key = settings.nakama.http_key.get_secret_value()
    # ``unwrap``: the body and the reply are the raw payload, not a JSON string.
    reply = http.post("/v2/rpc/mosaic_ping", content=b"{}",
                      params={"http_key": key, "unwrap": ""})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["ok"] is True
    assert body["user_id"] is None


def test_wrong_keys_are_refused(http: httpx.Client) -> None:
    rpc = http.post("/v2/rpc/mosaic_ping", content=b"{}",
                    params={"http_key": "nope", "unwrap": ""})
    assert rpc.status_code == 401
    auth = http.post("/v2/account/authenticate/custom", params={"create": "true"},
                     auth=("nope", ""), json={"id": "mosaic-wrong-key-user"})
    assert auth.status_code == 401


@pytest.mark.stack_scripts
def test_up_twice_reuses_running_server(nakama_stack: Service) -> None:
    assert_up_reuses(nakama_stack)


@pytest.mark.stack_scripts
def test_postgres_is_healthy_and_reused(settings: Settings, nakama_stack: Service) -> None:
    postgres = Postgres(settings)
    pid_before = postgres.pid()
    assert pid_before is not None
    assert postgres.status().healthy
    assert "reused" in postgres.up()
    assert postgres.pid() == pid_before


@pytest.mark.stack_scripts
def test_concurrent_role_setup_takes_turns_and_never_logs_the_password(
        settings: Settings, nakama_stack: Service) -> None:
    """Two `stack up` racing on the application role made PostgreSQL fail one ALTER ROLE
    ("tuple concurrently updated") and write the statement, password included, to its
    log. The setup now takes an advisory lock and keeps failing statements out of it."""
    postgres = Postgres(settings)
    log_file = settings.stack.data_dir / "logs" / "postgres.log"
    start = log_file.stat().st_size if log_file.exists() else 0
    errors: list[BaseException] = []

    def ensure() -> None:
        try:
            postgres.after_start()
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=ensure) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    with log_file.open(errors="replace") as log:
        log.seek(start)
        added = log.read()
    assert settings.postgres.password.get_secret_value() not in added
    assert "tuple concurrently updated" not in added
