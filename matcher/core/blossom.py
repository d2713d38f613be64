"""Edmonds' augmenting-path search on a sparse graph (blossoms contracted lazily).

State lives in dictionaries so one search costs what it explores, not O(n). A failed
search from a free vertex also yields its *outer* set: the vertices that an even
alternating path from the root reaches, i.e. those the root could replace in a matching.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from matcher.core.graph import Adjacency


class BudgetExceeded(Exception):
    """The search explored more edges than allowed; the caller treats it as 'no path'."""


@dataclass
class Search:
    """One alternating-tree search from ``root`` over the active vertices."""

    adj: Adjacency
    mate: list[int]
    active: list[bool]
    root: int
    budget: int
    parent: dict[int, int] = field(default_factory=dict)
    base: dict[int, int] = field(default_factory=dict)
    outer: set[int] = field(default_factory=set)
    explored: list[int] = field(default_factory=list)
    scanned: int = 0
    complete: bool = False

    def _base(self, v: int) -> int:
        return self.base.get(v, v)

    def run(self) -> int:
        """Free vertex ending an augmenting path, or -1 when there is none."""
        self.outer.add(self.root)
        self.explored.append(self.root)
        queue: deque[int] = deque([self.root])
        while queue:
            v = queue.popleft()
            for to in self.adj.of(v):
                found = self._visit(v, to, queue)
                if found >= 0:
                    return found
        return -1

    def _visit(self, v: int, to: int, queue: deque[int]) -> int:
        self.scanned += 1
        if self.scanned > self.budget:
            raise BudgetExceeded
        mate = self.mate
        if not self.active[to] or self._base(v) == self._base(to) or mate[v] == to:
            return -1
        if to == self.root or (mate[to] >= 0 and mate[to] in self.parent):
            self._contract(v, to, queue)
        elif to not in self.parent:
            self.parent[to] = v
            self.explored.append(to)
            if mate[to] < 0:
                return to
            nxt = mate[to]
            self.outer.add(nxt)
            self.explored.append(nxt)
            queue.append(nxt)
        return -1

    def _lca(self, a: int, b: int) -> int:
        seen: set[int] = set()
        while True:
            a = self._base(a)
            seen.add(a)
            if self.mate[a] < 0:
                break
            a = self.parent[self.mate[a]]
        while True:
            b = self._base(b)
            if b in seen:
                return b
            b = self.parent[self.mate[b]]

    def _mark(self, v: int, top: int, child: int, blossom: set[int]) -> None:
        while self._base(v) != top:
            blossom.add(self._base(v))
            blossom.add(self._base(self.mate[v]))
            self.parent[v] = child
            child = self.mate[v]
            v = self.parent[self.mate[v]]

    def _contract(self, v: int, to: int, queue: deque[int]) -> None:
        top = self._lca(v, to)
        blossom: set[int] = set()
        self._mark(v, top, to, blossom)
        self._mark(to, top, v, blossom)
        for i in self.explored:
            if self._base(i) in blossom:
                self.base[i] = top
                if i not in self.outer:
                    self.outer.add(i)
                    queue.append(i)

    def augment(self, end: int) -> None:
        v = end
        while v >= 0:
            pv = self.parent[v]
            nxt = self.mate[pv]
            self.mate[v] = pv
            self.mate[pv] = v
            v = nxt


def try_augment(
    adj: Adjacency, mate: list[int], active: list[bool], root: int, budget: int
) -> tuple[bool, Search]:
    """Augment from ``root`` if possible. Returns (augmented, search)."""
    search = Search(adj, mate, active, root, budget)
    try:
        end = search.run()
    except BudgetExceeded:
        return False, search
    if end < 0:
        search.complete = True
        return False, search
    search.augment(end)
    return True, search
