"""Candidate recall, measured every cycle, and widening when it is below the target.

An approximate search (``matcher.ann``) may miss true neighbours on embeddings whose
structure it does not capture (for example many small groups in isotropic noise). So the
core checks each search it did not do exactly:

1. **Measure.** A seeded random sample of rows gets its exact top-``k`` (blocked matrix
   products); recall@k is the share of those neighbours that the search returned among its
   first ``k`` answers. Same pool and seed, same sample: the check is deterministic.
2. **Widen while below the target.** Each step gives the least confident rows (lowest
   ``k``-th found cosine, not yet covered) an exact row scan, and hands each scanned row's
   exact list to its neighbours (a neighbour's neighbours are candidates). Step sizes come
   from ``MatchParams.refine_rows``. The sample rows are never scanned by a step, so the
   measurement stays honest. The steps stop early when the remaining ones cannot reach the
   target at the rate of the last step.
3. **Fall back to exact search** when the steps did not reach the target and the pool has
   at most ``exact_fallback_max_users`` users. Above that, the result says the target was
   missed (``RecallReport.met`` is false) instead of silently degrading.

Pure: numpy only, no clock; the only randomness is ``numpy.random.default_rng(seed)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from matcher.core.candidates import ExactSearch, NeighbourSearch, block_top_k
from matcher.core.model import FloatArray, IntArray

_BLOCK_ELEMENTS = 16_000_000
_SPREAD = 32  # neighbours of a scanned row that receive its list
_SEED_BATCH = 64  # small batches: fewer rows of one group scanned before its list spreads


@dataclass(frozen=True)
class RecallPolicy:
    target: float = 0.95
    sample: int = 256
    k: int = 10
    seed: int = 0
    refine_rows: tuple[int, ...] = (1_000, 2_000, 3_000, 4_000, 4_000)
    exact_fallback_max_users: int = 200_000


@dataclass(frozen=True)
class RecallReport:
    """How good the candidate search was in this cycle.

    ``measured`` is recall@k of the final candidates on the sample (``None``: the search was
    exact, nothing to measure); ``initial`` the search's own recall before any widening.
    ``steps`` lists what was done, e.g. ``("faiss-ivf 0.331", "exact rows +2000 0.702",
    "exact 1.000")``.
    """

    measured: float | None = None
    initial: float | None = None
    target: float = 0.95
    k: int = 10
    sample: int = 0
    steps: tuple[str, ...] = ()
    exact_rows: int = 0
    fell_back_to_exact: bool = False

    @property
    def widened(self) -> bool:
        return len(self.steps) > 1

    @property
    def met(self) -> bool:
        return self.measured is None or self.measured >= self.target


@dataclass(frozen=True)
class RecallSample:
    rows: IntArray
    truth: IntArray  # (len(rows), k) exact neighbours, self excluded; -1 pads


def draw_sample(x: FloatArray, size: int, k: int, seed: int) -> RecallSample:
    """``size`` rows drawn with ``default_rng(seed)`` and their exact top-``k``."""
    n = len(x)
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, size=min(size, n), replace=False)).astype(np.int64)
    truth, _ = exact_rows(x, rows, min(k, n - 1))
    return RecallSample(rows, truth)


def exact_rows(x: FloatArray, rows: IntArray, k: int) -> tuple[IntArray, FloatArray]:
    """Exact top-``k`` of the given rows against all rows (self excluded), best first."""
    n = len(x)
    out = np.full((len(rows), k), -1, dtype=np.int64)
    sims = np.full((len(rows), k), -np.inf, dtype=np.float32)
    step = max(1, _BLOCK_ELEMENTS // max(n, 1))
    for start in range(0, len(rows), step):
        block = rows[start : start + step]
        scores = x[block] @ x.T
        scores[np.arange(len(block)), block] = -np.inf
        cols, vals = block_top_k(scores, k)
        out[start : start + len(block)] = cols
        sims[start : start + len(block)] = vals
    return out, sims


def sample_recall(sample: RecallSample, found: IntArray) -> float:
    """Share of the sample's exact neighbours among the first ``k`` answers (self and -1
    entries skipped) of ``found``."""
    if not len(sample.rows):
        return 1.0
    k = sample.truth.shape[1]
    hits = total = 0
    for i, row in enumerate(sample.rows.tolist()):
        answers = [v for v in found[row].tolist() if v >= 0 and v != row][:k]
        truth = {v for v in sample.truth[i].tolist() if v >= 0}
        hits += len(truth.intersection(answers))
        total += len(truth)
    return hits / total if total else 1.0


def refine_with_exact_rows(
    x: FloatArray,
    nbr: IntArray,
    sims: FloatArray,
    count: int,
    *,
    covered: np.ndarray,
    scanned: np.ndarray,
    k: int,
) -> int:
    """Scan ``count`` rows exactly, least confident first, and hand each scanned row's list
    to its neighbours. ``covered`` marks rows that received a scanned row's list, ``scanned``
    rows that must not be scanned (again). Updates ``nbr``, ``sims`` and both masks in place;
    returns the rows scanned (fewer when none is left)."""
    _, width = nbr.shape
    col = min(k, width) - 1
    used = 0
    while used < count:
        # Uncovered rows first, then the least confident covered ones; never twice.
        confidence = sims[:, col].astype(np.float64) + np.where(covered, 4.0, 0.0)
        confidence[scanned] = np.inf
        order = np.argsort(confidence, kind="stable")[: min(_SEED_BATCH, count - used)]
        batch = np.sort(order[~scanned[order]])
        if not len(batch):
            break
        found, found_sims = exact_rows(x, batch, min(max(width, _SPREAD), len(x) - 1))
        nbr[batch], sims[batch] = found[:, :width], found_sims[:, :width]
        covered[batch] = scanned[batch] = True
        used += len(batch)
        _spread(x, nbr, sims, batch, found)
        covered[found[found >= 0]] = True
    return used


def _spread(x: FloatArray, nbr: IntArray, sims: FloatArray, seeds: IntArray,
            found: IntArray) -> None:
    """Each neighbour v of a scanned row u gets u and u's exact list as candidates. The
    scores among u's list are one small Gram matrix per scanned row."""
    width = nbr.shape[1]
    lists = np.concatenate([seeds[:, None], found], axis=1)  # (s, m): u first, then its list
    valid = lists >= 0
    safe = np.maximum(lists, 0)
    members = x[safe]  # (s, m, d)
    # numpy's own loop: many tiny BLAS calls cost more in thread hand-offs than they compute
    gram = np.einsum("sid,sjd->sij", members, members).astype(np.float32)  # (s, m, m)
    m = lists.shape[1]
    owner = np.broadcast_to(lists[:, :, None], (len(seeds), m, m))
    cand = np.broadcast_to(lists[:, None, :], (len(seeds), m, m))
    ok = valid[:, :, None] & valid[:, None, :] & (owner != cand)
    ok[:, 0, :] = False  # u itself already has its exact list
    owner, cand, score = owner[ok], cand[ok], gram[ok]
    if not len(owner):
        return
    rows = np.unique(owner)
    old_n = nbr[rows].reshape(-1)
    old_s = sims[rows].reshape(-1)
    all_o = np.concatenate([np.repeat(rows, width), owner])
    all_c = np.concatenate([old_n, cand])
    all_s = np.concatenate([old_s, score])
    keep = all_c >= 0
    all_o, all_c, all_s = all_o[keep], all_c[keep], all_s[keep]
    order = np.lexsort((all_c, all_o))
    all_o, all_c, all_s = all_o[order], all_c[order], all_s[order]
    first = np.ones(len(all_o), dtype=bool)
    first[1:] = (all_o[1:] != all_o[:-1]) | (all_c[1:] != all_c[:-1])
    all_o, all_c, all_s = all_o[first], all_c[first], all_s[first]
    order = np.lexsort((all_c, -all_s, all_o))
    all_o, all_c, all_s = all_o[order], all_c[order], all_s[order]
    start_of = np.searchsorted(all_o, rows)
    pos = np.arange(len(all_o)) - start_of[np.searchsorted(rows, all_o)]
    top = pos < width
    nbr[rows] = -1
    sims[rows] = -np.inf
    nbr[all_o[top], pos[top]] = all_c[top]
    sims[all_o[top], pos[top]] = all_s[top]


