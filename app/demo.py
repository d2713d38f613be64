"""``mosaic demo``: one full matching cycle on the real local stack, end to end.

Users log in to Nakama and opt in through the Lua RPC, which calls the signed ingress,
which writes to Kafka; the embedding agent turns S3 insights into vectors in the index
and seekers on Kafka; a tick runs the matcher, which publishes the cycle in one
transaction; the post-match agents create a private Nakama group per pair and send each
user one notification. The summary then checks what users really see in Nakama.
"""

from __future__ import annotations

import argparse
import logging
import random
from typing import Any

from mosaic.settings import Settings

DEFAULT_USERS = 24


def register(subparsers: Any) -> None:
    demo = subparsers.add_parser("demo", help="run one full local matching cycle")
    demo.add_argument("--users", type=int, default=DEFAULT_USERS,
                      help=f"how many demo users opt in (default {DEFAULT_USERS})")
    demo.add_argument("--seed", type=int, default=None, help="persona seed (default: random)")
    demo.add_argument("--timeout-seconds", type=float, default=600.0,
                      help="give up on a stage after this long")
    demo.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    from app.demo_run import run_demo

    if not args.verbose:  # the progress bars and the summary are the demo's output
        logging.getLogger().setLevel(logging.WARNING)
    if args.users < 2:
        print("error: --users must be at least 2")
        return 2
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(10**6)
    report = run_demo(Settings(), users=args.users, seed=seed,
                      timeout_seconds=args.timeout_seconds)
    print(report.render())
    return 0 if report.ok else 1
