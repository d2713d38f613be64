"""What every event shares: ids, UTC times, the pair key, strict field readers.

Events are frozen dataclasses with explicit ``to_dict`` (wire-ready: times as epoch
milliseconds, map keys as strings) and ``from_dict`` (accepts what ``to_dict`` or the
Avro decoder returns and rejects anything else with ``SerializationError``).
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Self

from mosaic.errors import SerializationError, ValidationError

# User ids are Cognito subs (UUIDs), so "|" never occurs in them; that makes
# "a|b" an unambiguous, order-independent pair id.
PAIR_SEPARATOR = "|"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Fixed namespace so derived ids are stable across processes and releases.
_ID_NAMESPACE = uuid.UUID("6f1c3d0e-8a7b-5c4d-9e2f-0a1b2c3d4e5f")
_MISSING: Any = object()


def pair_key(user_1: str, user_2: str) -> str:
    """The canonical id of a pair: both user ids sorted and joined with ``|``."""
    for user in (user_1, user_2):
        if not user or PAIR_SEPARATOR in user:
            raise ValidationError(f"user id {user!r} is empty or contains {PAIR_SEPARATOR!r}")
    if user_1 == user_2:
        raise ValidationError(f"a pair needs two different users, got {user_1!r} twice")
    return PAIR_SEPARATOR.join(sorted((user_1, user_2)))


def split_pair_key(key: str) -> tuple[str, str]:
    """Inverse of :func:`pair_key`: ``(user_a, user_b)`` in sort order."""
    parts = key.split(PAIR_SEPARATOR)
    if len(parts) != 2 or pair_key(parts[0], parts[1]) != key:
        raise ValidationError(f"{key!r} is not a canonical pair key")
    return parts[0], parts[1]


def new_event_id() -> str:
    """A random event id, for events produced at the edge (ingress, ticker)."""
    return str(uuid.uuid4())


def derive_event_id(*parts: str) -> str:
    """A deterministic event id, so a replayed step produces the same id (idempotency)."""
    return str(uuid.uuid5(_ID_NAMESPACE, "\x1f".join(parts)))


def to_millis(value: datetime) -> int:
    if value.tzinfo is None:
        raise ValidationError(f"naive datetime {value!r}: use an aware UTC datetime")
    return (value - _EPOCH) // timedelta(milliseconds=1)


def from_millis(value: int) -> datetime:
    try:
        return _EPOCH + timedelta(milliseconds=value)
    except OverflowError as exc:
        raise SerializationError(f"timestamp {value} ms is out of range") from exc


class Event:
    """Base of every event dataclass; subclasses set ``schema_name``."""

    __slots__ = ()
    schema_name: ClassVar[str]
    event_id: str
    occurred_at: datetime

    def key(self) -> str | bytes | None:
        """The Kafka message key this event is produced with."""
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        raise NotImplementedError

    def __post_init__(self) -> None:
        # Catch mistakes where the event is built, not later on the wire.
        for field in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, field.name)
            if isinstance(value, datetime) and value.tzinfo is None:
                raise ValidationError(f"{self.schema_name}.{field.name}: naive datetime")
        try:
            uuid.UUID(self.event_id)
        except ValueError as exc:
            bad = self.event_id
            raise ValidationError(f"{self.schema_name}.event_id {bad!r}: not a UUID") from exc


class FieldReader:
    """Typed access to one decoded dict; every mismatch is a ``SerializationError``."""

    def __init__(self, name: str, data: Mapping[str, Any]) -> None:
        if not isinstance(data, Mapping):
            raise SerializationError(f"{name}: expected a mapping, got {type(data).__name__}")
        self._name = name
        self._data = data

    def _get(self, field: str, default: Any) -> Any:
        if field in self._data:
            return self._data[field]
        if default is _MISSING:
            raise SerializationError(f"{self._name}.{field}: missing")
        return default

    def _fail(self, field: str, expected: str, value: Any) -> SerializationError:
        got = type(value).__name__
        return SerializationError(f"{self._name}.{field}: expected {expected}, got {got}")

    def string(self, field: str, default: Any = _MISSING) -> str:
        value = self._get(field, default)
        if not isinstance(value, str):
            raise self._fail(field, "string", value)
        return value

    def opt_string(self, field: str) -> str | None:
        value = self._get(field, None)
        return None if value is None else self.string(field)

    def integer(self, field: str, default: Any = _MISSING) -> int:
        value = self._get(field, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._fail(field, "int", value)
        return value

    def number(self, field: str, default: Any = _MISSING) -> float:
        value = self._get(field, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self._fail(field, "number", value)
        return float(value)

    def opt_number(self, field: str) -> float | None:
        value = self._get(field, None)
        return None if value is None else self.number(field)

    def boolean(self, field: str, default: Any = _MISSING) -> bool:
        value = self._get(field, default)
        if not isinstance(value, bool):
            raise self._fail(field, "bool", value)
        return value

    def time(self, field: str) -> datetime:
        value = self._get(field, _MISSING)
        if isinstance(value, datetime):
            if value.tzinfo is None:
                raise self._fail(field, "aware datetime", value)
            return value.astimezone(UTC)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._fail(field, "epoch milliseconds", value)
        return from_millis(value)

    def opt_bytes(self, field: str) -> bytes | None:
        value = self._get(field, None)
        if value is not None and not isinstance(value, bytes):
            raise self._fail(field, "bytes", value)
        return value

    def strings(self, field: str, default: Any = _MISSING) -> tuple[str, ...]:
        value = self._sequence(field, default)
        if not all(isinstance(item, str) for item in value):
            raise self._fail(field, "list of strings", value)
        return tuple(value)

    def numbers(self, field: str) -> tuple[float, ...]:
        value = self._sequence(field, _MISSING)
        if any(isinstance(x, bool) or not isinstance(x, int | float) for x in value):
            raise self._fail(field, "list of numbers", value)
        return tuple(float(item) for item in value)

    def _sequence(self, field: str, default: Any) -> Sequence[Any]:
        value = self._get(field, default)
        if isinstance(value, str | bytes) or not isinstance(value, Sequence):
            raise self._fail(field, "list", value)
        return value

    def int_map(self, field: str, default: Any = _MISSING) -> dict[str, int]:
        value = self._mapping(field, default)
        if any(isinstance(v, bool) or not isinstance(v, int) for v in value.values()):
            raise self._fail(field, "map of int", value)
        return dict(value)

    def float_map(self, field: str, default: Any = _MISSING) -> dict[str, float]:
        value = self._mapping(field, default)
        if any(isinstance(v, bool) or not isinstance(v, int | float) for v in value.values()):
            raise self._fail(field, "map of number", value)
        return {k: float(v) for k, v in value.items()}

    def _mapping(self, field: str, default: Any) -> Mapping[str, Any]:
        value = self._get(field, default)
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise self._fail(field, "map with string keys", value)
        return value


def check_pair(where: str, key: str, user_a: str, user_b: str) -> None:
    """A pair's fields must agree: ``user_a < user_b`` and ``key == pair_key(a, b)``."""
    if user_a >= user_b or pair_key(user_a, user_b) != key:
        raise ValidationError(
            f"{where}: pair_key {key!r} does not match sorted users ({user_a!r}, {user_b!r})"
        )
