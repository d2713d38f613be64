"""Events to bytes and back: Avro single-object encoding with schema resolution.

Wire format (Avro spec, "Single object encoding")::

    C3 01 | CRC-64-AVRO fingerprint of the writer schema's canonical form (8 bytes, LE) | body

The fingerprint names the writer schema; the registry knows every current schema and
every committed history version, and decodes old writer versions into the current
reader schema. Anything that cannot become a valid event raises ``SerializationError``.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import operator
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import fastavro
import numpy as np
from fastavro.schema import fingerprint as _fingerprint
from fastavro.schema import to_parsing_canonical_form
from fastavro.validation import validate

from mosaic.errors import MosaicError, SerializationError
from schemas import NAMESPACE, SchemaVersion, load_current, load_history
from streams.events import EVENT_TYPES, Event, to_millis

MAGIC = b"\xc3\x01"
FINGERPRINT_SIZE = 8
HEADER_SIZE = len(MAGIC) + FINGERPRINT_SIZE

E = TypeVar("E", bound=Event)


def fingerprint(schema: Any) -> bytes:
    """CRC-64-AVRO (Rabin) fingerprint of the schema's parsing canonical form, 8 bytes LE."""
    canonical = to_parsing_canonical_form(dict(schema) if isinstance(schema, Mapping) else schema)
    # fastavro returns the hex of the little-endian bytes, as the spec puts them on the wire.
    return bytes.fromhex(_fingerprint(canonical, "CRC-64-AVRO"))


@dataclass(frozen=True)
class RegisteredSchema:
    """One known schema: its short name, history version (0 if uncommitted) and parse."""

    name: str
    version: int
    fingerprint: bytes
    parsed: Any


class SchemaRegistry:
    """Every current (reader) schema by name and every known writer schema by fingerprint."""

    def __init__(
        self,
        current: Mapping[str, Mapping[str, Any]],
        history: Mapping[str, Sequence[SchemaVersion]] | None = None,
    ) -> None:
        self._current: dict[str, RegisteredSchema] = {}
        self._by_fingerprint: dict[bytes, RegisteredSchema] = {}
        for name, schema in current.items():
            entry = self._register(name, 0, schema)
            self._current[name] = entry
        for name, versions in (history or {}).items():
            for version in versions:
                self._register(name, version.version, version.schema)

    @classmethod
    @functools.cache
    def default(cls) -> SchemaRegistry:
        """The registry of the ``schemas`` package (loaded once per process)."""
        return cls(load_current(), load_history())

    def _register(self, name: str, version: int, schema: Mapping[str, Any]) -> RegisteredSchema:
        full_name = f"{NAMESPACE}.{name}"
        try:
            parsed = fastavro.parse_schema(dict(schema))
            digest = fingerprint(schema)
        except Exception as exc:
            raise SerializationError(f"schema {name} v{version} does not parse: {exc}") from exc
        if not isinstance(parsed, dict) or parsed.get("name") != full_name:
            raise SerializationError(f"schema {name} v{version} must be named {full_name}")
        known = self._by_fingerprint.get(digest)
        if known is not None and known.name != name:
            raise SerializationError(f"schemas {known.name} and {name} share a fingerprint")
        entry = RegisteredSchema(name, version, digest, parsed)
        if known is None or (known.version == 0 and version):
            self._by_fingerprint[digest] = entry
        return entry

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._current)

    def current(self, name: str) -> RegisteredSchema:
        try:
            return self._current[name]
        except KeyError:
            raise SerializationError(f"no schema named {name!r}") from None

    def writer(self, digest: bytes) -> RegisteredSchema:
        try:
            return self._by_fingerprint[digest]
        except KeyError:
            raise SerializationError(
                f"unknown schema fingerprint {digest.hex()}: written by a newer or foreign "
                "producer (add its schema to schemas/history)"
            ) from None

    def known(self) -> tuple[RegisteredSchema, ...]:
        """Every registered writer schema (current and history, deduplicated)."""
        return tuple(self._by_fingerprint.values())


