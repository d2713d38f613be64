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
    """Settings that production accepts: every secret its own, no stand-in."""
    values: dict[str, Any] = {
        "environment": "production",
        "identity": {"issuer": "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbC",
                     "audience": "3n4b5urk1ft4fl3mg5e62d9ado"},
        "s3": {"endpoint_url": None},
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


@pytest.mark.parametrize("dotted", OPTIONAL_SECRETS)
def test_optional_secrets_may_be_empty_but_never_local(dotted: str) -> None:
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
