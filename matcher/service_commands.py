"""``mosaic tick``, ``mosaic ticker run`` and ``mosaic matcher run``.

Thin entry points: parse, build from settings, call :mod:`producers.ticker` or
:class:`matcher.service.MatcherService`. Nothing heavy is imported at module level.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import threading
from typing import TYPE_CHECKING, Any

from mosaic.cli_args import iso_instant

if TYPE_CHECKING:
    from matcher.metrics import CycleObserver, CycleReport
    from matcher.service import BlockStore
    from mosaic.ops_http import OpsServer
    from mosaic.settings import Settings

log = logging.getLogger(__name__)
# ``mosaic matcher run`` exits with this when another instance fenced it: restarting would
# fence that one in turn, so ``mosaic run`` does not restart on it.
FENCED_EXIT_CODE = 3


def register(subparsers: Any) -> None:
    tick = subparsers.add_parser("tick", help="publish one cycle tick")
    tick.add_argument("--pool", help="default: the first of settings.matcher.pools")
    tick.add_argument("--at", type=iso_instant, help="ISO 8601 time inside the slot "
                      "(default: now); the cycle id is derived from its slot")
    tick.add_argument("--every-seconds", type=int,
                      help="slot length (default: settings.matcher.cycle_seconds)")
    tick.set_defaults(func=_tick)

    ticker = _subcommands(subparsers, "ticker", "the cycle tick scheduler")
    run_ticker = ticker.add_parser("run", help="publish a tick per pool at every slot")
    run_ticker.add_argument("--every-seconds", type=int,
                            help="slot length (default: settings.matcher.cycle_seconds)")
    run_ticker.add_argument("--pool", action="append",
                            help="repeatable (default: settings.matcher.pools)")
    run_ticker.add_argument("--max-ticks", type=int, help="stop after this many slots")
    run_ticker.set_defaults(func=_run_ticker)

    matcher = _subcommands(subparsers, "matcher", "the matching service and tools")
    run = matcher.add_parser("run", help="run a matching cycle per tick")
    run.add_argument("--once", action="store_true",
                     help="handle the ticks available now, then exit")
    run.add_argument("--max-seconds", type=float, help="stop after this long")
    run.add_argument("--pool", action="append", default=[],
                     help="serve only this pool (repeatable; default: every pool). A matcher "
                          "per pool holds only its pool, has the transactional id "
                          "<matcher.transactional_id>.<pool> and never waits for another pool")
    run.set_defaults(func=_run_matcher)


def _subcommands(subparsers: Any, name: str, help_text: str) -> Any:
    """The sub-command group ``name``, shared with another module that may have made it
    (``matcher`` also holds ``match-file``)."""
    parser = subparsers.choices.get(name)
    if parser is None:
        parser = subparsers.add_parser(name, help=help_text)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return parser.add_subparsers(dest=f"{name}_command", metavar="ACTION", required=True)


def _tick(args: argparse.Namespace) -> int:
    from mosaic.settings import Settings
    from producers.ticker import publish_tick

    settings = Settings()
    pool = args.pool or settings.matcher.pools[0]
    tick = publish_tick(settings, pool, args.at, cycle_seconds=args.every_seconds)
    print(tick.cycle_id)
    return 0


def _run_ticker(args: argparse.Namespace) -> int:
    from mosaic.settings import Settings
    from producers.ticker import Ticker, kafka_publish

    settings = Settings()
    stop = _stop_on_sigterm()
    ticker = Ticker(kafka_publish(settings), args.pool or settings.matcher.pools,
                    args.every_seconds or settings.matcher.cycle_seconds)
    ops = _serve_ops(settings, "ticker", stop)
    try:
        for tick in ticker.run(max_ticks=args.max_ticks, should_stop=stop.is_set):
            print(tick.cycle_id, flush=True)
    finally:
        if ops is not None:
            ops.close()
    return 0


def _run_matcher(args: argparse.Namespace) -> int:
    from prometheus_client import REGISTRY

    from matcher.cycle_producer import MatcherFenced
    from matcher.metrics import MatcherMetrics
    from matcher.service import MatcherService
    from mosaic.settings import Settings

    settings = Settings()
    # The default registry: /metrics shows the matcher's metrics next to the process and
    # dead-letter ones.
    metrics = MatcherMetrics.create(REGISTRY)
    metrics.configure(args.pool or settings.matcher.pools, settings.matcher.cycle_seconds)
    stop = _stop_on_sigterm()
    ops = _serve_ops(settings, "matcher", stop, cassandra=True)
    try:
        with MatcherService(settings, blocks=build_block_store(settings),
                            observer=_Printing(metrics), pools=args.pool) as service:
            service.run(stop_when_idle=args.once, max_seconds=args.max_seconds,
                        should_stop=stop.is_set)
    except MatcherFenced as exc:
        metrics.fenced.inc()
        log.error("%s", exc)
        return FENCED_EXIT_CODE
    finally:
        if ops is not None:
            ops.close()
    return 0


class _Printing:
    """Prints each handled tick as one JSON line the moment it is handled (not when the
    matcher stops: a clean stop first writes the pool's checkpoint), then hands it on."""

    def __init__(self, inner: CycleObserver) -> None:
        self._inner = inner

    def cycle_handled(self, report: CycleReport) -> None:
        self._inner.cycle_handled(report)
        print(json.dumps({"cycle_id": report.cycle_id, "outcome": report.outcome,
                          "seekers": report.seekers, "pairs": report.pairs,
                          "unmatched": report.unmatched_by_reason,
                          "phase_seconds": report.phase_seconds}), flush=True)

    def cycle_failed(self, pool: str, error: BaseException) -> None:
        self._inner.cycle_failed(pool, error)


def build_block_store(settings: Settings) -> BlockStore:
    """The block store named by ``settings.matcher.block_store``."""
    from matcher.service import NoBlocks

    if settings.matcher.block_store == "none":
        log.warning("block store disabled: only blocks on seeker records apply")
        return NoBlocks()
    from consumers.blocks import CassandraBlockStore
    from mosaic.cassandra import connect

    return CassandraBlockStore(connect(settings.cassandra))


def _serve_ops(settings: Settings, process: str, stop: threading.Event, *,
               cassandra: bool = False) -> OpsServer | None:
    from mosaic.ops.health import readiness, start_ops_server

    return start_ops_server(settings, process, readiness(settings, stop, cassandra=cassandra))


def _stop_on_sigterm() -> threading.Event:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    return stop
