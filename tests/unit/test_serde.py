"""Avro single-object encoding: round trips, the header, and every way bytes go bad."""

from __future__ import annotations

import dataclasses
import struct
from datetime import UTC, datetime
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mosaic.errors import SerializationError, ValidationError
from streams.events import CycleTick, Event, OptInRequested, PairMatched, SeekerUpdated
from streams.samples import sample_events
from streams.serde import (
    HEADER_SIZE,
    MAGIC,
    AvroSerde,
    SchemaRegistry,
    decode,
    default_serde,
    encode,
    fingerprint,
)

pytestmark = pytest.mark.unit

SAMPLES = sample_events()
E = TypeVar("E", bound=Event)
IDS = [type(e).schema_name for e in SAMPLES]
SERDE = default_serde()
KNOWN_FINGERPRINTS = [entry.fingerprint for entry in SchemaRegistry.default().known()]


def _sample(kind: type[E]) -> E:
    return next(e for e in SAMPLES if isinstance(e, kind))


@pytest.mark.parametrize("event", SAMPLES, ids=IDS)
def test_round_trip(event: Event) -> None:
    data = encode(event)
    assert decode(data) == event
    assert SERDE.decode_as(data, type(event)) == event
    assert SERDE.schema_name(data) == event.schema_name


@pytest.mark.parametrize("event", SAMPLES, ids=IDS)
def test_header_is_marker_plus_fingerprint_of_current_schema(event: Event) -> None:
    data = encode(event)
    current = SchemaRegistry.default().current(event.schema_name)
    assert data[:2] == b"\xc3\x01"
    assert data[2:HEADER_SIZE] == current.fingerprint


def test_fingerprint_matches_avro_spec_vector() -> None:
    # From the Avro test suite: CRC-64-AVRO of "null" is 7195948357588979594.
    assert fingerprint("null") == struct.pack("<q", 7195948357588979594)


def test_round_trip_keeps_defaults_and_empty_collections() -> None:
    tick = CycleTick(event_id="6a0e0c1e-0000-4000-8000-000000000001",
                     occurred_at=datetime(2025, 1, 1, tzinfo=UTC), cycle_id="c",
                     slot_start=datetime(1969, 12, 31, 23, 59, 59, 999000, tzinfo=UTC))
    assert decode(encode(tick)) == tick


# -- bad bytes: each failure class is a SerializationError with a clear message ---------

GOOD = encode(_sample(PairMatched))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (None, "tombstone"),
        (b"", "shorter than the 10-byte header"),
        (MAGIC + b"\x00" * 3, "shorter than the 10-byte header"),
        (b"\x00\x01" + GOOD[2:], "no Avro single-object marker"),
        (b"{\"json\": true}", "no Avro single-object marker"),
        (MAGIC + b"\xde\xad\xbe\xef\x00\x00\x00\x00" + GOOD[10:], "unknown schema fingerprint"),
        (GOOD[:-3], "cannot decode PairMatched"),
        (GOOD[:HEADER_SIZE], "cannot decode PairMatched"),
        (GOOD + b"\x00", "1 trailing bytes"),
    ],
    ids=["none", "empty", "short-header", "no-marker", "json", "unknown-fingerprint",
         "truncated", "header-only", "trailing"],
)
def test_bad_bytes_raise_serialization_error(data: bytes | None, message: str) -> None:
    with pytest.raises(SerializationError, match=message):
        decode(data)


def test_body_of_another_type_under_a_fingerprint_is_rejected() -> None:
    """Wrong types: a CycleTick body labelled as PairMatched."""
    tick = encode(_sample(CycleTick))
    with pytest.raises(SerializationError):
        decode(GOOD[:HEADER_SIZE] + tick[HEADER_SIZE:])


def test_decoded_but_invalid_content_is_a_serialization_error() -> None:
    bad = dataclasses.replace(_sample(OptInRequested))
    record = bad.to_dict() | {"event_id": "not-a-uuid"}
    entry = SchemaRegistry.default().current("OptInRequested")
    from streams.serde import encode_record

    with pytest.raises(SerializationError, match="not a UUID"):
        decode(MAGIC + entry.fingerprint + encode_record(entry, record))


def test_decode_as_rejects_another_event_type() -> None:
    with pytest.raises(SerializationError, match="expected CycleTick, got PairMatched"):
        SERDE.decode_as(GOOD, CycleTick)


def test_non_bytes_input_is_rejected() -> None:
    with pytest.raises(SerializationError, match="expected bytes"):
        SERDE.decode("c301")  # type: ignore[arg-type]


def test_memoryview_and_bytearray_are_accepted() -> None:
    assert decode(bytearray(GOOD)) == decode(memoryview(GOOD)) == _sample(PairMatched)


@pytest.mark.parametrize(
    "change",
    [{"top_chats": "5"}, {"top_chats": 2**40}, {"force_refresh": "yes"}, {"user_id": None}],
    ids=["str-for-int", "int-overflow", "str-for-bool", "none-for-str"],
)
def test_encoding_wrong_types_raises(change: dict[str, Any]) -> None:
    event = dataclasses.replace(_sample(OptInRequested), **change)
    with pytest.raises(SerializationError, match="cannot encode OptInRequested"):
        encode(event)


@pytest.mark.parametrize("bad", [1e39, float("nan"), float("-inf")])
def test_vector_outside_float32_is_rejected_at_construction(bad: float) -> None:
    # Avro floats are 32-bit; fastavro would silently write 1e39 as infinity.
    with pytest.raises(ValidationError, match="vector"):
        dataclasses.replace(_sample(SeekerUpdated), vector=(0.5, bad))


def test_serde_without_schema_for_a_type_fails_fast() -> None:
    registry = SchemaRegistry({})
    with pytest.raises(SerializationError, match="no schema named"):
        AvroSerde(registry)


# -- fuzzing: whatever the bytes, decode returns an event or raises SerializationError --


def _decode_or_serialization_error(data: bytes) -> None:
    try:
        event = decode(data)
    except SerializationError as exc:
        assert str(exc)
    else:
        assert isinstance(event, Event)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=256))
def test_fuzz_random_bytes(data: bytes) -> None:
    _decode_or_serialization_error(data)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(KNOWN_FINGERPRINTS), st.binary(max_size=512))
def test_fuzz_random_body_behind_a_valid_header(digest: bytes, body: bytes) -> None:
    _decode_or_serialization_error(MAGIC + digest + body)


@settings(max_examples=1500, deadline=None)
@given(st.sampled_from([encode(e) for e in SAMPLES]), st.data())
def test_fuzz_mutated_valid_messages(data: bytes, draw: st.DataObject) -> None:
    mutable = bytearray(data)
    for _ in range(draw.draw(st.integers(1, 4))):
        index = draw.draw(st.integers(HEADER_SIZE, len(mutable) - 1))
        mutable[index] = draw.draw(st.integers(0, 255))
    cut = draw.draw(st.integers(HEADER_SIZE, len(mutable)))
    _decode_or_serialization_error(bytes(mutable[:cut]))


def test_encoding_a_non_event_raises() -> None:
    with pytest.raises(SerializationError, match="not an event: dict"):
        encode({"event_id": "x"})  # type: ignore[arg-type]
