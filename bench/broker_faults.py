"""Loop the post-match broker-fault cases: restart, kill -9 and a 60 s SIGSTOP of the
fault test's own private broker (never the shared one) mid-cycle, N runs each, stopping a
variant at its first failure. Every run is the real test
(tests/integration/test_postmatch_faults.py::test_a_broker_fault_mid_cycle_still_completes_exactly_once):
1,000 users, 500 pairs in one transaction, the agents and the reconciler, then every pair
checked in Nakama's own tables (one closed two-member group, one notification per user).

    python bench/broker_faults.py --runs 20 [--faults restart kill9 pause] [--log DIR]
                                     [--port P]

Prints, per variant, the runs in a row that passed, the time per run and the watchdog's
ERROR lines (a stall it found and recovered from); exits 1 if any variant failed.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEST = ("tests/integration/test_postmatch_faults.py::"
        "test_a_broker_fault_mid_cycle_still_completes_exactly_once")


def run_variant(fault: str, runs: int, log_dir: Path, port: int
                ) -> tuple[list[tuple[str, float]], str]:
    """Run ``runs`` cases of ``fault`` (stop at the first failure): (outcome, seconds) per
    case and the pytest output."""
    junit = log_dir / f"{fault}.xml"
    env = {**os.environ, "MOSAIC_BROKER_FAULT_RUNS": str(runs),
           "MOSAIC_FAULT_BROKER_PORT": str(port)}
    cmd = [sys.executable, "-m", "pytest", TEST, "-k", f"{fault}-", "-x", "-q",
           "-p", "no:cacheprovider", f"--junitxml={junit}", "-o", "log_level=INFO",
           f"--log-file={log_dir / (fault + '.warnings.log')}", "--log-file-level=WARNING",
           "--timeout", "900"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=runs * 900 + 300, check=False)
    out = proc.stdout + proc.stderr
    (log_dir / f"{fault}.log").write_text(out)
    warnings = log_dir / f"{fault}.warnings.log"  # every run's warnings, passed ones too
    if warnings.exists():
        out += warnings.read_text()
    cases: list[tuple[str, float]] = []
    if junit.exists():
        for case in ET.parse(junit).getroot().iter("testcase"):
            failed = case.find("failure") is not None or case.find("error") is not None
            cases.append(("failed" if failed else "passed", float(case.get("time", 0))))
    return cases, out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="runs per variant (default 20)")
    parser.add_argument("--faults", nargs="+", default=["restart", "kill9", "pause"],
                        choices=["restart", "kill9", "pause"], help="variants (default all)")
    parser.add_argument("--log", type=Path, default=Path("/tmp/mosaic-broker-faults"),
                        help="where each variant's pytest output and junit go")
    parser.add_argument("--port", type=int, default=0,
                        help="the private broker's port (and + 1); default: a free pair "
                             "picked at random per run")
    args = parser.parse_args(argv)
    args.log.mkdir(parents=True, exist_ok=True)
    ok = True
    for fault in args.faults:
        started = time.monotonic()
        cases, out = run_variant(fault, args.runs, args.log, args.port)
        passed = 0
        for outcome, _ in cases:
            if outcome != "passed":
                break
            passed += 1
        times = [t for _, t in cases]
        mean = sum(times) / len(times) if times else 0.0
        print(f"{fault:8} {passed}/{args.runs} in a row; {len(cases)} run; "
              f"{mean:.0f} s per run (min {min(times, default=0):.0f}, "
              f"max {max(times, default=0):.0f}); {time.monotonic() - started:.0f} s "
              f"in all; log {args.log / (fault + '.log')}")
        found = re.findall(r"[\w-]+: (?:no progress|its loop has not come back|no offset "
                           r"commit confirmed) .*", out)
        for line in sorted(set(found))[:10]:
            print(f"         watchdog: {line}")
        ok = ok and passed == args.runs
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
