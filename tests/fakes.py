"""In-memory fakes of runtime interfaces, for unit tests of pure logic only."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from mosaic.user_state import UserStateWriter


class MemoryUserStateWriter(UserStateWriter):
    """Keeps the latest fields per user; per field the newest write wins (as in Cassandra)."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}

    def _write(self, user_id: str, at: datetime, **fields: Any) -> None:
        row = self.rows.setdefault(user_id, {})
        for name, value in fields.items():
            if row.get(f"_{name}_at", at) <= at:
                row[name], row[f"_{name}_at"] = value, at

    def waiting(self, user_id: str, *, pool: str, waiting_since: datetime,
                missed_cycles: int, at: datetime) -> None:
        self._write(user_id, at, state="waiting", pool=pool, waiting_since=waiting_since,
                    missed_cycles=missed_cycles, detail=None)

    def profile_failed(self, user_id: str, *, reason: str, at: datetime) -> None:
        self._write(user_id, at, state="profile_failed", detail=reason)

    def missed_cycle(self, user_id: str, *, cycle_id: str, missed_cycles: int,
                     at: datetime) -> None:
        self._write(user_id, at, state="waiting", missed_cycles=missed_cycles)

    def matched(self, user_id: str, *, cycle_id: str, room_id: str | None,
                at: datetime) -> None:
        fields: dict[str, Any] = {"state": "matched", "cycle_id": cycle_id}
        if room_id is not None:
            fields["room_id"] = room_id
        self._write(user_id, at, **fields)
