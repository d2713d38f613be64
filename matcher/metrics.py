"""Prometheus metrics of the matcher service, in base units, on a registry per service.

The service reports each handled tick to a :class:`CycleObserver`; metrics are one
observer, so the service itself has no metric calls inside its transaction code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

Outcome = Literal["completed", "duplicate", "dead_lettered"]

_PHASE_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                  120.0, 300.0)
# Scores are a cosine (or a z-score when standardised) plus a wait boost.
_SCORE_BUCKETS = (-1.0, -0.5, 0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.25,
                  1.5, 2.0, 3.0)


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
    scores: Histogram

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None) -> MatcherMetrics:
        reg = registry or CollectorRegistry()
        return cls(
            registry=reg,
            ticks=Counter("matcher_ticks", "Ticks handled, by outcome", ["pool", "outcome"],
                          registry=reg),
            failures=Counter("matcher_cycle_failures", "Cycle attempts that aborted",
                             ["pool", "error"], registry=reg),
            phase_seconds=Histogram("matcher_cycle_phase_duration_seconds",
                                    "Duration of each cycle phase", ["phase"],
                                    buckets=_PHASE_BUCKETS, registry=reg),
            pool_size=Gauge("matcher_pool_size", "Seekers in the last cycle's snapshot",
                            ["pool"], registry=reg),
            pairs=Counter("matcher_pairs", "Pairs published", ["pool"], registry=reg),
            unmatched=Counter("matcher_unmatched", "Seekers left unmatched, by reason",
                              ["pool", "reason"], registry=reg),
            scores=Histogram("matcher_pair_score", "Score of each published pair",
                             buckets=_SCORE_BUCKETS, registry=reg),
        )

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
        for score in report.scores:
            self.scores.observe(score)

    def cycle_failed(self, pool: str, error: BaseException) -> None:
        self.failures.labels(pool=pool, error=type(error).__name__).inc()