class AvroSerde:
    """Encodes events with their current schema; decodes any known version into events."""

    def __init__(
        self,
        registry: SchemaRegistry | None = None,
        event_types: Iterable[type[Event]] = EVENT_TYPES,
        *,
        flat_writers: bool = True,
    ) -> None:
        self.registry = registry or SchemaRegistry.default()
        self._types = {t.schema_name: t for t in event_types}
        for name in self._types:
            self.registry.current(name)  # fail fast on an event without a schema
        # Per event type: its flat writer, or None (fastavro); off = fastavro for all.
        self._writers: dict[type[Event], Callable[[Event], bytes] | None] = {}
        self._flat = flat_writers

    def encode(self, event: Event) -> bytes:
        if not isinstance(event, Event):
            raise SerializationError(f"not an event: {type(event).__name__}")
        kind = type(event)
        if kind not in self._writers:
            self._writers[kind] = self._flat_writer(kind)
        write = self._writers[kind]
        if write is not None:
            try:
                return write(event)
            except _Unfit:
                pass  # a value of another type: fastavro encodes it or says why not
        entry = self.registry.current(event.schema_name)
        try:
            record = event.to_dict()
        except MosaicError as exc:
            raise SerializationError(f"cannot encode {event.schema_name}: {exc}") from exc
        return MAGIC + entry.fingerprint + encode_record(entry, record)

    def values_writer(self, kind: type[Event], names: Sequence[str],
                      fixed: Mapping[str, Any] | None = None
                      ) -> Callable[[Sequence[Any]], bytes]:
        """Encodes a ``kind`` given as the values of ``names`` in that order (``fixed``
        gives the fields every record shares, written once), without building the event:
        the same bytes as :meth:`encode` of ``kind(**fixed, **dict(zip(names, values)))``,
        which is what a value the flat writer does not take goes through (it validates,
        or raises as always)."""
        shared = dict(fixed or {})
        if {*names, *shared} != {field.name for field in dataclasses.fields(kind)}:
            raise SerializationError(f"{kind.schema_name}: {[*names, *shared]} are not "
                                     "its fields")

        def slow(values: Sequence[Any]) -> bytes:
            return self.encode(kind(**shared, **dict(zip(names, values, strict=True))))

        entry = self.registry.current(kind.schema_name)
        parts = _value_parts(entry, list(names), shared) if self._flat else None
        if parts is None:
            return slow

        def write(values: Sequence[Any]) -> bytes:
            try:
                return b"".join([part if put is None else put(values[part])
                                 for part, put in parts])
            except _Unfit:
                return slow(values)

        return write

    def _flat_writer(self, kind: type[Event]) -> Callable[[Event], bytes] | None:
        """The whole single-object encoding of ``kind`` by its flat writer, or None."""
        entry = self.registry.current(kind.schema_name)
        body = flat_writer(entry, kind) if self._flat else None
        if body is None:
            return None
        header = MAGIC + entry.fingerprint
        return lambda event: header + body(event)

    def decode(self, data: bytes | bytearray | memoryview | None) -> Event:
        writer, body = self._split(data)
        reader = self.registry.current(writer.name)
        record = decode_record(writer, reader, body)
        event_type = self._types.get(writer.name)
        if event_type is None:
            raise SerializationError(f"no event type registered for schema {writer.name}")
        try:
            return event_type.from_dict(record)
        except SerializationError:
            raise
        except MosaicError as exc:
            raise SerializationError(f"invalid {writer.name}: {exc}") from exc

    def decode_as(self, data: bytes | bytearray | memoryview | None, expected: type[E]) -> E:
        """Decode and check the event type (e.g. a topic that carries only one type)."""
        event = self.decode(data)
        if not isinstance(event, expected):
            raise SerializationError(
                f"expected {expected.schema_name}, got {type(event).schema_name}"
            )
        return event

    def schema_name(self, data: bytes | bytearray | memoryview | None) -> str:
        """The event type of encoded bytes, from the header alone (no body decoding)."""
        return self._split(data)[0].name

    def _split(
        self, data: bytes | bytearray | memoryview | None
    ) -> tuple[RegisteredSchema, bytes]:
        if data is None:
            raise SerializationError("no value (a tombstone) is not an event")
        if not isinstance(data, bytes | bytearray | memoryview):
            raise SerializationError(f"expected bytes, got {type(data).__name__}")
        raw = bytes(data)
        if len(raw) >= len(MAGIC) and raw[:2] != MAGIC:
            raise SerializationError(
                f"no Avro single-object marker (expected c301, got {raw[:2].hex()})"
            )
        if len(raw) < HEADER_SIZE:
            raise SerializationError(f"{len(raw)} bytes is shorter than the 10-byte header")
        return self.registry.writer(raw[2:HEADER_SIZE]), raw[HEADER_SIZE:]


