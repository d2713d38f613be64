"""The supervisor with real child processes (tiny Python scripts): one prefixed log
stream, restart with backoff on a crash, no restart on a clean exit or a fenced matcher,
SIGTERM forwarded on stop and SIGKILL after the grace period."""

from __future__ import annotations

import io
import sys
import threading
import time

import pytest

from app.ops.supervisor import EXITS, RESTARTS, ServiceSpec, Supervisor

pytestmark = pytest.mark.unit

PY = [sys.executable, "-c"]


def _spec(name: str, script: str) -> ServiceSpec:
    return ServiceSpec(name, (script,), 0)


def _run_for(supervisor: Supervisor, seconds: float) -> int:
    threading.Timer(seconds, supervisor.stop).start()
    return supervisor.run()


def _count(metric: object, **labels: str) -> float:
    return metric.labels(**labels)._value.get()  # type: ignore[attr-defined]


def test_crashing_child_restarts_with_backoff_and_logs_are_prefixed() -> None:
    out = io.StringIO()
    before = _count(RESTARTS, service="crashy")
    sup = Supervisor([_spec("crashy", "print('hello'); raise SystemExit(2)"),
                      _spec("steady", "import time; print('up', flush=True); time.sleep(60)")],
                     command=PY, out=out, backoff_seconds=0.3, grace_seconds=5)
    assert _run_for(sup, 2.5) == 0
    text = out.getvalue()
    assert "crashy | hello" in text
    assert "steady" in text and "| up" in text
    restarts = _count(RESTARTS, service="crashy") - before
    assert 2 <= restarts <= 4, text  # 0.3, 0.6, 1.2 s backoff in 2.5 s
    assert "restarting in 0.3s (failure 1)" in text and "restarting in 0.6s (failure 2)" in text
    assert "steady stopped" in text


def test_clean_exit_and_fenced_matcher_are_not_restarted() -> None:
    out = io.StringIO()
    fenced_before = _count(EXITS, service="matcher", reason="fenced")
    sup = Supervisor([_spec("oneshot", "print('done')"),
                      _spec("matcher", "raise SystemExit(3)")],
                     command=PY, out=out, backoff_seconds=0.1)
    started = time.monotonic()
    assert sup.run() == 0  # every child done: the supervisor returns by itself
    assert time.monotonic() - started < 10
    text = out.getvalue()
    assert "oneshot finished (exit 0)" in text
    assert "matcher was fenced by another instance: not restarting it" in text
    assert _count(EXITS, service="matcher", reason="fenced") == fenced_before + 1


def test_stop_forwards_sigterm_then_kills_after_the_grace_period() -> None:
    out = io.StringIO()
    polite = ("import signal, sys, time\n"
              "signal.signal(signal.SIGTERM, lambda *_: (print('draining', flush=True),"
              " sys.exit(0)))\nprint('ready', flush=True)\ntime.sleep(60)")
    stubborn = ("import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                "print('ready', flush=True)\ntime.sleep(60)")
    sup = Supervisor([_spec("polite", polite), _spec("stubborn", stubborn)], command=PY,
                     out=out, grace_seconds=1.5)
    started = time.monotonic()
    assert _run_for(sup, 1.5) == 0
    assert time.monotonic() - started < 8
    text = out.getvalue()
    assert "polite   | draining" in text
    assert "polite stopped (exit 0)" in text
    assert "stubborn still running after 2s: SIGKILL" in text
    assert "stubborn stopped (exit -9)" in text
    ready, details = sup.health()
    assert not ready and set(details["children"]) == {"polite", "stubborn"}
