"""``mosaic demo``: one full matching cycle on the real local stack, end to end.

Users log in to Nakama and opt in through the Lua RPC, which calls the signed ingress,
which writes to Kafka; the embedding agent turns S3 insights into vectors in the index
and seekers on Kafka; a tick runs the matcher, which publishes the cycle in one
transaction; the post-match agents create a private Nakama group per pair and send each
user one notification. The summary then checks what users really see in Nakama.

The web client (``mosaic web``) is served during the run and its URL printed; with ``--web``
the demo waits before the opt-ins (at a terminal) so you can sign in as demo users in two
browser windows and watch the cycle, and keeps serving the client after the summary.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import random
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mosaic.errors import MosaicError
from mosaic.settings import Settings

if TYPE_CHECKING:
    from app.demo_report import DemoReport
    from app.web import WebServer

DEFAULT_USERS = 24


def register(subparsers: Any) -> None:
    from app.web import DEFAULT_PORT

    demo = subparsers.add_parser("demo", help="run one full local matching cycle")
    demo.add_argument("--users", type=int, default=DEFAULT_USERS,
                      help=f"how many demo users opt in (default {DEFAULT_USERS})")
    demo.add_argument("--seed", type=int, default=None, help="persona seed (default: random)")
    demo.add_argument("--timeout-seconds", type=float, default=600.0,
                      help="give up on a stage after this long")
    demo.add_argument("--web", action="store_true",
                      help="wait for Enter before the opt-ins (sign in in the browser first) "
                           "and keep serving the web client after the cycle, until Ctrl-C")
    demo.add_argument("--web-port", type=int, default=DEFAULT_PORT,
                      help="loopback port of the web client")
    demo.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    from app.demo_run import ingress_serving, run_demo

    if not args.verbose:  # the progress bars and the summary are the demo's output
        logging.getLogger().setLevel(logging.WARNING)
    if args.users < 2:
        print("error: --users must be at least 2")
        return 2
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(10**6)
    settings = Settings()
    web = _serve_web(settings, args.web_port)
    pause = _wait_for_sign_ins(web) if args.web and web is not None and sys.stdin.isatty() \
        else None
    try:
        if not (args.web and web is not None):
            report = run_demo(settings, users=args.users, seed=seed,
                              timeout_seconds=args.timeout_seconds)
            print(report.render())
            return 0 if report.ok else 1
        with ingress_serving(settings):  # the page's RPCs need it after the cycle too
            report = run_demo(settings, users=args.users, seed=seed,
                              timeout_seconds=args.timeout_seconds, before_opt_in=pause)
            print(report.render())
            _keep_serving(web, report)
    finally:
        if web is not None:
            web.stop()
    return 0 if report.ok else 1


def _serve_web(settings: Settings, port: int) -> WebServer | None:
    from app.web import WebServer

    try:
        web = WebServer(settings, port=port).start()
    except MosaicError as exc:  # the demo's checks do not need the page
        print(f"web client: not served ({exc})")
        return None
    print(f"web client: {web.url}/ (sign in as any demo user; --web keeps it serving)")
    return web


def _wait_for_sign_ins(web: WebServer) -> Callable[[DemoReport], None]:
    def wait(report: DemoReport) -> None:
        print(f"\nweb client: open {web.url}/ in two browser windows (a private window for the "
              "second) and sign in as demo users (the sign-in page lists them), e.g.:")
        for persona in report.personas[:4]:
            print(f"   {persona.user_id}  {persona.name}")
        input("press Enter to opt everyone in and run the cycle... ")
    return wait


def _keep_serving(web: WebServer, report: DemoReport) -> None:
    names = {p.user_id: p.name for p in report.personas}
    print(f"\nweb client: {web.url}/ keeps serving; sign in as both users of a pair (two "
          "windows) to see the match and chat:")
    for user_a, user_b, _, _ in report.pairs[:4]:
        print(f"   {user_a} ({names.get(user_a, '?')})  <->  {user_b} ({names.get(user_b, '?')})")
    print("Ctrl-C stops.", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        threading.Event().wait()
