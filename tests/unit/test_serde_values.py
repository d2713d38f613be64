"""Encoding a cycle's per-user events without building them: derived event ids equal
uuid5's (ids are part of the idempotency contract), also with a prefix hashed once;
event-id checks accept and refuse what they did; ``AvroSerde.values_writer`` writes the
bytes ``encode`` writes for the event those values make (through fastavro too), with the
same outcome for values of the wrong type."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mosaic.errors import SerializationError, ValidationError
from streams.events import SeekerRemoved, derive_event_id, event_ids
from streams.serde import AvroSerde

pytestmark = pytest.mark.unit

FLAT = AvroSerde()
FASTAVRO = AvroSerde(flat_writers=False)
NAMESPACE = uuid.UUID("6f1c3d0e-8a7b-5c4d-9e2f-0a1b2c3d4e5f")  # streams.events.base
VARYING = ("event_id", "user_id", "version")
texts = st.text(max_size=40) | st.sampled_from(["", "é", "日本語", "🙂", "a|b", "\x1f", "\x00"])
times = st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1),
                     timezones=st.sampled_from([UTC, timezone(timedelta(hours=5))]))


@settings(max_examples=400, deadline=None)
@given(st.lists(texts, min_size=0, max_size=4))
def test_derived_ids_are_uuid5_of_the_joined_parts(parts: list[str]) -> None:
    try:
        expected = str(uuid.uuid5(NAMESPACE, "\x1f".join(parts)))
    except UnicodeEncodeError:  # a lone surrogate: both refuse it
        with pytest.raises(UnicodeEncodeError):
            derive_event_id(*parts)
        return
    assert derive_event_id(*parts) == expected


@settings(max_examples=300, deadline=None)
@given(st.lists(texts, min_size=0, max_size=3), texts)
def test_ids_with_a_shared_prefix_are_the_derived_ids(prefix: list[str], last: str) -> None:
    assert event_ids(*prefix)(last) == derive_event_id(*prefix, last)


@pytest.mark.parametrize("event_id", [
    "6F1C3D0E-8A7B-5C4D-9E2F-0A1B2C3D4E5F", "{6f1c3d0e-8a7b-5c4d-9e2f-0a1b2c3d4e5f}",
    "urn:uuid:6f1c3d0e-8a7b-5c4d-9e2f-0a1b2c3d4e5f", "6f1c3d0e8a7b5c4d9e2f0a1b2c3d4e5f"])
def test_every_spelling_uuid_accepts_is_still_an_event_id(event_id: str) -> None:
    removed = SeekerRemoved(event_id=event_id, occurred_at=datetime.now(UTC), user_id="u",
                            reason="r")
    assert removed.event_id == event_id


@pytest.mark.parametrize("event_id", ["", "not-a-uuid", "6f1c3d0e-8a7b-5c4d-9e2f-0a1b2c3d4e5",
                                      "6f1c3d0e-8a7b-5c4d-9e2f-0a1b2c3d4e5f\n"])
def test_what_is_not_a_uuid_is_still_refused(event_id: str) -> None:
    with pytest.raises(ValidationError, match="not a UUID"):
        SeekerRemoved(event_id=event_id, occurred_at=datetime.now(UTC), user_id="u",
                      reason="r")


def _outcome(encode: Any, *args: Any) -> bytes | str:
    try:
        return bytes(encode(*args))
    except (SerializationError, ValidationError) as exc:
        return type(exc).__name__


@settings(max_examples=300, deadline=None)
@given(at=times, user=texts, pool=texts, reason=texts, cycle=st.none() | texts,
       version=st.integers(-2**63, 2**63 - 1) | st.sampled_from([0, 63, 64, -65]))
def test_values_write_what_the_event_encodes_to(at: datetime, user: str, pool: str,
                                                reason: str, cycle: str | None,
                                                version: int) -> None:
    shared = {"occurred_at": at, "pool": pool, "reason": reason, "cycle_id": cycle}
    values = (derive_event_id("SeekerRemoved", user), user, version)
    event = SeekerRemoved(**shared, event_id=values[0], user_id=user, version=version)
    expected = FASTAVRO.encode(event)
    assert FLAT.values_writer(SeekerRemoved, VARYING, shared)(values) == expected
    assert FASTAVRO.values_writer(SeekerRemoved, VARYING, shared)(values) == expected


class Text(str):
    """A str subclass: the flat writer leaves it to fastavro."""


@pytest.mark.parametrize(("shared", "values"), [
    ({}, ("user", 2**63)),  # out of range: fastavro says so
    ({}, ("user", True)),  # a bool where a long belongs
    ({}, (Text("user"), 1)),
    ({}, ("\ud800", 1)),  # a lone surrogate
    ({"reason": Text("matched")}, ("user", 1)),  # a shared value of another type
    ({"cycle_id": 7}, ("user", 1)),
])
def test_values_of_another_type_give_what_the_event_gives(shared: dict[str, Any],
                                                          values: tuple[Any, ...]) -> None:
    fields = {"occurred_at": datetime(2026, 1, 1, tzinfo=UTC), "pool": "p",
              "reason": "matched", "cycle_id": "c", **shared}
    row = (derive_event_id("x"), *values)
    expected = _outcome(lambda: FASTAVRO.encode(SeekerRemoved(
        **fields, **dict(zip(VARYING, row, strict=True)))))
    assert _outcome(FLAT.values_writer(SeekerRemoved, VARYING, fields), row) == expected


def test_fields_that_are_not_the_events_are_refused_at_once() -> None:
    with pytest.raises(SerializationError, match="are not its fields"):
        FLAT.values_writer(SeekerRemoved, ("event_id", "user_id"), {"pool": "p"})
