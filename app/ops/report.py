"""``mosaic report CYCLE [--out FILE]``: one cycle as a self-contained HTML page.

Everything comes from the records a cycle leaves behind, read without joining any group
(manual assignment, nothing committed):

- ``cycles``: the cycle's ``CycleCompleted`` (pool, seekers, unmatched by reason, phase
  durations, the seekers offsets its snapshot read up to); its Kafka timestamp is when
  the matcher published it;
- ``pairs``: every ``PairMatched`` (score, similarity) and ``SeekerUnmatched``;
- ``ticks``: the ``CycleTick`` (the instant waits are measured at, as the matcher does);
- ``seekers``: each user's ``SeekerUpdated`` before the snapshot offsets (``opted_in_at``);
  a record compaction has already replaced is missing, and the page says how many;
- ``rooms`` and ``notifications``: when each room was created and each user notified;
- Cassandra ``cycle_audit`` / ``cycle_status``: post-match progress (``matched_at``,
  ``last_attempt_timestamp`` where a notification record is missing).

The page is static HTML with inline SVG (app/ops/report_svg.py): no script, no CDN.
"""

from __future__ import annotations

import argparse
import logging
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Any

from app.ops.report_svg import Series, Span, bars, histogram, scatter, timeline
from mosaic.errors import MosaicError
from mosaic.settings import Settings

log = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    report = subparsers.add_parser(
        "report", help="write one cycle's report as a self-contained HTML page",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Reads the cycle's records from Kafka (cycles, pairs, ticks, seekers, "
                    "rooms, notifications) and its post-match audit from Cassandra, and "
                    "writes plots of scores, similarities, waits, unmatched reasons, the "
                    "phase timeline and match-to-notification times. Opens offline.")
    report.add_argument("cycle_id", metavar="CYCLE", help="the cycle id (CycleTick.cycle_id)")
    report.add_argument("--out", type=Path, default=None,
                        help="the HTML file to write (default: "
                             "<stack data dir>/reports/<cycle>.html)")
    report.add_argument("--timeout-seconds", type=float, default=60.0,
                        help="give up reading a topic after this long")
    report.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    settings = Settings()
    data = gather(settings, args.cycle_id, timeout_seconds=args.timeout_seconds)
    if data.completed is None and not data.pairs:
        print(f"error: no cycle {args.cycle_id!r} on {data.topics['cycles']} or "
              f"{data.topics['pairs']} (topic prefix {settings.kafka.topic_prefix!r})")
        return 1
    path = write_report(data, args.out or default_path(settings, args.cycle_id))
    print(f"report: {path}")
    return 0


