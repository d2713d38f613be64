"""The seed plan's pairing algorithm (Phase 4), kept only for benchmarking.

Faithful to the plan: seekers sorted by wait (longest first, ties by user id); each seeker
still free queries its top-k most similar users (k = 10), refines their scores with the
wait boost, and takes the best one that is free and allowed. Nobody else is tried, so
users whose k neighbours are taken stay unmatched.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from matcher.core.candidates import ExactSearch, NeighbourSearch
from matcher.core.model import Constraints, MatchParams, Pair, PoolSnapshot
from matcher.core.prepare import is_forbidden, prepare


@dataclass(frozen=True)
class BaselineResult:
    pairs: tuple[Pair, ...]
    unmatched: tuple[str, ...]

    @property
    def total_score(self) -> float:
        return float(sum(p.score for p in self.pairs))


def seed_baseline(
    pool: PoolSnapshot,
    constraints: Constraints | None = None,
    params: MatchParams | None = None,
    search: NeighbourSearch | None = None,
    k: int = 10,
) -> BaselineResult:
    """Greedy by seniority over each seeker's top-``k`` neighbours (cosine + wait boost)."""
    params = params or MatchParams()
    prep = prepare(pool, constraints or Constraints(), params)
    n = prep.n
    if n < 2:
        return BaselineResult((), prep.ids)
    finder = search if search is not None and n > params.exact_max_users else ExactSearch()
    nbr, cos = finder.search(prep.x, min(k + 1, n - 1))
    owner = np.repeat(np.arange(n), nbr.shape[1])
    flat = nbr.reshape(-1)
    ok = (flat >= 0) & (flat != owner)
    ok[ok] &= ~is_forbidden(prep.forbidden, n, owner[ok], flat[ok])
    score = np.where(
        ok, cos.reshape(-1) + prep.boost[owner] + prep.boost[np.maximum(flat, 0)], -np.inf
    )
    score = score.reshape(n, -1)[:, :]
    nbr = np.where(ok, flat, -1).reshape(n, -1)
    seekers = np.lexsort((prep.rank, -prep.wait)).tolist()
    mate = [-1] * n
    pairs: list[tuple[int, int, float, float]] = []
    for u in seekers:
        if mate[u] >= 0:
            continue
        best, best_score = -1, -np.inf
        for v, s in zip(nbr[u, :k].tolist(), score[u, :k].tolist(), strict=True):
            if v >= 0 and mate[v] < 0 and s > best_score:
                best, best_score = v, s
        if best >= 0:
            mate[u], mate[best] = best, u
            pairs.append((u, best, best_score, best_score - prep.boost[u] - prep.boost[best]))
    return _result(prep.ids, prep.rank.tolist(), pairs, mate)


def _result(
    ids: tuple[str, ...],
    rank: list[int],
    pairs: list[tuple[int, int, float, float]],
    mate: list[int],
) -> BaselineResult:
    out = []
    for u, v, score, sim in pairs:
        a, b = (u, v) if rank[u] < rank[v] else (v, u)
        out.append(Pair(ids[a], ids[b], float(score), float(sim)))
    out.sort(key=lambda p: (p.user_a, p.user_b))
    left = tuple(sorted(ids[u] for u in range(len(ids)) if mate[u] < 0))
    return BaselineResult(tuple(out), left)
