"""``match_pool``: the pure matching function (no I/O, no clock, deterministic)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from matcher.core.candidates import (
    CandidateGraph,
    ExactSearch,
    NeighbourSearch,
    build_candidates,
    search_width,
)
from matcher.core.cardinality import Context, Counters, maximum_matching
from matcher.core.graph import candidate_edges
from matcher.core.improve import ImproveStats, improve
from matcher.core.model import (
    BoolArray,
    Constraints,
    IntArray,
    MatchParams,
    MatchResult,
    MatchStats,
    Pair,
    PoolSnapshot,
    Unmatched,
    UnmatchedReason,
)
from matcher.core.prepare import Prepared, prepare
from matcher.core.recall import RecallPolicy, RecallReport, checked_search
from matcher.core.similarity import SimilarityScale, pair_cosines, similarity_scale

_SMALL_K = 40
_LARGE_K = 20
_LARGE_DEPTH = 2
_LARGE_BEAM = 3
_LARGE_ROUNDS = 3
_LARGE_WIDTH = 10


def match_pool(
    pool: PoolSnapshot,
    constraints: Constraints | None = None,
    params: MatchParams | None = None,
    search: NeighbourSearch | None = None,
) -> MatchResult:
    """Pair the users of ``pool``.

    Objective, in order: match as many users as the constraints allow; leave out the
    shortest-waiting (ties: the larger user id); maximise the total score. ``search`` finds
    candidate partners for pools above ``params.exact_max_users`` (exact search below).
    """
    params = params or MatchParams()
    prep = prepare(pool, constraints or Constraints(), params)
    if prep.n < 2:
        return _trivial(prep)
    scale = similarity_scale(prep.x, params.standardize)
    cos_min = None if params.min_similarity is None else scale.to_cos(params.min_similarity)
    small = search is None or prep.n <= params.exact_max_users
    finder: NeighbourSearch = ExactSearch() if small or search is None else search
    k = params.candidates_k or (_SMALL_K if small else _LARGE_K)
    raw, raw_cos, check = checked_search(prep.x, finder, search_width(prep, k), _policy(params))
    if check.fell_back_to_exact:
        finder = ExactSearch()
    cands = build_candidates(prep, raw, raw_cos, k, cos_min)
    del raw, raw_cos  # (n, search width) arrays: only the candidates are used from here
    reasons = _isolated(prep, cands, cos_min)
    edges = candidate_edges(cands, prep.n)
    ctx = Context(prep, scale, cos_min, k, finder, params.exact_max_users, params.augment_budget)
    counters = Counters()
    mate = maximum_matching(ctx, edges, reasons == "", counters)
    moved = improve(prep, cands, cos_min, mate, **_effort(params, small))
    run = _Run(finder.name, len(edges), cands.k, counters, moved, check)
    return _result(prep, scale, mate, reasons, run)


def _policy(params: MatchParams) -> RecallPolicy:
    return RecallPolicy(
        target=params.recall_target,
        sample=params.recall_sample,
        seed=params.recall_seed,
        widen_share=params.widen_share,
        widen_max_work=params.widen_max_work,
        min_probe_gain=params.min_probe_gain,
        exact_fallback_max_users=params.exact_fallback_max_users,
    )


def _effort(params: MatchParams, small: bool) -> dict[str, int]:
    """Local-search effort: full for exact pools, bounded for indexed (large) ones."""
    if small:
        return {
            "rounds": params.max_improve_rounds,
            "depth": params.improve_depth,
            "beam": params.improve_beam,
            "width": params.candidates_k or _SMALL_K,
        }
    return {
        "rounds": min(params.max_improve_rounds, _LARGE_ROUNDS),
        "depth": min(params.improve_depth, _LARGE_DEPTH),
        "beam": min(params.improve_beam, _LARGE_BEAM),
        "width": _LARGE_WIDTH,
    }


@dataclass(frozen=True)
class _Run:
    method: str
    edges: int
    k: int
    counters: Counters
    moved: ImproveStats
    recall: RecallReport


def _trivial(prep: Prepared) -> MatchResult:
    """Pools of zero or one user: nobody to pair with."""
    reasons = np.full(prep.n, UnmatchedReason.NO_ALLOWED_PARTNER.value, dtype=object)
    mate = np.full(prep.n, -1, dtype=np.int64)
    scale = SimilarityScale(0.0, 1.0, 0.0, 0.0)
    run = _Run("none", 0, 0, Counters(), ImproveStats(), RecallReport())
    return _result(prep, scale, mate, reasons, run)


def _isolated(prep: Prepared, cands: CandidateGraph, cos_min: float | None) -> np.ndarray:
    """Reason code for users who cannot be matched at all ('' for the others)."""
    reasons = np.full(prep.n, "", dtype=object)
    nobody = ~np.isfinite(cands.best_cos) | (prep.forbidden_degree >= prep.n - 1)
    reasons[nobody] = UnmatchedReason.NO_ALLOWED_PARTNER.value
    if cos_min is not None:
        low = ~nobody & (cands.best_cos < cos_min)
        reasons[low] = UnmatchedReason.BELOW_MIN_SIMILARITY.value
    return reasons


def _pairs(prep: Prepared, scale: SimilarityScale, mate: IntArray) -> tuple[Pair, ...]:
    a = np.flatnonzero((mate >= 0) & (np.arange(prep.n) < mate))
    b = mate[a]
    swap = prep.rank[a] > prep.rank[b]
    a, b = np.where(swap, b, a), np.where(swap, a, b)
    sim = scale.to_sim(pair_cosines(prep.x, a, b))
    score = sim + prep.boost[a] + prep.boost[b]
    order = np.argsort(prep.rank[a], kind="stable")
    ids = prep.ids
    return tuple(
        Pair(ids[i], ids[j], float(s), float(m))
        for i, j, s, m in zip(
            a[order].tolist(),
            b[order].tolist(),
            score[order].tolist(),
            sim[order].tolist(),
            strict=True,
        )
    )


def _unmatched(prep: Prepared, mate: IntArray, reasons: np.ndarray) -> tuple[Unmatched, ...]:
    left = np.flatnonzero(mate < 0)
    left = left[np.argsort(prep.rank[left], kind="stable")]
    taken: BoolArray = reasons[left] == ""
    spare = UnmatchedReason.ODD_ONE_OUT if int(taken.sum()) == 1 else UnmatchedReason.PARTNERS_TAKEN
    return tuple(
        Unmatched(
            prep.ids[u],
            spare if reasons[u] == "" else UnmatchedReason(reasons[u]),
            float(prep.wait[u]),
            int(prep.missed[u]),
        )
        for u in left.tolist()
    )


def _result(
    prep: Prepared, scale: SimilarityScale, mate: IntArray, reasons: np.ndarray, run: _Run
) -> MatchResult:
    counters, moved = run.counters, run.moved
    pairs = _pairs(prep, scale, mate)
    unmatched = _unmatched(prep, mate, reasons)
    scores = np.asarray([p.score for p in pairs])
    by_reason: dict[str, int] = {}
    for u in unmatched:
        by_reason[u.reason.value] = by_reason.get(u.reason.value, 0) + 1
    stats = MatchStats(
        users=prep.n,
        pairs=len(pairs),
        unmatched_by_reason=dict(sorted(by_reason.items())),
        total_score=float(scores.sum()),
        mean_score=float(scores.mean()) if len(pairs) else 0.0,
        min_score=float(scores.min()) if len(pairs) else 0.0,
        mean_similarity=float(np.mean([p.similarity for p in pairs])) if pairs else 0.0,
        candidate_method=run.method,
        candidates_k=run.k,
        candidate_edges=run.edges,
        forbidden_pairs=len(prep.forbidden),
        greedy_pairs=counters.greedy_pairs,
        fallback_pairs=counters.fallback_pairs,
        augmentations=counters.augmentations,
        priority_swaps=counters.priority_swaps,
        improve_rounds=moved.rounds,
        improve_moves=moved.moves,
        improve_gain=moved.gain,
        similarity_mean=scale.pool_mean,
        similarity_std=scale.pool_std,
        unmatched_again=sum(1 for u in unmatched if u.missed_cycles > 0),
        candidate_recall=run.recall.measured,
        candidate_recall_initial=run.recall.initial,
        recall_target=run.recall.target,
        recall_target_met=run.recall.met,
        recall_sample=run.recall.sample,
        candidate_widening=run.recall.steps,
        exact_rows=run.recall.exact_rows,
        candidate_chance_share=run.recall.chance_share,
    )
    return MatchResult(pairs, unmatched, stats)
