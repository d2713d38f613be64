"""docker-compose.kafka.yml stays in step with the settings defaults (ports, versions, keys),
and Nakama's config file there is the one the stack writes, with no secret on a command
line and nothing bound to every interface."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from pydantic import BaseModel, SecretStr

from mosaic.settings import Settings
from stack.nakama import Nakama

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.kafka.yml"
NAKAMA_CONFIG = ROOT / "nakama" / "docker-config.yml"


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
    s3_port = urlparse(s.s3.endpoint_url or "").port
    return {
        "kafka": {kafka_port},
        "cassandra": {s.cassandra.port},
        "postgres": {s.postgres.port},
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


def _nakama_config() -> dict[str, Any]:
    yaml: Any = importlib.import_module("yaml")
    data = yaml.safe_load(NAKAMA_CONFIG.read_text())
    assert isinstance(data, dict)
    return data


def test_nakama_config_is_the_stacks(compose: dict[str, Any], defaults: Settings) -> None:
    """The same keys, database, runtime env, ports and loopback addresses as `mosaic stack
    up` (stack/nakama.py), with the container's paths."""
    expected = Nakama(defaults).config()
    expected["data_dir"] = "/nakama/data"
    expected["runtime"]["path"] = "/nakama/data/modules"
    assert _nakama_config() == expected, "regenerate nakama/docker-config.yml from Nakama.config()"
    nakama = compose["services"]["nakama"]
    assert nakama["network_mode"] == "host" and "ports" not in nakama
    assert "./nakama/modules:/nakama/data/modules:ro" in nakama["volumes"]
    assert "./nakama/docker-config.yml:/nakama/config.yml:ro" in nakama["volumes"]
    env = compose["services"]["postgres"]["environment"]
    pg = defaults.postgres
    assert (env["POSTGRES_USER"], env["POSTGRES_PASSWORD"], env["POSTGRES_DB"]) == (
        pg.user, pg.password.get_secret_value(), pg.database)


def _secrets(value: Any) -> list[str]:
    """Every secret value of the settings tree."""
    if isinstance(value, SecretStr):
        return [value.get_secret_value()] if value.get_secret_value() else []
    if isinstance(value, BaseModel):
        return [v for name in type(value).model_fields for v in _secrets(getattr(value, name))]
    if isinstance(value, dict):
        return [v for item in value.values() for v in _secrets(item)]
    return []


def test_no_secret_on_a_command_line_and_no_wildcard_bind(compose: dict[str, Any],
                                                          defaults: Settings) -> None:
    secrets = _secrets(defaults)
    assert len(secrets) > 10
    for name, service in compose["services"].items():
        line = " ".join(str(x) for key in ("entrypoint", "command")
                        for x in (service.get(key) or []))
        assert not [s for s in secrets if s in line], name
        assert "0.0.0.0" not in line, name
    config = _nakama_config()
    assert config["socket"]["address"] == config["console"]["address"] == "127.0.0.1"


def test_kafka_is_ready_for_transactions(compose: dict[str, Any]) -> None:
    env = compose["services"]["kafka"]["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == "1"
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
