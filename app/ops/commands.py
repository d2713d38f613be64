"""``mosaic run``, ``mosaic with-ops`` and ``mosaic deadletters list|replay``."""

from __future__ import annotations

import argparse
import json
from typing import Any

from mosaic.cli_args import iso_instant

SERVICES = ("ingress", "embedding", "matcher", "ticker", "postmatch", "reconciler")


def register(subparsers: Any) -> None:
    run = subparsers.add_parser(
        "run", help="supervise every service (or some) with one log stream",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Runs each service as a child process of its own command, restarts a "
                    "crashed one with backoff, stops all cleanly on Ctrl-C or SIGTERM.")
    run.add_argument("services", nargs="*", default=["all"], metavar="SERVICE",
                     help=f"all, or any of {', '.join(SERVICES)}")
    run.add_argument("--grace-seconds", type=float, default=20.0,
                     help="on stop, wait this long for children before killing them")
    run.add_argument("--ops-port-base", type=int, default=9100,
                     help="the supervisor's /metrics and /health port; the children's "
                          "follow it in the order of mosaic/ops/ports.py (9101...)")
    run.add_argument("--embedding-processes", type=int, default=1, metavar="E",
                     help="embedding agent processes (one consumer group); the 2nd... serve "
                          "/metrics on the ports after the table's last")
    run.add_argument("--postmatch-processes", type=int, default=1, metavar="K",
                     help="post-match processes (rooms, notifier, index-state; the same "
                          "consumer groups); ports after the embedding replicas'")
    run.set_defaults(func=_run)

    wrap = subparsers.add_parser(
        "with-ops", help="run a mosaic command with /metrics and /health beside it",
        description="mosaic with-ops PROCESS -- COMMAND...: serves the default registry "
                    "and a readiness check on PROCESS's port while COMMAND runs in-process.")
    wrap.add_argument("process", help="name for the port table (e.g. reconciler)")
    wrap.add_argument("command", nargs=argparse.REMAINDER,
                      help="'--' then the mosaic command and its arguments")
    wrap.set_defaults(func=_with_ops)

    dl = subparsers.add_parser("deadletters", help="list or replay dead-lettered records")
    sub = dl.add_subparsers(dest="deadletters_command", metavar="ACTION", required=True)
    ls = sub.add_parser("list", help="print dead letters as JSON lines (oldest first)",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ls.add_argument("--topic", help="only those from this source topic (full name)")
    ls.add_argument("--since", type=iso_instant, help="only those since this ISO 8601 time")
    ls.add_argument("--limit", type=int, default=100, help="print at most the N newest")
    ls.set_defaults(func=_list)
    rp = sub.add_parser("replay", help="send dead-lettered records back to their source topic",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    rp.add_argument("--source-topic", required=True, help="the source topic (full name)")
    rp.add_argument("--since", type=iso_instant, help="only those since this ISO 8601 time")
    rp.add_argument("--id", dest="ids", action="append", default=[], metavar="EVENT_ID",
                    help="only this dead letter (repeatable; see 'list')")
    rp.add_argument("--dry-run", action="store_true", help="say what would be replayed")
    rp.set_defaults(func=_replay)


def _run(args: argparse.Namespace) -> int:
    from app.ops.supervisor import run_supervised
    from mosaic.ops.ports import OPS_PORTS
    from mosaic.settings import Settings

    shift = args.ops_port_base - OPS_PORTS["run"]
    ports = {name: port + shift for name, port in OPS_PORTS.items()}
    return run_supervised(Settings(), args.services, grace_seconds=args.grace_seconds,
                          ports=ports, supervisor_port=ports["run"],
                          replicas={"embedding": args.embedding_processes,
                                    "postmatch": args.postmatch_processes})


def _with_ops(args: argparse.Namespace) -> int:
    import signal
    import threading

    from app.cli import main
    from mosaic.ops.health import readiness, start_ops_server
    from mosaic.settings import Settings

    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        print("error: give the command after '--'")
        return 2
    settings = Settings()
    stopping = threading.Event()
    ops = start_ops_server(settings, args.process, readiness(settings, stopping))
    previous = signal.getsignal(signal.SIGTERM)

    def on_term(signum: int, frame: Any) -> None:
        stopping.set()
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGTERM, on_term)
    try:
        return main(command)
    finally:
        if ops is not None:
            ops.close()


def _list(args: argparse.Namespace) -> int:
    from app.ops.deadletters import read_letters
    from mosaic.settings import Settings

    letters = read_letters(Settings(), source_topic=args.topic, since=args.since)
    for letter in letters[-args.limit:] if args.limit else letters:
        print(json.dumps(letter.as_json()), flush=True)
    return 0


def _replay(args: argparse.Namespace) -> int:
    from app.ops.deadletters import read_letters, replay
    from mosaic.settings import Settings

    settings = Settings()
    letters = read_letters(settings, source_topic=args.source_topic, since=args.since,
                           ids=set(args.ids))
    if args.ids:
        missing = set(args.ids) - {x.event.event_id for x in letters}
        if missing:
            print(f"error: no dead letter from {args.source_topic} with id(s) "
                  f"{sorted(missing)}")
            return 1
    if args.dry_run:
        for letter in letters:
            print(json.dumps(letter.as_json()))
        print(f"would replay {len(letters)} record(s) to {args.source_topic}")
        return 0
    count = replay(settings, letters)
    print(f"replayed {count} record(s) to {args.source_topic}")
    return 0
