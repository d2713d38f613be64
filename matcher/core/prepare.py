"""Validate a snapshot and turn it into arrays the algorithms work on."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from matcher.core.model import (
    BoolArray,
    Constraints,
    FloatArray,
    IntArray,
    MatchParams,
    PoolSnapshot,
)
from mosaic.errors import ValidationError

_UNIT_TOLERANCE = 1e-4
_DIVIDE_ROWS = 2_048  # a million rows: 0.5 s (65,536-row blocks: 1.8 s)


@dataclass(frozen=True)
class Prepared:
    """A validated pool. ``rank[i]`` is the position of ``ids[i]`` in sorted id order."""

    ids: tuple[str, ...]
    x: FloatArray  # (n, d) float32, unit rows
    wait: FloatArray  # float64 seconds
    missed: IntArray
    rank: IntArray
    boost: FloatArray  # wait_boost * min(1, wait / saturation) / 2, per user
    forbidden: IntArray  # sorted unique keys lo * n + hi
    forbidden_degree: IntArray

    @property
    def n(self) -> int:
        return len(self.ids)


def prepare(pool: PoolSnapshot, constraints: Constraints, params: MatchParams) -> Prepared:
    _check_params(params)
    ids = tuple(pool.user_ids)
    n = len(ids)
    _check_ids(ids)
    x = normalised(pool.vectors, n)
    wait = _vector(pool.wait_seconds, n, "wait_seconds")
    if np.any(wait < 0):
        raise ValidationError("wait_seconds must be >= 0")
    missed = _missed(pool.missed_cycles, n)
    order = sorted(range(n), key=ids.__getitem__)
    rank = np.empty(n, dtype=np.int64)
    rank[np.asarray(order, dtype=np.int64)] = np.arange(n, dtype=np.int64)
    w = np.minimum(1.0, wait / params.wait_saturation_seconds)
    boost = params.wait_boost * w / 2.0
    keys = forbidden_keys(ids, constraints, params.history_cycles)
    degree = np.bincount(np.concatenate([keys // max(n, 1), keys % max(n, 1)]), minlength=n)
    return Prepared(ids, x, wait, missed, rank, boost, keys, degree.astype(np.int64))


def _check_params(params: MatchParams) -> None:
    if not params.wait_saturation_seconds > 0:
        raise ValidationError("wait_saturation_seconds must be > 0")
    if not np.isfinite(params.wait_boost):
        raise ValidationError("wait_boost must be finite")
    if params.candidates_k is not None and params.candidates_k < 1:
        raise ValidationError("candidates_k must be >= 1")
    if params.min_similarity is not None and not np.isfinite(params.min_similarity):
        raise ValidationError("min_similarity must be finite")


def _check_ids(ids: tuple[str, ...]) -> None:
    for user_id in ids:
        if not isinstance(user_id, str) or not user_id:
            raise ValidationError(f"user ids must be non-empty strings, got {user_id!r}")
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        dupes = sorted({u for u in ids if u in seen or seen.add(u)})  # type: ignore[func-returns-value]
        raise ValidationError(f"duplicate user ids: {', '.join(dupes[:5])}")


def normalised(vectors: FloatArray, n: int) -> FloatArray:
    """Unit rows in float32; reuses the array when it already is one. A row whose norm
    is within ``_UNIT_TOLERANCE`` of 1 counts as unit and is kept as it is, so scaling
    is idempotent: unit rows scaled again (a matcher's carry-over record, a pool that
    kept a snapshot's rows) are the same bits."""
    x = np.asarray(vectors)
    if x.ndim != 2 or x.shape[0] != n:
        raise ValidationError(f"vectors must have shape (n={n}, d), got {x.shape}")
    if n and x.shape[1] == 0:
        raise ValidationError("vectors must have at least one dimension")
    if not np.issubdtype(x.dtype, np.number) or np.iscomplexobj(x):
        raise ValidationError(f"vectors must be real numbers, got dtype {x.dtype}")
    norms = _unit_norms(x)
    if bool(np.all(norms == 1.0)) and x.dtype == np.float32 and x.flags.c_contiguous:
        return x
    out = np.empty(x.shape, dtype=np.float32)
    _divide_rows(x, norms, out)
    return out


def normalise_in_place(x: FloatArray) -> FloatArray:
    """Scale the rows of a float32 matrix its caller owns to unit length, bit for bit as
    :func:`normalised` would copy them: :func:`prepare` then uses the matrix as it is (a
    million 384-d rows: 1.4 GiB it does not allocate). Returns ``x``."""
    if x.dtype != np.float32 or x.ndim != 2 or not x.flags.c_contiguous or not x.flags.writeable:
        raise ValidationError(f"normalise_in_place needs a writeable C-contiguous (n, d) "
                              f"float32 matrix, got {x.dtype} {x.shape}")
    _divide_rows(x, _unit_norms(x), x)
    return x


def _unit_norms(x: FloatArray) -> FloatArray:
    """What each row is divided by: its norm, or 1 where that is already 1 within the
    tolerance (the row is used as it is)."""
    norms = _usable_norms(x)
    norms[np.abs(norms - 1.0) <= _UNIT_TOLERANCE] = 1.0
    return norms


def _usable_norms(x: FloatArray) -> FloatArray:
    norms = _row_norms(x)
    bad = np.flatnonzero(~np.isfinite(norms))
    if bad.size:
        raise ValidationError(f"vectors contain NaN or infinite values (row {int(bad[0])})")
    zero = np.flatnonzero(norms <= 1e-12)
    if zero.size:
        raise ValidationError(f"vectors contain all-zero rows (row {int(zero[0])})")
    return norms


def _divide_rows(x: FloatArray, norms: FloatArray, out: FloatArray) -> None:
    # The quotient is float64 (norms are): small blocks bound that temporary (6 MB).
    for start in range(0, x.shape[0], _DIVIDE_ROWS):
        stop = min(x.shape[0], start + _DIVIDE_ROWS)
        out[start:stop] = x[start:stop] / norms[start:stop, None]


def _row_norms(x: FloatArray) -> FloatArray:
    norms = np.empty(x.shape[0], dtype=np.float64)
    single = x.dtype == np.float32
    for start in range(0, x.shape[0], 65_536):
        block: FloatArray = np.asarray(
            x[start : start + 65_536], dtype=np.float32 if single else np.float64
        )
        norms[start : start + 65_536] = np.sqrt(np.einsum("ij,ij->i", block, block))
    return norms


def _vector(values: FloatArray, n: int, name: str) -> FloatArray:
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.shape != (n,):
        raise ValidationError(f"{name} must have {n} values, got {arr.shape[0]}")
    if not np.all(np.isfinite(arr)):
        raise ValidationError(f"{name} contains NaN or infinite values")
    return arr


def _missed(values: IntArray | None, n: int) -> IntArray:
    if values is None:
        return np.zeros(n, dtype=np.int64)
    arr = np.asarray(values).reshape(-1)
    if arr.shape != (n,):
        raise ValidationError(f"missed_cycles must have {n} values, got {arr.shape[0]}")
    if not np.issubdtype(arr.dtype, np.integer) or np.any(arr < 0):
        raise ValidationError("missed_cycles must be non-negative integers")
    return arr.astype(np.int64)


def forbidden_keys(ids: tuple[str, ...], constraints: Constraints, history: int) -> IntArray:
    """Sorted unique ``lo * n + hi`` keys of every pair that may not meet."""
    n = len(ids)
    index = {u: i for i, u in enumerate(ids)}
    pairs = [(a, b) for a, b in constraints.blocks]
    pairs += [(r.user_a, r.user_b) for r in constraints.recent if r.cycles_ago <= history]
    rows = [(index[a], index[b]) for a, b in pairs if a in index and b in index]
    arr = np.asarray(rows, dtype=np.int64).reshape(-1, 2)
    if constraints.forbidden_indices is not None:
        extra = np.asarray(constraints.forbidden_indices).reshape(-1, 2)
        if extra.size and not np.issubdtype(extra.dtype, np.integer):
            raise ValidationError("forbidden indices must be integers")
        if extra.size and (extra.min() < 0 or extra.max() >= n):
            raise ValidationError(f"forbidden indices must lie in [0, {n})")
        arr = np.concatenate([arr, extra.astype(np.int64)])
    arr = arr[arr[:, 0] != arr[:, 1]]
    lo = np.minimum(arr[:, 0], arr[:, 1])
    hi = np.maximum(arr[:, 0], arr[:, 1])
    return np.unique(lo * n + hi)


def is_forbidden(keys: IntArray, n: int, u: IntArray, v: IntArray) -> BoolArray:
    """Vectorised membership test of pairs ``(u[i], v[i])`` in the forbidden keys."""
    if keys.size == 0:
        return np.zeros(np.shape(u), dtype=bool)
    q = np.minimum(u, v).astype(np.int64) * n + np.maximum(u, v)
    pos = np.searchsorted(keys, q)
    pos = np.minimum(pos, keys.size - 1)
    return np.asarray(keys[pos] == q)
