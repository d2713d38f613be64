"""Matcher metrics (mosaic_matcher_*) observe handled ticks, in base units, on their own
registry."""

from __future__ import annotations

import numpy as np
import pytest

from matcher.metrics import CycleReport, MatcherMetrics

pytestmark = pytest.mark.unit


def _value(metrics: MatcherMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_completed_cycles_feed_every_metric() -> None:
    metrics = MatcherMetrics.create()
    metrics.cycle_handled(CycleReport(
        "p:1", "p", "completed", seekers=5, pairs=2, scores=(0.95, 0.35),
        unmatched_by_reason={"odd_one_out": 1}, phase_seconds={"match": 0.2, "publish": 0.05}))
    metrics.cycle_handled(CycleReport("p:1", "p", "duplicate"))
    metrics.cycle_failed("p", TimeoutError())
    assert _value(metrics, "mosaic_matcher_ticks_total", pool="p", outcome="completed") == 1
    assert _value(metrics, "mosaic_matcher_ticks_total", pool="p", outcome="duplicate") == 1
    assert _value(metrics, "mosaic_matcher_cycle_failures_total", pool="p",
                  error="TimeoutError") == 1
    assert _value(metrics, "mosaic_matcher_pool_seekers", pool="p") == 5
    assert _value(metrics, "mosaic_matcher_pairs_total", pool="p") == 2
    assert _value(metrics, "mosaic_matcher_unmatched_total", pool="p", reason="odd_one_out") == 1
    assert _value(metrics, "mosaic_matcher_pair_score_count") == 2
    assert _value(metrics, "mosaic_matcher_pair_score_bucket", le="0.4") == 1
    assert _value(metrics, "mosaic_matcher_cycle_phase_duration_seconds_sum", phase="match") == 0.2


def test_registries_are_per_instance() -> None:
    one, two = MatcherMetrics.create(), MatcherMetrics.create()
    one.cycle_handled(CycleReport("p:1", "p", "duplicate"))
    assert _value(two, "mosaic_matcher_ticks_total", pool="p", outcome="duplicate") == 0


def test_wait_times_last_cycle_and_no_cycle_alert_inputs() -> None:
    metrics = MatcherMetrics.create()
    metrics.configure(["p"], 3600, now=1000.0)
    assert _value(metrics, "mosaic_matcher_cycle_length_seconds", pool="p") == 3600
    assert _value(metrics, "mosaic_matcher_started_timestamp_seconds", pool="p") == 1000
    assert metrics.registry.get_sample_value(
        "mosaic_matcher_last_cycle_completed_timestamp_seconds", {"pool": "p"}) == 0
    metrics.cycle_handled(CycleReport(
        "p:1", "p", "completed", seekers=3, pairs=1, scores=(0.9,),
        wait_seconds={"a": 120.0, "b": 4000.0, "c": 50.0}, matched_user_ids=("a", "b")))
    assert _value(metrics, "mosaic_matcher_optin_to_match_seconds_count", pool="p") == 2
    assert _value(metrics, "mosaic_matcher_optin_to_match_seconds_sum", pool="p") == 4120
    assert _value(metrics, "mosaic_matcher_pool_wait_seconds_count", pool="p",
                  outcome="unmatched") == 1
    assert _value(metrics, "mosaic_matcher_pool_wait_seconds_bucket", pool="p",
                  outcome="matched", le="300.0") == 1
    assert _value(metrics, "mosaic_matcher_last_cycle_completed_timestamp_seconds",
                  pool="p") > 1000


@pytest.mark.parametrize("buckets", [(-1.0, 0.0, 0.5, 1.0, 60.0), (0.0, 0.5, 1.0, 60.0)])
def test_a_bulk_histogram_exports_what_a_histogram_of_the_same_values_does(
        buckets: tuple[float, ...]) -> None:
    from prometheus_client import CollectorRegistry, Histogram

    from matcher.metrics import BulkHistogram

    rng = np.random.default_rng(4)
    values = np.concatenate([rng.normal(0.5, 30.0, 500), list(buckets), [np.inf]])
    plain, bulk = CollectorRegistry(), CollectorRegistry()
    one = Histogram("h", "d", ["pool"], buckets=buckets, registry=plain)
    many = BulkHistogram("h", "d", ["pool"], buckets=buckets, registry=bulk)
    for part in (values[:100], values[100:]):  # two cycles add up
        for value in part.tolist():
            one.labels(pool="p").observe(value)
        many.observe(part, pool="p")
    many.observe(np.empty(0), pool="q")

    Key = tuple[str, tuple[tuple[str, str], ...]]

    def samples(registry: CollectorRegistry) -> dict[Key, float]:
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in registry.collect() for s in family.samples
                if not s.name.endswith("_created")}

    got, want = samples(bulk), samples(plain)
    assert {k: v for k, v in got.items() if ("pool", "q") not in k[1]} == pytest.approx(want)
    assert got[("h_count", (("pool", "q"),))] == 0
    assert (("h_sum", (("pool", "p"),)) in got) == (buckets[0] >= 0)
    with pytest.raises(ValueError, match="labels"):
        many.observe(values, outcome="x")
