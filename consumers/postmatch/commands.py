"""``mosaic postmatch`` (the agents), ``mosaic reconciler`` (the reconciliation loop),
``mosaic reconcile CYCLE`` and ``mosaic cycle status [CYCLE]``."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from datetime import datetime
from typing import Any

AGENT_CHOICES = ("rooms", "notifier", "index-state")
DEFAULT_PORT = 9103

log = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    run = subparsers.add_parser(
        "postmatch", help="run the post-match agents (rooms, notifications, index state)")
    run.add_argument("agents", nargs="*", metavar="AGENT",
                     help=f"any of {', '.join(AGENT_CHOICES)} (default: all three)")
    run.add_argument("--idle-seconds", type=float, default=None,
                     help="stop after this long without records (default: run forever)")
    run.add_argument("--max-seconds", type=float, default=None,
                     help="stop after this long (default: run forever)")
    run.add_argument("--reconcile-every", type=float, default=30.0,
                     help="also run the reconciler every N seconds (0: off)")
    run.add_argument("--max-batch", type=int, default=500, help="records per poll")
    run.add_argument("--port", type=int, default=DEFAULT_PORT,
                     help="serve /metrics and /health on this port (0: off)")
    run.set_defaults(func=_run)

    loop = subparsers.add_parser(
        "reconciler", help="find unfinished cycles and finish them by replay, on a schedule")
    loop.add_argument("--every", type=float, default=30.0, help="seconds between sweeps")
    loop.add_argument("--once", action="store_true", help="one sweep, then exit")
    loop.set_defaults(func=_reconciler)

    rec = subparsers.add_parser("reconcile", help="finish every unsettled pair of a cycle")
    rec.add_argument("cycle_id", help="the cycle to finish (see `mosaic cycle status`)")
    rec.set_defaults(func=_reconcile)

    cycle = subparsers.add_parser("cycle", help="post-match progress of cycles")
    sub = cycle.add_subparsers(dest="cycle_command", required=True)
    status = sub.add_parser("status", help="pairs, completed, dead-lettered, parked")
    status.add_argument("cycle_id", nargs="?", default=None,
                        help="one cycle (default: the 10 most recent)")
    status.set_defaults(func=_status)


def _stop_on_signals() -> threading.Event:
    """SIGTERM / Ctrl-C: let every agent finish and commit its batch, then exit 0."""
    stop = threading.Event()

    def handle(signum: int, _frame: Any) -> None:
        log.info("signal %d: draining", signum)
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    return stop


def _run(args: argparse.Namespace) -> int:
    from consumers.postmatch.app import build_postmatch, run_postmatch
    from mosaic.errors import ConfigError
    from mosaic.ops_http import OpsServer
    from mosaic.settings import Settings

    unknown = sorted(set(args.agents) - set(AGENT_CHOICES))
    if unknown:
        raise ConfigError(f"unknown agent(s) {unknown}; choose from {list(AGENT_CHOICES)}")
    stop = _stop_on_signals()
    app = build_postmatch(Settings())
    ops = None
    if args.port:
        ops = OpsServer("127.0.0.1", args.port, lambda: (not stop.is_set(),
                                                         {"agents": args.agents or "all"}))
        print(f"postmatch: /metrics and /health on http://127.0.0.1:{ops.port}", flush=True)
    try:
        stats = run_postmatch(app, args.agents or AGENT_CHOICES, stop=stop.is_set,
                              idle_seconds=args.idle_seconds, max_seconds=args.max_seconds,
                              reconcile_every=args.reconcile_every or None,
                              max_batch=args.max_batch, exit_when_stuck=True)
    finally:
        if ops is not None:
            ops.close()
        app.close()
    for agent, st in stats.items():
        print(f"{agent:<12} handled={st.handled} dead_lettered={st.dead_lettered} "
              f"parked={st.parked} batches={st.batches} stalls={st.stalls}")
    return 0


def _reconciler(args: argparse.Namespace) -> int:
    from consumers.postmatch.app import Reconciler, build_postmatch
    from mosaic.settings import Settings

    stop = _stop_on_signals()
    app = build_postmatch(Settings())
    try:
        reconciler = Reconciler(app)
        if args.once:
            for r in reconciler.sweep():
                print(f"cycle {r.cycle_id}: {r.pairs} pairs, {r.finished} finished now, "
                      f"{r.failed} still failing")
        else:
            reconciler.run(stop.is_set, every=args.every)
    finally:
        app.close()
    return 0


def _reconcile(args: argparse.Namespace) -> int:
    from consumers.postmatch.app import build_postmatch, reconcile
    from mosaic.settings import Settings

    app = build_postmatch(Settings())
    try:
        result = reconcile(app, args.cycle_id)
    finally:
        app.close()
    print(f"cycle {result.cycle_id}: {result.pairs} pairs, {result.already_complete} "
          f"already settled, {result.finished} finished now, {result.failed} still failing")
    return 0 if result.failed == 0 else 1


def _status(args: argparse.Namespace) -> int:
    from consumers.postmatch.app import build_postmatch
    from mosaic.settings import Settings

    app = build_postmatch(Settings())
    try:
        recent = [c.cycle_id for c in app.audit.cycles()][-10:]
        ids = [args.cycle_id] if args.cycle_id else recent
        if not ids:
            print("no cycles recorded yet")
        print(f"{'cycle':<44} {'pairs':>7} {'done':>7} {'dead':>5} {'parked':>6} "
              f"{'pending':>7}  {'state':<12} {'committed (UTC)':<19}  finished (UTC)")
        for cycle_id in ids:
            s = app.audit.cycle_status(cycle_id)
            state = ("finished" if s.finished else
                     "unknown cycle" if s.pairs is None and not s.rows else "in progress")
            pairs = "?" if s.pairs is None else str(s.pairs)
            print(f"{cycle_id:<44} {pairs:>7} {s.completed:>7} {s.dead_lettered:>5} "
                  f"{s.parked:>6} {s.pending:>7}  {state:<12} {_when(s.committed_at):<19}  "
                  f"{_when(s.finished_at)}")
    finally:
        app.close()
    return 0


def _when(at: datetime | None) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S") if at is not None else "-"
