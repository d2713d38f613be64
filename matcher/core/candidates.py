"""Candidate partners: the top-k most similar allowed users of every user.

The search itself is behind a small interface (``NeighbourSearch``): ``ExactSearch`` uses
blocked float32 matrix products and never holds an n x n matrix; an approximate index
(``matcher.ann``) plugs in for large pools; ``matcher.core.recall`` measures its recall
and widens it. The inner products the search returns are exact (the interface requires
it); here forbidden pairs and pairs below the minimum similarity are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from matcher.core.model import FloatArray, IntArray
from matcher.core.prepare import Prepared, is_forbidden

_BLOCK_ELEMENTS = 16_000_000  # scores held per block (64 MB of float32)
_GROUP = 16
_FILTER_ROWS = 65_536  # rows filtered at a time (bounded temporaries)


class NeighbourSearch(Protocol):
    """Finds, for every row of ``x`` (unit vectors), ``k`` rows of highest inner product.

    Returns ``(neighbours, inner_products)``: ``(n, k)`` arrays, neighbour ``-1`` where fewer
    exist; the row itself may or may not appear (callers drop it). Inner products must be
    exact float32 dot products (an index that quantises must re-score).
    """

    @property
    def name(self) -> str: ...

    def search(self, x: FloatArray, k: int) -> tuple[IntArray, FloatArray]: ...


@dataclass(frozen=True)
class Partition:
    """An inverted-file partition of the rows: ``assign[u]`` is u's list and
    ``probes[l]`` the lists scanned for the members of list ``l``, own list first."""

    assign: IntArray  # (n,)
    probes: IntArray  # (lists, max probes)


@runtime_checkable
class PartitionedSearch(Protocol):
    """A search that partitions first, so the core can predict the recall of each probe
    count from the partition alone (on its exact sample) and scan only as many as pay."""

    @property
    def name(self) -> str: ...

    def search(self, x: FloatArray, k: int) -> tuple[IntArray, FloatArray]: ...

    def partition(self, x: FloatArray, variant: int = 0) -> Partition: ...

    def scan(
        self, x: FloatArray, part: Partition, nprobe: int, k: int
    ) -> tuple[IntArray, FloatArray]: ...


@dataclass(frozen=True)
class ExactSearch:
    """Exact top-k by blocked matrix products."""

    name: str = "exact"

    def search(self, x: FloatArray, k: int) -> tuple[IntArray, FloatArray]:
        return exact_top_k(x, x, k, exclude_self=True)


def exact_top_k(
    queries: FloatArray, base: FloatArray, k: int, *, exclude_self: bool = False
) -> tuple[IntArray, FloatArray]:
    """Top-``k`` rows of ``base`` per query row, best first (ties by lower index)."""
    nq, nb = queries.shape[0], base.shape[0]
    k = min(k, nb - 1 if exclude_self else nb)
    nbr = np.full((nq, max(k, 0)), -1, dtype=np.int64)
    sims = np.full((nq, max(k, 0)), -np.inf, dtype=np.float32)
    if k <= 0 or nq == 0:
        return nbr, sims
    rows = max(1, min(nq, _BLOCK_ELEMENTS // max(nb, 1)))
    for start in range(0, nq, rows):
        block = queries[start : start + rows] @ base.T
        if exclude_self:
            idx = np.arange(start, start + block.shape[0])
            block[idx - start, idx] = -np.inf
        cols, vals = block_top_k(block, k)
        nbr[start : start + block.shape[0]] = cols
        sims[start : start + block.shape[0]] = vals
    return nbr, sims


def block_top_k(block: FloatArray, k: int) -> tuple[IntArray, FloatArray]:
    """Exact row-wise top-k. A lower bound on each row's k-th value (the k-th largest of
    group maxima) prunes most entries before the sort."""
    rows, cols = block.shape
    groups = cols // _GROUP
    if groups >= 4 * k:
        # Column j * groups + g is member j of group g: only groups whose maximum reaches
        # the bound can hold a top-k entry, so only their 16 columns are looked at.
        maxima = block[:, : groups * _GROUP].reshape(rows, _GROUP, groups).max(axis=1)
        threshold = np.partition(maxima, groups - k, axis=1)[:, groups - k]
        gr, gg = np.nonzero(maxima >= threshold[:, None])
        gc = gg[:, None] + groups * np.arange(_GROUP)[None, :]
        keep = block[gr[:, None], gc] >= threshold[gr, None]
        r, c = np.broadcast_to(gr[:, None], gc.shape)[keep], gc[keep]
        if cols > groups * _GROUP:  # the last few columns belong to no group
            tr, tc = np.nonzero(block[:, groups * _GROUP :] >= threshold[:, None])
            r, c = np.concatenate([r, tr]), np.concatenate([c, tc + groups * _GROUP])
    elif cols > k:
        # Narrow blocks (an index list against its probes): the exact k-th value per row.
        threshold = np.partition(block, cols - k, axis=1)[:, cols - k]
        r, c = np.nonzero(block >= threshold[:, None])
    else:
        r, c = np.nonzero(np.isfinite(block) | np.isneginf(block))
    v = block[r, c]
    order = np.lexsort((c, -v, r))
    r, c, v = r[order], c[order], v[order]
    first = np.searchsorted(r, np.arange(rows))
    pos = np.arange(len(r)) - first[r]
    keep = (pos < k) & np.isfinite(v)
    out_c = np.full((rows, k), -1, dtype=np.int64)
    out_v = np.full((rows, k), -np.inf, dtype=np.float32)
    out_c[r[keep], pos[keep]] = c[keep]
    out_v[r[keep], pos[keep]] = v[keep]
    return out_c, out_v


@dataclass(frozen=True)
class CandidateGraph:
    """Row ``u`` lists u's allowed candidates, best first; ``-1`` pads."""

    nbr: IntArray  # (n, k) int64
    cos: FloatArray  # (n, k) float64, -inf where padded
    best_cos: FloatArray  # best allowed cosine seen per user (ignoring min similarity)

    @property
    def k(self) -> int:
        return int(self.nbr.shape[1])