def encode_record(entry: RegisteredSchema, record: Mapping[str, Any]) -> bytes:
    """The Avro body of ``record`` under ``entry``'s schema (no header)."""
    buffer = io.BytesIO()
    try:
        validate(record, entry.parsed, raise_errors=True, strict=True)
        fastavro.schemaless_writer(buffer, entry.parsed, record)
    # Any failure inside the library is a record that does not fit the schema.
    except Exception as exc:
        raise SerializationError(f"cannot encode {entry.name}: {exc}") from exc
    return buffer.getvalue()


def decode_record(
    writer: RegisteredSchema, reader: RegisteredSchema, body: bytes
) -> dict[str, Any]:
    """Read an Avro body written with ``writer`` into the shape of ``reader``."""
    stream = io.BytesIO(body)
    where = f"{writer.name} v{writer.version or 'current'}"
    reader_schema = None if reader.fingerprint == writer.fingerprint else reader.parsed
    try:
        record = fastavro.schemaless_reader(stream, writer.parsed, reader_schema)
    # Hostile bytes make the library fail in many ways (EOF, struct, unicode, overflow);
    # to a consumer they are all the same: this record is not a valid event.
    except Exception as exc:
        raise SerializationError(f"cannot decode {where}: {type(exc).__name__}: {exc}") from exc
    if stream.tell() != len(body):
        raise SerializationError(f"{where}: {len(body) - stream.tell()} trailing bytes")
    if not isinstance(record, dict):
        raise SerializationError(f"{where}: decoded a {type(record).__name__}, not a record")
    return record


@functools.cache
def default_serde() -> AvroSerde:
    """The process-wide serde over the ``schemas`` package (built on first use)."""
    return AvroSerde()


def encode(event: Event) -> bytes:
    return default_serde().encode(event)


def decode(data: bytes | bytearray | memoryview | None) -> Event:
    return default_serde().decode(data)


# -- a fast reader for flat schemas ---------------------------------------------------------
# fastavro decodes an array of floats one element at a time into a list (about 180 us for
# 384 floats, most of a matcher's start-up). A flat record of the primitive shapes below
# is read here directly, floats as one numpy view. Same results as fastavro for the same
# bytes (tests/unit/test_serde_fast.py), except that two corruptions are refused: a
# negative union branch (fastavro takes -1 as a Python index: the last branch) and a
# varint past 64 bits (fastavro keeps its low 64 bits); other shapes return None and use
# fastavro.

_Reader = Callable[[bytes, int], tuple[Any, int]]


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if result >> 64:
                raise SerializationError("varint does not fit in 64 bits")
            return (result >> 1) ^ -(result & 1), pos
        shift += 7
        if shift > 63:
            raise SerializationError("varint longer than 10 bytes")


def _string(data: bytes, pos: int) -> tuple[str, int]:
    size, pos = _varint(data, pos)
    end = pos + size
    if size < 0:
        raise SerializationError(f"negative string length {size}")
    if end > len(data):
        raise SerializationError("string runs past the end of the record")
    return data[pos:end].decode("utf-8"), end


def _timestamp_ms(data: bytes, pos: int) -> tuple[datetime, int]:
    millis, pos = _varint(data, pos)
    return _EPOCH + timedelta(milliseconds=millis), pos


def _blocks(data: bytes, pos: int, item: _Reader | None) -> tuple[list[Any], int]:
    """An Avro array: blocks of (count, items), a negative count followed by a byte size,
    ended by a zero count. ``item`` None: float32 items, returned as numpy views."""
    out: list[Any] = []
    while True:
        count, pos = _varint(data, pos)
        if count == 0:
            return out, pos
        if count < 0:
            count = -count
            _, pos = _varint(data, pos)  # the block's size in bytes: not needed
        if item is None:
            end = pos + 4 * count
            if end > len(data):
                raise SerializationError("float array runs past the end of the record")
            out.append(np.frombuffer(data, dtype="<f4", count=count, offset=pos))
            pos = end
            continue
        for _ in range(count):
            value, pos = item(data, pos)
            out.append(value)


