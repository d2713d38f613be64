"""Every metric the Grafana dashboard (ops/grafana/mosaic.json) and the alert rules
(ops/prometheus/rules.yml) query is really exported by the code: the modules that define
metrics are imported and their registries read (``up`` comes from Prometheus itself, the
consumer-lag collector answers from the real Kafka)."""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY, CollectorRegistry

from mosaic.settings import Settings
from stack.base import Service

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
# Modules whose import registers metrics on the default registry.
METRIC_MODULES = ("streams.deadletter", "consumers.embedding.metrics", "consumers.runner",
                  "consumers.postmatch.handlers", "consumers.postmatch.app", "app.ops.supervisor")
PROMQL_WORDS = {"sum", "by", "rate", "increase", "histogram_quantile", "max", "time", "le",
                "and", "or", "deriv", "without", "on", "unless", "min", "avg"}
FROM_PROMETHEUS = {"up"}


def _sample_names(registries: Iterable[CollectorRegistry]) -> set[str]:
    names: set[str] = set()
    for registry in registries:
        for family in registry.collect():
            suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"),
                        "summary": ("_sum", "_count")}.get(family.type, ("",))
            names.update(family.name + s for s in suffixes)
            names.update(s.name for s in family.samples)
    return names


def _exported(settings: Settings) -> set[str]:
    from app.ops.lag import ConsumerLagCollector
    from matcher.metrics import MatcherMetrics
    from producers.metrics import IngressMetrics

    for module in METRIC_MODULES:
        importlib.import_module(module)
    lag = CollectorRegistry()
    lag.register(ConsumerLagCollector(settings))
    return _sample_names([REGISTRY, MatcherMetrics.create().registry,
                          IngressMetrics.create().registry, lag])


def _metric_names(expr: str) -> set[str]:
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    without_labels = re.sub(r"\{[^}]*\}", "", without_strings)
    without_ranges = re.sub(r"\[[^\]]*\]", "", without_labels)
    without_grouping = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", without_ranges)
    # A word followed by "(" is a function (rate, vector, ...), never a metric.
    words = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*\b(?!\s*\()", without_grouping))
    return {w for w in words if w not in PROMQL_WORDS and not w.isdigit()}


def _dashboard_exprs() -> list[str]:
    dash: dict[str, Any] = json.loads((ROOT / "ops/grafana/mosaic.json").read_text())
    return [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]


def _rule_exprs() -> list[str]:
    yaml: Any = importlib.import_module("yaml")
    rules = yaml.safe_load((ROOT / "ops/prometheus/rules.yml").read_text())
    return [r["expr"] for g in rules["groups"] for r in g["rules"]]


def test_parser_finds_metric_names() -> None:
    assert _metric_names('sum by (le, phase) (rate(a_b_bucket{x="y z"}[1h])) > 2 * c') == {
        "a_b_bucket", "c"}
    assert _metric_names("(max(d_seconds) or vector(0)) < absent_over_time (e[5m])") == {
        "d_seconds", "e"}


@pytest.mark.parametrize("source", ["dashboard", "rules"])
def test_every_queried_metric_is_exported(settings: Settings, kafka_stack: Service,
                                          source: str) -> None:
    exprs = _dashboard_exprs() if source == "dashboard" else _rule_exprs()
    assert len(exprs) >= 6
    queried = set().union(*(_metric_names(e) for e in exprs))
    missing = queried - _exported(settings) - FROM_PROMETHEUS
    assert not missing, f"{source} queries metrics no code exports: {sorted(missing)}"


def test_dashboard_covers_what_operators_ask_first() -> None:
    queried = set().union(*(_metric_names(e) for e in _dashboard_exprs()))
    for wanted in ("mosaic_consumer_lag_records", "mosaic_dead_letters_total",
                   "mosaic_matcher_optin_to_match_seconds_bucket",
                   "mosaic_matcher_pool_wait_seconds_bucket", "mosaic_matcher_pool_seekers",
                   "mosaic_matcher_last_cycle_completed_timestamp_seconds",
                   "mosaic_matcher_cycle_phase_duration_seconds_bucket",
                   "mosaic_ingress_requests_total"):
        assert wanted in queried, wanted
