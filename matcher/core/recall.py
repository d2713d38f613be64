"""Candidate recall, measured every cycle, and widening when it is below the target.

An approximate search (``matcher.ann``) may miss true neighbours on embeddings whose
structure it does not capture (for example many small groups in isotropic noise). So the
core checks each search it did not do exactly:

1. **Measure.** A seeded random sample of rows gets its exact top-``k`` (blocked matrix
   products); recall@k is the share of those neighbours that the search returned among its
   first ``k`` answers. Same pool and seed, same sample: the check is deterministic.
2. **Widen while below the target** (:func:`widen`): exact row scans whose lists are
   handed to the scanned row's neighbours (on pools of small groups one scan finds a
   group), more partitions of the index, and rounds of neighbour-of-neighbour joins,
   each chosen by the recall it is expected to add per unit of work and measured after
   it is taken. The sample rows are never scanned, so the measurement stays honest.
   A partitioned index first scans only the probes that pay (:func:`probe_recall`
   predicts each probe count's recall from the partition alone).
3. **Fall back to exact search** when the steps did not reach the target and the pool has
   at most ``exact_fallback_max_users`` users. Above that, the result says the target was
   missed (``RecallReport.met`` is false) instead of silently degrading.

Pure: numpy only, no clock; the only randomness is ``numpy.random.default_rng(seed)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from matcher.core.candidates import (
    ExactSearch,
    NeighbourSearch,
    Partition,
    PartitionedSearch,
    block_top_k,
)
from matcher.core.model import FloatArray, IntArray

_BLOCK_ELEMENTS = 16_000_000
_SPREAD = 32  # neighbours of a scanned row that receive its list
_SEED_BATCH = 64  # small batches: fewer rows of one group scanned before its list spreads
_NOISE_COLUMNS = 4_096  # columns that estimate a seed's chance-cosine level
_JOIN_WIDTH = 8  # candidates a row hands to each other in a join round
_JOIN_CHUNK = 2_048
_MERGE_CHUNK = 65_536
_STEP_COST = 8.0  # a table or a join round, in row scans per sqrt(n) d / (d + 256)
_MAX_TABLES = 8
_MIN_GAIN = 0.005
_STOP_ERRORS = 3.0  # standard errors the recall must clear the target by


@dataclass(frozen=True)
class RecallPolicy:
    target: float = 0.95
    sample: int = 256
    k: int = 10
    seed: int = 0
    widen_share: float = 0.10  # at most this share of the rows gets an exact row scan
    widen_max_work: float = 6e12  # and at most this many multiply-adds (rows x users x dims)
    min_probe_gain: float = 0.02
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
    chance_share: float | None = None  # sample neighbours at chance level (draw_sample)

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
    chance_share: float = 0.0  # share of those neighbours at or below chance level


def draw_sample(x: FloatArray, size: int, k: int, seed: int) -> RecallSample:
    """``size`` rows drawn with ``default_rng(seed)``, their exact top-``k``, and the share
    of those neighbours whose cosine does not stand out from chance (below the row's mean
    plus ``sqrt(2 ln n)`` standard deviations, the expected maximum of ``n`` chance
    cosines): neighbours that no index finds short of scanning the row exactly."""
    n = len(x)
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, size=min(size, n), replace=False)).astype(np.int64)
    truth, sims, level = exact_rows(x, rows, min(k, n - 1), chance=True)
    found = truth >= 0
    chance = float((found & (sims < level[:, None])).sum() / max(1, found.sum()))
    return RecallSample(rows, truth, chance)


def exact_rows(
    x: FloatArray, rows: IntArray, k: int, *, chance: bool = False
) -> tuple[IntArray, FloatArray, FloatArray]:
    """Exact top-``k`` of the given rows against all rows (self excluded), best first, and
    (``chance``) each row's chance level (see :func:`draw_sample`; zeros otherwise)."""
    n = len(x)
    out = np.full((len(rows), k), -1, dtype=np.int64)
    sims = np.full((len(rows), k), -np.inf, dtype=np.float32)
    level = np.zeros(len(rows), dtype=np.float64)
    step = max(1, _BLOCK_ELEMENTS // max(n, 1))
    for start in range(0, len(rows), step):
        block = rows[start : start + step]
        scores = x[block] @ x.T
        if chance:  # the row's own 1.0 moves these by about 1/n: ignored
            level[start : start + len(block)] = chance_level(scores, n)
        scores[np.arange(len(block)), block] = -np.inf
        cols, vals = block_top_k(scores, k)
        out[start : start + len(block)] = cols
        sims[start : start + len(block)] = vals
    return out, sims, level


def chance_level(scores: FloatArray, n: int) -> FloatArray:
    """Per row of ``scores`` (cosines against ``n`` rows, or a random subset of them): the
    mean plus ``sqrt(2 ln n)`` standard deviations, the expected largest of ``n`` chance
    cosines. A cosine below it does not stand out from chance."""
    z = float(np.sqrt(2.0 * np.log(max(n, 2))))
    return np.asarray(scores.mean(axis=1) + z * scores.std(axis=1), dtype=np.float64)


def sample_recall(sample: RecallSample, found: IntArray) -> float:
    """Share of the sample's exact neighbours among the first ``k`` answers (self and -1
    entries skipped) of ``found``."""
    return _recall_rows(sample, found)[0]


def _recall_rows(sample: RecallSample, found: IntArray) -> tuple[float, float]:
    """The sample recall and its standard error (rows are the independent draws)."""
    if not len(sample.rows):
        return 1.0, 0.0
    k = sample.truth.shape[1]
    hits = np.zeros(len(sample.rows))
    total = np.zeros(len(sample.rows))
    for i, row in enumerate(sample.rows.tolist()):
        answers = [v for v in found[row].tolist() if v >= 0 and v != row][:k]
        truth = {v for v in sample.truth[i].tolist() if v >= 0}
        hits[i] = len(truth.intersection(answers))
        total[i] = len(truth)
    if not total.sum():
        return 1.0, 0.0
    recall = float(hits.sum() / total.sum())
    per_row = hits[total > 0] / total[total > 0]
    return recall, float(per_row.std() / np.sqrt(len(per_row)))


def _short(sample: RecallSample, found: IntArray, target: float) -> bool:
    """Widening goes on while the recall is not above the target by three standard
    errors (about 0.02 with 256 rows): a met target is not luck of the draw."""
    recall, error = _recall_rows(sample, found)
    return recall - _STOP_ERRORS * error < target


def probe_recall(sample: RecallSample, part: Partition) -> list[float]:
    """Recall@k of a list-batched partition scan with 1, 2, ... probes, predicted exactly
    from the partition: a sample row finds a true neighbour when the neighbour's list is
    among the probes of its own list (the scan's scores are exact, so a true top-k
    neighbour in the scanned set is in the scan's top-k)."""
    truth = sample.truth
    valid = truth >= 0
    if not valid.any():
        return [1.0] * int(part.probes.shape[1])
    probes = part.probes[part.assign[sample.rows]]  # (s, P)
    hit = part.assign[np.maximum(truth, 0)][:, :, None] == probes[:, None, :]  # (s, k, P)
    first = np.where(hit.any(axis=2), hit.argmax(axis=2), probes.shape[1])
    total = float(valid.sum())
    return [float((valid & (first < p)).sum()) / total for p in range(1, probes.shape[1] + 1)]


def choose_probes(predicted: list[float], target: float, min_gain: float) -> int:
    """The fewest probes that reach ``target``; short of it, stop adding probes once the
    next one gains less than ``min_gain`` (exact row scans buy recall cheaper then)."""
    p = 1
    while p < len(predicted) and predicted[p - 1] < target:
        if predicted[p] - predicted[p - 1] < min_gain:
            break
        p += 1
    return p


@dataclass
class _Walk:
    """Seeds for the exact row scans: rows in ``order`` (least confident first) that no
    scan has covered, then the covered ones; never a row twice. Rows handed back (not
    used in a batch) come first next time."""

    order: IntArray
    covered: np.ndarray
    scanned: np.ndarray
    pos: int = 0
    second_pass: bool = False
    back: IntArray | None = None

    def take(self, count: int) -> IntArray:
        picked: list[IntArray] = []
        if self.back is not None:
            free = self.back[~self.scanned[self.back]]
            picked.append(free[:count])
            self.back = free[count:] if len(free) > count else None
        got = sum(len(p) for p in picked)
        while got < count:
            if self.pos >= len(self.order):
                if self.second_pass:
                    break
                self.second_pass, self.pos = True, 0
            chunk = self.order[self.pos : self.pos + 4 * count]
            free = ~self.scanned[chunk]
            if not self.second_pass:
                free &= ~self.covered[chunk]
            idx = np.flatnonzero(free)[: count - got]
            self.pos += int(idx[-1]) + 1 if len(idx) == count - got else len(chunk)
            picked.append(chunk[idx])
            got += len(idx)
        return np.concatenate(picked) if picked else np.empty(0, dtype=np.int64)

    def hand_back(self, rows: IntArray) -> None:
        self.back = rows if self.back is None else np.concatenate([rows, self.back])


class _RowScans:
    """Exact row scans that find whole groups (see :func:`widen`). Keeps which rows were
    scanned or covered across calls, so the widening can interleave them with other
    steps."""

    def __init__(self, x: FloatArray, sample: RecallSample, policy: RecallPolicy,
                 sims: FloatArray) -> None:
        n = len(x)
        self.x, self.sample, self.policy = x, sample, policy
        rng = np.random.default_rng(policy.seed + 1)
        self.cols = np.sort(rng.choice(n, size=min(n, _NOISE_COLUMNS), replace=False))
        noise = x[sample.rows] @ x[self.cols].T
        self.tau_all = float(chance_level(noise.reshape(1, -1), n)[0])
        self.covered = np.zeros(n, dtype=bool)
        self.scanned = np.zeros(n, dtype=bool)
        self.scanned[sample.rows] = True  # the measurement stays on rows no scan gave a list
        col = min(policy.k, sims.shape[1]) - 1
        self.walk = _Walk(np.argsort(sims[:, col], kind="stable"), self.covered, self.scanned)
        self.used = 0

    def run(self, nbr: IntArray, sims: FloatArray, rows: int) -> int:
        """Scan up to ``rows`` rows (fewer once the target is met or no row is left);
        returns how many were scanned."""
        x, n, width = self.x, len(self.x), nbr.shape[1]
        list_width = min(max(width, _SPREAD), n - 1)
        done = 0
        while done < rows and _short(self.sample, nbr, self.policy.target):
            cand = self.walk.take(min(2 * _SEED_BATCH, rows - done))
            if not len(cand):
                break
            kept, rest = _apart(x, cand, self.tau_all, min(_SEED_BATCH, rows - done))
            self.walk.hand_back(rest)
            batch = np.sort(kept)
            scores = x[batch] @ x.T
            stats = scores[:, self.cols]
            tau = chance_level(stats, n)
            scores[np.arange(len(batch)), batch] = -np.inf
            found, found_sims = block_top_k(scores, list_width)
            del scores
            nbr[batch], sims[batch] = found[:, :width], found_sims[:, :width]
            self.covered[batch] = self.scanned[batch] = True
            _spread(x, nbr, sims, batch, found[:, :_SPREAD])
            significant = found[found_sims >= tau[:, None]]
            self.covered[significant[significant >= 0]] = True
            done += len(batch)
        self.used += done
        return done


def join_round(x: FloatArray, nbr: IntArray, sims: FloatArray) -> None:
    """One local-join round: every row hands its ``_JOIN_WIDTH`` best candidates to each
    of them (a neighbour's neighbours are candidates), as one Gram matrix per row."""
    lists = nbr[:, :_JOIN_WIDTH].copy()
    for start in range(0, len(x), _JOIN_CHUNK):
        rows = np.arange(start, min(len(x), start + _JOIN_CHUNK))
        _spread(x, nbr, sims, rows, lists[rows])


def add_table(x: FloatArray, search: PartitionedSearch, variant: int, nbr: IntArray,
               sims: FloatArray) -> None:
    """Scan another partition of the rows (own list only) and merge its lists."""
    more, more_sims = search.scan(x, search.partition(x, variant), 1, nbr.shape[1])
    _merge(nbr, sims, np.arange(len(x)), np.asarray(more), np.asarray(more_sims))


def widen(
    x: FloatArray,
    search: NeighbourSearch,
    nbr: IntArray,
    sims: FloatArray,
    *,
    sample: RecallSample,
    policy: RecallPolicy,
    steps: list[str],
) -> tuple[float, int]:
    """Widen the candidates until the sample recall meets the target or the budget is
    spent; returns the final recall and the rows given an exact scan.

    Three kinds of step, each measured on the sample after it is taken, and chosen by
    the recall it is expected to add per unit of work (work in *row scans*: one exact
    row scan is one; a table or a join round is ``8 sqrt(n) d / (d + 256)``, measured on
    this machine as 1,800-2,500 row scans at 100,000 x 768 and 1,000,000 x 256):

    * **Exact row scans** (chunks of 1% of the rows, at most one table's worth). Seeds
      are taken least confident first (lowest ``k``-th found cosine), rows no earlier
      scan covered before the rest. A seed's scan gives it its exact list; its 32 best
      rows receive the seed and that list as candidates, and those whose cosine is
      *significant* (above the seed's mean plus ``sqrt(2 ln n)`` standard deviations,
      the expected maximum of ``n`` chance cosines) count as covered. On pools of small
      groups in noise one scan so finds a whole group. Seeds significant to one another
      are not scanned in the same batch.
    * **Another table** (a partitioned search only): a partition from another seed,
      own list scanned, lists merged. Expected to find the share of the missing
      neighbours that the last table found.
    * **A join round** (after two tables): neighbours of neighbours. Expected to add
      what the last join added; before the first, twice what a table would.

    The budget is ``widen_share * n`` row scans and ``widen_max_work`` multiply-adds.
    Widening goes on until the recall is above the target by three standard errors of
    the sample (about 0.02 with 256 rows, so a met target is not luck of the draw), the
    budget is spent, or the best step (:func:`next_step`) is expected to add less than
    half a point of recall per tenth of the budget.
    """
    n, d = x.shape
    budget = min(policy.widen_share * n, policy.widen_max_work / (n * d))
    recall = sample_recall(sample, nbr)
    if budget < 1 or not _short(sample, nbr, policy.target):
        return recall, 0
    scans = _RowScans(x, sample, policy, sims)
    # A table or join round in row scans: ~n^1.5 d against a row's ~n (d + 256) (its
    # top-k passes cost like 256 dimensions); 1,800-2,500 measured at 100k x 768 and
    # 1M x 256, 1,900-4,000 by this model.
    step_cost = _STEP_COST * float(np.sqrt(n)) * d / (d + 256)
    seen = Rates(step_cost=step_cost, budget=budget,
                 partitioned=isinstance(search, PartitionedSearch), table_share=recall,
                 target=policy.target)
    chunk = max(_SEED_BATCH, min(n // 100, int(seen.step_cost)))
    joins = 0
    while seen.spent < budget and _short(sample, nbr, policy.target):
        kind = next_step(seen, recall)
        if kind is None:
            break
        before = recall
        if kind == "rows":
            # the first chunk only measures the rate of row scans
            rows = chunk if seen.row_rate is not None else max(_SEED_BATCH, chunk // 5)
            done = scans.run(nbr, sims, min(rows, int(budget - seen.spent)))
            if not done:
                break
            seen.spent += done
            recall = sample_recall(sample, nbr)
            seen.row_rate = (recall - before) / done
            steps.append(f"exact rows {scans.used} {recall:.3f}")
        elif kind == "table":
            add_table(x, search, seen.tables, nbr, sims)  # type: ignore[arg-type]
            seen.tables += 1
            seen.spent += seen.step_cost
            recall = sample_recall(sample, nbr)
            seen.table_share = (recall - before) / max(1e-9, 1.0 - before)
            steps.append(f"table {seen.tables} {recall:.3f}")
        else:
            join_round(x, nbr, sims)
            joins += 1
            seen.spent += seen.step_cost
            recall = sample_recall(sample, nbr)
            seen.join_gain = recall - before
            steps.append(f"join {joins} {recall:.3f}")
    return recall, scans.used


@dataclass
class Rates:
    """What the widening has measured so far, in recall per row scan of work."""

    step_cost: float  # a table or a join round, in row scans
    budget: float  # row scans
    partitioned: bool
    table_share: float  # share of the missing neighbours the last table found
    target: float = 0.95
    row_rate: float | None = None  # recall per row scan in the last chunk
    join_gain: float | None = None  # recall the last join round added
    tables: int = 1
    spent: float = 0.0


def next_step(seen: Rates, recall: float) -> str | None:
    """The step expected to add the most recall per unit of work: ``"rows"`` (measured
    first), ``"table"`` or ``"join"`` (after two tables; before any join it is expected
    to add twice what a table would, measured 2-3x after 3-5 tables); ``None`` when even
    the best can neither reach the target with the budget left nor add ``_MIN_GAIN``
    per tenth of it."""
    left = seen.budget - seen.spent
    if left < 1:
        return None
    options = [(np.inf if seen.row_rate is None else seen.row_rate, "rows")]
    if seen.partitioned and seen.tables < _MAX_TABLES and seen.step_cost <= left:
        table = seen.table_share * (1.0 - recall)
        options.append((table / seen.step_cost, "table"))
        if seen.tables >= 2:
            join = seen.join_gain if seen.join_gain is not None else 2.0 * table
            options.append((join / seen.step_cost, "join"))
    rate, kind = max(options, key=lambda o: o[0])
    reaches = recall + rate * left >= seen.target
    return kind if reaches or rate * left / 10.0 >= _MIN_GAIN else None


def _apart(
    x: FloatArray, cand: IntArray, tau: float, count: int
) -> tuple[IntArray, IntArray]:
    """Up to ``count`` of ``cand`` (in order) none of which is significant to an earlier
    kept one, and the candidates after the last kept one (for the next batch). Candidates
    dropped as significant to a kept one are left to its scan."""
    gram = x[cand] @ x[cand].T
    keep: list[int] = []
    last = len(cand)
    for i in range(len(cand)):
        if not keep or gram[i, keep].max() < tau:
            keep.append(i)
            if len(keep) == count:
                last = i + 1
                break
    return cand[keep], cand[last:]


def _spread(x: FloatArray, nbr: IntArray, sims: FloatArray, seeds: IntArray,
            found: IntArray) -> None:
    """Each row v of a scanned row u's list ``found`` (valid entries first, ``-1`` pads)
    gets u and the rest of the list as candidates, merged into its own list. The scores
    among u's list are one small Gram matrix per scanned row."""
    lists = np.concatenate([seeds[:, None], found], axis=1)  # (s, m): u first, then its list
    m = int((lists >= 0).sum(axis=1).max())
    lists = lists[:, :m]
    valid = lists >= 0
    if m < 2:
        return
    members = x[np.maximum(lists, 0)]  # (s, m, d)
    # numpy's own loop: many tiny BLAS calls cost more in thread hand-offs than they compute
    gram = np.einsum("sid,sjd->sij", members, members).astype(np.float32)  # (s, m, m)
    gram[~np.broadcast_to(valid[:, None, :], gram.shape)] = -np.inf
    seed_of, at = np.nonzero(valid[:, 1:])
    at += 1
    receiver = lists[seed_of, at]
    new_c = lists[seed_of]  # (p, m) candidates of each receiver
    new_s = gram[seed_of, at]
    new_s[new_c == receiver[:, None]] = -np.inf
    _merge(nbr, sims, receiver, new_c, new_s)


def _merge(nbr: IntArray, sims: FloatArray, rows: IntArray, new_c: IntArray,
           new_s: FloatArray) -> None:
    """Merge candidates ``new_c`` (scores ``new_s``, one row per entry of ``rows``) into
    those rows' lists: best ``width`` distinct candidates, ties by lower id. A row listed
    twice is merged in a second round."""
    width = nbr.shape[1]
    pending = np.arange(len(rows))
    while len(pending):
        _, first = np.unique(rows[pending], return_index=True)
        for start in range(0, len(first), _MERGE_CHUNK):
            take = pending[first[start : start + _MERGE_CHUNK]]
            at = rows[take]
            cand = np.concatenate([nbr[at], new_c[take]], axis=1)
            score = np.concatenate([sims[at], new_s[take]], axis=1)
            score[cand < 0] = -np.inf
            order = np.argsort(cand, axis=1, kind="stable")
            cand = np.take_along_axis(cand, order, axis=1)
            score = np.take_along_axis(score, order, axis=1)
            repeat = np.zeros(cand.shape, dtype=bool)
            repeat[:, 1:] = cand[:, 1:] == cand[:, :-1]
            score[repeat] = -np.inf
            order = np.argsort(-score, axis=1, kind="stable")[:, :width]  # ties: lower id
            cand = np.take_along_axis(cand, order, axis=1)
            score = np.take_along_axis(score, order, axis=1)
            cand[~np.isfinite(score)] = -1
            nbr[at], sims[at] = cand, score
        pending = np.delete(pending, first)


def checked_search(
    x: FloatArray, search: NeighbourSearch, width: int, policy: RecallPolicy
) -> tuple[IntArray, FloatArray, RecallReport]:
    """Run ``search``, measure its recall@k on a seeded sample and widen it (exact row
    scans, then exact search) while it is below ``policy.target``. A partitioned search
    scans only the probes that pay (predicted from the partition on the sample). Exact
    search is not checked."""
    if isinstance(search, ExactSearch):
        nbr, sims = search.search(x, width)
        return nbr, sims, RecallReport(target=policy.target, k=policy.k, steps=(search.name,))
    n = len(x)
    sample = draw_sample(x, policy.sample, policy.k, policy.seed)
    if isinstance(search, PartitionedSearch):
        part = search.partition(x)
        nprobe = choose_probes(probe_recall(sample, part), policy.target, policy.min_probe_gain)
        nbr, sims = search.scan(x, part, nprobe, width)
        label = f"{search.name} nprobe {nprobe}"
    else:
        nbr, sims = search.search(x, width)
        label = search.name
    nbr = np.array(nbr, dtype=np.int64)
    sims = np.array(sims, dtype=np.float32)
    recall = initial = sample_recall(sample, nbr)
    steps = [f"{label} {recall:.3f}"]
    recall, scanned_rows = widen(
        x, search, nbr, sims, sample=sample, policy=policy, steps=steps
    )
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
        chance_share=sample.chance_share,
    )
    return nbr, sims, report
