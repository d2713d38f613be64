"""What every event shares: ids, UTC times, the pair key, strict field readers, the codec.

Events are frozen dataclasses; the dataclass fields are the single source of truth for the
dict codec. ``to_dict`` (wire-ready: times as epoch milliseconds, tuples as lists, map keys
as strings) and ``from_dict`` (accepts what ``to_dict`` or the Avro decoder returns, fills a
missing field with the dataclass default, rejects anything else with ``SerializationError``)
are derived once per class from the field types (``_codec``). Adding a field to an event is
two edits: the dataclass and its ``.avsc`` (tests/unit/test_schemas.py checks they agree).
Supported field types are the keys of ``_READERS``; anything else fails the first encode.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import re
import typing
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Self

from mosaic.errors import SerializationError, ValidationError

# User ids are Cognito subs (UUIDs), so "|" never occurs in them; that makes
# "a|b" an unambiguous, order-independent pair id.
PAIR_SEPARATOR = "|"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Fixed namespace so derived ids are stable across processes and releases.
_ID_NAMESPACE = uuid.UUID("6f1c3d0e-8a7b-5c4d-9e2f-0a1b2c3d4e5f")
_ID_HASH = hashlib.sha1(_ID_NAMESPACE.bytes, usedforsecurity=False)  # uuid5's own hash
# A UUID as str(uuid.UUID(...)) writes it; other spellings uuid.UUID accepts are checked by it.
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
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
    """A deterministic event id, so a replayed step produces the same id (idempotency):
    ``str(uuid.uuid5(_ID_NAMESPACE, "\\x1f".join(parts)))``, computed without the UUID
    objects (a cycle derives one per event, 1.5M at a million seekers)."""
    digest = _ID_HASH.copy()
    digest.update("\x1f".join(parts).encode("utf-8"))
    return _as_uuid5(digest.digest())


def event_ids(*prefix: str) -> Callable[[str], str]:
    """``derive_event_id(*prefix, last)`` as a function of ``last``, the prefix hashed once
    (a cycle derives one id per user with the same type and cycle id)."""
    digest = _ID_HASH.copy()
    digest.update("".join(f"{part}\x1f" for part in prefix).encode("utf-8"))

    def derive(last: str) -> str:
        one = digest.copy()
        one.update(last.encode("utf-8"))
        return _as_uuid5(one.digest())

    return derive


def _as_uuid5(sha1: bytes) -> str:
    raw = bytearray(sha1[:16])
    raw[6] = (raw[6] & 0x0F) | 0x50  # version 5
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    x = raw.hex()
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


def to_millis(value: datetime) -> int:
    if value.tzinfo is None:
        raise ValidationError(f"naive datetime {value!r}: use an aware UTC datetime")
    return (value - _EPOCH) // timedelta(milliseconds=1)


def from_millis(value: int) -> datetime:
    try:
        return _EPOCH + timedelta(milliseconds=value)
    except OverflowError as exc:
        raise SerializationError(f"timestamp {value} ms is out of range") from exc


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class Event:
    """Base of every event dataclass (declared with :func:`event_type`). Subclasses add their
    fields, which follow ``event_id`` and ``occurred_at`` in the codec's order; the schema
    name (the ``.avsc``) is the class name."""

    schema_name: ClassVar[str]
    event_id: str
    occurred_at: datetime

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # No zero-argument super() here: slots=True dataclasses are re-created classes.
        super(Event, cls).__init_subclass__(**kwargs)
        cls.schema_name = cls.__name__

    def key(self) -> str | bytes | None:
        """The Kafka message key this event is produced with."""
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        """The wire-ready dict of this event (see the module docstring)."""
        return {f.name: f.encode(getattr(self, f.name)) for f in _codec(type(self))}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """The event from a decoded dict; any mismatch is a ``SerializationError``."""
        r = FieldReader(cls.schema_name, data)
        return cls(**{f.name: f.decode(r, f.name, f.default()) for f in _codec(cls)})

    def __post_init__(self) -> None:
        # Catch mistakes where the event is built, not later on the wire.
        for name in _field_names(type(self)):
            value = getattr(self, name)
            if isinstance(value, datetime) and value.tzinfo is None:
                raise ValidationError(f"{self.schema_name}.{name}: naive datetime")
        if type(self.event_id) is str and _CANONICAL_UUID.fullmatch(self.event_id):
            return
        try:
            uuid.UUID(self.event_id)
        except ValueError as exc:
            bad = self.event_id
            raise ValidationError(f"{self.schema_name}.event_id {bad!r}: not a UUID") from exc


_E = typing.TypeVar("_E", bound=Event)


_FIELD_NAMES: dict[type[Event], tuple[str, ...]] = {}


def _field_names(cls: type[Event]) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(field.name for field in dataclasses.fields(cls))
    return names


@typing.dataclass_transform(frozen_default=True, kw_only_default=True)
def event_type(cls: type[_E]) -> type[_E]:
    """Declare an event: a frozen, keyword-only, slotted dataclass like :class:`Event`."""
    return dataclasses.dataclass(frozen=True, kw_only=True, slots=True)(cls)


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


def _int_keys(reader: FieldReader, field: str, default: Any) -> dict[int, int]:
    """An Avro map (string keys) whose keys are partitions: ``{"0": 12}`` -> ``{0: 12}``."""
    offsets = reader.int_map(field, default)
    if not all(p.isascii() and p.isdigit() for p in offsets):
        raise SerializationError(f"{reader._name}.{field}: bad partition in {offsets}")
    return {int(p): o for p, o in offsets.items()}


def _same(value: Any) -> Any:
    return value


# Field type -> (encode for the wire, decode with the strict reader).
_Reader = Callable[[FieldReader, str, Any], Any]
_READERS: dict[Any, tuple[Callable[[Any], Any], _Reader]] = {
    str: (_same, lambda r, f, d: r.string(f, d)),
    str | None: (_same, lambda r, f, d: r.opt_string(f)),
    int: (_same, lambda r, f, d: r.integer(f, d)),
    float: (_same, lambda r, f, d: r.number(f, d)),
    float | None: (_same, lambda r, f, d: r.opt_number(f)),
    bool: (_same, lambda r, f, d: r.boolean(f, d)),
    datetime: (to_millis, lambda r, f, d: r.time(f)),
    bytes | None: (_same, lambda r, f, d: r.opt_bytes(f)),
    tuple[str, ...]: (list, lambda r, f, d: r.strings(f, d)),
    tuple[float, ...]: (list, lambda r, f, d: r.numbers(f)),
    Mapping[str, int]: (dict, lambda r, f, d: r.int_map(f, d)),
    Mapping[str, float]: (dict, lambda r, f, d: r.float_map(f, d)),
    # Avro map keys are strings.
    Mapping[int, int]: (lambda m: {str(k): v for k, v in m.items()}, _int_keys),
}


@dataclasses.dataclass(frozen=True, slots=True)
class _CodecField:
    name: str
    encode: Callable[[Any], Any]
    decode: _Reader
    default: Callable[[], Any]  # returns _MISSING for a required field


_CODECS: dict[type[Event], tuple[_CodecField, ...]] = {}


def _codec(cls: type[Event]) -> tuple[_CodecField, ...]:
    """The codec of an event class (built on first use, then cached)."""
    codec = _CODECS.get(cls)
    if codec is None:
        codec = _CODECS[cls] = _build_codec(cls)
    return codec


def _build_codec(cls: type[Event]) -> tuple[_CodecField, ...]:
    """Derive the codec from the dataclass fields and their types."""
    hints = typing.get_type_hints(cls)
    fields = []
    for field in dataclasses.fields(cls):
        try:
            encode, decode = _READERS[hints[field.name]]
        except KeyError:
            where = f"{cls.__name__}.{field.name}"
            raise TypeError(f"{where}: no codec for {hints[field.name]!r}") from None
        default: Callable[[], Any]
        if field.default is not dataclasses.MISSING:
            default = functools.partial(_same, field.default)
        elif field.default_factory is not dataclasses.MISSING:
            default = field.default_factory
        else:
            default = functools.partial(_same, _MISSING)
        fields.append(_CodecField(field.name, encode, decode, default))
    return tuple(fields)
