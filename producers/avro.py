"""Avro encoding of optin events for the producer (schemaless body + schema-name header).

Stand-in until streams.serde is available; it reads the same schemas/*.avsc files.
"""

from __future__ import annotations

import io
import json
from functools import cache
from pathlib import Path
from typing import Any

import fastavro

from mosaic.errors import SerializationError
from streams.events import Event

SCHEMA_HEADER = "mosaic-schema"
_SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"


@cache
def parsed_schema(name: str) -> Any:
    try:
        raw = json.loads((_SCHEMA_DIR / f"{name}.avsc").read_text())
    except (OSError, ValueError) as exc:
        raise SerializationError(f"cannot load schema {name}: {exc}") from exc
    return fastavro.parse_schema(raw)


def serialize(event: object) -> tuple[bytes, list[tuple[str, str | bytes | None]]]:
    if not isinstance(event, Event):
        raise SerializationError(f"not an event: {type(event).__name__}")
    buf = io.BytesIO()
    try:
        fastavro.schemaless_writer(buf, parsed_schema(event.schema_name), event.to_dict())
    except (ValueError, TypeError) as exc:
        raise SerializationError(f"{event.schema_name}: {exc}") from exc
    return buf.getvalue(), [(SCHEMA_HEADER, event.schema_name.encode())]


def deserialize(value: bytes, headers: list[tuple[str, bytes]] | None) -> dict[str, Any]:
    """Decode one record (tests and tools); the schema comes from the header."""
    name = dict(headers or []).get(SCHEMA_HEADER, b"").decode()
    record = fastavro.schemaless_reader(io.BytesIO(value), parsed_schema(name), None)
    if not isinstance(record, dict):
        raise SerializationError(f"{name}: decoded a {type(record).__name__}")
    return {"schema": name, **record}
