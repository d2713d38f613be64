"""Local improvement that keeps the set of matched users fixed.

With the matched set fixed, every matched user contributes its wait boost once, so only
the similarity term can change. A move removes pairs and adds others along an alternating
cycle: (a,b),(c,d) -> (a,c),(b,d) (a 2-swap) or (a,b),(c,d),(e,f) -> (a,c),(d,e),(f,b)
(a 3-swap). Opened edges come from candidate lists, the closing edge is scored exactly,
and moves are pruned Lin-Kernighan style (the first partial gain must be positive; an
upper bound from each user's best similarity discards hopeless closings). Non-overlapping
moves are applied best gain first; rounds repeat near changed users, then over everyone,
until no move gains.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from matcher.core.candidates import CandidateGraph
from matcher.core.model import BoolArray, FloatArray, IntArray
from matcher.core.prepare import Prepared
from matcher.core.similarity import allowed_pairs, pair_cosines

EPS = 1e-6
_CHUNK = 400_000  # paths opened per block of starts (bounds the moves' temporaries)


@dataclass
class ImproveStats:
    rounds: int = 0
    moves: int = 0
    gain: float = 0.0


@dataclass
class _Moves:
    gain: FloatArray
    verts: IntArray  # (m, 6): a, b, c, d, e, f (e = f = -1 for a 2-swap)


@dataclass
class Improver:
    prep: Prepared
    cands: CandidateGraph
    cos_min: float | None
    mate: IntArray
    max_depth: int = 14
    beam: int = 16
    width: int = 1_000
    depth: int = 2

    def __post_init__(self) -> None:
        matched = np.flatnonzero(self.mate >= 0)
        self.pw = np.full(self.prep.n, np.nan)
        self.pw[matched] = pair_cosines(self.prep.x, matched, self.mate[matched])
        self.top = np.fmax(self.cands.best_cos, self.pw)
        n = self.prep.n
        full = self.cands.nbr[:, -1] >= 0 if self.cands.k else np.zeros(n, dtype=bool)
        last = self.cands.cos[:, -1] if self.cands.k else np.full(n, np.inf)
        self.kth = np.where(full, last, np.inf)

    def run(self, max_rounds: int) -> ImproveStats:
        """Shallow moves first; deeper searches only once shallow ones are exhausted."""
        stats = ImproveStats()
        everyone: IntArray = np.flatnonzero(self.mate >= 0)
        levels = sorted({min(2, self.max_depth), min(3, self.max_depth), self.max_depth})
        level = 0
        starts, full = everyone, True
        while stats.rounds < max_rounds and len(starts):
            stats.rounds += 1
            self.depth = levels[level]
            touched = self._apply(self._find(starts), stats)
            if len(touched):
                starts, full, level = self._near(touched), False, 0
            elif not full:
                starts, full = everyone, True
            elif level + 1 < len(levels):
                level += 1
            else:
                break
        return stats

    def _near(self, touched: IntArray) -> IntArray:
        hit = np.zeros(self.prep.n, dtype=bool)
        hit[touched] = True
        nbr = self.cands.nbr
        near = hit | np.where(nbr >= 0, hit[nbr], False).any(axis=1)
        near |= np.where(self.mate >= 0, hit[self.mate], False)
        return np.flatnonzero(near & (self.mate >= 0))

    def _find(self, starts: IntArray) -> _Moves:
        chunk = max(256, _CHUNK // (self.beam * min(self.width, self.cands.k)))
        parts = [self._find_chunk(starts[i : i + chunk]) for i in range(0, len(starts), chunk)]
        return _Moves(
            np.concatenate([p.gain for p in parts]), np.concatenate([p.verts for p in parts])
        )

    def _find_chunk(self, starts: IntArray) -> _Moves:
        k = min(self.width, self.cands.k)
        a = np.repeat(starts, k)
        c = self.cands.nbr[starts, :k].reshape(-1)
        cac = self.cands.cos[starts, :k].reshape(-1)
        b = self.mate[a]
        ok = (c >= 0) & (self.mate[np.maximum(c, 0)] >= 0) & (c != b)
        ok &= cac - self.pw[a] > EPS
        a, b, c, cac = a[ok], b[ok], c[ok], cac[ok]
        path = np.stack([a, b, c, self.mate[c]], 1)
        gain = cac - self.pw[a] - self.pw[c]
        found = [self._close(gain, path)]
        for level in range(2, self.depth + 1):
            if len(gain) == 0:
                break
            path, gain = self._extend(path, gain, level == self.depth)
            found.append(self._close(gain, path))
        width = 2 * self.depth + 2
        return _Moves(
            np.concatenate([m.gain for m in found]),
            np.concatenate([_pad(m.verts, width) for m in found]),
        )

    def _extend(self, path: IntArray, gain: FloatArray, last: bool) -> tuple[IntArray, FloatArray]:
        """Open one more edge from each path's end (d -> e) and drop e's pair (e, f)."""
        k = min(self.width, self.cands.k)
        end = path[:, -1]
        e = self.cands.nbr[end, :k].reshape(-1)
        cde = self.cands.cos[end, :k].reshape(-1)
        rows = np.repeat(np.arange(len(path)), k)
        ok = (e >= 0) & (gain[rows] + cde > EPS)
        rows, e, cde = rows[ok], e[ok], cde[ok]
        ok = self.mate[e] >= 0
        for col in range(path.shape[1]):
            ok &= path[rows, col] != e
        rows, e, cde = rows[ok], e[ok], cde[ok]
        new_gain = gain[rows] + cde - self.pw[e]
        new_path = np.concatenate([path[rows], np.stack([e, self.mate[e]], 1)], 1)
        if not last:
            keep = _beam(new_path[:, 0], new_gain, self.beam)
            new_path, new_gain = new_path[keep], new_gain[keep]
        return new_path, new_gain

    def _close(self, partial: FloatArray, verts: IntArray) -> _Moves:
        """Close each open path from its last user back to ``b``.

        A closing edge among the candidates has a known cosine; any other is at most the
        k-th candidate cosine of either end, so most are discarded before scoring."""
        hope = partial + np.minimum(self.top[verts[:, -1]], self.top[verts[:, 1]]) > EPS
        partial, verts = partial[hope], verts[hope]
        b = verts[:, 1]
        end = verts[:, -1]
        known, cos = self._lookup(end, b)
        hope = known & (partial + cos > EPS)
        bound = np.minimum(self.kth[end], self.kth[b])
        unknown = np.flatnonzero(~known & (partial + bound > EPS))
        cos[unknown] = pair_cosines(self.prep.x, end[unknown], b[unknown])
        hope[unknown] = True
        gain = partial + cos
        keep = hope & (gain > EPS)
        keep[keep] &= self._allowed(end[keep], b[keep], cos[keep])
        return _Moves(gain[keep], verts[keep])

    def _lookup(self, u: IntArray, v: IntArray) -> tuple[BoolArray, FloatArray]:
        """Cosine of each pair when one is in the other's candidate list."""
        cos = np.full(len(u), -np.inf)
        known = np.zeros(len(u), dtype=bool)
        for a, b in ((u, v), (v, u)):
            hit = self.cands.nbr[a] == b[:, None]
            row = np.flatnonzero(hit.any(axis=1) & ~known)
            cos[row] = self.cands.cos[a[row], hit[row].argmax(axis=1)]
            known[row] = True
        return known, cos

    def _allowed(self, u: IntArray, v: IntArray, cos: FloatArray) -> BoolArray:
        return allowed_pairs(self.prep, self.cos_min, u, v, cos)

    def _apply(self, moves: _Moves, stats: ImproveStats) -> IntArray:
        """Apply vertex-disjoint moves, best gain first; returns the users touched."""
        if len(moves.gain) == 0:
            return np.empty(0, dtype=np.int64)
        rank = self.prep.rank
        order = np.lexsort((rank[moves.verts[:, 2]], rank[moves.verts[:, 0]], -moves.gain))
        used: set[int] = set()
        chosen: list[int] = []
        for i, row in zip(order.tolist(), moves.verts[order].tolist(), strict=True):
            verts = [v for v in row if v >= 0]
            if used.isdisjoint(verts):
                used.update(verts)
                chosen.append(i)
        picked = moves.verts[np.asarray(chosen, dtype=np.int64)]
        stats.moves += len(chosen)
        stats.gain += float(moves.gain[chosen].sum())
        self._rewire(picked)
        return np.asarray(sorted(used), dtype=np.int64)

    def _rewire(self, verts: IntArray) -> None:
        """Path a, b, c1, d1, ..., cL, dL becomes pairs (a, c1), (d1, c2), ..., (dL, b)."""
        length = ((verts >= 0).sum(axis=1) - 2) // 2
        us: list[IntArray] = []
        vs: list[IntArray] = []
        for depth in np.unique(length).tolist():
            rows = verts[length == depth]
            us.append(rows[:, 0])
            vs.append(rows[:, 2])
            for i in range(1, depth):
                us.append(rows[:, 2 * i + 1])
                vs.append(rows[:, 2 * i + 2])
            us.append(rows[:, 2 * depth + 1])
            vs.append(rows[:, 1])
        u, v = np.concatenate(us), np.concatenate(vs)
        self.mate[u], self.mate[v] = v, u
        cos = pair_cosines(self.prep.x, u, v)
        self.pw[u], self.pw[v] = cos, cos
        self.top[u] = np.fmax(self.top[u], cos)
        self.top[v] = np.fmax(self.top[v], cos)


