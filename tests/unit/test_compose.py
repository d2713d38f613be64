"""docker-compose.kafka.yml stays in step with the settings defaults (ports, versions, keys)."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from mosaic.settings import Settings

pytestmark = pytest.mark.unit

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.kafka.yml"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    yaml: Any = importlib.import_module("yaml")  # PyYAML, through moto's dependencies
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def defaults() -> Settings:
    return Settings.model_construct()  # the code defaults, not this machine's env


def _host_ports(service: dict[str, Any]) -> dict[int, str]:
    """host port -> host address, from short-syntax ``"addr:host:container"`` entries."""
    ports: dict[int, str] = {}
    for entry in service.get("ports", []):
        address, host_port, _container = str(entry).split(":")
        ports[int(host_port)] = address
    return ports


def _expected_ports(s: Settings) -> dict[str, set[int]]:
    kafka_port = int(s.kafka.bootstrap_servers.split(",")[0].rsplit(":", 1)[1])
    nakama_port = urlparse(s.nakama.url).port
    s3_port = urlparse(s.s3.endpoint_url or "").port
    return {
        "kafka": {kafka_port},
        "cassandra": {s.cassandra.port},
        "postgres": {s.postgres.port},
        "nakama": {s.nakama.grpc_port, nakama_port or 0, s.nakama.console_port},
        "s3": {s3_port or 0},
    }


def test_every_service_maps_the_settings_ports(compose: dict[str, Any],
                                               defaults: Settings) -> None:
    services = compose["services"]
    for name, ports in _expected_ports(defaults).items():
        assert set(_host_ports(services[name])) == ports, name


def test_ports_bind_loopback_only(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        assert set(_host_ports(service).values()) <= {"127.0.0.1"}, name


def test_image_versions_follow_settings(compose: dict[str, Any], defaults: Settings) -> None:
    services = compose["services"]
    assert services["kafka"]["image"] == f"apache/kafka:{defaults.stack.kafka_version}"
    assert services["nakama"]["image"] == f"heroiclabs/nakama:{defaults.stack.nakama_version}"
    cassandra_minor = ".".join(defaults.stack.cassandra_version.split(".")[:2])
    assert services["cassandra"]["image"] == f"cassandra:{cassandra_minor}"


def test_nakama_uses_the_same_keys_and_database(compose: dict[str, Any],
                                                defaults: Settings) -> None:
    script = " ".join(compose["services"]["nakama"]["entrypoint"]).split()
    nk, pg = defaults.nakama, defaults.postgres

    def flag(name: str) -> str:
        return script[script.index(name) + 1]

    assert flag("--socket.server_key") == nk.server_key.get_secret_value()
    assert flag("--runtime.http_key") == nk.http_key.get_secret_value()
    assert flag("--console.username") == nk.console_username
    assert flag("--console.password") == nk.console_password.get_secret_value()
    assert flag("--session.token_expiry_sec") == str(nk.session_token_expiry_seconds)
    hmac_key = defaults.ingress.hmac_key.get_secret_value()
    assert f"mosaic_ingress_hmac_key={hmac_key}" in script
    assert f"mosaic_ingress_hmac_key_id={defaults.ingress.hmac_key_id}" in script
    password = pg.password.get_secret_value()
    assert flag("--database.address") == f"{pg.user}:{password}@postgres:5432/{pg.database}"
    env = compose["services"]["postgres"]["environment"]
    assert (env["POSTGRES_USER"], env["POSTGRES_PASSWORD"], env["POSTGRES_DB"]) == (
        pg.user, password, pg.database)
    assert "./nakama/modules:/nakama/data/modules:ro" in compose["services"]["nakama"]["volumes"]


def test_kafka_is_ready_for_transactions(compose: dict[str, Any]) -> None:
    env = compose["services"]["kafka"]["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == "1"
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
