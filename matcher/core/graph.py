"""Undirected weighted edge lists and a compressed adjacency for path searches."""

from __future__ import annotations

from array import array
from dataclasses import dataclass

import numpy as np

from matcher.core.candidates import CandidateGraph
from matcher.core.model import FloatArray, IntArray

_EDGE_ROWS = 65_536
_PADDING = np.iinfo(np.int64).max  # the key of a padding entry (no neighbour)


@dataclass(frozen=True)
class Edges:
    """Undirected edges ``u < v`` with their cosine; ``by_pair``: sorted by ``(u, v)``
    (both builders below sort them so), which spares the greedy order two sort keys."""

    u: IntArray
    v: IntArray
    cos: FloatArray
    by_pair: bool = False

    def __len__(self) -> int:
        return len(self.u)


def candidate_edges(cands: CandidateGraph, n: int) -> Edges:
    """:func:`unique_edges` of every candidate entry, the first one's cosine for a pair
    listed twice, with one key per entry as its only copy: keys are written a block of
    rows at a time (padding gets a key past every pair's, so it sorts last), and the
    cosines are read from the candidates at the positions that win."""
    k = cands.k
    keys = np.empty(n * k, dtype=np.int64)
    for start in range(0, n, _EDGE_ROWS):
        nbr = cands.nbr[start : start + _EDGE_ROWS]
        rows = np.repeat(np.arange(start, start + len(nbr), dtype=np.int64), k)
        cols = nbr.reshape(-1)
        part = np.minimum(rows, cols) * n + np.maximum(rows, cols)
        part[cols < 0] = _PADDING
        keys[start * k : start * k + len(part)] = part
    order = np.argsort(keys, kind="stable")  # as np.unique(return_index=True) sorts
    keys = keys[order]
    first = np.empty(len(keys), dtype=bool)
    first[:1] = True
    np.not_equal(keys[1:], keys[:-1], out=first[1:])
    first &= keys != _PADDING
    at = order[first]
    del order
    keys = keys[first]
    return Edges(keys // max(n, 1), keys % max(n, 1), cands.cos.reshape(-1)[at], by_pair=True)


def unique_edges(a: IntArray, b: IntArray, cos: FloatArray, n: int) -> Edges:
    lo = np.minimum(a, b).astype(np.int64)
    hi = np.maximum(a, b).astype(np.int64)
    keys, first = np.unique(lo * n + hi, return_index=True)
    return Edges(keys // max(n, 1), keys % max(n, 1), np.asarray(cos, dtype=np.float64)[first],
                 by_pair=True)


def merge_edges(first: Edges, second: Edges, n: int) -> Edges:
    return unique_edges(
        np.concatenate([first.u, second.u]),
        np.concatenate([first.v, second.v]),
        np.concatenate([first.cos, second.cos]),
        n,
    )


@dataclass(frozen=True)
class Adjacency:
    """CSR adjacency (both directions) in ``array`` arrays: scalar access as fast as a
    list's, at 4 bytes an entry instead of a list's 36 (a pointer and an int object)."""

    start: array[int]
    nbr: array[int]

    def of(self, u: int) -> array[int]:
        return self.nbr[self.start[u] : self.start[u + 1]]


def adjacency(edges: Edges, n: int, weight: FloatArray) -> Adjacency:
    """Neighbours of each vertex, best edge first (so searches try good partners first)."""
    src = np.concatenate([edges.u, edges.v]).astype(np.int32)
    dst = np.concatenate([edges.v, edges.u]).astype(np.int32)
    neg = np.concatenate([weight, weight])
    np.negative(neg, out=neg)
    order = np.lexsort((dst, neg, src))
    del neg
    start = np.searchsorted(src[order], np.arange(n + 1)).astype(np.int32)
    return Adjacency(_ints(start), _ints(dst[order]))


def _ints(values: IntArray) -> array[int]:
    out = array("i")
    out.frombytes(np.ascontiguousarray(values, dtype=np.int32).tobytes())
    return out
