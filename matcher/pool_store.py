"""The pool's vectors, columnar: one float32 row per user in fixed-size blocks.

A per-user numpy array costs its header (about 100 bytes) and, read by the flat reader,
keeps the whole record body alive behind it. Here every waiting user's vector is a row
of a block of ``block_rows`` rows; an id <-> row index finds it and the rows of users
who left are reused. Blocks are never copied to grow, so there is no growth peak.
Vectors of another length than the store's (a model rollout, an empty vector) are kept
aside, one array each.

A cycle's snapshot is a sorted copy of the waiting rows; :meth:`VectorRows.adopt` then
makes that copy the store of those users' vectors (the rows before it are freed), so
while the core runs the pool's vectors are held once, not twice.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from matcher.core.model import FloatArray, IntArray

BLOCK_ROWS = 65_536
# Rows gathered at a time: small gathers are the fast ones (a million rows in 0.4 s,
# against 5 s by 65,536-row temporaries).
GATHER_ROWS = 2_048


class VectorRows:
    """One vector per user id; :meth:`vector` is a view, valid until the row is reused
    (the user leaves and another arrives): copy what must outlive the next change."""

    def __init__(self, block_rows: int = BLOCK_ROWS) -> None:
        self._block_rows = block_rows
        # Rows [0, len(_head)) are an adopted matrix's; the rows after it are in blocks.
        self._head: FloatArray = np.zeros((0, 0), dtype=np.float32)
        self._blocks: list[FloatArray] = []
        self._dim: int | None = None
        self._rows: dict[str, int] = {}
        self._free: list[int] = []
        self._used = 0  # rows handed out so far (free ones included)
        self._aside: dict[int, FloatArray] = {}  # row -> a vector of another length

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, user_id: object) -> bool:
        return user_id in self._rows

    def __iter__(self) -> Iterator[str]:
        return iter(self._rows)

    def put(self, user_id: str, vector: FloatArray) -> None:
        """Store (a copy of) ``vector`` as ``user_id``'s."""
        row = self._rows.get(user_id)
        if row is None:
            row = self._rows[user_id] = self._free.pop() if self._free else self._new_row()
        if self._dim is None and len(vector):
            self._dim = len(vector)
        if len(vector) == self._dim:
            self._aside.pop(row, None)
            if row < len(self._head):
                self._head[row] = vector
                return
            block, index = divmod(row - len(self._head), self._block_rows)
            while block >= len(self._blocks):
                # np.zeros: pages of a block take memory only once written.
                self._blocks.append(np.zeros((self._block_rows, self._dim), dtype=np.float32))
            self._blocks[block][index] = vector
        else:
            self._aside[row] = np.array(vector, dtype=np.float32)

    def drop(self, user_id: str) -> None:
        row = self._rows.pop(user_id, None)
        if row is not None:
            self._aside.pop(row, None)
            self._free.append(row)

    def vector(self, user_id: str) -> FloatArray:
        """A read-only view of the user's vector (KeyError for an unknown user)."""
        row = self._rows[user_id]
        aside = self._aside.get(row)
        view = aside.view() if aside is not None else self._row(row)
        view.flags.writeable = False
        return view

    def _row(self, row: int) -> FloatArray:
        return _row_in(self._head, self._blocks, self._block_rows, row)

    def _segments(self, positions: IntArray) -> tuple[list[FloatArray], IntArray, IntArray]:
        """Where rows are: the arrays (the head, then the blocks), and per position the
        array's number and the row's index in it."""
        head = len(self._head)
        after = positions - head
        segment = np.where(after < 0, 0, after // self._block_rows + 1)
        index = np.where(after < 0, positions, after % self._block_rows)
        return [self._head, *self._blocks], segment, index

    def rows(self, user_ids: Sequence[str]) -> tuple[FloatArray, dict[int, FloatArray]]:
        """The users' vectors at once: a new ``(len(user_ids), dim)`` float32 matrix (row
        ``i`` is ``user_ids[i]``'s) and, by position, the vectors of another length, whose
        matrix rows are zero. A copy: it outlives any later change to the store."""
        positions = np.fromiter((self._rows[u] for u in user_ids), dtype=np.int64,
                                count=len(user_ids))  # KeyError for an unknown user
        out = np.zeros((len(positions), self._dim or 0), dtype=np.float32)
        segments, segment_of, index = self._segments(positions)
        others: dict[int, FloatArray] = {}
        if self._aside:
            aside = np.flatnonzero(np.isin(positions, np.fromiter(self._aside, np.int64)))
            others = {int(i): self._aside[int(positions[i])].copy() for i in aside}
            segment_of[aside] = -1  # not in a block
        for number, segment in enumerate(segments):
            take = np.flatnonzero(segment_of == number)
            for start in range(0, len(take), GATHER_ROWS):
                part = take[start:start + GATHER_ROWS]
                out[part] = segment[index[part]]
        return out, others

    def adopt(self, user_ids: Sequence[str], matrix: FloatArray) -> bool:
        """Make ``matrix`` (row i: ``user_ids[i]``'s vector, as the caller wants it kept,
        e.g. scaled to unit length) the storage of those users' vectors, and copy every
        other user's into new blocks: the arrays the rows were in are no longer the
        store's, so a snapshot copied from them does not double the pool's vectors while
        it lives. The matrix is shared, not copied: writing to it is writing to the
        store, and the store writes to it as those users' records change. Returns False
        (and changes nothing) unless the matrix is a writeable C-contiguous float32 one
        of the store's width and the users are distinct, stored and of that width."""
        if (self._dim is None or matrix.dtype != np.float32 or matrix.ndim != 2
                or matrix.shape != (len(user_ids), self._dim)
                or not matrix.flags.c_contiguous or not matrix.flags.writeable):
            return False
        rows = dict(zip(user_ids, range(len(user_ids)), strict=True))
        if len(rows) != len(user_ids) or any(
                u not in self._rows or self._rows[u] in self._aside for u in user_ids):
            return False
        others = [(u, self._rows[u]) for u in self._rows if u not in rows]
        head, blocks, aside = self._head, self._blocks, self._aside
        self._head, self._blocks, self._rows, self._aside = matrix, [], rows, {}
        self._free, self._used = [], len(rows)
        for user_id, row in others:  # users out of the snapshot: a copy each, in blocks
            other = aside.get(row)
            self.put(user_id, other if other is not None
                     else _row_in(head, blocks, self._block_rows, row))
        return True

    def __getstate__(self) -> dict[str, object]:
        """For a checkpoint (matcher/checkpoint.py): only the rows handed out so far."""
        state = dict(self.__dict__)
        used = self._used - len(self._head)  # rows handed out in blocks
        state["_blocks"] = [block[:max(0, min(self._block_rows, used - i * self._block_rows))]
                            for i, block in enumerate(self._blocks)]
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        blocks: list[FloatArray] = []
        for saved in self._blocks:  # full-size blocks again, so rows can be added
            if len(saved) == self._block_rows and saved.flags.writeable:
                blocks.append(saved)  # as unpickled: no second copy of a full block
                continue
            block = np.zeros((self._block_rows, saved.shape[1]), dtype=np.float32)
            block[:len(saved)] = saved
            blocks.append(block)
        self._blocks = blocks

    def _new_row(self) -> int:
        row, self._used = self._used, self._used + 1
        return row

    def bytes_used(self) -> int:
        """The vectors' bytes (the adopted matrix and blocks as allocated, plus the
        vectors kept aside)."""
        return (self._head.nbytes + sum(b.nbytes for b in self._blocks)
                + sum(v.nbytes for v in self._aside.values()))


def _row_in(head: FloatArray, blocks: list[FloatArray], block_rows: int, row: int
            ) -> FloatArray:
    """Row ``row`` of a store's arrays: its adopted matrix's rows, then its blocks'."""
    if row < len(head):
        out: FloatArray = head[row]
    else:
        block, index = divmod(row - len(head), block_rows)
        out = blocks[block][index]
    return out
