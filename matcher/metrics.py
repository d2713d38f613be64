"""Prometheus metrics of the matcher service (``mosaic_matcher_*``), in base units.

The service reports each handled tick to a :class:`CycleObserver`; metrics are one
observer, so the service itself has no metric calls inside its transaction code.
``mosaic matcher run`` registers them on the default registry (next to the process and
dead-letter metrics); tests pass a registry of their own.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

Outcome = Literal["completed", "duplicate", "dead_lettered"]

_PHASE_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                  120.0, 300.0)
# Scores are a cosine (or a z-score when standardised) plus a wait boost.
_SCORE_BUCKETS = (-1.0, -0.5, 0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.25,
                  1.5, 2.0, 3.0)
# Waits from opt-in: a minute to a week (cycles are typically an hour).
_WAIT_BUCKETS = (60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 43200.0,
                 86400.0, 172800.0, 345600.0, 604800.0)


@dataclass(frozen=True)
class CycleReport:
    """One handled tick: what the service did and how long each phase took."""

    cycle_id: str
    pool: str
    outcome: Outcome
    seekers: int = 0
    pairs: int = 0
    scores: tuple[float, ...] = ()
    unmatched_by_reason: dict[str, int] = field(default_factory=dict)
    phase_seconds: dict[str, float] = field(default_factory=dict)
    # Seconds since opt-in at the tick, of every seeker in the snapshot and of the matched.
    wait_seconds: Mapping[str, float] = field(default_factory=dict)
    matched_user_ids: tuple[str, ...] = ()
    # Candidate recall@10 measured by the core on a sample (None: exact search).
    candidate_recall: float | None = None
    recall_target_met: bool = True
    candidate_widening: tuple[str, ...] = ()


class CycleObserver(Protocol):
    def cycle_handled(self, report: CycleReport) -> None: ...

    def cycle_failed(self, pool: str, error: BaseException) -> None: ...


@dataclass(frozen=True)
class MatcherMetrics:
    registry: CollectorRegistry
    ticks: Counter
    failures: Counter
    phase_seconds: Histogram
    pool_size: Gauge
    pairs: Counter
    unmatched: Counter
    scores: BulkHistogram
    optin_to_match: BulkHistogram
    pool_wait: BulkHistogram
    last_completed: Gauge
    cycle_length: Gauge
    started: Gauge
    fenced: Counter
    candidate_recall: Gauge
    widenings: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None) -> MatcherMetrics:
        reg = registry or CollectorRegistry()
        return cls(
            registry=reg,
            ticks=Counter("mosaic_matcher_ticks", "Ticks handled, by outcome",
                          ["pool", "outcome"], registry=reg),
            failures=Counter("mosaic_matcher_cycle_failures", "Cycle attempts that aborted",
                             ["pool", "error"], registry=reg),
            phase_seconds=Histogram("mosaic_matcher_cycle_phase_duration_seconds",
                                    "Duration of each cycle phase", ["phase"],
                                    buckets=_PHASE_BUCKETS, registry=reg),
            pool_size=Gauge("mosaic_matcher_pool_seekers",
                            "Seekers in the last cycle's snapshot", ["pool"], registry=reg),
            pairs=Counter("mosaic_matcher_pairs", "Pairs published", ["pool"], registry=reg),
            unmatched=Counter("mosaic_matcher_unmatched", "Seekers left unmatched, by reason",
                              ["pool", "reason"], registry=reg),
            scores=BulkHistogram("mosaic_matcher_pair_score", "Score of each published pair",
                                 (), buckets=_SCORE_BUCKETS, registry=reg),
            optin_to_match=BulkHistogram(
                "mosaic_matcher_optin_to_match_seconds",
                "Time from a user's opt-in to the cycle that matched them",
                ["pool"], buckets=_WAIT_BUCKETS, registry=reg),
            pool_wait=BulkHistogram(
                "mosaic_matcher_pool_wait_seconds",
                "Time since opt-in of every seeker in a cycle's snapshot, by outcome",
                ["pool", "outcome"], buckets=_WAIT_BUCKETS, registry=reg),
            last_completed=Gauge(
                "mosaic_matcher_last_cycle_completed_timestamp_seconds",
                "Unix time the last cycle of the pool was committed (0: none yet)",
                ["pool"], registry=reg),
            cycle_length=Gauge("mosaic_matcher_cycle_length_seconds",
                               "Configured cycle (tick slot) length", ["pool"], registry=reg),
            started=Gauge("mosaic_matcher_started_timestamp_seconds",
                          "Unix time this matcher started serving the pool", ["pool"],
                          registry=reg),
            fenced=Counter("mosaic_matcher_fenced",
                           "Times this matcher was fenced by another instance", registry=reg),
            candidate_recall=Gauge(
                "mosaic_matcher_candidate_recall",
                "Candidate recall@10 of the last cycle, measured on a sample of exact queries "
                "(1 with exact search)", ["pool"], registry=reg),
            widenings=Counter(
                "mosaic_matcher_candidate_widenings",
                "Cycles whose candidate search was widened, by result (target met or missed)",
                ["pool", "result"], registry=reg),
        )

    def configure(self, pools: Sequence[str], cycle_seconds: float,
                  now: float | None = None) -> None:
        """Export the pools' cycle length and start time (the no-cycle alert needs both)."""
        started = time.time() if now is None else now
        for pool in pools:
            self.cycle_length.labels(pool=pool).set(cycle_seconds)
            self.started.labels(pool=pool).set(started)
            self.last_completed.labels(pool=pool)  # 0 until a cycle completes

    def cycle_handled(self, report: CycleReport) -> None:
        self.ticks.labels(pool=report.pool, outcome=report.outcome).inc()
        if report.outcome != "completed":
            return
        for phase, seconds in report.phase_seconds.items():
            self.phase_seconds.labels(phase=phase).observe(seconds)
        self.pool_size.labels(pool=report.pool).set(report.seekers)
        self.pairs.labels(pool=report.pool).inc(report.pairs)
        for reason, count in report.unmatched_by_reason.items():
            self.unmatched.labels(pool=report.pool, reason=reason).inc(count)
        self.scores.observe(np.asarray(report.scores, dtype=np.float64))
        recall = 1.0 if report.candidate_recall is None else report.candidate_recall
        self.candidate_recall.labels(pool=report.pool).set(recall)
        if len(report.candidate_widening) > 1 or not report.recall_target_met:
            result = "met" if report.recall_target_met else "missed"
            self.widenings.labels(pool=report.pool, result=result).inc()
        matched = set(report.matched_user_ids)
        waits = np.fromiter(report.wait_seconds.values(), np.float64, len(report.wait_seconds))
        hit = np.fromiter((u in matched for u in report.wait_seconds), bool,
                          len(report.wait_seconds))
        self.pool_wait.observe(waits[hit], pool=report.pool, outcome="matched")
        self.pool_wait.observe(waits[~hit], pool=report.pool, outcome="unmatched")
        self.optin_to_match.observe(waits[hit], pool=report.pool)
        self.last_completed.labels(pool=report.pool).set(time.time())

    def cycle_failed(self, pool: str, error: BaseException) -> None:
        self.failures.labels(pool=pool, error=type(error).__name__).inc()


