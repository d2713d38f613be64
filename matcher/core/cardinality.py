"""Reach a maximum matching whose uncovered users are the shortest-waiting ones.

Steps: greedy on candidate edges; pair the users left over among themselves (all their
allowed pairs when few, their own top-k otherwise); augmenting paths (Edmonds) over the
candidate and leftover edges; finally exchanges that swap a longer-waiting uncovered user
for a shorter-waiting covered one, which by the matroid property of coverable sets gives
the best uncovered set by priority.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from matcher.core.blossom import try_augment
from matcher.core.candidates import NeighbourSearch, exact_top_k
from matcher.core.graph import Adjacency, Edges, adjacency, merge_edges, unique_edges
from matcher.core.greedy import edge_order, greedy_match
from matcher.core.model import BoolArray, FloatArray, IntArray
from matcher.core.prepare import Prepared
from matcher.core.similarity import SimilarityScale, allowed_pairs, pair_cosines

_ALL_PAIRS_BELOW = 2_048
_LEFTOVER_ROUNDS = 6


@dataclass
class Counters:
    greedy_pairs: int = 0
    fallback_pairs: int = 0
    augmentations: int = 0
    priority_swaps: int = 0
    extra_edges: list[Edges] = field(default_factory=list)


@dataclass(frozen=True)
class Context:
    prep: Prepared
    scale: SimilarityScale
    cos_min: float | None
    k: int
    search: NeighbourSearch
    exact_max_users: int
    budget: int

    def greedy_order(self, edges: Edges) -> IntArray:
        score = self.scale.to_sim(edges.cos)  # a new array: the boosts are added in place
        score += self.prep.boost[edges.u]
        score += self.prep.boost[edges.v]
        return edge_order(score, edges.u, edges.v, self.prep.rank, by_pair=edges.by_pair)


def priority_order(prep: Prepared, users: IntArray) -> IntArray:
    """``users`` longest-waiting first, ties by user id."""
    users = np.asarray(users, dtype=np.int64)
    return users[np.lexsort((prep.rank[users], -prep.wait[users]))]


def maximum_matching(ctx: Context, edges: Edges, active: BoolArray, counters: Counters) -> IntArray:
    """A maximum matching of the active users (best effort beyond the searched edges)."""
    n = ctx.prep.n
    mate = np.full(n, -1, dtype=np.int64)
    members = np.flatnonzero(active)
    held_out = -1
    if len(members) % 2 == 1:
        held_out = int(priority_order(ctx.prep, members)[-1])
    core = active.copy()
    if held_out >= 0:
        core[held_out] = False
    # The greedy order of the edges inside the core is the order of all edges with the
    # others left out (edge_order is strict): no copy of the edge list.
    inside = core[edges.u]
    inside &= core[edges.v]
    order = ctx.greedy_order(edges)
    order = order[inside[order]]
    del inside
    counters.greedy_pairs = greedy_match(mate, edges.u, edges.v, order)
    del order
    _pair_leftovers(ctx, mate, core, counters)
    if not _needs_search(ctx.prep, mate, core, active):
        return mate
    graph = edges
    for extra in counters.extra_edges:
        graph = merge_edges(graph, extra, n)
    adj = adjacency(graph, n, graph.cos)
    mate_list = mate.tolist()
    _augment_all(ctx, adj, mate_list, core.tolist(), counters)
    _prioritise(ctx, adj, mate_list, active.tolist(), counters)
    return np.asarray(mate_list, dtype=np.int64)


def _needs_search(prep: Prepared, mate: IntArray, core: BoolArray, active: BoolArray) -> bool:
    """Path searches are needed unless at most the one held-out, shortest-waiting user
    is uncovered (then the matching is maximum and its uncovered set the best)."""
    free = np.flatnonzero(active & (mate < 0))
    if len(free) == 0:
        return False
    return len(free) > 1 or bool(core[free[0]])


def _pair_leftovers(ctx: Context, mate: IntArray, core: BoolArray, counters: Counters) -> None:
    for _ in range(_LEFTOVER_ROUNDS):
        left = np.flatnonzero(core & (mate < 0))
        if len(left) < 2:
            return
        extra = _leftover_edges(ctx, left)
        if len(extra) == 0:
            return
        counters.extra_edges.append(extra)
        added = greedy_match(mate, extra.u, extra.v, ctx.greedy_order(extra))
        counters.fallback_pairs += added
        if added == 0:
            return


def _leftover_edges(ctx: Context, left: IntArray) -> Edges:
    x = ctx.prep.x
    cos: FloatArray
    if len(left) <= _ALL_PAIRS_BELOW:
        i, j = np.triu_indices(len(left), 1)
        a, b = left[i], left[j]
        cos = (x[left] @ x[left].T).astype(np.float64)[i, j]
    else:
        sub = x[left]
        if len(left) <= ctx.exact_max_users:
            local = exact_top_k(sub, sub, ctx.k, exclude_self=True)[0]
        else:
            local = ctx.search.search(sub, ctx.k + 1)[0]
        rows = np.repeat(np.arange(len(left)), local.shape[1])
        cols = local.reshape(-1)
        ok = cols >= 0
        a, b = left[rows[ok]], left[cols[ok]]
        cos = pair_cosines(x, a, b)
    keep = allowed_pairs(ctx.prep, ctx.cos_min, a, b, cos)
    return unique_edges(a[keep], b[keep], cos[keep], ctx.prep.n)


def _augment_all(
    ctx: Context, adj: Adjacency, mate: list[int], active: list[bool], counters: Counters
) -> int:
    """Augment from every free active user (longest-waiting first); returns edges scanned."""
    scanned = 0
    users = priority_order(ctx.prep, np.flatnonzero(np.asarray(active)))
    free = [u for u in users.tolist() if mate[u] < 0]
    if len(free) < 2:
        return 0
    for root in free:
        if mate[root] >= 0 or scanned >= ctx.budget:
            continue
        done, search = try_augment(adj, mate, active, root, ctx.budget - scanned)
        scanned += search.scanned
        counters.augmentations += int(done)
    return scanned


def _waiting_roots(prio: IntArray, mate: list[int], active: list[bool]) -> list[int]:
    """Uncovered users who waited longer than some covered user, longest-waiting first."""
    act = np.asarray(active)
    matched = act & (np.asarray(mate) >= 0)
    if not matched.any():
        return []
    lowest = int(prio[matched].min())
    roots = np.flatnonzero(act & ~matched & (prio > lowest))
    ordered: list[int] = roots[np.argsort(-prio[roots])].tolist()
    return ordered


def _prioritise(
    ctx: Context, adj: Adjacency, mate: list[int], active: list[bool], counters: Counters
) -> None:
    """Swap uncovered users for covered ones that waited less, until none can be."""
    prio = np.empty(ctx.prep.n, dtype=np.int64)
    prio[priority_order(ctx.prep, np.arange(ctx.prep.n))] = np.arange(ctx.prep.n)[::-1]
    spent = _augment_all(ctx, adj, mate, active, counters)
    settled: set[int] = set()
    changed = True
    while changed and spent < ctx.budget:
        changed = False
        for root in _waiting_roots(prio, mate, active):
            if root in settled:
                continue
            done, search = try_augment(adj, mate, active, root, ctx.budget - spent)
            spent += search.scanned
            if done or not search.complete:
                counters.augmentations += int(done)
                changed |= done
                continue
            outer = [v for v in search.outer if v != root and mate[v] >= 0]
            victim = min(outer, key=prio.__getitem__, default=-1)
            settled.add(root)
            if victim >= 0 and prio[victim] < prio[root]:
                spent += _exchange(adj, mate, active, root, victim, budget=ctx.budget - spent)
                counters.priority_swaps += 1
                changed = True
                break


def _exchange(
    adj: Adjacency, mate: list[int], active: list[bool], root: int, victim: int, *, budget: int
) -> int:
    """Uncover ``victim`` and cover ``root`` along an even alternating path."""
    partner = mate[victim]
    mate[victim] = -1
    mate[partner] = -1
    active[victim] = False
    done, search = try_augment(adj, mate, active, root, budget)
    active[victim] = True
    if not done:  # only when the budget ran out; restore
        mate[victim] = partner
        mate[partner] = victim
    return search.scanned
