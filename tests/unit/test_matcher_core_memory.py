"""The core's bounded-memory paths give exactly what the plain ones give: rows normalised
in place, candidates filtered a block of rows at a time, the edge list built without a
copy per step, the adjacency in compact arrays, moves searched in smaller blocks."""

from __future__ import annotations

import numpy as np
import pytest

import matcher.core.candidates as candidates_module
import matcher.core.graph as graph_module
import matcher.core.improve as improve_module
from matcher.core import Constraints, MatchParams, match_pool
from matcher.core.candidates import CandidateGraph, ExactSearch, build_candidates
from matcher.core.graph import Edges, adjacency, candidate_edges, unique_edges
from matcher.core.greedy import edge_order
from matcher.core.prepare import normalise_in_place, normalised, prepare
from matcher.synthetic import clustered_pool
from mosaic.errors import ValidationError


def test_normalising_in_place_is_bit_for_bit_the_core_copy() -> None:
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((20_000, 48)) * rng.uniform(0.01, 50, (20_000, 1))).astype(
        np.float32)
    copy = normalised(x, len(x))
    assert copy is not x
    same = normalise_in_place(x.copy())
    assert np.array_equal(same.view(np.uint32), copy.view(np.uint32))
    assert normalised(same, len(same)) is same  # the core takes it as it is


def test_scaling_is_idempotent_rows_already_unit_are_kept_as_they_are() -> None:
    """Unit rows scaled again are the same bits (86 of 300 such rows changed when every
    row was divided by its norm): a pool that keeps a snapshot's rows, or folds a
    carry-over record of them, gives the core what a first scaling gave it."""
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((300, 24)) * 7).astype(np.float32)
    once = normalised(x, len(x))
    twice = normalise_in_place(once.copy())
    assert np.array_equal(twice.view(np.uint32), once.view(np.uint32))
    # A row within the tolerance of unit length is used as it is, beside rows scaled.
    mixed = np.asarray([[0.6, 0.80003], [3.0, 4.0]], dtype=np.float32)
    out = normalised(mixed, 2)
    assert out[0].tolist() == mixed[0].tolist()
    assert out[1].tolist() == np.asarray([0.6, 0.8], dtype=np.float32).tolist()


@pytest.mark.parametrize(("matrix", "message"), [
    (np.ones((3, 2), dtype=np.float64), "float32"),
    (np.ones((2, 3), dtype=np.float32)[:, :2], "C-contiguous"),
    (np.asarray([[1.0, 0.0], [0.0, 0.0]], dtype=np.float32), "all-zero rows"),
    (np.asarray([[np.nan, 0.0]], dtype=np.float32), "NaN"),
])
def test_normalising_in_place_refuses_what_it_cannot_do(matrix: np.ndarray, message: str
                                                         ) -> None:
    with pytest.raises(ValidationError, match=message):
        normalise_in_place(matrix)


def _reference_edges(cands: CandidateGraph, n: int) -> Edges:
    """The edge list as the core built it before (every step a copy)."""
    rows = np.repeat(np.arange(n, dtype=np.int64), cands.k)
    cols = cands.nbr.reshape(-1)
    keep = cols >= 0
    return unique_edges(rows[keep], cols[keep], cands.cos.reshape(-1)[keep], n)


