"""Checks of what demo users really see in Nakama, and the printed summary."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING

from mosaic.nakama_client import NakamaClient, Session

if TYPE_CHECKING:
    from app.demo_run import DemoReport

NOTIFY_CODE = 101  # nakama/modules/mosaic_rooms.lua


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
    lines += ["", "checks:"]
    for name, passed, detail in report.checks:
        lines.append(f"  [{'ok' if passed else 'FAIL'}] {name}" + (f" — {detail}" if detail
                                                                   else ""))
    lines.append("")
    lines.append("RESULT: " + ("all checks passed" if report.ok else "SOME CHECKS FAILED"))
    return "\n".join(lines)
