"""Embedder seam: validation, normalisation, the fake, and Vertex error handling on a
hand-written fake client (the HTTP path is covered against the stand-in)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from mosaic.errors import ExternalServiceError, ValidationError
from mosaic.ratelimit import TokenBucket
from mosaic.retry import Retrier
from mosaic.settings import EmbeddingSettings, Settings
from profiles.embedders import (
    LocalE5Embedder,
    VertexEmbedder,
    build_embedder,
    hashed_embedding,
    normalize_rows,
)
from tests.fakes import FakeEmbedder

pytestmark = pytest.mark.unit


def test_fake_embedder_is_deterministic_unit_and_word_sensitive() -> None:
    emb = FakeEmbedder(dim=64)
    v = emb.embed(["jazz and hiking", "hiking and jazz trips", "tax law", "jazz and hiking"])
    assert v.shape == (4, 64) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-6)
    assert np.array_equal(v[0], v[3])
    assert v[0] @ v[1] > v[0] @ v[2]


def test_empty_input_gives_an_empty_matrix() -> None:
    assert FakeEmbedder(dim=8).embed([]).shape == (0, 8)


@pytest.mark.parametrize("texts", [[""], ["ok", "   "]])
def test_blank_texts_are_rejected(texts: list[str]) -> None:
    with pytest.raises(ValidationError, match="empty"):
        FakeEmbedder().embed(texts)


def test_normalize_rejects_bad_model_output() -> None:
    with pytest.raises(ExternalServiceError, match="shape"):
        normalize_rows(np.ones((2, 3)), 4, "m")
    with pytest.raises(ExternalServiceError, match="zero"):
        normalize_rows(np.zeros((1, 4)), 4, "m")
    with pytest.raises(ExternalServiceError, match="zero or non-finite"):
        normalize_rows(np.full((1, 4), np.nan), 4, "m")


def test_hashed_embedding_depends_on_the_salt() -> None:
    assert not np.allclose(hashed_embedding("a b", 16, "m1"), hashed_embedding("a b", 16, "m2"))


def test_local_embedder_loads_lazily() -> None:
    emb = LocalE5Embedder()
    assert emb._engine is None and emb.dim == 384


def test_build_embedder_follows_settings() -> None:
    assert isinstance(build_embedder(Settings()), LocalE5Embedder)
    vertex = build_embedder(Settings(embedding=EmbeddingSettings(
        backend="vertex", vertex_model="gemini-embedding-001", output_dimensionality=256)))
    assert isinstance(vertex, VertexEmbedder)
    assert (vertex.dim, vertex.batch_size) == (256, 1)  # one text per request for this model


class FakeModels:
    """Stands in for ``client.models``: scripted failures, then vectors."""

    def __init__(self, failures: list[Exception], dim: int) -> None:
        self.failures, self.dim = failures, dim
        self.calls: list[Any] = []

    def embed_content(self, *, model: str, contents: list[str], config: Any) -> Any:
        self.calls.append((model, list(contents), config))
        if self.failures:
            raise self.failures.pop(0)
        return SimpleNamespace(embeddings=[
            SimpleNamespace(values=list(3 * hashed_embedding(t, self.dim))) for t in contents])


def vertex(failures: list[Exception], **kw: Any) -> tuple[VertexEmbedder, FakeModels]:
    models = FakeModels(failures, kw.get("output_dimensionality", 8))
    emb = VertexEmbedder(project="p", location="l", output_dimensionality=8,
                         client=SimpleNamespace(models=models),
                         retrier=Retrier(3, sleep=lambda s: None),
                         limiter=TokenBucket(1e9, 1e9), **kw)
    return emb, models


def api_error(code: int) -> Exception:
    from google.genai import errors

    return errors.APIError(code, {"error": {"code": code, "message": "x"}})


def test_vertex_batches_and_normalises() -> None:
    emb, models = vertex([], batch_size=2)
    v = emb.embed(["a", "b", "c"])
    assert [len(c[1]) for c in models.calls] == [2, 1]
    assert np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-6)
    assert models.calls[0][2].output_dimensionality == 8
    assert models.calls[0][2].task_type == "SEMANTIC_SIMILARITY"


@pytest.mark.parametrize("code", [429, 500, 503, 408])
def test_vertex_retries_transient_codes(code: int) -> None:
    emb, models = vertex([api_error(code), api_error(code)])
    assert emb.embed(["a"]).shape == (1, 8)
    assert len(models.calls) == 3 and emb.requests == 3


def test_vertex_gives_up_with_a_retryable_error() -> None:
    emb, _ = vertex([api_error(429)] * 5)
    with pytest.raises(ExternalServiceError) as info:
        emb.embed(["a"])
    assert info.value.retryable


@pytest.mark.parametrize("code", [400, 403, 404])
def test_vertex_does_not_retry_client_errors(code: int) -> None:
    emb, models = vertex([api_error(code)])
    with pytest.raises(ExternalServiceError) as info:
        emb.embed(["a"])
    assert not info.value.retryable and len(models.calls) == 1


def test_vertex_count_mismatch_is_an_error() -> None:
    emb, models = vertex([])
    models.embed_content = lambda **kw: SimpleNamespace(embeddings=[])  # type: ignore[method-assign]
    with pytest.raises(ExternalServiceError, match="0 embeddings for 1"):
        emb.embed(["a"])
