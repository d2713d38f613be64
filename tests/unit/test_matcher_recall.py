"""Candidate recall is measured every cycle; below the target the search is widened."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from matcher.ann import FaissIvfSearch, recall
from matcher.commands import summary
from matcher.core import ExactSearch, MatchParams, match_pool
from matcher.core.recall import (
    Rates,
    RecallPolicy,
    add_table,
    checked_search,
    choose_probes,
    draw_sample,
    exact_rows,
    join_round,
    next_step,
    probe_recall,
    sample_recall,
)
from matcher.metrics import CycleReport, MatcherMetrics
from matcher.synthetic import clustered_pool, hard_pool

pytestmark = pytest.mark.unit


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@dataclass(frozen=True)
class PoorSearch:
    """An index that returns arbitrary rows (with exact inner products): recall near 0."""

    name: str = "poor"

    def search(self, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        n = len(x)
        nbr = (np.arange(n)[:, None] + 7 * np.arange(1, k + 1)[None, :]) % n
        sims = np.einsum("id,ikd->ik", x, x[nbr]).astype(np.float32)
        order = np.argsort(-sims, axis=1, kind="stable")
        return np.take_along_axis(nbr, order, 1), np.take_along_axis(sims, order, 1)


@pytest.fixture(scope="module")
def hard() -> np.ndarray:
    pool, _ = hard_pool(8000, 256, seed=3)
    return _unit(pool.vectors)


def test_sample_recall_counts_the_shared_neighbours() -> None:
    x = _unit(clustered_pool(500, 16, seed=1).vectors)
    sample = draw_sample(x, 50, 10, seed=4)
    truth, _, _ = exact_rows(x, sample.rows, 10)
    assert (truth == sample.truth).all()
    found = np.full((len(x), 12), -1, dtype=np.int64)
    found[sample.rows, :10] = truth
    assert sample_recall(sample, found) == 1.0
    found[sample.rows, 3:10] = -1  # 3 of 10 kept
    assert sample_recall(sample, found) == pytest.approx(0.3)
    found[sample.rows, 0] = sample.rows  # self is skipped, not counted as an answer
    found[sample.rows, 3] = truth[:, 0]
    assert sample_recall(sample, found) == pytest.approx(0.3)
    # the same measure as the benchmark's (independent) implementation
    ivf, _ = FaissIvfSearch(nprobe=1).search(x, 10)
    other = recall(x, ivf, 10, sample=500)
    assert sample_recall(draw_sample(x, 500, 10, seed=0), ivf) == pytest.approx(other)


def test_sample_is_seeded() -> None:
    x = _unit(clustered_pool(400, 8, seed=2).vectors)
    assert (draw_sample(x, 40, 10, 5).rows == draw_sample(x, 40, 10, 5).rows).all()
    assert not (draw_sample(x, 40, 10, 5).rows == draw_sample(x, 40, 10, 6).rows).all()


def test_sample_measures_how_many_exact_neighbours_are_at_chance_level() -> None:
    noise = _unit(np.random.default_rng(2).standard_normal((4000, 128)))
    assert draw_sample(noise, 100, 10, 0).chance_share > 0.9
    groups = _unit(hard_pool(4000, 384, seed=2)[0].vectors)  # groups well above chance
    assert draw_sample(groups, 100, 10, 0).chance_share < 0.05


def test_hard_pool_defeats_the_default_index_and_widening_reaches_the_target(
    hard: np.ndarray,
) -> None:
    policy = RecallPolicy()
    nbr, sims, report = checked_search(hard, FaissIvfSearch(), 21, policy)
    assert report.initial is not None and report.initial < 0.8
    assert report.widened and report.exact_rows > 0
    assert report.measured is not None and report.measured >= policy.target and report.met
    assert not report.fell_back_to_exact
    # checked on a sample the widening never saw (another seed) and by another implementation
    assert recall(hard, nbr, 10, sample=400, seed=99) >= 0.93
    rows = np.arange(0, len(hard), 97)
    exact = np.einsum("ij,ij->i", hard[rows], hard[nbr[rows, 0]])
    assert np.allclose(sims[rows, 0], exact, atol=1e-5)


def test_core_reports_the_widening_and_is_deterministic() -> None:
    pool, labels = hard_pool(8000, 256, seed=3)
    params = MatchParams(exact_max_users=1000)
    one = match_pool(pool, params=params, search=FaissIvfSearch())
    two = match_pool(pool, params=params, search=FaissIvfSearch())
    stats = one.stats
    assert stats.candidates_widened and stats.recall_target_met
    assert stats.candidate_recall is not None and stats.candidate_recall >= 0.95
    assert stats.candidate_recall_initial is not None and stats.candidate_recall_initial < 0.8
    assert stats.candidate_widening[0].startswith("faiss-ivf ")
    assert one.pairs == two.pairs and one.unmatched == two.unmatched
    assert stats.candidate_widening == two.stats.candidate_widening
    assert stats.total_score == two.stats.total_score
    exact = match_pool(pool, params=params, search=ExactSearch())
    assert exact.stats.candidate_recall is None
    assert stats.total_score >= 0.995 * exact.stats.total_score
    index = {u: i for i, u in enumerate(pool.user_ids)}
    within = np.mean([labels[index[p.user_a]] == labels[index[p.user_b]] for p in one.pairs])
    exact_within = np.mean(
        [labels[index[p.user_a]] == labels[index[p.user_b]] for p in exact.pairs]
    )
    assert within >= exact_within - 0.01


def test_falls_back_to_exact_when_the_steps_are_not_enough() -> None:
    x = _unit(clustered_pool(3000, 32, seed=5).vectors)
    policy = RecallPolicy(widen_share=50 / 3000)
    nbr, _, report = checked_search(x, PoorSearch(), 21, policy)
    assert report.initial is not None and report.initial < 0.2
    assert report.fell_back_to_exact and report.measured == 1.0 and report.met
    assert report.steps[-1] == "exact 1.000"
    truth, _ = ExactSearch().search(x, 21)
    assert (nbr[:, :10] == truth[:, :10]).all()


def test_says_so_when_the_target_is_missed_and_exact_is_too_large() -> None:
    pool = clustered_pool(3000, 32, seed=5)
    params = MatchParams(exact_max_users=1000, widen_share=0.0, exact_fallback_max_users=2000)
    result = match_pool(pool, params=params, search=PoorSearch())
    stats = result.stats
    assert stats.candidate_method == "poor"
    assert not stats.recall_target_met
    assert stats.candidate_recall is not None and stats.candidate_recall < 0.2
    assert stats.pairs == 1500  # still a full matching, on worse candidates
    text = summary(result, 1.0, 2**20, Path("out.csv"))
    assert "MISSED" in text and "candidate recall@10" in text


def test_match_file_summary_prints_the_recall() -> None:
    pool = clustered_pool(3000, 32, seed=6)
    params = MatchParams(exact_max_users=1000, widen_share=100 / 3000)
    result = match_pool(pool, params=params, search=PoorSearch())
    text = summary(result, 1.0, 2**20, Path("out.csv"))
    assert f"candidate recall@10 {result.stats.candidate_recall:.3f}" in text
    assert "widened: poor " in text
    small = match_pool(clustered_pool(50, 8, seed=6))
    assert "exact candidates" in summary(small, 1.0, 2**20, Path("out.csv"))


def test_metrics_export_the_recall_and_the_widenings() -> None:
    metrics = MatcherMetrics.create()
    metrics.cycle_handled(CycleReport(
        "p:1", "p", "completed", seekers=4, pairs=2, candidate_recall=0.97,
        candidate_widening=("faiss-ivf 0.500", "exact rows 2000 0.970")))
    get = metrics.registry.get_sample_value
    assert get("mosaic_matcher_candidate_recall", {"pool": "p"}) == 0.97
    assert get("mosaic_matcher_candidate_widenings_total", {"pool": "p", "result": "met"}) == 1
    metrics.cycle_handled(CycleReport("p:2", "p", "completed", seekers=4, pairs=2))
    assert get("mosaic_matcher_candidate_recall", {"pool": "p"}) == 1.0


def test_widening_keeps_to_its_budget_in_rows_and_in_work() -> None:
    x = _unit(np.random.default_rng(5).standard_normal((3000, 64)))
    policy = RecallPolicy(widen_share=0.05, exact_fallback_max_users=0)
    _, _, report = checked_search(x, PoorSearch(), 21, policy)
    assert 0 < report.exact_rows <= 150 and not report.met and not report.fell_back_to_exact
    work = RecallPolicy(widen_max_work=100 * 3000 * 64, exact_fallback_max_users=0)
    _, _, report = checked_search(x, PoorSearch(), 21, work)
    assert 0 < report.exact_rows <= 100


def test_next_step_takes_the_most_recall_per_unit_of_work() -> None:
    seen = Rates(step_cost=1000.0, budget=20_000.0, partitioned=True, table_share=0.3)
    assert next_step(seen, 0.3) == "rows"  # not measured yet: measured first
    seen.row_rate = 3e-4  # a group per scan: 0.3 per 1,000 rows
    assert next_step(seen, 0.3) == "rows"  # a table: 0.3 * 0.7 = 0.21 per 1,000
    seen.row_rate = 1e-5  # row scans barely help (groups at chance level)
    assert next_step(seen, 0.3) == "table"
    seen.tables = 2
    assert next_step(seen, 0.4) == "join"  # expected twice a table before the first
    seen.join_gain = 0.001
    assert next_step(seen, 0.6) == "table"
    seen.tables = 8  # no more tables: rows, the join's gain is worse
    assert next_step(seen, 0.6) == "rows"
    seen.row_rate = 1e-7  # a tenth of the budget would add 0.0002: not worth it
    seen.join_gain = 0.0
    assert next_step(seen, 0.6) is None
    seen.row_rate = 2e-6  # ... unless it is what the target still needs
    assert next_step(seen, 0.94) == "rows"
    plain = Rates(step_cost=1000.0, budget=20_000.0, partitioned=False, table_share=0.3,
                  row_rate=1e-5)
    assert next_step(plain, 0.3) == "rows"  # no tables without a partitioned index


def test_more_tables_and_a_join_raise_the_recall_with_exact_scores() -> None:
    x = _unit(hard_pool(6000, 256, seed=6)[0].vectors)
    sample = draw_sample(x, 256, 10, seed=0)
    search = FaissIvfSearch()
    nbr, sims = search.scan(x, search.partition(x), 1, 21)
    recalls = [sample_recall(sample, nbr)]
    for variant in (1, 2):
        add_table(x, search, variant, nbr, sims)
        recalls.append(sample_recall(sample, nbr))
    join_round(x, nbr, sims)
    recalls.append(sample_recall(sample, nbr))
    assert recalls == sorted(recalls) and recalls[-1] > recalls[0] + 0.1, recalls
    rows = np.arange(0, len(x), 37)
    valid = nbr[rows] >= 0
    exact = np.einsum("rd,rkd->rk", x[rows], x[np.maximum(nbr[rows], 0)])
    assert np.allclose(sims[rows][valid], exact[valid], atol=1e-5)
    assert all(len(set(r[r >= 0])) == int((r >= 0).sum()) for r in nbr[rows])  # distinct
    assert (np.diff(np.where(valid, sims[rows], -9.0), axis=1) <= 0).all()  # best first


def test_probe_recall_predicts_the_scan_exactly_and_the_cheapest_enough_is_scanned() -> None:
    search = FaissIvfSearch()
    for x in (_unit(clustered_pool(6000, 64, seed=4).vectors),
              _unit(hard_pool(6000, 256, seed=4)[0].vectors)):
        sample = draw_sample(x, 256, 10, seed=0)
        part = search.partition(x)
        predicted = probe_recall(sample, part)
        assert predicted == sorted(predicted) and len(predicted) == search.nprobe
        for nprobe in (1, 2, 8):
            found, _ = search.scan(x, part, nprobe, 21)
            assert sample_recall(sample, found) == pytest.approx(predicted[nprobe - 1])
    assert choose_probes([0.5, 0.9, 0.96, 0.99], 0.95, 0.02) == 3  # the fewest that reach it
    assert choose_probes([0.30, 0.31, 0.50], 0.95, 0.02) == 1  # the next adds < 2 points
    assert choose_probes([0.30, 0.40, 0.41, 0.60], 0.95, 0.02) == 2
    assert choose_probes([0.3, 0.4], 0.95, 0.02) == 2  # all of them, still short


def test_an_easy_pool_scans_few_probes_and_needs_no_widening() -> None:
    x = _unit(clustered_pool(6000, 64, seed=4).vectors)
    _, _, report = checked_search(x, FaissIvfSearch(), 21, RecallPolicy())
    assert report.steps[0].startswith("faiss-ivf nprobe ")
    assert int(report.steps[0].split()[2]) < FaissIvfSearch.nprobe
    assert report.met and not report.widened and report.exact_rows == 0


def test_a_pool_too_noisy_for_the_widening_falls_back_to_exact() -> None:
    # 96 dimensions: most groups sit below the chance level of their own exact lists
    x = _unit(hard_pool(6000, 96, seed=3)[0].vectors)
    _, _, report = checked_search(x, FaissIvfSearch(), 21, RecallPolicy())
    assert report.widened and report.exact_rows > 0
    assert report.fell_back_to_exact and report.measured == 1.0