class BulkHistogram(Collector):
    """A histogram fed a whole array at a time, exposed as a Histogram is (``_bucket``
    with ``le``, ``_sum``, ``_count`` per label set). A cycle of a million seekers
    observes a million waits: ``Histogram.observe`` one at a time took 7 s of the cycle;
    numpy counts them in milliseconds."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str], *,
                 buckets: Sequence[float], registry: CollectorRegistry) -> None:
        self._name, self._documentation = name, documentation
        self._labelnames = tuple(labelnames)
        self._bounds = np.asarray([*buckets, np.inf], dtype=np.float64)
        self._counts: dict[tuple[str, ...], np.ndarray] = {}
        self._sums: dict[tuple[str, ...], float] = {}
        self._lock = threading.Lock()
        registry.register(self)

    def observe(self, values: np.ndarray, **labels: str) -> None:
        """Count ``values`` (each in the first bucket whose bound it does not exceed; a
        NaN in none, as ``Histogram.observe`` does) under ``labels``."""
        if set(labels) != set(self._labelnames):
            raise ValueError(f"{self._name}: labels {sorted(labels)}, expected "
                             f"{sorted(self._labelnames)}")
        key = tuple(labels[name] for name in self._labelnames)
        values = np.asarray(values, dtype=np.float64).reshape(-1)
        slot = np.searchsorted(self._bounds, values, side="left")
        counts = np.bincount(slot, minlength=len(self._bounds) + 1)[:len(self._bounds)]
        with self._lock:
            previous = self._counts.get(key)
            self._counts[key] = counts if previous is None else previous + counts
            self._sums[key] = self._sums.get(key, 0.0) + float(values.sum())

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self._name, self._documentation,
                                       labels=list(self._labelnames))
        with self._lock:
            rows = [(key, np.cumsum(counts).tolist(), self._sums[key])
                    for key, counts in sorted(self._counts.items())]
        for key, cumulative, total in rows:
            family.add_metric(list(key), [(_le(bound), float(count)) for
                                          bound, count in zip(self._bounds.tolist(),
                                                              cumulative, strict=True)],
                              None)
            # Count and sum as Histogram exports them: the count always, the sum only
            # without negative buckets (as the score's are).
            labels = dict(zip(self._labelnames, key, strict=True))
            family.add_sample(f"{self._name}_count", labels, float(cumulative[-1]))
            if self._bounds[0] >= 0:
                family.add_sample(f"{self._name}_sum", labels, total)
        yield family


def _le(bound: float) -> str:
    """A bucket's ``le`` label as prometheus_client writes it."""
    return str(floatToGoString(bound))  # type: ignore[no-untyped-call]
