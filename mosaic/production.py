"""What ``environment=production`` refuses: default or local secrets, and local stand-ins.

``Settings`` calls :func:`refuse_unsafe` when it is built with ``environment=production``,
so every entry point (ingress, agents, matcher, auth hook) refuses to start. Messages name
the setting, never its value.
"""

from __future__ import annotations

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
    if _is_local_url(s.vector_index.pinecone_host):  # type: ignore[attr-defined]
        found.append("vector_index.pinecone_host points at a local Pinecone stand-in")
    return found


def refuse_unsafe(settings: BaseModel) -> None:
    found = problems(settings)
    if found:
        raise ConfigError("environment=production refuses to start: " + "; ".join(found))
