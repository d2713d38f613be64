"""What ``environment=production`` refuses: default or local secrets, local stand-ins,
unauthenticated or clear-text transports, an exposed console and unbounded sessions.

``Settings`` calls :func:`refuse_unsafe` when it is built with ``environment=production``,
so every entry point (ingress, agents, matcher, auth hook) refuses to start. Messages name
the setting, never its value.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from pydantic import BaseModel, SecretStr

from mosaic.errors import ConfigError

# Secrets production must set to its own values (dotted setting paths).
REQUIRED_SECRETS = (
    "ingress.hmac_key",
    "identity.hook_hmac_key",
    "nakama.server_key",
    "nakama.http_key",
    "nakama.session_encryption_key",
    "nakama.session_refresh_encryption_key",
    "nakama.console_password",
    "nakama.console_signing_key",
    "nakama.room_name_key",
    "postgres.password",
)
# Secrets that may stay empty (feature unused, or credentials from the platform) but must
# never keep a local value.
OPTIONAL_SECRETS = (
    "s3.secret_access_key",
    "vector_index.pinecone_api_key",
    "kafka.sasl_password",
    "kafka.ssl_key_password",
    "cassandra.password",
)
MIN_SECRET_LENGTH = 16
# Nakama's own built-in defaults (nakama/server/config.go) and obvious placeholders.
KNOWN_WEAK = frozenset({
    "defaultkey", "defaulthttpkey", "defaultencryptionkey", "defaultrefreshencryptionkey",
    "defaultsigningkey", "password", "admin", "changeme", "secret",
})
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1", "0.0.0.0"})  # noqa: S104
_ALL_INTERFACES = frozenset({"", "0.0.0.0", "::", "[::]", "*"})  # noqa: S104
# Upper bounds on Nakama sessions: a token outlives a Cognito disable by at most its lifetime.
MAX_SESSION_TOKEN_SECONDS = 24 * 3600
MAX_REFRESH_TOKEN_SECONDS = 7 * 24 * 3600
MAX_SESSION_LIFETIME_SECONDS = 30 * 24 * 3600
# Console user names an attacker tries first (ours is the local default).
WELL_KNOWN_CONSOLE_USERS = frozenset({"admin", "administrator", "root", "nakama"})


def _get(root: BaseModel, dotted: str) -> object:
    value: object = root
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def _default(root: BaseModel, dotted: str) -> object:
    *parents, leaf = dotted.split(".")
    model: object = root
    for part in parents:
        model = getattr(model, part)
    field = type(model).model_fields[leaf]  # type: ignore[attr-defined]
    return field.get_default(call_default_factory=True)


# HMAC keys still accepted during a rotation (dotted path of a key id -> key mapping); each
# one is held to the rules of a required secret, and none may reuse a local default.
PREVIOUS_KEY_SETS = (
    "ingress.hmac_previous_keys",
    "identity.hook_hmac_previous_keys",
)


def _secret_problem(root: BaseModel, dotted: str, *, required: bool) -> str | None:
    secret = _get(root, dotted)
    assert isinstance(secret, SecretStr)
    default = _default(root, dotted)
    local = [default.get_secret_value()] if isinstance(default, SecretStr) else []
    return _value_problem(dotted, secret.get_secret_value(), local, required=required)


def _local_hmac_keys(root: BaseModel) -> list[str]:
    return [d.get_secret_value() for d in (_default(root, "ingress.hmac_key"),
                                           _default(root, "identity.hook_hmac_key"))
            if isinstance(d, SecretStr)]


def _previous_key_problems(root: BaseModel) -> list[str]:
    found = []
    room_default, room_keys = (_default(root, "nakama.room_name_key"),
                               _get(root, "nakama.room_name_previous_keys"))
    assert isinstance(room_default, SecretStr) and isinstance(room_keys, list)
    for n, secret in enumerate(room_keys):
        problem = _value_problem(f"nakama.room_name_previous_keys[{n}]",
                                 secret.get_secret_value(),
                                 [room_default.get_secret_value()], required=True)
        if problem:
            found.append(problem)
    for dotted in PREVIOUS_KEY_SETS:
        keys = _get(root, dotted)
        assert isinstance(keys, dict)
        for key_id, secret in sorted(keys.items()):
            problem = _value_problem(f"{dotted}[{key_id}]", secret.get_secret_value(),
                                     _local_hmac_keys(root), required=True)
            if problem:
                found.append(problem)
    return found


def _value_problem(dotted: str, value: str, local_defaults: list[str], *,
                   required: bool) -> str | None:
    if value == "":
        return f"{dotted} is empty" if required else None
    if value in local_defaults:
        return f"{dotted} still has its built-in local default"
    if "local" in value.lower() or value.lower() in KNOWN_WEAK:
        return f"{dotted} is a local or well-known value"
    if len(value) < MIN_SECRET_LENGTH:
        return f"{dotted} is shorter than {MIN_SECRET_LENGTH} characters"
    return None


def _is_local_url(url: str | None) -> bool:
    if not url:
        return False
    host = (urlparse(url).hostname or "").lower()
    return host in _LOOPBACK or host.startswith("127.") or host.endswith(".localhost")


def _transport_problems(s: Any) -> list[str]:
    """Kafka and Cassandra must authenticate their clients and encrypt the traffic."""
    found = []
    kafka = s.kafka
    if kafka.security_protocol not in {"SSL", "SASL_SSL"}:
        found.append("kafka.security_protocol must be SASL_SSL or SSL (TLS)")
    elif kafka.security_protocol == "SASL_SSL" and not (
            kafka.sasl_username and kafka.sasl_password.get_secret_value()):
        found.append("kafka.sasl_username and kafka.sasl_password are required with SASL_SSL")
    elif kafka.security_protocol == "SSL" and kafka.ssl_certificate_location is None:
        found.append("kafka.ssl_certificate_location (a client certificate) is required "
                     "with SSL")
    cassandra = s.cassandra
    if not (cassandra.username and cassandra.password.get_secret_value()):
        found.append("cassandra.username and cassandra.password are required")
    if cassandra.ssl_ca_file is None and cassandra.ssl_cert_file is None:
        found.append("cassandra.ssl_ca_file is required (TLS)")
    return found


def _nakama_problems(s: Any) -> list[str]:
    nk, found = s.nakama, []
    if nk.console_host.strip().lower() in _ALL_INTERFACES:
        found.append("nakama.console_host binds every interface: bind a private address")
    if (nk.console_username == _default(s, "nakama.console_username")
            or nk.console_username.lower() in WELL_KNOWN_CONSOLE_USERS):
        found.append("nakama.console_username is the default or a well-known name")
    for name, value, limit in (
            ("session_token_expiry_seconds", nk.session_token_expiry_seconds,
             MAX_SESSION_TOKEN_SECONDS),
            ("refresh_token_expiry_seconds", nk.refresh_token_expiry_seconds,
             MAX_REFRESH_TOKEN_SECONDS),
            ("session_max_lifetime_seconds", nk.session_max_lifetime_seconds,
             MAX_SESSION_LIFETIME_SECONDS)):
        if value > limit:
            found.append(f"nakama.{name} is above {limit}")
    if nk.refresh_token_expiry_seconds > nk.session_max_lifetime_seconds:
        found.append("nakama.refresh_token_expiry_seconds is above "
                     "nakama.session_max_lifetime_seconds")
    hook_url = s.identity.hook_url
    if not (hook_url and hook_url.startswith("https://")):
        found.append("identity.hook_url must be set and https (Nakama sends ID tokens there)")
    ingress_keys = {s.ingress.hmac_key.get_secret_value(),
                    *(k.get_secret_value() for k in s.ingress.hmac_previous_keys.values())}
    hook_keys = {s.identity.hook_hmac_key.get_secret_value(),
                 *(k.get_secret_value() for k in s.identity.hook_hmac_previous_keys.values())}
    if ingress_keys & hook_keys:
        found.append("ingress and identity (auth hook) HMAC keys must differ")
    return found


def _ingress_problems(s: Any) -> list[str]:
    found = []
    url = s.ingress.url
    if not (url and url.startswith("https://")):
        found.append("ingress.url must be set and https (Nakama sends signed user requests "
                     "there)")
    if s.ingress.state_store != "cassandra":
        found.append("ingress.state_store must be cassandra (nonces shared by every instance)")
    return found


def problems(settings: BaseModel) -> list[str]:
    """Every reason these settings are unfit for production (empty when fit)."""
    found = [p for p in (_secret_problem(settings, d, required=True) for d in REQUIRED_SECRETS)
             if p]
    found += [p for p in (_secret_problem(settings, d, required=False)
                          for d in OPTIONAL_SECRETS) if p]
    found += _previous_key_problems(settings)
    s = settings
    identity = s.identity  # type: ignore[attr-defined]
    for name, url in (("identity.issuer", identity.issuer),
                      ("identity.jwks_url", identity.jwks_url)):
        if url is None:
            continue
        if _is_local_url(url):
            found.append(f"{name} points at a local OIDC stand-in")
        elif not url.startswith("https://"):
            found.append(f"{name} must be https")
    if identity.audience == _default(s, "identity.audience"):
        found.append("identity.audience still is the local client id")
    if _is_local_url(s.s3.endpoint_url):  # type: ignore[attr-defined]
        found.append("s3.endpoint_url points at a local S3 stand-in (moto)")
    embedding = s.embedding  # type: ignore[attr-defined]
    if _is_local_url(embedding.vertex_base_url):
        found.append("embedding.vertex_base_url points at a local Vertex AI stand-in")
    if embedding.vertex_static_token.get_secret_value():
        found.append("embedding.vertex_static_token is set (stand-ins and proxies only)")
    for name in ("pinecone_host", "pinecone_control_url"):
        if _is_local_url(getattr(s.vector_index, name)):  # type: ignore[attr-defined]
            found.append(f"vector_index.{name} points at a local Pinecone stand-in")
    return found + _transport_problems(s) + _nakama_problems(s) + _ingress_problems(s)


def refuse_unsafe(settings: BaseModel) -> None:
    found = problems(settings)
    if found:
        raise ConfigError("environment=production refuses to start: " + "; ".join(found))
