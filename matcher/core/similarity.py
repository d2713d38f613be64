"""The similarity term: cosine, optionally standardised over the pool."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from matcher.core.model import BoolArray, FloatArray, IntArray
from matcher.core.prepare import Prepared, is_forbidden

_BLOCK_ROWS = 65_536
_GATHER_ROWS = 16_384


@dataclass(frozen=True)
class SimilarityScale:
    """``sim = (cos - mean) / std`` when standardised, else ``sim = cos`` (mean 0, std 1)."""

    mean: float
    std: float
    pool_mean: float
    pool_std: float

    def to_sim(self, cos: FloatArray) -> FloatArray:
        return (np.asarray(cos, dtype=np.float64) - self.mean) / self.std

    def to_cos(self, sim: float) -> float:
        return sim * self.std + self.mean


def pool_cosine_moments(x: FloatArray) -> tuple[float, float]:
    """Exact mean and standard deviation of cos(u, v) over all pairs u != v.

    With unit rows, sum_{u != v} cos = |sum x|^2 - n and
    sum_{u != v} cos^2 = ||X^T X||_F^2 - n, so no n x n matrix is needed.
    """
    n, d = x.shape
    if n < 2:
        return 0.0, 0.0
    total = np.zeros(d, dtype=np.float64)
    gram = np.zeros((d, d), dtype=np.float64)
    for start in range(0, n, _BLOCK_ROWS):
        block = x[start : start + _BLOCK_ROWS]
        total += block.sum(axis=0, dtype=np.float64)
        gram += (block.T @ block).astype(np.float64)
    pairs = float(n) * (n - 1)
    mean = (float(total @ total) - n) / pairs
    second = (float(np.sum(gram * gram)) - n) / pairs
    return mean, float(np.sqrt(max(second - mean * mean, 0.0)))


def pool_cosine_mean(x: FloatArray) -> float:
    """Exact mean of cos(u, v) over all pairs u != v (one pass, no Gram matrix)."""
    n = x.shape[0]
    if n < 2:
        return 0.0
    total = np.zeros(x.shape[1], dtype=np.float64)
    for start in range(0, n, _BLOCK_ROWS):
        total += x[start : start + _BLOCK_ROWS].sum(axis=0, dtype=np.float64)
    return float((float(total @ total) - n) / (float(n) * (n - 1)))


def similarity_scale(x: FloatArray, standardize: bool) -> SimilarityScale:
    """The pool's cosine moments (the std only when standardising: it costs n d^2)."""
    if not standardize:
        return SimilarityScale(0.0, 1.0, pool_cosine_mean(x), float("nan"))
    mean, std = pool_cosine_moments(x)
    return SimilarityScale(mean, std if std > 1e-9 else 1.0, mean, std)


def pair_cosines(x: FloatArray, u: IntArray, v: IntArray) -> FloatArray:
    """cos(x[u[i]], x[v[i]]) for each i, gathered in bounded blocks (float32 math)."""
    out = np.empty(len(u), dtype=np.float64)
    for start in range(0, len(u), _GATHER_ROWS):
        a = x[u[start : start + _GATHER_ROWS]]
        b = x[v[start : start + _GATHER_ROWS]]
        out[start : start + _GATHER_ROWS] = np.einsum("ij,ij->i", a, b)
    return out


def allowed_pairs(
    prep: Prepared, cos_min: float | None, u: IntArray, v: IntArray, cos: FloatArray
) -> BoolArray:
    """Pairs that are not forbidden, not self-pairs and reach the minimum similarity."""
    ok = (u != v) & ~is_forbidden(prep.forbidden, prep.n, u, v)
    if cos_min is not None:
        ok &= cos >= cos_min
    return np.asarray(ok)
