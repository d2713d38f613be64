"""``mosaic postmatch`` (rooms, notifier, index-state agents) and ``mosaic reconcile``."""

from __future__ import annotations

import argparse
from typing import Any

AGENT_CHOICES = ("rooms", "notifier", "index-state")


def register(subparsers: Any) -> None:
    run = subparsers.add_parser("postmatch", help="run the post-match agents")
    run.add_argument("agents", nargs="*", metavar="AGENT",
                     help=f"any of {', '.join(AGENT_CHOICES)} (default: all three)")
    run.add_argument("--idle-seconds", type=float, default=None,
                     help="stop after this long without records (default: run forever)")
    run.add_argument("--max-seconds", type=float, default=None)
    run.set_defaults(func=_run)

    rec = subparsers.add_parser("reconcile", help="finish every incomplete pair of a cycle")
    rec.add_argument("cycle_id")
    rec.set_defaults(func=_reconcile)


def _run(args: argparse.Namespace) -> int:
    from consumers.postmatch_app import build_postmatch, run_postmatch
    from mosaic.errors import ConfigError
    from mosaic.settings import Settings

    unknown = sorted(set(args.agents) - set(AGENT_CHOICES))
    if unknown:
        raise ConfigError(f"unknown agent(s) {unknown}; choose from {list(AGENT_CHOICES)}")
    app = build_postmatch(Settings())
    try:
        stats = run_postmatch(app, args.agents or AGENT_CHOICES,
                              idle_seconds=args.idle_seconds, max_seconds=args.max_seconds)
    finally:
        app.close()
    for agent, st in stats.items():
        print(f"{agent:<12} handled={st.handled} dead_lettered={st.dead_lettered} "
              f"stalls={st.stalls}")
    return 0


def _reconcile(args: argparse.Namespace) -> int:
    from consumers.postmatch_app import build_postmatch, reconcile
    from mosaic.settings import Settings

    app = build_postmatch(Settings())
    try:
        result = reconcile(app, args.cycle_id)
    finally:
        app.close()
    print(f"cycle {result.cycle_id}: {result.pairs} pairs, {result.already_complete} "
          f"already complete, {result.finished} finished now")
    return 0
