"""``mosaic report``'s pure parts: SVG charts, waits, match-to-notification, the timeline,
and the page (a cycle built from real event classes; no servers). The page drawn by a real
browser is tests/integration/test_cycle_report_page.py and tests/e2e/test_demo_cycle.py."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from app.ops.report import CycleData, render
from app.ops.report_svg import (
    Series,
    Span,
    bars,
    histogram,
    histogram_counts,
    nice_ticks,
    tick_labels,
    timeline,
)
from consumers.audit import AuditRow, CycleRow
from streams.events import (
    CycleCompleted,
    PairMatched,
    SeekerUnmatched,
    derive_event_id,
    pair_key,
)

pytestmark = pytest.mark.unit

TICK = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


def sample_cycle() -> CycleData:
    """6 users opted in 10-60 minutes before the tick; 2 pairs, 2 unmatched (one of them
    with no opt-in record left), one notification still missing."""
    cycle = "pool-a:20261201T100000Z"
    users = [f"u{i}" for i in range(6)]
    pairs = [PairMatched(event_id=derive_event_id(cycle, a, b), occurred_at=TICK,
                         cycle_id=cycle, pair_key=pair_key(a, b), user_a=a, user_b=b,
                         score=score, similarity=score - 0.01, pool="pool-a")
             for a, b, score in (("u0", "u1", 0.91), ("u2", "u3", 0.72))]
    unmatched = [SeekerUnmatched(event_id=derive_event_id(cycle, u), occurred_at=TICK,
                                 cycle_id=cycle, user_id=u, reason=r, missed_cycles=1,
                                 pool="pool-a")
                 for u, r in (("u4", "no_candidate"), ("u5", "blocked"))]
    completed = CycleCompleted(
        event_id=derive_event_id(cycle), occurred_at=TICK, cycle_id=cycle, pairs=2,
        pool="pool-a", seekers=6, unmatched_by_reason={"no_candidate": 1, "blocked": 1},
        phase_seconds={"snapshot": 0.5, "constraints": 0.1, "match": 1.0, "publish": 0.4})
    rows = [AuditRow(cycle, p.pair_key, p.user_a, p.user_b, True, True, "g", "c",
                     True, p.user_b != "u3", TICK + timedelta(seconds=9), matched_at=TICK)
            for p in pairs]
    return CycleData(
        cycle_id=cycle, topics={"cycles": "t.cycles", "notifications": "t.notifications"},
        completed=completed, published_at=TICK + timedelta(seconds=3), tick_at=TICK,
        pairs=pairs, unmatched=unmatched,
        opted_in_at={u: TICK - timedelta(minutes=10 * (i + 1)) for i, u in
                     enumerate(users[:5])},
        rooms={p.pair_key: TICK + timedelta(seconds=4) for p in pairs},
        notified={"u0": TICK + timedelta(seconds=5), "u1": TICK + timedelta(seconds=6)},
        audit_rows=rows, audit_cycle=CycleRow(cycle, 2, 6, TICK, None))


def test_ticks_are_round_and_labelled_by_their_step() -> None:
    assert nice_ticks(0, 12, 5) == [0, 2.5, 5, 7.5, 10, 12.5]
    assert tick_labels(nice_ticks(13.9, 14.3)) == ["13.9", "14.0", "14.1", "14.2", "14.3"]
    assert tick_labels([0, 1000, 2000]) == ["0", "1,000", "2,000"]
    assert histogram_counts([0.0, 0.5, 0.99, 1.0, 2.0, 5.0], [0.0, 1.0, 2.0]) == [3, 2]


def test_charts_count_their_points_and_say_when_empty() -> None:
    svg = histogram("h", [Series("a", [1.0, 2.0, 2.0]), Series("b", [3.0])], xlabel="x")
    assert 'data-points="4"' in svg and svg.count('class="mark bar"') >= 3
    assert "<title>a: 2 in" in svg
    empty = bars("reasons", [], xlabel="users", empty="everyone was matched")
    assert 'data-points="0"' in empty and "everyone was matched" in empty
    assert 'class="mark' not in empty
    gantt = timeline("t", [Span("match", 1.0, 2.5), Span("done", 4.0, 4.0)])
    assert gantt.count('class="mark span"') == 2 and 'data-end="2.500"' in gantt


def test_waits_notifications_and_reasons_from_the_cycle() -> None:
    data = sample_cycle()
    matched, unmatched, missing = data.waits()
    assert matched == [600.0, 1200.0, 1800.0, 2400.0]
    assert unmatched == [3000.0] and missing == 1  # u5 has no opt-in record left
    # u0/u1 from UserNotified; u2 from the audit's last attempt; u3 not notified yet.
    notify, not_yet = data.match_to_notification()
    assert notify == [5.0, 6.0, 9.0] and not_yet == 1
    assert data.unmatched_reasons() == {"no_candidate": 1, "blocked": 1}


def test_timeline_puts_phases_before_the_commit_then_post_match() -> None:
    spans = {s.label: s for s in sample_cycle().spans()}
    assert spans["tick waits for the matcher"].end == pytest.approx(1.0)
    assert spans["matcher: snapshot"].start == pytest.approx(1.0)
    assert spans["matcher: publish"].end == pytest.approx(3.0)  # the record's timestamp
    assert (spans["post-match: rooms"].start, spans["post-match: rooms"].end) == (3.0, 4.0)
    assert spans["post-match: notifications"].end == 6.0


def test_page_is_self_contained_with_every_plot() -> None:
    page = render(sample_cycle())
    titles = re.findall(r'<svg class="plot" data-points="(\d+)" role="img" aria-label="([^"]+)"',
                        page)
    assert {t: int(n) for n, t in titles} == {
        "Pair score": 2, "Pair similarity": 2, "Score vs similarity": 2,
        "Wait at the tick (minutes)": 5, "Unmatched users by reason": 2, "Cycle timeline": 7,
        "Match to notification (seconds)": 3}
    assert "<script" not in page and "https://" not in page
    assert "1 users have no such record left" in page
    assert "1 matched users not notified yet" in page
    assert "1 complete, 1 pending, 0 parked, 0 dead-lettered of 2 pairs" in page


def test_page_without_a_committed_cycle_says_so() -> None:
    data = CycleData(cycle_id="c", topics={"cycles": "t.cycles"},
                     audit_error="Cassandra audit unavailable: down")
    page = render(data)
    assert "no CycleCompleted on t.cycles" in page and "Cassandra audit unavailable" in page
    assert page.count('data-points="0"') == 7
