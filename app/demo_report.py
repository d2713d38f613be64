"""The demo's report: what ran, the checks of what users really see in Nakama, the summary."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from app.demo_data import Persona
from mosaic.nakama_client import NakamaClient, Session

NOTIFY_CODE = 101  # nakama/modules/mosaic_rooms.lua


@dataclass
class Timings:
    stages: dict[str, float] = field(default_factory=dict)

    def record(self, stage: str, started: float) -> None:
        self.stages[stage] = time.monotonic() - started


@dataclass
class DemoReport:
    pool: str
    personas: list[Persona]
    timings: Timings = field(default_factory=Timings)
    cycle_id: str = ""
    expected_pairs: int = 0
    pairs: list[tuple[str, str, float, float]] = field(default_factory=list)
    unmatched: dict[str, int] = field(default_factory=dict)
    blocked: tuple[str, str] | None = None
    checks: list[tuple[str, bool, str]] = field(default_factory=list)
    report_path: str = ""  # the cycle's HTML report (mosaic report), once written

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(passed for _, passed, _ in self.checks)

    def check(self, name: str, passed: bool, detail: str = "") -> None:
        self.checks.append((name, passed, detail))

    def render(self) -> str:
        return render(self)


def demo_pool(seed: int) -> str:
    """A pool of its own per run, so earlier runs' leftovers never join this cycle."""
    return f"demo-{seed}-{uuid.uuid4().hex[:6]}"


def now_utc() -> datetime:
    return datetime.now(UTC)


def cluster_purity(pairs: list[tuple[str, str]], cluster_of: dict[str, str]) -> float:
    """Share of pairs whose two users come from the same persona cluster."""
    if not pairs:
        return 0.0
    same = sum(cluster_of[a] == cluster_of[b] for a, b in pairs)
    return same / len(pairs)


def _names_partner(content: dict[str, object], sessions: dict[str, Session],
                   partner: str) -> bool:
    """The partner by Nakama user id; their sub (custom id) appears nowhere."""
    return (content.get("partner_user_id") == sessions[partner].user_id
            and partner not in json.dumps(content))


def verify(client: NakamaClient, sessions: dict[str, Session], report: DemoReport,
           purity: Callable[[list[tuple[str, str]], dict[str, str]], float]) -> None:
    partner = {a: b for a, b, _, _ in report.pairs} | {b: a for a, b, _, _ in report.pairs}
    report.check("every pair of the cycle finished all post-match steps",
                 len(report.pairs) == report.expected_pairs,
                 f"{len(report.pairs)}/{report.expected_pairs} pairs complete in the audit")
    wrong_notes, wrong_rooms = [], []
    for user_id, session in sessions.items():
        notes = [json.loads(n.get("content") or "{}") for n in client.notifications(session)
                 if n.get("code") == NOTIFY_CODE]
        notes = [n for n in notes if n.get("cycle_id") == report.cycle_id]
        want = 1 if user_id in partner else 0
        if len(notes) != want or (want and not _names_partner(notes[0], sessions,
                                                                partner[user_id])):
            wrong_notes.append((user_id, len(notes)))
        rooms = [g for g in client.groups(session)
                 if notes and g.get("id") == notes[0].get("group_id")]
        if len(rooms) != want or (want and (rooms[0].get("open") or
                                            rooms[0].get("edge_count") != 2)):
            wrong_rooms.append((user_id, len(rooms)))
    report.check("each matched user got exactly one match notification, naming the partner "
                 "by Nakama id (never by Cognito sub)",
                 not wrong_notes, f"wrong: {wrong_notes}" if wrong_notes else
                 f"{len(partner)} users, 1 each; unmatched users got none")
    report.check("each pair has one private (closed, 2-member) Nakama group", not wrong_rooms,
                 f"wrong: {wrong_rooms}" if wrong_rooms else f"{len(report.pairs)} groups")
    if report.blocked is not None:
        a, b = report.blocked
        report.check("the blocked pair was not matched", partner.get(a) != b)
    if report.pairs:
        status = client.rpc(sessions[report.pairs[0][0]], "rpc_get_user_match_status")
        report.check("status RPC reports the match", status.get("state") == "matched",
                     f"state={status.get('state')} cycle={status.get('cycle_id')}")
    cluster_of = {p.user_id: p.cluster for p in report.personas}
    share = purity([(a, b) for a, b, _, _ in report.pairs], cluster_of)
    report.check("pairs share an interest cluster well above chance (25%)", share >= 0.5,
                 f"{share:.0%} of pairs within one cluster")


def render(report: DemoReport) -> str:
    names = {p.user_id: f"{p.name}" for p in report.personas}
    lines = ["", "=" * 72, f"Mosaic Match — cycle {report.cycle_id}", "=" * 72,
             f"users opted in: {len(report.personas)}   pairs: {len(report.pairs)}   "
             f"unmatched: {sum(report.unmatched.values())} {report.unmatched or ''}", ""]
    lines.append(f"{'user A':<16} {'user B':<16} {'similarity':>10} {'score':>7}")
    for a, b, score, sim in sorted(report.pairs, key=lambda p: -p[2]):
        lines.append(f"{names.get(a, a[:12]):<16} {names.get(b, b[:12]):<16} "
                     f"{sim:>10.3f} {score:>7.3f}")
    lines += ["", "stage timings:"]
    lines += [f"  {name:<58} {secs:6.1f}s" for name, secs in report.timings.stages.items()]
    if report.report_path:
        lines += ["", f"cycle report (plots, opens offline): {report.report_path}"]
    lines += ["", "checks:"]
    for name, passed, detail in report.checks:
        lines.append(f"  [{'ok' if passed else 'FAIL'}] {name}" + (f" — {detail}" if detail
                                                                   else ""))
    lines.append("")
    lines.append("RESULT: " + ("all checks passed" if report.ok else "SOME CHECKS FAILED"))
    return "\n".join(lines)
