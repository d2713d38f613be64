"""A cycle's snapshot of the pool: the rows the core pairs (sorted by user id, one
embedding space, usable norms) and the users set aside, with their reasons.

Pure, like :mod:`matcher.pool`. The snapshot's matrix is a copy of the waiting users'
rows, scaled to unit length in place exactly as the core would scale them, so the core
uses it without a normalised copy of its own. :func:`snapshot_of` then hands that matrix
to the pool's store as those users' vectors (:meth:`VectorRows.adopt`), so the pool's
vectors are held once while the core runs (at a million 384-d users, 1.4 GiB less at the
cycle's peak than the store's rows plus the copy). A usable seeker's ``vector`` is its row
of the matrix: unit length, which is what a leftover's carry-over record repeats. A row
stays its user's until a record of that user is applied, and a user whose record changed
after the snapshot leaves the cycle (``plan_cycle``'s ``left``), so a row the pool rewrites
while the cycle publishes is never read.
"""

from __future__ import annotations

import gc
import logging
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from itertools import compress

import numpy as np

from matcher.core.model import BoolArray, FloatArray, IntArray, PoolSnapshot
from matcher.core.prepare import normalise_in_place
from matcher.pool import Entry, PoolState, Seeker
from matcher.pool_store import GATHER_ROWS

log = logging.getLogger(__name__)

REASON_INVALID_VECTOR = "invalid_vector"
# Smallest float32 norm a usable vector may have (the core refuses <= 1e-12 as all-zero).
MIN_NORM = 1e-9


@dataclass(frozen=True)
class CycleInput:
    """What the core sees for one cycle, plus who was left out before it."""

    seekers: tuple[Seeker, ...]  # row i of the snapshot is seekers[i]
    snapshot: PoolSnapshot
    invalid: tuple[Seeker, ...]  # vectors the core cannot use (zero, wrong dimension)


def build_snapshot(seekers: Sequence[Seeker], at: datetime) -> CycleInput:
    """A :class:`PoolSnapshot` of ``seekers`` at ``at`` (the tick's time, not the clock).

    Vectors must share one embedding space: the pool's is the most common (model,
    dimension). A user embedded by another model (a rollout in progress, even one of the
    same dimension), a vector whose float32 norm overflows or underflows, and a user
    whose latest record did not decode are set aside with :data:`REASON_INVALID_VECTOR`
    instead of failing the cycle. :func:`snapshot_of` builds the same from the pool itself.
    A usable seeker's ``vector`` is its row of the snapshot's (unit) matrix.
    """
    lengths = Counter(len(s.vector) for s in seekers)
    width = lengths.most_common(1)[0][0] if lengths else 0
    matrix = np.zeros((len(seekers), width), dtype=np.float32)
    others: dict[int, FloatArray] = {}
    for i, s in enumerate(seekers):
        if len(s.vector) == width:
            matrix[i] = s.vector
        else:
            others[i] = np.array(s.vector, dtype=np.float32)
    entries = [(s.record, s.partition, s.offset, s.poison) for s in seekers]
    return _snapshot(entries, matrix, others, at)


def snapshot_of(state: PoolState, pool: str, at: datetime) -> CycleInput:
    """``build_snapshot(state.waiting(pool), at)`` without a :class:`Seeker` per user in
    between: the waiting users' rows are copied from the pool's store at once (a million
    users: seconds less per cycle), and the snapshot's matrix then becomes the store of
    the usable users' vectors (:meth:`PoolState.adopt`; module docstring)."""
    entries, matrix, others = state.waiting_rows(pool)
    return _snapshot(entries, matrix, others, at, state.adopt)



