"""``mosaic deadletters show ID`` and ``mosaic topics tail NAME``.

They join the ``deadletters`` and ``topics`` commands that app.ops.commands and
streams.commands register (so this module comes after both in app.cli's list).
"""

from __future__ import annotations

import argparse
import json
from typing import Any


def _actions(subparsers: Any, command: str) -> Any:
    """The sub-command action of the already registered ``command``."""
    parser = subparsers.choices[command]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    raise LookupError(f"mosaic {command} has no sub-commands")


def register(subparsers: Any) -> None:
    if "deadletters" in subparsers.choices:
        show = _actions(subparsers, "deadletters").add_parser(
            "show", help="print one dead letter in full, its source record decoded",
            description="Reason, error type, source coordinates, consumer group, attempts, "
                        "and the source record decoded as JSON (or, when it does not "
                        "decode, the error and its bytes as base64 and hex).")
        show.add_argument("event_id", metavar="ID", help="the dead letter's event id "
                                                         "(see 'list')")
        show.add_argument("--timeout", type=float, default=30.0,
                          help="seconds to read the dead-letter topic")
        show.set_defaults(func=_show)

    if "topics" in subparsers.choices:
        tail = _actions(subparsers, "topics").add_parser(
            "tail", help="print a topic's records as decoded JSON lines",
            description="One JSON line per record: topic, partition, offset, timestamp, "
                        "key, and the event (name and fields) or, for a record that does "
                        "not decode, the error and its bytes.")
        tail.add_argument("name", metavar="NAME",
                          help="the topic, full (mosaic.optin) or logical (optin) name")
        tail.add_argument("--from-beginning", action="store_true",
                          help="start at the oldest record (else the last N per partition)")
        tail.add_argument("--limit", type=int, default=10, metavar="N",
                          help="at most N records, or with --follow, start at the last N "
                               "per partition and print all new ones (0: no limit)")
        tail.add_argument("--follow", action="store_true",
                          help="keep printing new records until Ctrl-C")
        tail.add_argument("--timeout", type=float, default=30.0,
                          help="seconds to read up to the end (without --follow)")
        tail.set_defaults(func=_tail)


def _show(args: argparse.Namespace) -> int:
    from app.ops.inspect import show_letter
    from mosaic.settings import Settings

    shown = show_letter(Settings(), args.event_id, timeout_seconds=args.timeout)
    if shown is None:
        print(f"error: no dead letter with id {args.event_id}")
        return 1
    print(json.dumps(shown, indent=2))
    return 0


def _tail(args: argparse.Namespace) -> int:
    from app.ops.inspect import resolve_topic, tail
    from mosaic.settings import Settings

    settings = Settings()
    topic = resolve_topic(settings, args.name)
    for row in tail(settings, topic, from_beginning=args.from_beginning, limit=args.limit,
                    follow=args.follow, timeout_seconds=args.timeout):
        print(json.dumps(row), flush=True)
    return 0
