"""The stand-ins themselves, driven by the real SDKs (and raw HTTP for error paths), so
the adapters' tests rest on a server that behaves like the documented APIs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from standins.pinecone import PineconeStandin
from standins.vertex import VertexStandin

pytestmark = pytest.mark.integration


@pytest.fixture
def pinecone_index() -> Iterator[Any]:
    from pinecone import Pinecone

    with PineconeStandin(dimension=3, api_key="k") as standin:
        index = Pinecone(api_key="k").Index(host=standin.url)
        index.upsert(vectors=[
            {"id": "a", "values": [1, 0, 0], "metadata": {"status": "waiting", "n": 1,
                                                          "tags": ["x", "y"]}},
            {"id": "b", "values": [0.9, 0.1, 0], "metadata": {"status": "matched", "n": 5}},
            {"id": "c", "values": [0, 1, 0], "metadata": {"n": 9}},
        ], namespace="ns")
        yield index


@pytest.mark.parametrize(("spec", "ids"), [
    ({"status": "waiting"}, {"a"}),
    ({"status": {"$ne": "waiting"}}, {"b", "c"}),
    ({"status": {"$nin": ["waiting", "matched"]}}, {"c"}),
    ({"status": {"$exists": True}}, {"a", "b"}),
    ({"n": {"$gte": 5}}, {"b", "c"}),
    ({"n": {"$lte": 5, "$gt": 1}}, {"b"}),
    ({"tags": {"$in": ["y"]}}, {"a"}),
    ({"$or": [{"n": 1}, {"n": 9}]}, {"a", "c"}),
    ({"$and": [{"n": {"$lt": 9}}, {"status": {"$in": ["matched"]}}]}, {"b"}),
])
def test_pinecone_filter_operators(pinecone_index: Any, spec: dict[str, Any],
                                   ids: set[str]) -> None:
    result = pinecone_index.query(top_k=10, vector=[1, 0, 0], filter=spec, namespace="ns",
                                  include_metadata=True)
    assert {m.id for m in result.matches} == ids


def test_pinecone_query_fetch_list_stats(pinecone_index: Any) -> None:
    result = pinecone_index.query(top_k=2, vector=[1, 0, 0], namespace="ns",
                                  include_values=True, include_metadata=True)
    assert [m.id for m in result.matches] == ["a", "b"]
    assert result.matches[0].score == pytest.approx(1.0)
    assert result.matches[0].values == pytest.approx([1, 0, 0])
    assert result.matches[0].metadata["tags"] == ["x", "y"]
    fetched = pinecone_index.fetch(ids=["a", "zz"], namespace="ns")
    assert list(fetched.vectors) == ["a"]
    page = pinecone_index.list_paginated(limit=2, namespace="ns")
    assert [v.id for v in page.vectors] == ["a", "b"] and page.pagination.next
    rest = pinecone_index.list_paginated(limit=2, namespace="ns",
                                         pagination_token=page.pagination.next)
    assert [v.id for v in rest.vectors] == ["c"] and rest.pagination is None
    stats = pinecone_index.describe_index_stats()
    assert stats.dimension == 3 and stats.total_vector_count == 3
    assert stats.namespaces["ns"].vector_count == 3


def test_pinecone_update_and_delete(pinecone_index: Any) -> None:
    pinecone_index.update(id="a", set_metadata={"status": "matched"}, namespace="ns")
    assert pinecone_index.fetch(ids=["a"], namespace="ns").vectors["a"].metadata == {
        "status": "matched", "n": 1, "tags": ["x", "y"]}
    pinecone_index.delete(ids=["a", "b"], namespace="ns")
    assert pinecone_index.describe_index_stats().total_vector_count == 1


@pytest.mark.parametrize("values", [[1, 0], [0, 0, 0]])
def test_pinecone_rejects_bad_vectors(pinecone_index: Any, values: list[float]) -> None:
    from pinecone.errors.exceptions import ApiError

    with pytest.raises(ApiError) as info:
        pinecone_index.upsert(vectors=[{"id": "z", "values": values}], namespace="ns")
    assert info.value.status_code == 400


def test_pinecone_null_metadata_is_rejected() -> None:
    with PineconeStandin(dimension=3, api_key="k") as standin:
        reply = httpx.post(f"{standin.url}/vectors/upsert", headers={"Api-Key": "k"},
                           json={"vectors": [{"id": "z", "values": [1, 0, 0],
                                              "metadata": {"x": None}}]})
    assert reply.status_code == 400 and "Metadata value" in reply.json()["message"]


@pytest.fixture(scope="module")
def vertex() -> Iterator[VertexStandin]:
    with VertexStandin() as server:
        yield server


def predict(server: VertexStandin, model: str, body: dict[str, Any],
            token: str = "t") -> httpx.Response:
    url = (f"{server.url}/v1beta1/projects/p/locations/us-central1/publishers/google/"
           f"models/{model}:predict")
    return httpx.post(url, json=body, headers={"Authorization": f"Bearer {token}"})


@pytest.mark.parametrize(("model", "body", "status"), [
    ("text-embedding-005", {"instances": [{"content": "x"}] * 251}, 400),
    ("gemini-embedding-001", {"instances": [{"content": "x"}] * 2}, 400),
    ("text-embedding-005", {"instances": [{"content": ""}]}, 400),
    ("text-embedding-005", {"instances": [{"content": "x"}],
                            "parameters": {"outputDimensionality": 769}}, 400),
    ("text-embedding-005", {"instances": [{"content": "x", "task_type": "NOPE"}]}, 400),
    ("no-such-model", {"instances": [{"content": "x"}]}, 404),
    ("text-embedding-005", {"instances": [{"content": "x"}] * 250}, 200),
])
def test_vertex_limits(vertex: VertexStandin, model: str, body: dict[str, Any],
                       status: int) -> None:
    reply = predict(vertex, model, body)
    assert reply.status_code == status
    if status != 200:
        assert reply.json()["error"]["code"] == status


def test_vertex_response_shape_and_injected_faults(vertex: VertexStandin) -> None:
    reply = predict(vertex, "text-embedding-005", {"instances": [{"content": "hi there"}],
                                                   "parameters": {"outputDimensionality": 4}})
    prediction = reply.json()["predictions"][0]["embeddings"]
    assert len(prediction["values"]) == 4 and prediction["statistics"]["token_count"] == 2
    vertex.fail_next(1, 429, retry_after=2)
    throttled = predict(vertex, "text-embedding-005", {"instances": [{"content": "x"}]})
    assert throttled.status_code == 429 and throttled.headers["retry-after"] == "2"
    assert throttled.json()["error"]["status"] == "RESOURCE_EXHAUSTED"
    assert httpx.post(f"{vertex.url}/v1/whatever", json={}).status_code == 404


def test_pinecone_metadata_updates_after_a_match_are_batched_and_limited() -> None:
    """The post-match update of 200 matched users (150 present): 2 fetches of 100 ids,
    not one per user, then one update per present user, never faster than the
    client-side limit (checked on the stand-in's arrival times)."""
    import numpy as np

    from mosaic.ratelimit import TokenBucket
    from profiles.index import VectorRecord
    from profiles.pinecone_index import PineconeVectorIndex

    rate = 100.0
    with PineconeStandin(dimension=3, api_key="k") as standin:
        index = PineconeVectorIndex.connect(api_key="k", host=standin.url, dim=3,
                                            namespace="ns",
                                            limiter=TokenBucket(rate, capacity=10))
        index.upsert([VectorRecord(f"u{i:03d}", np.array([1, i, 0], dtype=np.float32),
                                   {"status": "waiting"}) for i in range(150)])
        standin.reset_requests()
        ids = [f"u{i:03d}" for i in range(200)]
        found = index.update_metadata_many(ids, {"status": "matched"})
        assert found == [i < 150 for i in range(200)]
        paths = [r.path for r in standin.requests]
        assert paths.count("/vectors/fetch") == 2 and paths.count("/vectors/update") == 150
        times = sorted(r.at for r in standin.requests)
        busiest = max(sum(1 for t in times if start <= t < start + 0.5) for start in times)
        assert busiest <= rate * 0.5 + 10 + 1, busiest  # the rate, the burst, 1 of slack
        assert index.fetch(["u007"])["u007"].metadata["status"] == "matched"