def _pad(verts: IntArray, width: int) -> IntArray:
    out = np.full((len(verts), width), -1, dtype=np.int64)
    out[:, : verts.shape[1]] = verts
    return out


def _beam(group: IntArray, gain: FloatArray, width: int) -> IntArray:
    """Indices of the ``width`` best entries (by gain) of each group; ``group`` is sorted."""
    m = len(group)
    if m == 0:
        return np.empty(0, dtype=np.int64)
    first = np.r_[True, group[1:] != group[:-1]]
    size = np.bincount(np.cumsum(first) - 1)[np.cumsum(first) - 1]
    small = size <= width
    keep = np.flatnonzero(small)
    big = np.flatnonzero(~small)
    if len(big):
        order = big[np.lexsort((-gain[big], group[big]))]
        pos = np.arange(len(order)) - np.searchsorted(group[order], group[order])
        keep = np.concatenate([keep, order[pos < width]])
    return np.sort(keep)


def improve(
    prep: Prepared,
    cands: CandidateGraph,
    cos_min: float | None,
    mate: IntArray,
    *,
    rounds: int,
    depth: int,
    beam: int,
    width: int,
) -> ImproveStats:
    """Raise the total similarity of ``mate`` (in place) without changing who is matched.

    ``width`` limits how many of each user's candidates open a move (closings may use all).
    """
    return Improver(prep, cands, cos_min, mate, depth, beam, width).run(rounds)
