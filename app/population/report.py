"""Figures of a population run: percentiles, per-stage summary, peak memory of the
supervised processes and CPU of Nakama and PostgreSQL (read from /proc)."""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from app.ops.supervisor import service_of
from app.population.users import SimUser

_CLK_TCK = os.sysconf("SC_CLK_TCK")
_STARTED = re.compile(r"^run\s+\| started (\S+) \(pid (\d+)\)", re.MULTILINE)


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def spread(values: Sequence[float]) -> dict[str, float | None]:
    """p50/p99/max in seconds, rounded to ms."""
    return {k: None if v is None else round(v, 3) for k, v in (
        ("p50", percentile(values, 50)), ("p99", percentile(values, 99)),
        ("max", max(values) if values else None))}


def not_exactly_once(users: Iterable[SimUser], cycle_id: str) -> list[dict[str, Any]]:
    """Every user without exactly one notification of ``cycle_id`` on its socket: its id,
    the count, notifications of other cycles, and its last error."""
    out = []
    for user in users:
        count = user.count(cycle_id)
        if count != 1:
            out.append({"custom_id": user.custom_id, "user_id": user.user_id, "count": count,
                        "other_cycles": len(user.notes) - count,
                        "error": user.error or user.socket_closed})
    return out


def notification_delays(users: Iterable[SimUser], cycle_id: str, tick_at: float
                        ) -> list[float]:
    """Tick to the first notification of ``cycle_id`` on each notified user's socket."""
    return [min(at for at, c in u.notes if c == cycle_id) - tick_at
            for u in users if u.count(cycle_id)]


class Progress:
    """'stage 4,000/10,000 (812/s)' on stderr, at most every ``every`` seconds."""

    def __init__(self, stage: str, total: int, *, every: float = 2.0,
                 out: IO[str] | None = None) -> None:
        self.stage, self.total, self.every = stage, total, every
        self.started = self._last = time.monotonic()
        self.done = 0
        self._out = out or sys.stderr

    def __call__(self, done: int) -> None:
        self.done = done
        now = time.monotonic()
        if now - self._last >= self.every or done == self.total:
            self._last = now
            self._out.write(f"{self.stage} {done:,}/{self.total:,} ({self.rate():,.0f}/s)\n")
            self._out.flush()

    def rate(self) -> float:
        seconds = time.monotonic() - self.started
        return self.done / seconds if seconds > 0 else 0.0


def mean_request_seconds(metrics_text: str) -> dict[str, float]:
    """Mean of the ingress' ``mosaic_ingress_request_duration_seconds`` per route (its
    own time per request, to compare with the RPC's round trip through Nakama)."""
    from prometheus_client.parser import text_string_to_metric_families

    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics_text):
        if family.name != "mosaic_ingress_request_duration_seconds":
            continue
        for sample in family.samples:
            route = sample.labels.get("route", "")
            if sample.name.endswith("_sum"):
                sums[route] = sample.value
            elif sample.name.endswith("_count"):
                counts[route] = sample.value
    return {r: round(sums[r] / n, 4) for r, n in counts.items() if n and r in sums}


# -- processes ---------------------------------------------------------------------------


def child_pids(log_text: str) -> dict[str, int]:
    """Child name -> pid of its latest start, from the supervisor's log."""
    return {name: int(pid) for name, pid in _STARTED.findall(log_text)}


def peak_rss_mib(pids: Mapping[str, int]) -> dict[str, float]:
    """VmHWM (peak resident memory) summed per service (replicas together), in MiB."""
    out: dict[str, float] = {}
    for name, pid in pids.items():
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        found = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
        if found:
            service = service_of(name)
            out[service] = round(out.get(service, 0.0) + int(found.group(1)) / 1024, 1)
    return out


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def cpu_seconds(pid: int) -> float:
    """CPU time of ``pid`` and all its descendants, alive or reaped (cutime, cstime):
    what a whole server has used so far (PostgreSQL: runuser -> postmaster -> backends)."""
    parents: dict[str, list[str]] = {}
    stats: dict[str, list[str]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) is not None:
            stats[entry.name] = fields
            parents.setdefault(fields[1], []).append(entry.name)
    total, todo = 0, [str(pid)]
    while todo:
        current = todo.pop()
        if current in stats:
            total += sum(int(v) for v in stats[current][11:15])  # utime stime cutime cstime
        todo.extend(parents.get(current, []))
    return total / _CLK_TCK


@dataclass
class CpuWindow:
    """CPU share of some processes between :meth:`start` and :meth:`stop`."""

    pids: Mapping[str, int | None]
    _began: float = 0.0
    _before: dict[str, float] | None = None
    result: dict[str, float | None] | None = None

    def start(self) -> None:
        self._began = time.monotonic()
        self._before = {n: cpu_seconds(p) for n, p in self.pids.items() if p}

    def stop(self) -> dict[str, float | None]:
        """Cores used on average (1.0 = one core busy) per process, over the window;
        replicas of a service summed."""
        seconds = max(time.monotonic() - self._began, 1e-9)
        before = self._before or {}
        out: dict[str, float | None] = {}
        for name, pid in self.pids.items():
            key = service_of(name)
            if pid and name in before:
                used = (cpu_seconds(pid) - before[name]) / seconds
                out[key] = round((out.get(key) or 0.0) + used, 2)
            else:
                out.setdefault(key, None)
        self.result = out
        return out
