"""environment=production refuses default or local secrets and local stand-ins."""

from __future__ import annotations

import re
import secrets
from typing import Any

import pytest

from mosaic.errors import ConfigError
from mosaic.production import OPTIONAL_SECRETS, PREVIOUS_KEY_SETS, REQUIRED_SECRETS
from mosaic.settings import MAX_PREVIOUS_HMAC_KEYS, Settings

pytestmark = pytest.mark.unit


def _strong() -> str:
    return secrets.token_urlsafe(32)


def _production_values() -> dict[str, Any]:
    """Settings that production accepts: every secret its own, no stand-in, authenticated
    TLS to Kafka and Cassandra, a private console, bounded sessions, an https auth hook."""
    values: dict[str, Any] = {
        "environment": "production",
        "identity": {"issuer": "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbC",
                     "audience": "3n4b5urk1ft4fl3mg5e62d9ado",
                     "hook_url": "https://authhook.internal:8443"},
        "s3": {"endpoint_url": None},
        "kafka": {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
                  "sasl_username": "mosaic"},
        "cassandra": {"username": "mosaic", "ssl_ca_file": "/etc/mosaic/cassandra-ca.pem"},
        "nakama": {"console_host": "10.0.3.7", "console_username": "ops-7f3a"},
        "ingress": {"url": "https://ingress.internal:8443"},
    }
    for dotted in (*REQUIRED_SECRETS, *OPTIONAL_SECRETS):
        section, name = dotted.split(".")
        values.setdefault(section, {})[name] = _strong()
    return values


