"""Quality of the matcher against the exact optimum (networkx) and the seed baseline.

The optimum is the maximum-weight matching among maximum-cardinality matchings on the
complete graph of the pool (networkx ``max_weight_matching(maxcardinality=True)``). In an
odd pool our rule leaves out the shortest-waiting user, so the reference for odd pools is
the optimum of the pool without that user (the optimum that respects the rule).
"""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest

from matcher.baseline import seed_baseline
from matcher.core import MatchParams, PoolSnapshot, match_pool
from matcher.core.model import Constraints
from matcher.core.prepare import prepare
from matcher.synthetic import clustered_pool

pytestmark = pytest.mark.unit


def optimum(pool: PoolSnapshot, params: MatchParams) -> tuple[int, float]:
    prep = prepare(pool, Constraints(), params)
    keep = np.arange(prep.n)
    if prep.n % 2:
        shortest = np.lexsort((-prep.rank, prep.wait))[0]
        keep = keep[keep != shortest]
    sims = prep.x @ prep.x.T
    graph = nx.Graph()
    for i in keep.tolist():
        for j in keep.tolist():
            if i < j:
                graph.add_edge(i, j, weight=float(sims[i, j] + prep.boost[i] + prep.boost[j]))
    best = nx.max_weight_matching(graph, maxcardinality=True)
    return len(best), sum(graph[a][b]["weight"] for a, b in best)


POOLS = [
    pytest.param(n, dim, seed, id=f"n{n}-d{dim}-s{seed}")
    for n, dim, seeds in [(50, 32, (0, 1)), (121, 64, (2, 3)), (200, 32, (4, 5)), (199, 384, (6,))]
    for seed in seeds
]


@pytest.mark.parametrize(("n", "dim", "seed"), POOLS)
def test_matches_the_optimum_count_and_99_5_percent_of_its_score(
    n: int, dim: int, seed: int
) -> None:
    pool = clustered_pool(n, dim, seed)
    params = MatchParams()
    result = match_pool(pool, params=params)
    count, total = optimum(pool, params)
    assert result.stats.pairs == count
    assert result.stats.total_score >= 0.995 * total


@pytest.mark.parametrize(("n", "dim", "seed"), POOLS[::2])
def test_seed_baseline_is_measurably_worse(n: int, dim: int, seed: int) -> None:
    pool = clustered_pool(n, dim, seed)
    ours = match_pool(pool)
    base = seed_baseline(pool)
    assert ours.stats.total_score > base.total_score * 1.005
    assert ours.stats.pairs >= len(base.pairs)


def test_baseline_leaves_users_out_that_a_maximum_matching_covers() -> None:
    worse = 0
    for seed in range(4):
        pool = clustered_pool(200, 32, seed)
        worse += len(seed_baseline(pool).pairs) < match_pool(pool).stats.pairs
    assert worse >= 1
