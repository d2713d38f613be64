"""One VectorIndex contract, run against every backend.

``IndexContract`` holds the cases; this module runs it on the Pinecone adapter (real SDK
against the Pinecone stand-in) and the Cassandra adapter (the real local Cassandra 5);
tests/unit/test_profiles_index_memory.py runs the same class on the in-memory index.
A backend fixture yields an empty index of dimension DIM.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from mosaic.errors import ConfigError, ExternalServiceError, ValidationError
from mosaic.retry import Retrier
from mosaic.settings import Settings
from profiles.index import VectorIndex, VectorRecord
from stack.base import Service

DIM = 8
RNG_SEED = 20261129


def vec(rng: np.random.Generator) -> np.ndarray:
    return rng.standard_normal(DIM).astype(np.float32)


def population(n: int, seed: int = RNG_SEED) -> list[VectorRecord]:
    rng = np.random.default_rng(seed)
    return [VectorRecord(f"user-{i:04d}", vec(rng), {
        "status": "waiting" if i % 2 else "matched", "pool": ("eu", "us", "apac")[i % 3],
        "opted_in_at": 1_700_000_000.0 + i, "missed_cycles": i % 7, "model": "m1"})
        for i in range(n)]


def brute_force(records: list[VectorRecord], q: np.ndarray, k: int,
                keep: Any = lambda m: True) -> list[tuple[str, float]]:
    qn = q / np.linalg.norm(q)
    scored = [(r.id, float(r.vector @ qn / np.linalg.norm(r.vector)))
              for r in records if keep(r.metadata)]
    return sorted(scored, key=lambda s: -s[1])[:k]


class IndexContract:
    def test_upsert_then_fetch_round_trips(self, index: VectorIndex) -> None:
        recs = population(3)
        assert index.upsert(recs) == 3
        got = index.fetch([r.id for r in recs] + ["nobody"])
        assert sorted(got) == [r.id for r in recs]
        for r in recs:
            assert np.allclose(got[r.id].vector, r.vector, atol=1e-6)
            assert got[r.id].metadata == r.metadata
        m = got["user-0001"].metadata
        assert type(m["opted_in_at"]) is float and type(m["missed_cycles"]) is int

    def test_upsert_replaces_vector_and_all_metadata(self, index: VectorIndex) -> None:
        rng = np.random.default_rng(1)
        index.upsert([VectorRecord("u", vec(rng), {"status": "waiting", "pool": "eu"})])
        new = vec(rng)
        index.upsert([VectorRecord("u", new, {"status": "matched"})])
        got = index.fetch(["u"])["u"]
        assert got.metadata == {"status": "matched"}
        assert np.allclose(got.vector, new, atol=1e-6)
        assert index.count() == 1

    def test_fetch_nothing(self, index: VectorIndex) -> None:
        assert index.fetch([]) == {}
        assert index.fetch(["missing"]) == {}

    def test_query_ranks_by_cosine(self, index: VectorIndex) -> None:
        recs = population(40)
        index.upsert(recs)
        q = vec(np.random.default_rng(5))
        got = index.query(q, 5)
        expected = brute_force(recs, q, 5)
        assert [m.id for m in got] == [i for i, _ in expected]
        assert [m.score for m in got] == pytest.approx([s for _, s in expected], abs=1e-4)
        assert got[0].metadata == next(r.metadata for r in recs if r.id == got[0].id)
        assert all(m.vector is None for m in got)

    def test_self_match_scores_one_and_opposite_minus_one(self, index: VectorIndex) -> None:
        v = np.zeros(DIM, dtype=np.float32)
        v[0] = 2.0
        index.upsert([VectorRecord("same", v), VectorRecord("opposite", -v)])
        got = {m.id: m.score for m in index.query(v, 2)}
        assert got == pytest.approx({"same": 1.0, "opposite": -1.0}, abs=1e-5)

    def test_query_can_return_vectors(self, index: VectorIndex) -> None:
        recs = population(3)
        index.upsert(recs)
        (best,) = index.query(recs[0].vector, 1, include_vectors=True)
        assert best.id == recs[0].id and best.vector is not None
        assert np.allclose(best.vector, recs[0].vector, atol=1e-6)

    @pytest.mark.parametrize("spec", [
        {"status": "waiting"},
        {"status": {"$eq": "matched"}, "pool": "us"},
        {"pool": {"$in": ["eu", "apac"]}},
        {"status": "waiting", "pool": {"$in": ["us"]}, "missed_cycles": {"$lte": 3}},
        {"opted_in_at": {"$gte": 1_700_000_010, "$lt": 1_700_000_030}},
        {"missed_cycles": {"$gt": 4}, "model": "m1"},
    ])
    def test_filters_match_brute_force(self, index: VectorIndex, spec: dict[str, Any]) -> None:
        from profiles.index import parse_filter

        recs = population(60)
        index.upsert(recs)
        conditions = parse_filter(spec)
        q = vec(np.random.default_rng(9))
        got = index.query(q, 10, spec)
        expected = brute_force(recs, q, 10, lambda m: all(c.test(m) for c in conditions))
        assert [m.id for m in got] == [i for i, _ in expected]
        assert all(all(c.test(m.metadata) for c in conditions) for m in got)

    def test_selective_filter_returns_every_match_below_top_k(self, index: VectorIndex) -> None:
        recs = population(300)
        index.upsert(recs)
        spec = {"pool": "apac", "status": "waiting", "missed_cycles": 3}
        wanted = {r.id for r in recs if r.metadata["pool"] == "apac"
                  and r.metadata["status"] == "waiting" and r.metadata["missed_cycles"] == 3}
        got = index.query(vec(np.random.default_rng(3)), 50, spec)
        assert {m.id for m in got} == wanted and 0 < len(wanted) < 50

    @pytest.mark.parametrize("spec", [
        {"fingerprint": "x"},  # stored but not filterable
        {"color": "red"},
        {"status": {"$ne": "waiting"}},
        {"pool": {"$in": []}},
        {"status": {"$gt": "a"}},
        {"missed_cycles": {"$lte": "3"}},
    ])
    def test_unsupported_filters_are_rejected(self, index: VectorIndex,
                                              spec: dict[str, Any]) -> None:
        with pytest.raises(ValidationError):
            index.query(np.ones(DIM), 1, spec)

    @pytest.mark.parametrize("top_k", [0, 1001, -1])
    def test_top_k_bounds(self, index: VectorIndex, top_k: int) -> None:
        with pytest.raises(ValidationError, match="top_k"):
            index.query(np.ones(DIM), top_k)

    @pytest.mark.parametrize(("vector", "reason"), [
        (np.zeros(DIM), "zero vector"),
        (np.full(DIM, np.nan), "NaN"),
        (np.ones(DIM + 1), "shape"),
    ])
    def test_bad_vectors_are_rejected(self, index: VectorIndex, vector: np.ndarray,
                                      reason: str) -> None:
        with pytest.raises(ValidationError, match=reason):
            index.upsert([VectorRecord("u", vector)])
        with pytest.raises(ValidationError, match=reason):
            index.query(vector, 1)
        assert index.count() == 0

    @pytest.mark.parametrize("metadata", [
        {"color": "red"}, {"missed_cycles": True}, {"missed_cycles": 1.5},
        {"status": 3}, {"opted_in_at": None}, {"opted_in_at": float("inf")},
    ])
    def test_bad_metadata_is_rejected(self, index: VectorIndex,
                                      metadata: dict[str, Any]) -> None:
        with pytest.raises(ValidationError):
            index.upsert([VectorRecord("u", np.ones(DIM), metadata)])

    @pytest.mark.parametrize("record_id", ["", "has space", "x" * 513, "tab\t"])
    def test_bad_ids_are_rejected(self, index: VectorIndex, record_id: str) -> None:
        with pytest.raises(ValidationError):
            index.upsert([VectorRecord(record_id, np.ones(DIM))])

    def test_duplicate_ids_in_one_upsert_are_rejected(self, index: VectorIndex) -> None:
        with pytest.raises(ValidationError, match="duplicate"):
            index.upsert([VectorRecord("u", np.ones(DIM)), VectorRecord("u", np.ones(DIM))])

    def test_update_metadata_merges(self, index: VectorIndex) -> None:
        recs = population(2)
        index.upsert(recs)
        assert index.update_metadata("user-0001", {"status": "matched", "missed_cycles": 0})
        got = index.fetch(["user-0001"])["user-0001"]
        assert got.metadata == {**recs[1].metadata, "status": "matched", "missed_cycles": 0}
        assert np.allclose(got.vector, recs[1].vector, atol=1e-6)
        (best,) = index.query(recs[1].vector, 1, {"status": "matched", "missed_cycles": 0})
        assert best.id == "user-0001"

    def test_update_metadata_of_a_missing_record_changes_nothing(self,
                                                                 index: VectorIndex) -> None:
        assert index.update_metadata("ghost", {"status": "waiting"}) is False
        assert index.fetch(["ghost"]) == {} and index.count() == 0
        with pytest.raises(ValidationError):
            index.update_metadata("ghost", {})

    def test_update_metadata_many_reports_each_record(self, index: VectorIndex) -> None:
        recs = population(3)
        index.upsert(recs)
        got = index.update_metadata_many(["user-0000", "ghost", "user-0002"],
                                         {"status": "matched"})
        assert got == [True, False, True]
        fetched = index.fetch(["user-0000", "user-0001", "user-0002", "ghost"])
        assert [fetched[u].metadata["status"] for u in ("user-0000", "user-0002")] == [
            "matched", "matched"]
        assert fetched["user-0001"].metadata == recs[1].metadata
        assert "ghost" not in fetched and index.count() == 3

    def test_delete_list_and_count(self, index: VectorIndex) -> None:
        recs = population(250)  # more than one upsert batch and one list page
        index.upsert(recs)
        assert index.count() == 250
        assert index.list_ids() == sorted(r.id for r in recs)
        index.delete(["user-0000", "user-0001", "never-existed"])
        assert index.count() == 248
        assert "user-0000" not in index.list_ids()
        assert index.fetch(["user-0000"]) == {}
        assert all(m.id != "user-0000" for m in index.query(recs[0].vector, 5))
        index.delete([])


# -- backends ---------------------------------------------------------------------------

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pinecone_standin() -> Iterator[Any]:
    from standins.pinecone import PineconeStandin

    with PineconeStandin(dimension=DIM, api_key="contract-key") as standin:
        yield standin


@pytest.fixture(scope="module")
def cassandra_session(settings: Settings, cassandra_stack: Service) -> Any:
    from tests.support import migrated_session

    return migrated_session(settings, "mosaic_test_profiles")


@pytest.fixture(scope="module")
def cassandra_table(cassandra_session: Any) -> Iterator[Any]:
    import uuid

    from profiles.cassandra_index import CassandraVectorIndex

    index = CassandraVectorIndex(cassandra_session, dim=DIM,
                                 table=f"contract_{uuid.uuid4().hex[:10]}")
    yield index
    index.drop()


@pytest.fixture(params=["pinecone", "cassandra"])
def index(request: pytest.FixtureRequest, unique: str) -> Iterator[VectorIndex]:
    if request.param == "pinecone":
        from profiles.pinecone_index import PineconeVectorIndex

        standin = request.getfixturevalue("pinecone_standin")
        yield PineconeVectorIndex.connect(api_key="contract-key", host=standin.url, dim=DIM,
                                          namespace=f"ns-{unique}")
    else:
        table = request.getfixturevalue("cassandra_table")
        table.delete(table.list_ids())  # one table per run; each test starts empty
        yield table


class TestIndexContract(IndexContract):
    pass


# -- backend specifics -----------------------------------------------------------------


def test_pinecone_upserts_in_batches_of_100(pinecone_standin: Any, unique: str) -> None:
    from profiles.pinecone_index import PineconeVectorIndex

    index = PineconeVectorIndex.connect(api_key="contract-key", host=pinecone_standin.url,
                                        dim=DIM, namespace=f"ns-{unique}")
    pinecone_standin.reset_requests()
    index.upsert(population(250))
    upserts = [r for r in pinecone_standin.requests if r.path == "/vectors/upsert"]
    assert [len(r.body["vectors"]) for r in upserts] == [100, 100, 50]
    assert all(r.body["namespace"] == f"ns-{unique}" for r in upserts)
    assert all(r.headers.get("api-key") == "contract-key" for r in upserts)


def test_pinecone_rides_out_throttling(pinecone_standin: Any, unique: str) -> None:
    from profiles.pinecone_index import PineconeVectorIndex

    index = PineconeVectorIndex.connect(api_key="contract-key", host=pinecone_standin.url,
                                        dim=DIM, namespace=f"ns-{unique}",
                                        retrier=Retrier(3, sleep=lambda s: None))
    index.upsert(population(5))
    pinecone_standin.fail_next(6, 429, retry_after=0)  # more than the SDK's own 3 retries
    assert len(index.query(np.ones(DIM), 3)) == 3
    assert index.retrier.retries >= 1


def test_pinecone_persistent_outage_is_a_retryable_error(pinecone_standin: Any,
                                                         unique: str) -> None:
    from profiles.pinecone_index import PineconeVectorIndex

    index = PineconeVectorIndex.connect(api_key="contract-key", host=pinecone_standin.url,
                                        dim=DIM, namespace=f"ns-{unique}",
                                        retrier=Retrier(2, sleep=lambda s: None))
    pinecone_standin.fail_next(8, 503, retry_after=0)
    with pytest.raises(ExternalServiceError) as info:
        index.count()
    assert info.value.retryable
    pinecone_standin.reset_requests()


def test_pinecone_wrong_key_is_not_retryable(pinecone_standin: Any) -> None:
    from profiles.pinecone_index import PineconeVectorIndex

    index = PineconeVectorIndex.connect(api_key="wrong", host=pinecone_standin.url, dim=DIM,
                                        namespace="x")
    with pytest.raises(ExternalServiceError) as info:
        index.count()
    assert not info.value.retryable


def test_cassandra_schema_is_idempotent_and_guards_the_dimension(
        cassandra_session: Any, cassandra_table: Any) -> None:
    from profiles.cassandra_index import CassandraVectorIndex

    CassandraVectorIndex(cassandra_session, dim=DIM, table=cassandra_table.table)
    with pytest.raises(ConfigError, match="vector<float, 8>"):
        CassandraVectorIndex(cassandra_session, dim=DIM * 2, table=cassandra_table.table)