def _float_array(data: bytes, pos: int) -> tuple[Any, int]:
    blocks, pos = _blocks(data, pos, None)
    if not blocks:
        return np.zeros(0, dtype=np.float32), pos
    return (blocks[0] if len(blocks) == 1 else np.concatenate(blocks)), pos


def _string_array(data: bytes, pos: int) -> tuple[list[str], int]:
    return _blocks(data, pos, _string)


def _optional_string(data: bytes, pos: int) -> tuple[str | None, int]:
    branch, pos = _varint(data, pos)
    if branch == 0:
        return None, pos
    if branch == 1:
        return _string(data, pos)
    raise SerializationError(f"union branch {branch} out of range")


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SHAPES: dict[str, _Reader] = {
    '"string"': _string, '"long"': _varint, '"int"': _varint,
    '{"logicalType": "timestamp-millis", "type": "long"}': _timestamp_ms,
    '{"items": "float", "type": "array"}': _float_array,
    '{"items": "string", "type": "array"}': _string_array,
    '["null", "string"]': _optional_string,
}


def flat_reader(entry: RegisteredSchema) -> Callable[[bytes], dict[str, Any]] | None:
    """A reader of ``entry``'s bodies when every field has a shape above, else None.
    Float arrays come back as read-only float32 numpy arrays (not lists)."""
    fields: list[tuple[str, _Reader]] = []
    for field in entry.parsed.get("fields", ()):
        reader = _SHAPES.get(json.dumps(field["type"], sort_keys=True))
        if reader is None:
            return None
        fields.append((field["name"], reader))

    def read(body: bytes) -> dict[str, Any]:
        record: dict[str, Any] = {}
        pos = 0
        try:
            for name, reader in fields:
                record[name], pos = reader(body, pos)
        except (IndexError, UnicodeDecodeError, OverflowError) as exc:
            raise SerializationError(f"cannot decode {entry.name}: {exc}") from exc
        if pos != len(body):
            raise SerializationError(f"{entry.name}: {len(body) - pos} trailing bytes")
        return record

    return read


# -- a fast writer for flat schemas ---------------------------------------------------------
# fastavro's validate + write cost about 30 us per matcher event (1.5M events at 1M
# seekers). An event whose schema has only the shapes below is written here straight from
# its attributes, byte for byte as fastavro writes ``to_dict()`` (tests/unit/
# test_serde_writer.py). A value of any other Python type raises _Unfit, and the event
# goes through fastavro, which encodes it or raises the SerializationError it always did.


class _Unfit(Exception):
    """A value the flat writer does not take as it is."""


_ONE_BYTE = tuple(bytes((i,)) for i in range(0x80))
_DOUBLE = struct.Struct("<d").pack
_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1


def _zigzag(n: int) -> bytes:
    n = (n << 1) ^ (n >> 63)
    if n < 0x80:
        return _ONE_BYTE[n]
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _put_long(value: Any) -> bytes:
    if type(value) is not int or not _LONG_MIN <= value <= _LONG_MAX:
        raise _Unfit
    return _zigzag(value)


def _put_int(value: Any) -> bytes:
    if type(value) is not int or not _INT_MIN <= value <= _INT_MAX:
        raise _Unfit
    return _zigzag(value)


def _put_string(value: Any) -> bytes:
    if type(value) is not str:
        raise _Unfit
    try:
        data = value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate
        raise _Unfit from None
    size = len(data)
    return (_ONE_BYTE[size << 1] if size < 64 else _zigzag(size)) + data


def _put_optional_string(value: Any) -> bytes:
    return b"\x00" if value is None else b"\x02" + _put_string(value)


def _put_timestamp_ms(value: Any) -> bytes:
    if type(value) is not datetime or value.tzinfo is None:
        raise _Unfit
    return _millis(value)


@functools.lru_cache(maxsize=256)  # a cycle's events share their times; to_millis is slow
def _millis(value: datetime) -> bytes:
    return _put_long(to_millis(value))  # what to_dict() hands fastavro


