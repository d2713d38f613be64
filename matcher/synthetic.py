"""Clustered random pools for tests and benchmarks (numpy only, seeded)."""

from __future__ import annotations

import numpy as np

from matcher.core.model import PoolSnapshot

_DAY = 24 * 3600.0


def clustered_vectors(
    n: int,
    dim: int,
    seed: int,
    clusters: int | None = None,
    spread: tuple[float, float] = (0.6, 1.2),
) -> np.ndarray:
    """``n`` float32 vectors around ``clusters`` random centres (not normalised)."""
    rng = np.random.default_rng(seed)
    count = clusters or max(2, round(np.sqrt(n) / 2))
    centres = rng.standard_normal((count, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    label = rng.integers(0, count, n)
    width = rng.uniform(spread[0], spread[1], count).astype(np.float32) / np.sqrt(dim)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 65_536):
        stop = min(n, start + 65_536)
        block = rng.standard_normal((stop - start, dim), dtype=np.float32)
        block *= width[label[start:stop], None]
        block += centres[label[start:stop]]
        out[start:stop] = block
    return out


def clustered_pool(
    n: int, dim: int, seed: int, clusters: int | None = None, max_wait_days: float = 14.0
) -> PoolSnapshot:
    """A pool with clustered vectors, waits uniform in [0, max_wait_days] and few misses."""
    rng = np.random.default_rng(seed + 1_000_003)
    ids = tuple(f"u{i:07d}" for i in rng.permutation(n))
    wait = rng.uniform(0.0, max_wait_days * _DAY, n)
    missed = rng.integers(0, 3, n)
    return PoolSnapshot(ids, clustered_vectors(n, dim, seed, clusters), wait, missed)