def default_path(settings: Settings, cycle_id: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", cycle_id)
    return settings.stack.data_dir / "reports" / f"{safe}.html"


@dataclass
class CycleData:
    """What a cycle left behind (see the module docstring for where each part is from)."""

    cycle_id: str
    topics: dict[str, str] = field(default_factory=dict)
    completed: Any = None  # CycleCompleted | None
    published_at: datetime | None = None  # the CycleCompleted record's Kafka timestamp
    tick_at: datetime | None = None
    pairs: list[Any] = field(default_factory=list)  # PairMatched
    unmatched: list[Any] = field(default_factory=list)  # SeekerUnmatched
    opted_in_at: dict[str, datetime] = field(default_factory=dict)
    rooms: dict[str, datetime] = field(default_factory=dict)  # pair_key -> created
    notified: dict[str, datetime] = field(default_factory=dict)  # user_id -> notified
    audit_rows: list[Any] = field(default_factory=list)  # AuditRow
    audit_cycle: Any = None  # CycleRow | None
    audit_error: str = ""
    generated_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def pool(self) -> str:
        if self.completed is not None:
            return str(self.completed.pool)
        return str(self.pairs[0].pool) if self.pairs else ""

    @property
    def wait_at(self) -> datetime | None:
        """Waits are measured at the tick, as the matcher does (matcher/pool.py)."""
        if self.tick_at is not None:
            return self.tick_at
        return self.pairs[0].occurred_at if self.pairs else None

    def waits(self) -> tuple[list[float], list[float], int]:
        """Seconds since opt-in at the tick: matched users, unmatched users, unknown."""
        at = self.wait_at
        matched_ids = [u for p in self.pairs for u in (p.user_a, p.user_b)]
        unmatched_ids = [u.user_id for u in self.unmatched]
        missing = 0
        out: tuple[list[float], list[float]] = ([], [])
        for bucket, ids in zip(out, (matched_ids, unmatched_ids), strict=True):
            for user in ids:
                opted = self.opted_in_at.get(user)
                if at is None or opted is None:
                    missing += 1
                    continue
                bucket.append(max(0.0, (at - opted).total_seconds()))
        return out[0], out[1], missing

    def match_to_notification(self) -> tuple[list[float], int]:
        """Seconds from the pair's match (its PairMatched time, the audit's matched_at) to
        each user's notification (UserNotified, else the audit's last attempt for a user
        the audit marks notified); and how many matched users have no notification yet."""
        rows = {r.pair_key: r for r in self.audit_rows}
        out, missing = [], 0
        for pair in self.pairs:
            row = rows.get(pair.pair_key)
            matched = (row.matched_at if row is not None and row.matched_at else
                       pair.occurred_at)
            for user in (pair.user_a, pair.user_b):
                sent = self.notified.get(user)
                if sent is None and row is not None and row.notified(user):
                    sent = row.last_attempt_timestamp
                if sent is None:
                    missing += 1
                    continue
                out.append(max(0.0, (sent - matched).total_seconds()))
        return out, missing

    def unmatched_reasons(self) -> dict[str, int]:
        if self.completed is not None and self.completed.unmatched_by_reason:
            return dict(self.completed.unmatched_by_reason)
        return dict(Counter(u.reason for u in self.unmatched))

    def spans(self) -> list[Span]:
        """The cycle on one time axis, 0 = the tick: matcher phases (their durations end
        at the CycleCompleted record's Kafka timestamp), then rooms and notifications."""
        origin = self.wait_at
        if origin is None:
            return []

        def secs(t: datetime) -> float:
            return (t - origin).total_seconds()

        spans: list[Span] = []
        phases = dict(self.completed.phase_seconds) if self.completed is not None else {}
        end = self.published_at
        if phases and end is not None:
            start = secs(end) - sum(phases.values())
            if start > 0.05:
                spans.append(Span("tick waits for the matcher", 0.0, start))
            for name, seconds in phases.items():
                spans.append(Span(f"matcher: {name}", start, start + seconds))
                start += seconds
        committed = secs(end) if end is not None else 0.0
        if self.rooms:
            times = sorted(secs(t) for t in self.rooms.values())
            spans.append(Span("post-match: rooms", committed, times[-1],
                              f"{len(times)} rooms, first at {times[0]:.2f} s"))
        sent = sorted(secs(t) for t in self.notified.values())
        if sent:
            spans.append(Span("post-match: notifications", min(sent[0], committed), sent[-1],
                              f"{len(sent)} users"))
        cycle = self.audit_cycle
        if cycle is not None and cycle.finished_at is not None:
            t = secs(cycle.finished_at)
            spans.append(Span("audit: cycle finished", t, t))
        return spans


def gather(settings: Settings, cycle_id: str, *, timeout_seconds: float = 60.0) -> CycleData:
    from streams.kafka import make_consumer, read_to_end
    from streams.serde import default_serde
    from streams.topics import build_catalog

    catalog = build_catalog(settings)
    data = CycleData(cycle_id=cycle_id, topics={t.spec.logical: t.name for t in catalog})
    serde = default_serde()
    consumer = make_consumer(settings, "mosaic-report")  # manual assignment, no commits

    def read(topic: Any) -> list[tuple[Any, Any]]:
        out = []
        for message in read_to_end(consumer, topic, timeout_seconds=timeout_seconds).messages:
            try:
                out.append((serde.decode(message.value()), message))
            except Exception:  # noqa: BLE001, S112 - poison records were dead-lettered
                continue
        return out

    try:
        _read_cycle(data, read, catalog)
    finally:
        consumer.close()
    _audit(settings, data)
    return data


def _read_cycle(data: CycleData, read: Callable[[Any], list[tuple[Any, Any]]],
                catalog: Any) -> None:
    from streams.events import (
        CycleCompleted,
        CycleTick,
        PairMatched,
        RoomCreated,
        SeekerUnmatched,
        UserNotified,
    )

    cycle_id = data.cycle_id
    for event, message in read(catalog.cycles):
        if isinstance(event, CycleCompleted) and event.cycle_id == cycle_id:
            data.completed = event
            kind, millis = message.timestamp()
            if kind and millis > 0:
                data.published_at = datetime.fromtimestamp(millis / 1000, UTC)
    pairs: dict[str, Any] = {}
    unmatched: dict[str, Any] = {}
    for event, _ in read(catalog.pairs):
        if isinstance(event, PairMatched) and event.cycle_id == cycle_id:
            pairs.setdefault(event.pair_key, event)
        elif isinstance(event, SeekerUnmatched) and event.cycle_id == cycle_id:
            unmatched.setdefault(event.user_id, event)
    data.pairs = [pairs[k] for k in sorted(pairs)]
    data.unmatched = [unmatched[k] for k in sorted(unmatched)]
    for event, _ in read(catalog.ticks):
        if isinstance(event, CycleTick) and event.cycle_id == cycle_id:
            data.tick_at = event.occurred_at
    _opt_ins(data, read(catalog.seekers))
    for event, _ in read(catalog.rooms):
        if isinstance(event, RoomCreated) and event.cycle_id == cycle_id:
            data.rooms.setdefault(event.pair_key, event.occurred_at)
    for event, _ in read(catalog.notifications):
        if isinstance(event, UserNotified) and event.cycle_id == cycle_id:
            data.notified.setdefault(event.user_id, event.occurred_at)


def _opt_ins(data: CycleData, records: Sequence[tuple[Any, Any]]) -> None:
    """Each user's opt-in time from their last SeekerUpdated of the pool inside the
    snapshot (offsets below CycleCompleted.snapshot_offsets), else any of theirs older
    than the tick (e.g. the matcher's carry-over copy)."""
    from streams.events import SeekerUpdated

    wanted = {u for p in data.pairs for u in (p.user_a, p.user_b)}
    wanted |= {u.user_id for u in data.unmatched}
    limits = dict(data.completed.snapshot_offsets) if data.completed is not None else {}
    at = data.wait_at
    inside: dict[str, datetime] = {}
    other: dict[str, datetime] = {}
    for event, message in records:
        if not isinstance(event, SeekerUpdated) or event.user_id not in wanted:
            continue
        if event.pool != data.pool or (at is not None and event.opted_in_at > at):
            continue
        limit = limits.get(message.partition())
        if limit is not None and message.offset() < limit:
            inside[event.user_id] = event.opted_in_at
        else:
            other[event.user_id] = event.opted_in_at
    data.opted_in_at = {**other, **inside}


def _audit(settings: Settings, data: CycleData) -> None:
    try:
        from consumers.audit import CassandraAuditStore
        from mosaic.cassandra import connect

        session = connect(settings.cassandra)
    except Exception as exc:  # noqa: BLE001 - the report still shows the topics' view
        data.audit_error = f"Cassandra audit unavailable: {exc}"
        return
    try:
        store = CassandraAuditStore(session)
        data.audit_rows = store.rows(data.cycle_id)
        data.audit_cycle = next((c for c in store.cycles() if c.cycle_id == data.cycle_id),
                                None)
    except MosaicError as exc:
        data.audit_error = f"Cassandra audit unavailable: {exc}"
    finally:
        session.cluster.shutdown()


# -- the page ---------------------------------------------------------------------------


def _unit(values: Sequence[float]) -> tuple[str, float]:
    top = max(values, default=0.0)
    if top >= 2 * 86400:
        return "days", 86400.0
    if top >= 2 * 3600:
        return "hours", 3600.0
    if top >= 120:
        return "minutes", 60.0
    return "seconds", 1.0


def _stats(values: Sequence[float]) -> str:
    if not values:
        return "none"
    ordered = sorted(values)
    mid = ordered[len(ordered) // 2]
    return (f"n={len(ordered)}, min {ordered[0]:.3f}, median {mid:.3f}, "
            f"max {ordered[-1]:.3f}")


def render(data: CycleData) -> str:
    """The whole page as one string (pure: no I/O)."""
    from consumers.audit import summarize

    c = data.completed
    scores = [p.score for p in data.pairs]
    sims = [p.similarity for p in data.pairs]
    matched_w, unmatched_w, wait_missing = data.waits()
    unit, div = _unit(matched_w + unmatched_w)
    notify, notify_missing = data.match_to_notification()
    n_unit, n_div = _unit(notify)
    status = summarize(data.cycle_id, data.audit_rows, data.audit_cycle)
    expected = status.pairs if status.pairs is not None else status.rows

    summary = [
        ("cycle", data.cycle_id), ("pool", data.pool or "?"),
        ("tick", data.tick_at.isoformat() if data.tick_at else "not found on ticks"),
        ("seekers in the snapshot", str(c.seekers) if c is not None else "?"),
        ("pairs", f"{len(data.pairs)}" + (f" (CycleCompleted says {c.pairs})"
                                          if c is not None and c.pairs != len(data.pairs)
                                          else "")),
        ("unmatched", f"{sum(data.unmatched_reasons().values())}"),
        ("score", _stats(scores)), ("similarity", _stats(sims)),
        ("matcher parameters hash", c.params_hash if c is not None and c.params_hash else "?"),
        ("post-match (audit)", data.audit_error or
         f"{status.completed} complete, {status.pending} pending, {status.parked} parked, "
         f"{status.dead_lettered} dead-lettered of {expected} pairs"),
        ("notifications", f"{len(data.notified)} users on {data.topics.get('notifications')}"
                          + (f"; {notify_missing} matched users not notified yet"
                             if notify_missing else "")),
    ]
    if c is None:
        summary.append(("warning", f"no CycleCompleted on {data.topics.get('cycles')}: the "
                                   "cycle did not commit, or its record expired"))
    names = {u: u[:12] for p in data.pairs for u in (p.user_a, p.user_b)}
    charts = [
        ("Scores and similarities",
         "Each published pair (PairMatched on the pairs topic). The score is the similarity "
         "plus the wait-time boost (docs/matcher.md).",
         [histogram("Pair score", [Series("score", scores)], xlabel="score",
                    empty="no pairs in this cycle"),
          histogram("Pair similarity", [Series("similarity", sims)], xlabel="cosine similarity",
                    empty="no pairs in this cycle"),
          scatter("Score vs similarity", [(p.similarity, p.score,
                                           f"{names[p.user_a]} + {names[p.user_b]}: similarity "
                                           f"{p.similarity:.3f}, score {p.score:.3f}")
                                          for p in data.pairs],
                  xlabel="similarity", ylabel="score", empty="no pairs in this cycle")]),
        ("Wait since opt-in, matched vs unmatched",
         "Seconds from each user's opted_in_at (their SeekerUpdated in the snapshot) to the "
         "tick." + (f" {wait_missing} users have no such record left (compacted)."
                    if wait_missing else ""),
         [histogram(f"Wait at the tick ({unit})",
                    [Series("matched", [w / div for w in matched_w]),
                     Series("unmatched", [w / div for w in unmatched_w])],
                    xlabel=unit, empty="no opt-in times found")]),
        ("Unmatched reasons", "CycleCompleted.unmatched_by_reason (the matcher core's reasons).",
         [bars("Unmatched users by reason", sorted(data.unmatched_reasons().items(),
                                                   key=lambda kv: -kv[1]),
               xlabel="users", empty="everyone was matched")]),
        ("Phase timeline",
         "0 = the tick. Matcher phases (CycleCompleted.phase_seconds) end when the cycle's "
         "record was published; rooms (RoomCreated) and notifications (UserNotified) follow.",
         [timeline("Cycle timeline", data.spans(), empty="no timing records found")]),
        ("Match to notification",
         "Per matched user: from the pair's match (audit matched_at = PairMatched time) to "
         "the UserNotified record (else the audit's last attempt).",
         [histogram(f"Match to notification ({n_unit})", [Series("users",
                                                                  [v / n_div for v in notify])],
                    xlabel=n_unit, empty="no notifications yet")]),
    ]
    body = ['<table class="summary">']
    body += [f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in summary]
    body.append("</table>")
    for title, note, svgs in charts:
        body.append(f'<section><h2>{escape(title)}</h2><p class="note">{escape(note)}</p>'
                    f'<div class="charts">{"".join(svgs)}</div></section>')
    body.append(_pairs_table(data))
    return _PAGE.format(title=escape(f"Mosaic Match — cycle {data.cycle_id}"),
                        generated=escape(data.generated_at.isoformat(timespec="seconds")),
                        body="\n".join(body))


def _pairs_table(data: CycleData) -> str:
    rows = sorted(data.pairs, key=lambda p: -p.score)
    lines = ['<section><h2>Pairs</h2><table class="pairs"><tr><th>user A</th><th>user B</th>'
             '<th>similarity</th><th>score</th><th>room</th><th>notified</th></tr>']
    for p in rows:
        done = sum(u in data.notified for u in (p.user_a, p.user_b))
        lines.append(f"<tr><td>{escape(p.user_a)}</td><td>{escape(p.user_b)}</td>"
                     f"<td>{p.similarity:.3f}</td><td>{p.score:.3f}</td>"
                     f"<td>{'yes' if p.pair_key in data.rooms else 'no'}</td>"
                     f"<td>{done}/2</td></tr>")
    lines.append("</table></section>")
    return "".join(lines)


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; background: #fafafa; }}
h1 {{ font-size: 20px; }} h2 {{ font-size: 16px; margin-top: 28px; }}
.note {{ color: #555; max-width: 1100px; }}
.charts {{ display: flex; flex-wrap: wrap; gap: 12px; }}
svg.plot {{ border: 1px solid #ddd; background: #fff; }}
svg .chart-title {{ font-size: 13px; font-weight: 600; }}
svg .tick, svg .label {{ font-size: 11px; fill: #444; }}
svg .empty {{ font-size: 13px; fill: #888; }}
svg .axis {{ stroke: #444; }} svg .grid {{ stroke: #eee; }}
table {{ border-collapse: collapse; }} th, td {{ padding: 3px 10px; text-align: left; }}
table.summary th {{ color: #555; font-weight: 500; }}
table.pairs td {{ font-family: ui-monospace, monospace; font-size: 12px; }}
</style></head>
<body><h1>{title}</h1><p class="note">generated {generated} by <code>mosaic report</code>;
hover a mark for its value.</p>
{body}
</body></html>
"""


def write_report(data: CycleData, out: Path) -> Path:
    out = out.expanduser().resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(data), encoding="utf-8")
    return out


def report_cycle(settings: Settings, cycle_id: str, out: Path | None = None) -> Path:
    """Gather and write (the demo's entry point); returns the file written."""
    data = gather(settings, cycle_id)
    return write_report(data, out or default_path(settings, cycle_id))
