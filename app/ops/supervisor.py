"""``mosaic run all|SERVICE``: every long-running process as a supervised child.

Each child is one of the existing commands (``mosaic ingress serve``, ``mosaic agents
embedding``...) in its own process group, its stdout and stderr merged into one stream
prefixed with the service name. A child that crashes (non-zero exit) is restarted with
exponential backoff; a matcher fenced by another instance (exit 3) is not. Ctrl-C or
SIGTERM forwards SIGTERM to every child (they commit offsets, close transactions), waits
``grace`` seconds, then kills what is left.

The supervisor serves ``/metrics`` (consumer lag per group, child restarts and exits) and
``/health`` on port 9100 and writes the children's scrape targets for the stack's
Prometheus (``<data dir>/prometheus/targets/run-<pid>.json``), removed on exit.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from prometheus_client import REGISTRY, Counter, Gauge

from mosaic.ops.ports import OPS_PORTS, targets_dir, write_targets
from mosaic.settings import Settings

log = logging.getLogger(__name__)

FENCED_EXIT_CODE = 3  # matcher.service_commands.FENCED_EXIT_CODE

CHILD_UP = Gauge("mosaic_run_child_up", "1 while the supervised child runs", ["service"])
RESTARTS = Counter("mosaic_run_child_restarts", "Children restarted after a crash",
                   ["service"])
EXITS = Counter("mosaic_run_child_exits",
                "Child exits by reason (crashed, fenced, finished, stopped)",
                ["service", "reason"])


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    args: tuple[str, ...]  # after ``mosaic``
    port: int  # where it serves /metrics and /health
    env: Mapping[str, str] = field(default_factory=dict)


REPLICATED = ("embedding", "postmatch")  # consumer-group members: more processes scale out


def service_specs(settings: Settings, ports: Mapping[str, int] | None = None,
                  *, reconcile_every: float = 30.0,
                  replicas: Mapping[str, int] | None = None) -> dict[str, ServiceSpec]:
    """Every service ``mosaic run all`` starts, in start order. ``replicas`` runs more
    processes of a service in :data:`REPLICATED` (same consumer groups): the first keeps
    the plain name and port, the others are ``NAME-2``, ``NAME-3``... on the ports after
    the highest of the table (the embedding replicas first)."""
    port = {"ingress": settings.ingress.port, **OPS_PORTS, **(ports or {})}
    counts = {name: 1 for name in REPLICATED} | dict(replicas or {})
    if any(counts[n] < 1 for n in REPLICATED) or set(counts) - set(REPLICATED):
        from mosaic.errors import ConfigError

        raise ConfigError(f"replicas: 1 or more processes of {', '.join(REPLICATED)}; "
                          f"got {dict(replicas or {})}")
    extra = iter(range(max(p for n, p in port.items() if n != "ingress") + 1, 1 << 16))
    specs: list[ServiceSpec] = []
    for name in ("ingress", "embedding", "matcher", "ticker", "postmatch", "reconciler"):
        for i in range(counts.get(name, 1)):
            here = port[name] if i == 0 else next(extra)
            specs.append(_spec(name if i == 0 else f"{name}-{i + 1}", name, here,
                               reconcile_every))
    return {s.name: s for s in specs}


def _spec(name: str, service: str, port: int, reconcile_every: float) -> ServiceSpec:
    ops_env = {"MOSAIC_METRICS_PORT": str(port)}
    if service == "ingress":
        return ServiceSpec(name, ("ingress", "serve", "--port", str(port)), port)
    if service == "embedding":
        return ServiceSpec(name, ("agents", "embedding"), port, ops_env)
    if service == "matcher":
        return ServiceSpec(name, ("matcher", "run"), port, ops_env)
    if service == "ticker":
        return ServiceSpec(name, ("ticker", "run"), port, ops_env)
    if service == "postmatch":
        return ServiceSpec(name, ("postmatch", "--port", str(port), "--reconcile-every", "0"),
                           port)
    # The reconciler serves no /metrics of its own: ``with-ops`` wraps it.
    return ServiceSpec(name, ("with-ops", "reconciler", "--", "reconciler", "--every",
                              str(reconcile_every)), port, ops_env)


def service_of(name: str) -> str:
    """``postmatch-2`` -> ``postmatch``: the service a (replica's) child name runs."""
    base, _, number = name.rpartition("-")
    return base if base in REPLICATED and number.isdigit() else name


@dataclass
class _Child:
    spec: ServiceSpec
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    failures: int = 0
    restart_at: float | None = None
    done: bool = False  # finished or fenced: not restarted


class Supervisor:
    """Runs ``specs`` until :meth:`stop` (or every child is done)."""

    def __init__(self, specs: Sequence[ServiceSpec], *, command: Sequence[str] | None = None,
                 env: Mapping[str, str] | None = None, out: IO[str] | None = None,
                 grace_seconds: float = 20.0, backoff_seconds: float = 1.0,
                 max_backoff_seconds: float = 60.0, stable_seconds: float = 60.0,
                 json_lines: bool = False) -> None:
        self._children = [_Child(s) for s in specs]
        self._command = list(command or _mosaic_command())
        self._env = dict(env if env is not None else os.environ)
        self._out = out or sys.stdout
        self._out_lock = threading.Lock()
        self._grace = grace_seconds
        self._backoff, self._max_backoff = backoff_seconds, max_backoff_seconds
        self._stable = stable_seconds
        self._stop = threading.Event()
        self._width = max((len(s.name) for s in specs), default=8)
        self._json = json_lines

    # -- public ----------------------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def health(self) -> tuple[bool, dict[str, Any]]:
        states = {c.spec.name: ("running" if _alive(c.process) else
                                "done" if c.done else "restarting") for c in self._children}
        return (not self._stop.is_set()
                and all(s != "restarting" for s in states.values())), {"children": states}

    def run(self) -> int:
        """Supervise until stopped; returns 0 on a clean stop."""
        for child in self._children:
            self._start(child)
        try:
            while not self._stop.wait(0.2):
                now = time.monotonic()
                for child in self._children:
                    self._check(child, now)
                if all(c.done for c in self._children):
                    break
        finally:
            self._shutdown()
        return 0

    # -- internals --------------------------------------------------------------------
    def _emit(self, name: str, line: str) -> None:
        text = self._as_json(name, line) if self._json else f"{name:<{self._width}} | {line}"
        with self._out_lock:
            self._out.write(text + "\n")
            self._out.flush()

    @staticmethod
    def _as_json(name: str, line: str) -> str:
        """JSON mode (MOSAIC_LOG_FORMAT=json): a child's JSON line gains ``service``;
        anything else (a print, a third-party line) is wrapped as a message."""
        try:
            entry = json.loads(line)
        except ValueError:
            entry = None
        if not isinstance(entry, dict):
            entry = {"ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
                     "level": "INFO", "logger": "stdout", "message": line}
        return json.dumps({**entry, "service": name}, ensure_ascii=False)

    def _start(self, child: _Child) -> None:
        spec = child.spec
        env = {**self._env, **spec.env}
        child.process = subprocess.Popen(
            [*self._command, *spec.args], env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        child.started_at, child.restart_at = time.monotonic(), None
        CHILD_UP.labels(service=spec.name).set(1)
        self._emit("run", f"started {spec.name} (pid {child.process.pid}): "
                          f"mosaic {' '.join(spec.args)}")
        threading.Thread(target=self._pump, args=(spec.name, child.process),
                         name=f"log-{spec.name}", daemon=True).start()

    def _pump(self, name: str, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        for raw in iter(process.stdout.readline, b""):
            self._emit(name, raw.decode(errors="replace").rstrip("\n"))

    def _check(self, child: _Child, now: float) -> None:
        if child.done:
            return
        if child.process is not None and child.process.poll() is None:
            if now - child.started_at > self._stable:
                child.failures = 0
            return
        if child.restart_at is not None:
            if now >= child.restart_at:
                RESTARTS.labels(service=child.spec.name).inc()
                self._start(child)
            return
        assert child.process is not None
        code = child.process.returncode
        CHILD_UP.labels(service=child.spec.name).set(0)
        if code == 0:
            EXITS.labels(service=child.spec.name, reason="finished").inc()
            self._emit("run", f"{child.spec.name} finished (exit 0)")
            child.done = True
        elif code == FENCED_EXIT_CODE and child.spec.name == "matcher":
            EXITS.labels(service=child.spec.name, reason="fenced").inc()
            self._emit("run", "matcher was fenced by another instance: not restarting it")
            child.done = True
        else:
            EXITS.labels(service=child.spec.name, reason="crashed").inc()
            child.failures += 1
            delay = min(self._max_backoff, self._backoff * 2 ** (child.failures - 1))
            child.restart_at = now + delay
            self._emit("run", f"{child.spec.name} exited with {code}; restarting in "
                              f"{delay:.1f}s (failure {child.failures})")

    def _shutdown(self) -> None:
        running = [c for c in self._children if _alive(c.process)]
        for child in running:
            assert child.process is not None
            self._emit("run", f"stopping {child.spec.name} (SIGTERM)")
            _signal_group(child.process, signal.SIGTERM)
        deadline = time.monotonic() + self._grace
        for child in running:
            assert child.process is not None
            try:
                child.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self._emit("run", f"{child.spec.name} still running after "
                                  f"{self._grace:.0f}s: SIGKILL")
                _signal_group(child.process, signal.SIGKILL)
                child.process.wait(10)
            EXITS.labels(service=child.spec.name, reason="stopped").inc()
            CHILD_UP.labels(service=child.spec.name).set(0)
            self._emit("run", f"{child.spec.name} stopped (exit {child.process.returncode})")


def _alive(process: subprocess.Popen[bytes] | None) -> bool:
    return process is not None and process.poll() is None


def _signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signum)  # its own session: pgid == pid


def _mosaic_command() -> list[str]:
    """This interpreter running the CLI (works from a venv without ``mosaic`` on PATH)."""
    return [sys.executable, "-c", "from app.cli import entry; entry()"]


def run_supervised(settings: Settings, names: Sequence[str], *,
                   ports: Mapping[str, int] | None = None, grace_seconds: float = 20.0,
                   supervisor_port: int | None = None,
                   install_signals: bool = True,
                   replicas: Mapping[str, int] | None = None,
                   on_ready: Callable[[Supervisor], None] | None = None) -> int:
    """``mosaic run``: supervise ``names`` (``all`` = every service) until a signal."""
    from app.ops.lag import ConsumerLagCollector
    from mosaic.ops_http import OpsServer

    specs = service_specs(settings, ports, replicas=replicas)
    services = {service_of(n) for n in specs}
    wanted = services if list(names) in ([], ["all"]) else set(names)
    unknown = sorted(wanted - services)
    if unknown:
        from mosaic.errors import ConfigError

        raise ConfigError(f"unknown service(s) {unknown}; choose from all, "
                          f"{', '.join(sorted(services))}")
    chosen = [n for n in specs if service_of(n) in wanted]  # a service's replicas too
    supervisor = Supervisor([specs[n] for n in chosen], grace_seconds=grace_seconds,
                            json_lines=settings.log_format == "json")
    if install_signals:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: supervisor.stop())
    lag = ConsumerLagCollector(settings)
    REGISTRY.register(lag)
    port = OPS_PORTS["run"] if supervisor_port is None else supervisor_port
    ops = OpsServer("127.0.0.1", port, supervisor.health)
    targets = targets_dir(settings) / f"run-{os.getpid()}.json"
    entries: list[dict[str, object]] = [
        {"targets": [f"127.0.0.1:{port}"], "labels": {"service": name}}
        for name, port in [("run", ops.port), *((n, specs[n].port) for n in chosen)]]
    write_targets(targets, entries)
    log.info("run: /metrics and /health on http://127.0.0.1:%d; supervising %s", ops.port,
             ", ".join(chosen))
    try:
        if on_ready is not None:
            on_ready(supervisor)
        return supervisor.run()
    finally:
        ops.close()
        REGISTRY.unregister(lag)
        Path(targets).unlink(missing_ok=True)