def search_width(prep: Prepared, k: int) -> int:
    """Neighbours to ask the search for: ``k`` plus the largest forbidden degree (capped at
    ``2k``) plus one for the row itself."""
    extra = int(min(prep.forbidden_degree.max(initial=0), 2 * k))
    return min(prep.n - 1, k + extra + 1)


def build_candidates(
    prep: Prepared,
    raw: IntArray,
    raw_cos: FloatArray,
    k: int,
    cos_min: float | None,
) -> CandidateGraph:
    """Drop forbidden pairs from the searched neighbours, keep the best ``k`` per user.

    Rows are filtered a block at a time into the ``(n, k)`` result, so the temporaries
    stay a block's size whatever the search width (``k`` plus the largest forbidden degree).
    """
    n = prep.n
    want = raw.shape[1]
    width = min(k, want)
    nbr = np.empty((n, width), dtype=np.int64)
    cos = np.empty((n, width), dtype=np.float64)
    for start in range(0, n, _FILTER_ROWS):
        stop = min(n, start + _FILTER_ROWS)
        part_nbr, part_cos = _filter(prep, raw[start:stop], raw_cos[start:stop], start)
        nbr[start:stop], cos[start:stop] = part_nbr[:, :width], part_cos[:, :width]
    starved = np.flatnonzero((nbr[:, 0] < 0) & (prep.forbidden_degree < n - 1))
    if len(starved):
        scan_nbr, scan_cos = _scan_rows(prep, starved, want)
        nbr[starved], cos[starved] = scan_nbr[:, :width], scan_cos[:, :width]
    best = cos[:, 0].copy() if k else np.full(n, -np.inf)
    if cos_min is not None:
        low = cos < cos_min
        nbr[low] = -1
        cos[low] = -np.inf
    return CandidateGraph(nbr, cos, best)


def _filter(
    prep: Prepared, raw: IntArray, raw_cos: FloatArray, first_row: int
) -> tuple[IntArray, FloatArray]:
    """Invalid, self and forbidden entries moved last; rows sorted best first. ``raw`` holds
    the rows from ``first_row`` on."""
    n_rows, width = raw.shape
    owner = np.repeat(np.arange(first_row, first_row + n_rows), width)
    flat = raw.reshape(-1)
    valid = (flat >= 0) & (flat != owner)
    valid[valid] &= ~is_forbidden(prep.forbidden, prep.n, owner[valid], flat[valid])
    cos = np.where(valid, np.asarray(raw_cos, dtype=np.float64).reshape(-1), -np.inf)
    cos = cos.reshape(n_rows, width)
    nbr = np.where(valid, flat, -1).reshape(n_rows, width)
    tie = prep.rank[np.maximum(nbr, 0)]
    order = np.lexsort((tie, -cos), axis=1)
    return np.take_along_axis(nbr, order, 1), np.take_along_axis(cos, order, 1)


def _scan_rows(prep: Prepared, rows: IntArray, k: int) -> tuple[IntArray, FloatArray]:
    """Exact allowed top-k for a few users whose searched neighbours were all forbidden."""
    out_n = np.full((len(rows), k), -1, dtype=np.int64)
    out_c = np.full((len(rows), k), -np.inf)
    for i, u in enumerate(rows):
        cos = (prep.x @ prep.x[u]).astype(np.float64)
        others = np.arange(prep.n)
        bad = is_forbidden(prep.forbidden, prep.n, np.full(prep.n, u), others)
        cos[bad] = -np.inf
        cos[u] = -np.inf
        top = np.lexsort((prep.rank, -cos))[:k]
        top = top[np.isfinite(cos[top])]
        out_n[i, : len(top)] = top
        out_c[i, : len(top)] = cos[top]
    return out_n, out_c
