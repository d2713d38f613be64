"""Undirected weighted edge lists and a compressed adjacency for path searches."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from matcher.core.candidates import CandidateGraph
from matcher.core.model import FloatArray, IntArray


@dataclass(frozen=True)
class Edges:
    """Undirected edges ``u < v`` with their cosine."""

    u: IntArray
    v: IntArray
    cos: FloatArray

    def __len__(self) -> int:
        return len(self.u)


def candidate_edges(cands: CandidateGraph, n: int) -> Edges:
    rows = np.repeat(np.arange(n, dtype=np.int64), cands.k)
    cols = cands.nbr.reshape(-1)
    cos = cands.cos.reshape(-1)
    keep = cols >= 0
    return unique_edges(rows[keep], cols[keep], cos[keep], n)


def unique_edges(a: IntArray, b: IntArray, cos: FloatArray, n: int) -> Edges:
    lo = np.minimum(a, b).astype(np.int64)
    hi = np.maximum(a, b).astype(np.int64)
    keys, first = np.unique(lo * n + hi, return_index=True)
    return Edges(keys // max(n, 1), keys % max(n, 1), np.asarray(cos, dtype=np.float64)[first])


def merge_edges(first: Edges, second: Edges, n: int) -> Edges:
    return unique_edges(
        np.concatenate([first.u, second.u]),
        np.concatenate([first.v, second.v]),
        np.concatenate([first.cos, second.cos]),
        n,
    )


@dataclass(frozen=True)
class Adjacency:
    """CSR adjacency (both directions) as Python lists for fast scalar access."""

    start: list[int]
    nbr: list[int]

    def of(self, u: int) -> list[int]:
        return self.nbr[self.start[u] : self.start[u + 1]]


def adjacency(edges: Edges, n: int, weight: FloatArray) -> Adjacency:
    """Neighbours of each vertex, best edge first (so searches try good partners first)."""
    src = np.concatenate([edges.u, edges.v])
    dst = np.concatenate([edges.v, edges.u])
    w = np.concatenate([weight, weight])
    order = np.lexsort((dst, -w, src))
    start = np.searchsorted(src[order], np.arange(n + 1))
    return Adjacency(start.tolist(), dst[order].tolist())
