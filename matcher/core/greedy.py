"""Greedy matching: repeatedly take the best remaining edge whose ends are both free.

Vectorised as rounds of locally dominant edges (an edge that is the best remaining edge
at both of its ends); with a strict edge order this yields exactly the greedy matching.
Small remainders finish in a plain loop.
"""

from __future__ import annotations

import numpy as np

from matcher.core.model import FloatArray, IntArray

_LOOP_BELOW = 20_000
_MAX_ROUNDS = 60


def edge_order(score: FloatArray, u: IntArray, v: IntArray, rank: IntArray, *,
               by_pair: bool = False) -> IntArray:
    """Edge indices best first: score descending, then user-id order of both ends.

    ``by_pair``: the edges (``u < v``) are sorted by ``(u, v)``. When the rows are in
    user-id order too (``rank`` is the identity, as in the matcher service's sorted
    snapshot), a stable sort by score alone keeps ties in that order: one sort key
    instead of three (12 million edges: 2.6-3.2x faster, 1.5x less allocated;
    bench/edge_order_bench.py)."""
    if by_pair and np.array_equal(rank, np.arange(len(rank))):
        return np.argsort(-score, kind="stable")
    small = np.int32 if len(rank) < 2**31 else np.int64  # ranks < n: halves the temporaries
    ru = rank[u].astype(small)
    rv = rank[v].astype(small)
    lo = np.minimum(ru, rv)
    hi = np.maximum(ru, rv, out=ru)
    del rv
    return np.lexsort((hi, lo, -score))


def greedy_match(mate: IntArray, u: IntArray, v: IntArray, order: IntArray) -> int:
    """Extend ``mate`` (in place, -1 = free) greedily along ``order``; returns pairs added."""
    eu, ev = u[order], v[order]
    alive = (mate[eu] < 0) & (mate[ev] < 0)
    eu, ev = eu[alive], ev[alive]
    added = 0
    rounds = 0
    while len(eu) > _LOOP_BELOW and rounds < _MAX_ROUNDS:
        added += _dominant_round(mate, eu, ev)
        alive = (mate[eu] < 0) & (mate[ev] < 0)
        eu, ev = eu[alive], ev[alive]
        rounds += 1
    return added + _loop(mate, eu, ev)


def _dominant_round(mate: IntArray, eu: IntArray, ev: IntArray) -> int:
    n = len(mate)
    pos = np.arange(len(eu), dtype=np.int64)
    best = np.full(n, len(eu), dtype=np.int64)
    np.minimum.at(best, eu, pos)
    np.minimum.at(best, ev, pos)
    take = (best[eu] == pos) & (best[ev] == pos)
    a, b = eu[take], ev[take]
    mate[a] = b
    mate[b] = a
    return int(take.sum())


def _loop(mate: IntArray, eu: IntArray, ev: IntArray) -> int:
    m = mate.tolist()
    added = 0
    for a, b in zip(eu.tolist(), ev.tolist(), strict=True):
        if m[a] < 0 and m[b] < 0:
            m[a] = b
            m[b] = a
            added += 1
    mate[:] = m
    return added