@contextmanager
def collection_paused() -> Iterator[None]:
    """No cyclic garbage collection while a cycle builds a million objects that all stay
    alive (seekers, events): each automatic pass would walk the whole pool for nothing
    (half the time of building them)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@collection_paused()
def _snapshot(entries: Sequence[Entry], matrix: FloatArray, others: dict[int, FloatArray],
              at: datetime,
              adopt: Callable[[Sequence[str], FloatArray], bool] | None = None) -> CycleInput:
    """The snapshot of users sorted by id: validity for all rows at once (float32 norms,
    as the core computes them), then the usable rows compacted and normalised in place
    (``matrix`` is the caller's copy), offered to ``adopt`` before anything views it."""
    records = [entry[0] for entry in entries]
    space, ok, pool_matrix, rows = _usable_rows(entries, matrix, others)
    invalid = tuple(_set_aside(entries[i], others.get(i), matrix[i])
                    for i in np.flatnonzero(~ok).tolist())
    if invalid:
        models = Counter(s.record.model for s in invalid if s.record.model != space[0])
        log.warning("%d seekers with unusable vectors (pool space: model %r, %d dimensions; "
                    "other models: %s): %s", len(invalid), *space, dict(models) or "none",
                    ", ".join(s.user_id for s in invalid[:20]))
    keep = np.flatnonzero(ok)
    vectors = (normalise_in_place(_compact(pool_matrix, rows[keep])) if space[1]
               else np.zeros((0, 0), dtype=np.float32))
    ids = [records[i].user_id for i in keep.tolist()]
    if adopt is not None and space[1]:
        adopt(ids, vectors)
    # Nothing writes the matrix while the core reads it: the views say so.
    vectors = vectors.view()
    vectors.flags.writeable = False
    # Set-aside seekers own copies (their rows may be reused while the cycle publishes
    # and they are reported); usable ones have their rows of the matrix.
    usable = tuple(Seeker(records[i], row, entries[i][1], entries[i][2])
                   for i, row in zip(keep.tolist(), vectors, strict=True))
    wait = np.array([max(0.0, (at - s.record.opted_in_at).total_seconds()) for s in usable],
                    dtype=np.float64)
    missed = np.fromiter((s.record.missed_cycles for s in usable), np.int64, len(usable))
    snapshot = PoolSnapshot(tuple(ids), vectors, wait, missed)
    return CycleInput(usable, snapshot, invalid)


def _usable_rows(entries: Sequence[Entry], matrix: FloatArray, others: dict[int, FloatArray]
                 ) -> tuple[tuple[str, int], BoolArray, FloatArray, IntArray]:
    """The pool's space (model, dimension), which rows are usable, and where their vectors
    are: row ``rows[i]`` of the returned matrix (``matrix`` itself, or in a rollout to
    another dimension than the store's the stacked ``others``)."""
    records = [entry[0] for entry in entries]
    width = matrix.shape[1]
    length = np.full(len(entries), width, dtype=np.int64)
    for i, vector in others.items():
        length[i] = len(vector)
    decoded = np.fromiter((entry[3] is None for entry in entries), bool, len(entries))
    squares = _squared_norms(matrix)
    nonzero = _nonzero_rows(matrix, squares, others)
    spaces = Counter(compress(zip((r.model for r in records), length.tolist(), strict=True),
                              (decoded & nonzero).tolist()))
    model, dim = (max(spaces.items(), key=lambda kv: (kv[1], kv[0][1], kv[0][0]))[0]
                  if spaces else ("", 0))
    ok = decoded & (length == dim) & np.fromiter(
        (r.model == model for r in records), bool, len(records))
    pool_matrix, rows = matrix, np.arange(len(entries))
    if dim != width and dim:  # the pool's vectors are not the store's width (a rollout)
        pool_matrix = np.stack([others[i] for i in np.flatnonzero(ok).tolist()]
                               or [np.zeros(dim, dtype=np.float32)])
        squares = np.zeros(len(entries), dtype=np.float32)
        squares[ok] = _squared_norms(pool_matrix)[:int(ok.sum())]
        rows[ok] = np.arange(int(ok.sum()))
    with np.errstate(invalid="ignore"):
        norms = np.sqrt(squares)
    ok &= (dim > 0) & np.isfinite(norms) & (norms >= MIN_NORM)
    return (model, dim), ok, pool_matrix, rows


def _squared_norms(matrix: FloatArray) -> FloatArray:
    """Squared row norms in the matrix's float32, by blocks as the core computes them."""
    out = np.empty(matrix.shape[0], dtype=np.float32)
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        for start in range(0, matrix.shape[0], 65_536):
            block = matrix[start:start + 65_536]
            out[start:start + 65_536] = np.einsum("ij,ij->i", block, block)
    return out


def _nonzero_rows(matrix: FloatArray, squares: FloatArray,
                  others: dict[int, FloatArray]) -> BoolArray:
    """Rows with a value other than zero (a square that underflowed to 0 is re-checked)."""
    nonzero: BoolArray = squares != 0
    zero = np.flatnonzero(~nonzero)
    nonzero[zero] = matrix[zero].any(axis=1)
    for i, vector in others.items():
        nonzero[i] = bool(np.any(vector))
    return nonzero


def _set_aside(entry: Entry, other: FloatArray | None, row: FloatArray) -> Seeker:
    record, partition, offset, poison = entry
    return Seeker(record, other if other is not None else row.copy(), partition, offset,
                  poison)


def _compact(matrix: FloatArray, keep: IntArray) -> FloatArray:
    """``matrix[keep]`` (``keep`` ascending) in place, by blocks: no second full copy."""
    if len(keep) == len(matrix):
        return matrix
    for start in range(0, len(keep), GATHER_ROWS):
        part = keep[start:start + GATHER_ROWS]
        matrix[start:start + len(part)] = matrix[part]  # reads rows at or after start
    kept = matrix[:len(keep)]
    return kept.copy() if len(keep) < len(matrix) // 2 else kept