def _with(values: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    section, name = dotted.split(".")
    return {**values, section: {**values.get(section, {}), name: value}}


def test_production_settings_with_own_secrets_start() -> None:
    settings = Settings(**_production_values())
    assert settings.environment == "production"


def test_local_defaults_refuse_to_start_and_name_every_problem() -> None:
    with pytest.raises(ConfigError) as info:
        Settings(environment="production")
    message = str(info.value)
    for dotted in REQUIRED_SECRETS:
        assert dotted in message
    assert "mosaic-local" not in message  # names settings, never values


@pytest.mark.parametrize("dotted", REQUIRED_SECRETS)
@pytest.mark.parametrize("kind", ["default", "empty", "local", "nakama-default", "short"])
def test_each_required_secret_is_checked(dotted: str, kind: str) -> None:
    section, name = dotted.split(".")
    default = getattr(getattr(Settings(), section), name).get_secret_value()
    value = {"default": default, "empty": "", "local": "my-local-" + _strong(),
             "nakama-default": "defaulthttpkey", "short": "Zx9!k2"}[kind]
    with pytest.raises(ConfigError, match=dotted.replace(".", r"\.")) as info:
        Settings(**_with(_production_values(), dotted, value))
    if value:
        assert value not in str(info.value)


# Optional as secrets, but the transport checks need them with SASL_SSL / Cassandra auth.
NEEDED_BY_TRANSPORT = frozenset({"kafka.sasl_password", "cassandra.password"})


@pytest.mark.parametrize("dotted", OPTIONAL_SECRETS)
def test_optional_secrets_may_be_empty_but_never_local(dotted: str) -> None:
    if dotted in NEEDED_BY_TRANSPORT:
        with pytest.raises(ConfigError, match=dotted.replace(".", r"\.")):
            Settings(**_with(_production_values(), dotted, ""))
    else:
        Settings(**_with(_production_values(), dotted, ""))
    with pytest.raises(ConfigError, match=dotted.replace(".", r"\.")):
        Settings(**_with(_production_values(), dotted, "mosaic-local-" + _strong()))


@pytest.mark.parametrize("dotted", PREVIOUS_KEY_SETS)
@pytest.mark.parametrize("kind", ["default", "other-default", "empty", "local",
                                  "nakama-default", "short"])
def test_every_previous_hmac_key_is_checked(dotted: str, kind: str) -> None:
    defaults = Settings()
    value = {"default": defaults.ingress.hmac_key.get_secret_value(),
             "other-default": defaults.identity.hook_hmac_key.get_secret_value(),
             "empty": "", "local": "my-local-" + _strong(),
             "nakama-default": "defaulthttpkey", "short": "Zx9!k2"}[kind]
    keys = {"old-1": _strong(), "old-2": value}
    with pytest.raises(ConfigError, match=re.escape(f"{dotted}[old-2]")) as info:
        Settings(**_with(_production_values(), dotted, keys))
    assert "old-1" not in str(info.value)
    if value:
        assert value not in str(info.value)


def test_strong_previous_hmac_keys_are_accepted() -> None:
    values = _production_values()
    for dotted in PREVIOUS_KEY_SETS:
        values = _with(values, dotted, {"2025-01": _strong(), "2024-07": _strong()})
    settings = Settings(**values)
    assert set(settings.ingress.hmac_previous_keys) == {"2025-01", "2024-07"}


@pytest.mark.parametrize(("section", "prefix"), [("ingress", "hmac"), ("identity", "hook_hmac")])
def test_previous_keys_never_reuse_the_current_id_and_stay_few(section: str,
                                                               prefix: str) -> None:
    same_id: dict[str, Any] = {section: {f"{prefix}_key_id": "k-2", f"{prefix}_previous_keys":
                                         {"k-2": "SeCrEt-value-123456"}}}
    with pytest.raises(ConfigError, match="current key id") as info:
        Settings(**same_id)
    assert "SeCrEt" not in str(info.value)
    too_many: dict[str, Any] = {section: {f"{prefix}_previous_keys": {
        f"k{i}": _strong() for i in range(MAX_PREVIOUS_HMAC_KEYS + 1)}}}
    with pytest.raises(ConfigError, match="at most"):
        Settings(**too_many)


@pytest.mark.parametrize(("dotted", "value", "words"), [
    ("identity.issuer", "http://127.0.0.1:8090", "OIDC stand-in"),
    ("identity.issuer", "http://cognito.example.com/pool", "https"),
    ("identity.jwks_url", "http://localhost:8090/.well-known/jwks.json", "OIDC stand-in"),
    ("identity.audience", "mosaic-local-client", "local client id"),
    ("s3.endpoint_url", "http://127.0.0.1:5000", "S3 stand-in"),
    ("embedding.vertex_base_url", "http://127.0.0.1:9999", "Vertex AI stand-in"),
    ("embedding.vertex_static_token", "x" * 40, "stand-ins"),
    ("vector_index.pinecone_host", "http://127.0.0.1:7777", "Pinecone stand-in"),
    ("vector_index.pinecone_control_url", "http://127.0.0.1:7777", "Pinecone stand-in"),
])
def test_local_stand_ins_are_refused(dotted: str, value: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        Settings(**_with(_production_values(), dotted, value))


def test_local_and_test_environments_keep_the_local_defaults() -> None:
    assert Settings(environment="local").nakama.http_key.get_secret_value()
    assert Settings(environment="test").ingress.hmac_key.get_secret_value()


def test_production_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOSAIC_ENVIRONMENT", "production")
    with pytest.raises(ConfigError):
        Settings()


@pytest.mark.parametrize(("changes", "words"), [
    ({"kafka.security_protocol": "PLAINTEXT"}, "kafka.security_protocol"),
    ({"kafka.security_protocol": "SASL_PLAINTEXT"}, "kafka.security_protocol"),
    ({"kafka.sasl_username": None}, "kafka.sasl_username"),
    ({"kafka.security_protocol": "SSL"}, "kafka.ssl_certificate_location"),
    ({"cassandra.username": None}, "cassandra.username"),
    ({"cassandra.ssl_ca_file": None}, "cassandra.ssl_ca_file"),
    ({"nakama.console_host": "0.0.0.0"}, "nakama.console_host"),
    ({"nakama.console_host": "::"}, "nakama.console_host"),
    ({"nakama.console_username": "mosaic-admin"}, "nakama.console_username"),
    ({"nakama.console_username": "Admin"}, "nakama.console_username"),
    ({"nakama.session_token_expiry_seconds": 24 * 3600 + 1}, "session_token_expiry_seconds"),
    ({"nakama.refresh_token_expiry_seconds": 7 * 86400 + 1}, "refresh_token_expiry_seconds"),
    ({"nakama.session_max_lifetime_seconds": 30 * 86400 + 1}, "session_max_lifetime_seconds"),
    ({"nakama.refresh_token_expiry_seconds": 7200, "nakama.session_max_lifetime_seconds": 3600},
     "above nakama.session_max_lifetime_seconds"),
    ({"identity.hook_url": None}, "identity.hook_url"),
    ({"identity.hook_url": "http://authhook.internal:8089"}, "identity.hook_url"),
    ({"ingress.url": None}, "ingress.url must be set and https"),
    ({"ingress.url": "http://ingress.internal:8088"}, "ingress.url must be set and https"),
    ({"ingress.state_store": "memory"}, "ingress.state_store must be cassandra"),
    ({"nakama.room_name_previous_keys": ["mosaic-local-room-name-key"]},
     "nakama.room_name_previous_keys[0] still has its built-in local default"),
    ({"nakama.room_name_previous_keys": ["short"]}, "nakama.room_name_previous_keys[0] is "),
])
def test_transport_console_session_and_hook_checks(changes: dict[str, Any], words: str) -> None:
    values = _production_values()
    for dotted, value in changes.items():
        values = _with(values, dotted, value)
    with pytest.raises(ConfigError, match=re.escape(words)):
        Settings(**values)


def test_mutual_tls_to_kafka_is_accepted() -> None:
    values = _with(_production_values(), "kafka.security_protocol", "SSL")
    values = _with(values, "kafka.ssl_certificate_location", "/etc/mosaic/kafka-client.pem")
    assert Settings(**values).kafka.security_protocol == "SSL"


@pytest.mark.parametrize("where", ["current", "previous"])
def test_ingress_and_hook_keys_must_differ(where: str) -> None:
    values = _production_values()
    shared = values["ingress"]["hmac_key"]
    if where == "current":
        values = _with(values, "identity.hook_hmac_key", shared)
    else:
        values = _with(values, "identity.hook_hmac_previous_keys", {"old-1": shared})
    with pytest.raises(ConfigError, match="HMAC keys must differ") as info:
        Settings(**values)
    assert shared not in str(info.value)


@pytest.mark.parametrize(("url", "given"), [
    (None, "http://127.0.0.1:8088"),
    ("https://ingress.internal:8443", "https://ingress.internal:8443"),
])
def test_nakama_calls_the_ingress_at_its_url(url: str | None, given: str) -> None:
    """What production checks is what Nakama is given (its runtime env)."""
    from stack.nakama import Nakama

    settings = Settings(ingress={"url": url, "host": "127.0.0.1", "port": 8088})
    env = Nakama(settings).config()["runtime"]["env"]
    assert f"mosaic_ingress_url={given}" in env


def test_previous_room_name_keys_reach_nakama_only_when_set() -> None:
    from stack.nakama import Nakama

    assert not any(e.startswith("mosaic_room_name_previous_keys=")
                   for e in Nakama(Settings()).config()["runtime"]["env"])
    settings = Settings(nakama={"room_name_previous_keys": ["old-key-1", 'old"key,2']})
    env = Nakama(settings).config()["runtime"]["env"]
    assert 'mosaic_room_name_previous_keys=["old-key-1", "old\\"key,2"]' in env


def test_a_strong_previous_room_name_key_is_accepted() -> None:
    values = _with(_production_values(), "nakama.room_name_previous_keys", [_strong()])
    assert len(Settings(**values).nakama.room_name_previous_keys) == 1
