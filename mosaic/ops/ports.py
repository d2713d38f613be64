"""Where each long-running process serves ``/metrics`` and ``/health`` by default.

The ingress serves both on its own HTTP port (``settings.ingress.port``); every other
process takes ``MOSAIC_METRICS_PORT`` when set, else its entry here. ``mosaic run`` and
the stack's Prometheus targets use the same table, so a process started by hand is
scraped too.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from mosaic.settings import Settings

OPS_PORTS: dict[str, int] = {
    "run": 9100,  # the supervisor itself: consumer lag per group, child restarts
    "embedding": 9101,
    "matcher": 9102,
    "postmatch": 9103,
    "ticker": 9104,
    "reconciler": 9105,
}


def ops_port(settings: Settings, process: str) -> int:
    """``settings.metrics_port`` when set (non-zero), else the process's default."""
    return settings.metrics_port or OPS_PORTS[process]


def scrape_targets(settings: Settings, ports: dict[str, int] | None = None,
                   host: str = "127.0.0.1") -> list[dict[str, object]]:
    """Prometheus file_sd entries: one per process, labelled ``service``."""
    chosen = {"ingress": settings.ingress.port, **OPS_PORTS, **(ports or {})}
    return [{"targets": [f"{host}:{port}"], "labels": {"service": name}}
            for name, port in sorted(chosen.items())]


def targets_dir(settings: Settings) -> Path:
    """The folder the stack's Prometheus discovers scrape targets in (``*.json``)."""
    return settings.stack.data_dir / "prometheus" / "targets"


def write_targets(path: Path, targets: list[dict[str, object]]) -> None:
    """Atomically (Prometheus re-reads the folder on change)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(targets, indent=2) + "\n")
    os.replace(tmp, path)
