"""The flat writer (streams.serde.flat_writer) writes exactly what fastavro writes: the
same bytes for random events of every schema it takes (unicode, nulls, large and negative
numbers, NaN, every field of the current schema), and the same outcome (bytes or a
SerializationError) for values of the wrong type. A schema change the writer does not
follow fails here, loudly."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import load_current
from streams.events import (
    EVENT_TYPES,
    Event,
    PairMatched,
    SeekerRemoved,
    SeekerUnmatched,
    SeekerUpdated,
)
from streams.serde import MAGIC, AvroSerde, RegisteredSchema, SchemaRegistry, flat_writer

pytestmark = pytest.mark.unit

FLAT = AvroSerde()
FASTAVRO = AvroSerde(flat_writers=False)
REGISTRY = FLAT.registry
# What the matcher publishes per user and per pair each cycle (1.5M records at 1M seekers).
PER_CYCLE = (PairMatched, SeekerUnmatched, SeekerRemoved, SeekerUpdated)

texts = st.text(max_size=24) | st.sampled_from(["", "é", "日本語", "🙂 emoji", "a|b", "\x00"])
times = st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1),
                     timezones=st.sampled_from([UTC, timezone(timedelta(hours=-5, minutes=-30))]))
# The strategy of each schema shape the writer takes; a new shape must be added here too.
SHAPES: dict[str, st.SearchStrategy[Any]] = {
    '"string"': texts,
    '"long"': st.integers(-2**63, 2**63 - 1) | st.sampled_from([0, -1, 63, 64, -65]),
    '"int"': st.integers(-2**31, 2**31 - 1),
    '"double"': st.floats(),  # NaN and infinities included
    '"boolean"': st.booleans(),
    '{"logicalType": "timestamp-millis", "type": "long"}': times,
    '{"items": "float", "type": "array"}': st.lists(
        st.floats(width=32, allow_nan=False), max_size=70).map(tuple),
    '{"items": "string", "type": "array"}': st.lists(texts, max_size=70).map(tuple),
    '["null", "string"]': st.none() | texts,
}


def shape(field: dict[str, Any]) -> str:
    return json.dumps(field["type"], sort_keys=True)


def entry(kind: type[Event]) -> RegisteredSchema:
    return REGISTRY.current(kind.schema_name)


def flat_kinds() -> list[type[Event]]:
    return [k for k in EVENT_TYPES if flat_writer(entry(k), k) is not None]


def raw(kind: type[Event], values: dict[str, Any]) -> Event:
    """An event with exactly these attribute values, past its constructor's checks (so
    wrong types and NaN vectors reach the encoders too)."""
    event = object.__new__(kind)
    for name, value in values.items():
        object.__setattr__(event, name, value)
    return event


def events(kind: type[Event]) -> st.SearchStrategy[Event]:
    """Random events of ``kind``: one value per field of its current schema."""
    fields = {f["name"]: SHAPES[shape(f)] for f in entry(kind).parsed["fields"]}
    return st.fixed_dictionaries(fields).map(lambda values: raw(kind, values))


def outcome(serde: AvroSerde, event: Event) -> bytes | str:
    """The bytes, or the kind of error (a wrong type can raise more than
    SerializationError, e.g. AttributeError for an int where a datetime belongs)."""
    try:
        return serde.encode(event)
    except Exception as exc:  # noqa: BLE001 - the kind of error is what is compared
        return type(exc).__name__


def without_flat_writer(registry: SchemaRegistry) -> list[str]:
    return [k.schema_name for k in PER_CYCLE
            if flat_writer(registry.current(k.schema_name), k) is None]


def test_every_event_the_matcher_publishes_per_cycle_has_a_flat_writer() -> None:
    """The guard: a schema change to these events that the writer does not follow would
    silently send 1.5M records per cycle through fastavro again."""
    missing = without_flat_writer(REGISTRY)
    assert not missing, (f"{missing}: a field the event lacks, or a shape streams.serde._PUT "
                         "does not write (add it there and to SHAPES here)")


def test_the_writer_knows_every_field_of_the_current_schemas() -> None:
    for kind in flat_kinds():
        fields = entry(kind).parsed["fields"]
        assert [shape(f) for f in fields if shape(f) not in SHAPES] == [], kind
        assert {f["name"] for f in fields} == {f.name for f in dataclasses.fields(kind)}


def test_schema_changes_the_writer_does_not_follow_trip_the_guard() -> None:
    schemas = load_current()
    added = {**schemas["PairMatched"], "fields": [
        *schemas["PairMatched"]["fields"], {"name": "added", "type": "string", "default": ""}]}
    new_shape = {**schemas["SeekerRemoved"], "fields": [
        {"name": "version", "type": {"type": "map", "values": "long"}, "default": {}}
        if f["name"] == "version" else f for f in schemas["SeekerRemoved"]["fields"]]}
    registry = SchemaRegistry({**schemas, "PairMatched": added, "SeekerRemoved": new_shape})
    assert without_flat_writer(registry) == ["PairMatched", "SeekerRemoved"]
    assert without_flat_writer(SchemaRegistry(schemas)) == []


@pytest.mark.parametrize("kind", flat_kinds(), ids=lambda k: k.schema_name)
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_the_flat_writer_writes_what_fastavro_writes(kind: type[Event], data: st.DataObject
                                                      ) -> None:
    event = data.draw(events(kind))
    write = flat_writer(entry(kind), kind)
    assert write is not None
    # The writer itself, not a fallback, wrote it.
    assert MAGIC + entry(kind).fingerprint + write(event) == FASTAVRO.encode(event)


def test_it_writes_the_nan_and_huge_floats_fastavro_writes() -> None:
    base = {"event_id": "e", "occurred_at": datetime(2026, 1, 1, tzinfo=UTC), "user_id": "u",
            "opted_in_at": datetime(1969, 12, 31, 23, 59, 59, 999500, tzinfo=UTC),
            "model": "m", "traits_hash": "h", "pool": "p", "missed_cycles": 0,
            "status": "waiting", "blocked_user_ids": (), "recent_partner_ids": (),
            "version": 0, "cycle_id": None}
    for vector in [(float("nan"), -float("nan"), float("inf")), (3.4028235e38, -1e-46),
                   (3.5e38,), (-1e39, 0.0), ()]:
        event = raw(SeekerUpdated, {**base, "vector": vector})
        assert outcome(FLAT, event) == outcome(FASTAVRO, event), vector


EXAMPLES: dict[str, Any] = {
    '"string"': "ü", '"long"': -2**40, '"int"': 7, '"double"': 0.25, '"boolean"': True,
    '{"logicalType": "timestamp-millis", "type": "long"}': datetime(2026, 1, 1, tzinfo=UTC),
    '{"items": "float", "type": "array"}': (0.5, -1.0),
    '{"items": "string", "type": "array"}': ("a", "b"), '["null", "string"]': "c"}
class _Str(str):
    pass


WRONG = [1, 1.0, True, "1", None, b"x", [], ("a",), [0.5], 2**63, -2**63 - 1, 2**31,
         "\ud800", datetime(2026, 1, 1), float("nan"), 1.5e39, np.float64(0.5), _Str("s"),
         (1, 2.0), ("a", 1)]



@pytest.mark.parametrize("kind", flat_kinds(), ids=lambda k: k.schema_name)
def test_a_value_of_the_wrong_type_gives_what_fastavro_gives(kind: type[Event]) -> None:
    """Bytes or a SerializationError, as before: the writer takes only the exact types it
    knows and leaves everything else to fastavro."""
    values = {f["name"]: EXAMPLES[shape(f)] for f in entry(kind).parsed["fields"]}
    for name in values:
        for wrong in WRONG:
            event = raw(kind, {**values, name: wrong})
            assert outcome(FLAT, event) == outcome(FASTAVRO, event), (name, wrong)


def test_events_built_the_ordinary_way_decode_back() -> None:
    event = SeekerUpdated(
        event_id="6f1c3d0e-8a7b-5c4d-9e2f-0a1b2c3d4e5f", occurred_at=datetime.now(UTC),
        user_id="ü", opted_in_at=datetime(2026, 1, 1, tzinfo=UTC), vector=(0.5, -2.0),
        model="m", traits_hash="h", blocked_user_ids=("x", "y"), cycle_id="c", version=2**62)
    data = FLAT.encode(event)
    assert data == FASTAVRO.encode(event)
    decoded = FLAT.decode(data)
    assert decoded == dataclasses.replace(event, occurred_at=decoded.occurred_at)
