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


def hard_vectors(
    n: int,
    dim: int,
    seed: int,
    group_sizes: tuple[int, int] = (10, 30),
    cosines: tuple[float, float] = (0.2, 0.6),
) -> tuple[np.ndarray, np.ndarray]:
    """Diffuse embeddings: many small groups buried in isotropic noise.

    Group sizes are uniform in ``group_sizes`` (about n/20 groups by default); each group has
    a random unit centre ``c`` and a within-group cosine ``rho`` uniform in ``cosines``;
    a member is ``sqrt(rho) c + sqrt(1 - rho) z`` with ``z ~ N(0, I/dim)``, so two members
    have cosine about ``rho`` and members of different groups about 0 (standard deviation
    ``1/sqrt(dim)``). Returns float32 vectors (not normalised) and each row's group label.
    """
    rng = np.random.default_rng(seed)
    sizes = rng.integers(group_sizes[0], group_sizes[1] + 1, n // group_sizes[0] + 1)
    count = int(np.searchsorted(np.cumsum(sizes), n)) + 1
    label = np.repeat(np.arange(count), sizes[:count])[:n]
    label = label[rng.permutation(n)]
    rho = rng.uniform(cosines[0], cosines[1], count).astype(np.float32)
    centres = rng.standard_normal((count, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    scale = np.float32(1.0 / np.sqrt(dim))
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 65_536):
        stop = min(n, start + 65_536)
        lab = label[start:stop]
        block = rng.standard_normal((stop - start, dim), dtype=np.float32)
        block *= scale * np.sqrt(1.0 - rho[lab])[:, None]
        block += np.sqrt(rho[lab])[:, None] * centres[lab]
        out[start:stop] = block
    return out, label


def hard_pool(
    n: int, dim: int, seed: int, max_wait_days: float = 14.0
) -> tuple[PoolSnapshot, np.ndarray]:
    """A pool of :func:`hard_vectors` (waits as in :func:`clustered_pool`) and the labels."""
    rng = np.random.default_rng(seed + 1_000_003)
    ids = tuple(f"u{i:07d}" for i in rng.permutation(n))
    wait = rng.uniform(0.0, max_wait_days * _DAY, n)
    missed = rng.integers(0, 3, n)
    vectors, labels = hard_vectors(n, dim, seed)
    return PoolSnapshot(ids, vectors, wait, missed), labels
