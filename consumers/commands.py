"""``mosaic agents ...``: the long-running stream agents. Each agent is one small
``_<name>(args) -> int`` handler; imports happen inside it so the CLI starts fast and
nothing connects at import time."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    agents = subparsers.add_parser("agents", help="run a stream agent (long-running worker)")
    sub = agents.add_subparsers(dest="agent", metavar="AGENT", required=True)

    embedding = sub.add_parser(
        "embedding", help="opt-in topic -> traits -> embed -> vector index -> seekers topic")
    embedding.add_argument("--idle-seconds", type=float, metavar="SECONDS",
                           help="stop after this long without records (default: run forever)")
    # The old spelling, kept working (scripts and tests use it) but not advertised.
    embedding.add_argument("--idle-exit", type=float, dest="idle_seconds",
                           help=argparse.SUPPRESS)
    embedding.add_argument("--max-seconds", type=float, metavar="SECONDS",
                           help="stop after this long (default: run forever)")
    embedding.set_defaults(func=_embedding)


def _embedding(args: argparse.Namespace) -> int:
    import signal
    import threading

    from consumers.embedding.worker import run_embedding_worker
    from mosaic.settings import Settings

    if not getattr(args, "verbose", False):
        import logging

        for name in ("faust", "mode", "aiokafka"):  # their INFO is per-service chatter
            logging.getLogger(name).setLevel(logging.WARNING)
    from mosaic.ops.health import readiness, start_ops_server

    settings = Settings()
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    # /metrics + /health on MOSAIC_METRICS_PORT or the default port (mosaic.ops.ports).
    ops = start_ops_server(settings, "embedding", readiness(settings, stop, cassandra=True))
    try:
        report = run_embedding_worker(settings, stop_after_idle_seconds=args.idle_seconds,
                                      max_seconds=args.max_seconds, stop=stop)
    finally:
        if ops is not None:
            ops.close()
    print(f"embedding agent stopped ({report.stop_reason}) after {report.seconds:.1f}s: "
          f"{report.records} records in {report.batches} batches {report.outcomes}")
    if report.fatal:
        print(f"error: {report.fatal}")
        return 1
    return 0
