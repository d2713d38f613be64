"""Avro schemas of every event (namespace ``mosaic.events``), one ``.avsc`` per event.

``<Name>.avsc`` is the current (reader) schema. ``history/<Name>/v<N>.avsc`` keeps every
committed version, the newest equal to the current one, so a decoder can still read
what an older producer wrote and the compatibility tests can check each step.

Evolving a schema, readers first (docs/operations.md, "Schema evolution"): commit the new,
compatible version (new fields need a ``default``) as ``history/<Name>/v<N+1>.avsc`` and
release it (every process then reads it, none writes it); in the next release copy it to
``<Name>.avsc``. The unit tests allow one such version ahead of ``<Name>.avsc``, no more.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

NAMESPACE = "mosaic.events"
_VERSION_FILE = re.compile(r"^v([1-9][0-9]*)\.avsc$")


@dataclass(frozen=True)
class SchemaVersion:
    """One committed version of one event schema, as raw JSON (not yet parsed)."""

    name: str
    version: int
    schema: dict[str, Any]


def _root() -> Traversable:
    return resources.files(__name__)


def _read(entry: Traversable) -> dict[str, Any]:
    data = json.loads(entry.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{entry.name}: an event schema must be a JSON object")
    return data


def load_current() -> dict[str, dict[str, Any]]:
    """Every current schema by short name (``OptInRequested`` ...)."""
    current: dict[str, dict[str, Any]] = {}
    for entry in sorted(_root().iterdir(), key=lambda e: e.name):
        if entry.is_file() and entry.name.endswith(".avsc"):
            current[entry.name.removesuffix(".avsc")] = _read(entry)
    return current


def load_history() -> dict[str, list[SchemaVersion]]:
    """Every committed version by short name, oldest first."""
    history: dict[str, list[SchemaVersion]] = {}
    base = _root().joinpath("history")
    for folder in sorted(base.iterdir(), key=lambda e: e.name):
        if not folder.is_dir():
            continue
        versions: list[SchemaVersion] = []
        for entry in folder.iterdir():
            match = _VERSION_FILE.match(entry.name)
            if entry.is_file() and match:
                versions.append(SchemaVersion(folder.name, int(match[1]), _read(entry)))
        history[folder.name] = sorted(versions, key=lambda v: v.version)
    return history
