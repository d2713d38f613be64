"""``mosaic stack up|down|status|logs``."""

from __future__ import annotations

import argparse
import time
from typing import Any


def register(subparsers: Any) -> None:
    stack = subparsers.add_parser("stack", help="install/start/stop the real local stack")
    sub = stack.add_subparsers(dest="stack_command", metavar="ACTION", required=True)

    up = sub.add_parser("up", help="install on first use, start, wait until healthy")
    up.add_argument("services", nargs="*",
                    help="subset of services (default: all but prometheus, which starts "
                         "only when named)")
    up.add_argument("--kafka-brokers", type=int, choices=(1, 3), default=None,
                    help="3: a local KRaft cluster kafka-1..3 (replication factor 3, "
                         "min.insync.replicas 2; give it its own ports and data dir, see "
                         "docs/local-stack.md). Also MOSAIC_KAFKA__BROKERS.")
    up.set_defaults(func=_up)

    down = sub.add_parser("down", help="stop what 'up' started (pid files)")
    down.add_argument("services", nargs="*", help="subset of services (default: all)")
    down.add_argument("--wipe", action="store_true", help="also delete the services' data")
    down.add_argument("--kafka-brokers", type=int, choices=(1, 3), default=None,
                      help="the Kafka layout 'up' started (default: MOSAIC_KAFKA__BROKERS)")
    down.set_defaults(func=_down)

    status = sub.add_parser("status", help="show each service and whether it answers")
    status.add_argument("services", nargs="*", help="subset of services (default: all)")
    status.add_argument("--kafka-brokers", type=int, choices=(1, 3), default=None,
                        help="the Kafka layout to check (default: MOSAIC_KAFKA__BROKERS)")
    status.set_defaults(func=_status)

    logs = sub.add_parser("logs", help="print the tail of a service's log")
    logs.add_argument("service", help="one service name (see 'mosaic stack status')")
    logs.add_argument("-n", "--lines", type=int, default=50, help="how many last lines")
    logs.set_defaults(func=_logs)


def _settings(args: argparse.Namespace) -> Any:
    from mosaic.settings import Settings

    settings = Settings()
    brokers = getattr(args, "kafka_brokers", None)
    if brokers is None or brokers == settings.kafka.brokers:
        return settings
    kafka = settings.kafka.model_copy(update={"brokers": brokers,
                                              "replication_factor": min(3, brokers)})
    return settings.model_copy(update={"kafka": kafka})


def _up(args: argparse.Namespace) -> int:
    from stack.services import build, up_all

    started = time.monotonic()
    for line in up_all(build(_settings(args), args.services)):
        print(line, flush=True)
    print(f"stack up in {time.monotonic() - started:.1f}s")
    return 0


def _down(args: argparse.Namespace) -> int:
    from stack.services import build

    for service in reversed(build(_settings(args), args.services, include_optional=True)):
        print(service.down(wipe=args.wipe), flush=True)
    return 0


def _status(args: argparse.Namespace) -> int:
    from stack.services import build

    all_ok = True
    print(f"{'service':<10} {'pid':>8}  {'health':<8} where")
    for service in build(_settings(args), args.services):
        st = service.status()
        all_ok &= st.healthy
        pid = str(st.pid) if st.pid else "-"
        print(f"{st.name:<10} {pid:>8}  {'ok' if st.healthy else 'DOWN':<8} {st.where}")
    return 0 if all_ok else 1


def _logs(args: argparse.Namespace) -> int:
    from mosaic.settings import Settings
    from stack.services import build

    (service,) = build(Settings(), [args.service])
    if not service.log_file.exists():
        print(f"no log yet at {service.log_file}")
        return 1
    for line in service.log_file.read_text(errors="replace").splitlines()[-args.lines:]:
        print(line)
    return 0
