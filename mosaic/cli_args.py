"""Argument types shared by the command-line tools (``type=`` of argparse arguments)."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime


def iso_instant(text: str) -> datetime:
    """An ISO 8601 time (``Z`` allowed) as an aware UTC datetime; a naive one is taken as UTC."""
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from exc
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