def checked_search(
    x: FloatArray, search: NeighbourSearch, width: int, policy: RecallPolicy
) -> tuple[IntArray, FloatArray, RecallReport]:
    """Run ``search``, measure its recall@k on a seeded sample and widen it (exact rows,
    then exact search) while it is below ``policy.target``. Exact search is not checked."""
    nbr, sims = search.search(x, width)
    if isinstance(search, ExactSearch):
        return nbr, sims, RecallReport(target=policy.target, k=policy.k, steps=(search.name,))
    n = len(x)
    nbr = np.array(nbr, dtype=np.int64)
    sims = np.array(sims, dtype=np.float32)
    sample = draw_sample(x, policy.sample, policy.k, policy.seed)
    recall = sample_recall(sample, nbr)
    steps = [f"{search.name} {recall:.3f}"]
    initial, scanned_rows = recall, 0
    covered = np.zeros(n, dtype=bool)
    scanned = np.zeros(n, dtype=bool)
    scanned[sample.rows] = True  # the measurement stays on rows the steps never scan
    for i, rows in enumerate(policy.refine_rows):
        if recall >= policy.target:
            break
        before = recall
        added = refine_with_exact_rows(
            x, nbr, sims, rows, covered=covered, scanned=scanned, k=policy.k
        )
        if not added:
            break
        scanned_rows += added
        recall = sample_recall(sample, nbr)
        steps.append(f"exact rows {scanned_rows} {recall:.3f}")
        # Stop early when the remaining steps cannot reach the target at this step's rate.
        remaining = sum(policy.refine_rows[i + 1 :])
        if recall < policy.target and recall + (recall - before) / added * remaining < (
            policy.target
        ):
            break
    fell_back = recall < policy.target and n <= policy.exact_fallback_max_users
    if fell_back:
        nbr, sims = ExactSearch().search(x, width)
        recall = sample_recall(sample, nbr)
        steps.append(f"exact {recall:.3f}")
    report = RecallReport(
        measured=recall,
        initial=initial,
        target=policy.target,
        k=policy.k,
        sample=len(sample.rows),
        steps=tuple(steps),
        exact_rows=scanned_rows,
        fell_back_to_exact=fell_back,
    )
    return nbr, sims, report