def test_candidate_edges_are_the_unique_entries_with_the_first_cosine(
        monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(5)
    n, k = 500, 6
    nbr = rng.integers(-1, n, (n, k))  # padding, pairs listed from both ends, repeats
    nbr[nbr == np.arange(n)[:, None]] = -1
    cos = rng.standard_normal((n, k))  # the two listings of a pair differ
    cos[nbr < 0] = -np.inf
    cands = CandidateGraph(nbr, cos, cos.max(axis=1))
    want = _reference_edges(cands, n)
    for rows in (7, 64, 1_000):  # blocks that do and do not divide n
        monkeypatch.setattr(graph_module, "_EDGE_ROWS", rows)
        got = candidate_edges(cands, n)
        assert np.array_equal(got.u, want.u) and np.array_equal(got.v, want.v)
        assert np.array_equal(got.cos, want.cos)
    empty = CandidateGraph(np.full((4, 3), -1), np.full((4, 3), -np.inf), np.full(4, -np.inf))
    assert len(candidate_edges(empty, 4)) == 0


def test_candidates_filtered_in_blocks_equal_one_block(monkeypatch: pytest.MonkeyPatch
                                                       ) -> None:
    pool = clustered_pool(700, 16, seed=9)
    rng = np.random.default_rng(2)
    constraints = Constraints(forbidden_indices=rng.integers(0, 700, (3_000, 2)))
    prep = prepare(pool, constraints, MatchParams())
    raw, raw_cos = ExactSearch().search(prep.x, 30)
    cos_min = float(np.median(raw_cos[:, 6]))  # some rows lose candidates, some all
    graphs = []
    for rows in (10**9, 64, 33):
        monkeypatch.setattr(candidates_module, "_FILTER_ROWS", rows)
        graphs.append(build_candidates(prep, raw, raw_cos, 12, cos_min))
    for graph in graphs[1:]:
        assert np.array_equal(graph.nbr, graphs[0].nbr)
        assert np.array_equal(graph.cos, graphs[0].cos)
        assert np.array_equal(graph.best_cos, graphs[0].best_cos)
    assert (graphs[0].nbr < 0).any() and (graphs[0].nbr >= 0).any()


def test_the_greedy_order_of_pair_sorted_edges_is_one_stable_sort_by_score() -> None:
    """Edges sorted by (u, v), rows in user-id order: the score alone, sorted stably,
    gives the three-key order, ties (many here) included; in any other case the three
    keys are used."""
    rng = np.random.default_rng(8)
    n = 2_000
    a, b = rng.integers(0, n, 30_000), rng.integers(0, n, 30_000)
    keep = a != b
    edges = unique_edges(a[keep], b[keep], np.round(rng.random(int(keep.sum())), 2), n)
    assert edges.by_pair and len(np.unique(edges.cos)) <= 101  # ties everywhere
    score = edges.cos + rng.integers(0, 3, len(edges)) / 4
    identity = np.arange(n)
    three_keys = np.lexsort((edges.v, edges.u, -score))
    fast = edge_order(score, edges.u, edges.v, identity, by_pair=True)
    assert np.array_equal(fast, three_keys)
    assert np.array_equal(edge_order(score, edges.u, edges.v, identity), three_keys)
    shuffled = rng.permutation(n)  # rows not in user-id order: the ranks decide ties
    ranked = np.lexsort((np.maximum(shuffled[edges.u], shuffled[edges.v]),
                         np.minimum(shuffled[edges.u], shuffled[edges.v]), -score))
    assert np.array_equal(edge_order(score, edges.u, edges.v, shuffled, by_pair=True), ranked)


def test_the_adjacency_lists_best_edge_first_in_compact_arrays() -> None:
    edges = Edges(np.asarray([0, 0, 1, 2, 0]), np.asarray([1, 2, 2, 3, 3]),
                  np.asarray([0.5, 0.9, 0.5, 0.1, 0.5]))
    adj = adjacency(edges, 5, edges.cos)
    assert adj.nbr.typecode == "i" and adj.start.typecode == "i"
    assert [list(adj.of(u)) for u in range(5)] == [[2, 1, 3], [0, 2], [0, 1, 3], [0, 2], []]


def test_moves_searched_in_small_blocks_give_the_same_matching(
        monkeypatch: pytest.MonkeyPatch) -> None:
    pool = clustered_pool(3_000, 24, seed=4)
    params = MatchParams(wait_boost=0.05)
    whole = match_pool(pool, Constraints(), params)
    monkeypatch.setattr(improve_module, "_CHUNK", 5_000)
    blocks = match_pool(pool, Constraints(), params)
    assert whole.pairs == blocks.pairs and whole.stats.improve_moves > 0
