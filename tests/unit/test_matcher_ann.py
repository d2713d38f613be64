"""The faiss IVF adapter: recall, determinism, and use by the core above the threshold."""

from __future__ import annotations

import numpy as np
import pytest

from matcher.ann import FaissIvfSearch, recall
from matcher.core import MatchParams, match_pool
from matcher.synthetic import clustered_pool

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def unit_vectors() -> np.ndarray:
    x = np.asarray(clustered_pool(4000, 48, seed=8).vectors, dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def test_recall_is_high_and_scores_are_exact(unit_vectors: np.ndarray) -> None:
    found, sims = FaissIvfSearch().search(unit_vectors, 10)
    assert recall(unit_vectors, found, 10, sample=300) > 0.9
    rows = np.arange(50)
    exact = np.einsum("ij,ij->i", unit_vectors[rows], unit_vectors[found[rows, 0]])
    assert np.allclose(sims[rows, 0], exact, atol=1e-5)
    assert not (found == np.arange(len(found))[:, None]).any()


def test_core_uses_the_index_above_the_threshold_deterministically() -> None:
    pool = clustered_pool(3001, 32, seed=9)
    params = MatchParams(exact_max_users=1000)
    one = match_pool(pool, params=params, search=FaissIvfSearch())
    two = match_pool(pool, params=params, search=FaissIvfSearch())
    assert one.stats.candidate_method == "faiss-ivf"
    assert one.pairs == two.pairs
    assert one.stats.pairs == 1500
    exact = match_pool(pool)
    assert one.stats.total_score > 0.99 * exact.stats.total_score