def _put_double(value: Any) -> bytes:
    if type(value) is not float:
        raise _Unfit
    return _DOUBLE(value)


def _put_boolean(value: Any) -> bytes:
    if type(value) is not bool:
        raise _Unfit
    return _ONE_BYTE[value]


def _put_strings(value: Any) -> bytes:
    if type(value) not in (tuple, list):
        raise _Unfit
    if not value:
        return b"\x00"
    return b"".join([_zigzag(len(value)), *map(_put_string, value), b"\x00"])


def _put_floats(value: Any) -> bytes:
    if type(value) not in (tuple, list) or not all(type(x) is float for x in value):
        raise _Unfit
    if not value:
        return b"\x00"
    wide = np.array(value, dtype=np.float64)
    with np.errstate(over="ignore"):
        narrow = wide.astype("<f4")  # the C cast fastavro makes, value by value
    if (np.isinf(narrow) & ~np.isinf(wide)).any():
        raise _Unfit  # too large for float32: fastavro decides
    return _zigzag(len(value)) + narrow.tobytes() + b"\x00"


_PUT: dict[str, Callable[[Any], bytes]] = {
    '"string"': _put_string, '"long"': _put_long, '"int"': _put_int,
    '"double"': _put_double, '"boolean"': _put_boolean,
    '{"logicalType": "timestamp-millis", "type": "long"}': _put_timestamp_ms,
    '{"items": "float", "type": "array"}': _put_floats,
    '{"items": "string", "type": "array"}': _put_strings,
    '["null", "string"]': _put_optional_string,
}


def flat_writer(entry: RegisteredSchema, event_type: type[Event]
                ) -> Callable[[Event], bytes] | None:
    """A writer of ``event_type``'s Avro bodies under ``entry`` (the current schema) when
    every field has a shape above and the schema's fields are the event's (it reads them
    by name), else None: fastavro then fills defaults or says what does not fit. The
    writer raises _Unfit for a value of a Python type it does not take."""
    fields = entry.parsed.get("fields", ())
    names = [field["name"] for field in fields]
    if set(names) != {field.name for field in dataclasses.fields(event_type)}:
        return None
    values = flat_values_writer(entry)
    if values is None:
        return None
    get = operator.attrgetter(*names)
    return lambda event: values(get(event))


def _value_parts(entry: RegisteredSchema, names: list[str], shared: Mapping[str, Any]
                 ) -> list[tuple[Any, Callable[[Any], bytes] | None]] | None:
    """The single-object encoding of ``entry`` as parts: (bytes, None) for the header and
    each ``shared`` field, written once; (index into the values, put) for the others. None
    when a field has no flat shape, is missing, or a shared value does not fit."""
    fields = entry.parsed.get("fields", ())
    if {field["name"] for field in fields} != {*names, *shared}:
        return None  # fastavro fills defaults or says what does not fit
    parts: list[tuple[Any, Callable[[Any], bytes] | None]] = [(MAGIC + entry.fingerprint, None)]
    for field in fields:
        put = _PUT.get(json.dumps(field["type"], sort_keys=True))
        if put is None:
            return None
        try:
            if field["name"] not in shared:
                parts.append((names.index(field["name"]), put))
            elif parts[-1][1] is None:  # next to other bytes written once: one part
                parts[-1] = (parts[-1][0] + put(shared[field["name"]]), None)
            else:
                parts.append((put(shared[field["name"]]), None))
        except _Unfit:  # a shared value of another type
            return None
    return parts


def flat_values_writer(entry: RegisteredSchema) -> Callable[[Sequence[Any]], bytes] | None:
    """A writer of ``entry``'s bodies from the field values in the schema's order when
    every field has a shape above (and there are at least two), else None. It raises
    _Unfit for a value of a Python type it does not take."""
    puts = [_PUT.get(json.dumps(field["type"], sort_keys=True))
            for field in entry.parsed.get("fields", ())]
    if any(put is None for put in puts) or len(puts) < 2:
        return None
    shapes = tuple(put for put in puts if put is not None)

    def write(values: Sequence[Any]) -> bytes:
        return b"".join([put(value) for put, value in zip(shapes, values, strict=True)])

    return write
