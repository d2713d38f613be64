"""Maximum cardinality and the wait rule under dense constraints, against brute force."""

from __future__ import annotations

import itertools

import networkx as nx
import numpy as np
import pytest

from matcher.core import Constraints, PoolSnapshot, match_pool

pytestmark = pytest.mark.unit


def best_cover(
    n: int, allowed: list[tuple[int, int]], size: int, prio: list[int]
) -> tuple[int, ...]:
    """Among matchings of ``size`` pairs, the covered set that is best by priority."""
    best: tuple[int, ...] | None = None
    for chosen in itertools.combinations(allowed, size):
        covered = [v for edge in chosen for v in edge]
        if len(set(covered)) == 2 * size:
            key = tuple(sorted(prio[v] for v in covered))
            best = key if best is None or key < best else best
    return best or ()


@pytest.mark.parametrize("seed", [pytest.param(s, id=f"seed{s}") for s in range(6)])
def test_dense_constraints_give_maximum_matching_with_longest_waiting_covered(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(25):
        n = int(rng.integers(2, 10))
        ids = tuple(f"u{i}" for i in range(n))
        wait = rng.integers(0, 4, n).astype(float) * 86_400.0
        pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
        forbidden = [p for p in pairs if rng.random() < 0.6]
        allowed = [p for p in pairs if p not in forbidden]
        constraints = Constraints(blocks=tuple((ids[i], ids[j]) for i, j in forbidden))
        pool = PoolSnapshot(ids, rng.standard_normal((n, 4)).astype(np.float32), wait)
        result = match_pool(pool, constraints)
        graph = nx.Graph(allowed)
        size = len(nx.max_weight_matching(graph, maxcardinality=True))
        order = sorted(range(n), key=lambda i: (-wait[i], ids[i]))
        prio = [order.index(i) for i in range(n)]
        covered = tuple(
            sorted(prio[ids.index(u)] for p in result.pairs for u in (p.user_a, p.user_b))
        )
        assert result.stats.pairs == size
        assert covered == best_cover(n, allowed, size, prio)
