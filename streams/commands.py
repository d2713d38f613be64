"""``mosaic topics apply|list``. Imports happen inside the handlers: nothing heavy loads
and nothing connects when the CLI starts."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    topics = subparsers.add_parser("topics", help="the Kafka topic catalog")
    sub = topics.add_subparsers(dest="topics_command", metavar="ACTION", required=True)

    apply = sub.add_parser("apply", help="create missing topics, verify existing ones")
    apply.add_argument("--check", action="store_true",
                       help="only verify; fail if a topic is missing or differs")
    apply.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    apply.set_defaults(func=_apply)

    listing = sub.add_parser("list", help="print the catalog (no broker needed)")
    listing.set_defaults(func=_list)


def _apply(args: argparse.Namespace) -> int:
    from mosaic.settings import Settings
    from streams.admin import apply, verify
    from streams.kafka import make_admin
    from streams.topics import build_catalog

    settings = Settings()
    admin = make_admin(settings)
    catalog = build_catalog(settings)
    if args.check:
        states = verify(admin, catalog, args.timeout)
    else:
        states = apply(catalog, admin, args.timeout)
    for state in states:
        print(f"{state.action:<9} {state.name} "
              f"({state.partitions} partitions, {state.cleanup_policy})")
    return 0


def _list(_args: argparse.Namespace) -> int:
    from mosaic.settings import Settings
    from streams.topics import build_catalog

    print(f"{'topic':<28} {'parts':>5} {'repl':>4} {'cleanup':<8} {'retention':>10}  events")
    for topic in build_catalog(Settings()):
        spec = topic.spec
        days = "forever" if spec.retention_ms < 0 else f"{spec.retention_ms // 86_400_000}d"
        if spec.cleanup_policy == "compact":
            days = "latest/key"
        events = ", ".join(t.schema_name for t in spec.event_types)
        print(f"{topic.name:<28} {spec.partitions:>5} {topic.replication_factor:>4} "
              f"{spec.cleanup_policy:<8} {days:>10}  {events} (key {spec.key})")
    return 0
