"""Matcher metrics observe handled ticks, in base units, on their own registry."""

from __future__ import annotations

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
    assert _value(metrics, "matcher_ticks_total", pool="p", outcome="completed") == 1
    assert _value(metrics, "matcher_ticks_total", pool="p", outcome="duplicate") == 1
    assert _value(metrics, "matcher_cycle_failures_total", pool="p", error="TimeoutError") == 1
    assert _value(metrics, "matcher_pool_size", pool="p") == 5
    assert _value(metrics, "matcher_pairs_total", pool="p") == 2
    assert _value(metrics, "matcher_unmatched_total", pool="p", reason="odd_one_out") == 1
    assert _value(metrics, "matcher_pair_score_count") == 2
    assert _value(metrics, "matcher_pair_score_bucket", le="0.4") == 1
    assert _value(metrics, "matcher_cycle_phase_duration_seconds_sum", phase="match") == 0.2


def test_registries_are_per_instance() -> None:
    one, two = MatcherMetrics.create(), MatcherMetrics.create()
    one.cycle_handled(CycleReport("p:1", "p", "duplicate"))
    assert _value(two, "matcher_ticks_total", pool="p", outcome="duplicate") == 0
