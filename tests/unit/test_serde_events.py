"""The event dataclasses: ids, pair keys, validation, and strict from_dict."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any, TypeVar

import pytest

from mosaic.errors import SerializationError, ValidationError
from streams.events import (
    EVENT_TYPES,
    CycleCompleted,
    DeadLettered,
    Event,
    OptInRequested,
    PairMatched,
    RoomCreated,
    derive_event_id,
    from_millis,
    new_event_id,
    pair_key,
    split_pair_key,
    to_millis,
)
from streams.samples import USER_A, USER_B, sample_events

pytestmark = pytest.mark.unit

SAMPLES = sample_events()
E = TypeVar("E", bound=Event)


def _sample(kind: type[E]) -> E:
    return next(e for e in SAMPLES if isinstance(e, kind))


def test_samples_cover_every_event_type_once() -> None:
    assert [type(e) for e in SAMPLES] == list(EVENT_TYPES)


@pytest.mark.parametrize("event", SAMPLES, ids=lambda e: type(e).schema_name)
def test_dict_round_trip(event: Event) -> None:
    assert type(event).from_dict(event.to_dict()) == event


@pytest.mark.parametrize("event", SAMPLES, ids=lambda e: type(e).schema_name)
def test_events_are_frozen(event: Event) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.event_id = "x"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [("u2", "u1", "u1|u2"), ("u1", "u2", "u1|u2"), (USER_B, USER_A, f"{USER_A}|{USER_B}")],
)
def test_pair_key_is_sorted_and_joined_with_bar(a: str, b: str, expected: str) -> None:
    assert pair_key(a, b) == expected
    assert split_pair_key(expected) == tuple(sorted((a, b)))


@pytest.mark.parametrize(("a", "b"), [("u1", "u1"), ("", "u2"), ("u|1", "u2")])
def test_pair_key_rejects_ambiguous_ids(a: str, b: str) -> None:
    with pytest.raises(ValidationError):
        pair_key(a, b)


@pytest.mark.parametrize("key", ["u1", "u2|u1", "a|b|c", "|u1"])
def test_split_pair_key_rejects_non_canonical(key: str) -> None:
    with pytest.raises(ValidationError):
        split_pair_key(key)


@pytest.mark.parametrize("kind", [PairMatched, RoomCreated])
def test_pair_events_require_consistent_users(kind: type[Event]) -> None:
    event = _sample(kind)
    with pytest.raises(ValidationError, match="does not match"):
        dataclasses.replace(event, user_a=USER_B, user_b=USER_A)  # type: ignore[type-var]


def test_derived_ids_are_stable_uuids() -> None:
    first = derive_event_id("PairMatched", "c1", "a|b")
    assert first == derive_event_id("PairMatched", "c1", "a|b")
    assert first != derive_event_id("PairMatched", "c1", "a|c")
    assert len(new_event_id()) == 36


def test_naive_datetimes_and_bad_event_ids_are_rejected() -> None:
    event = _sample(OptInRequested)
    with pytest.raises(ValidationError, match="naive"):
        dataclasses.replace(event, occurred_at=datetime(2025, 1, 1))
    with pytest.raises(ValidationError, match="not a UUID"):
        dataclasses.replace(event, event_id="42")


def test_millis_conversion() -> None:
    at = datetime(2025, 1, 1, 0, 0, 0, 5000, tzinfo=UTC)
    assert to_millis(at) == 1735689600005
    assert from_millis(1735689600005) == at
    assert to_millis(from_millis(-1)) == -1
    with pytest.raises(SerializationError, match="out of range"):
        from_millis(2**62)


def test_snapshot_offsets_keep_int_partitions() -> None:
    event = _sample(CycleCompleted)
    assert isinstance(event, CycleCompleted)
    assert event.to_dict()["snapshot_offsets"] == {"0": 12, "5": 3}
    assert CycleCompleted.from_dict(event.to_dict()).snapshot_offsets == {0: 12, 5: 3}
    bad = event.to_dict() | {"snapshot_offsets": {"p0": 1}}
    with pytest.raises(SerializationError, match="bad partition"):
        CycleCompleted.from_dict(bad)


def test_dead_letter_key_is_the_source_key() -> None:
    assert _sample(DeadLettered).key() == b"k"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"top_chats": True}, "top_chats: expected int, got bool"),
        ({"user_id": 7}, "user_id: expected string, got int"),
        ({"occurred_at": "2025-01-01"}, "occurred_at: expected epoch milliseconds"),
        ({"occurred_at": datetime(2025, 1, 1)}, "aware datetime"),
        ({"force_refresh": 1}, "force_refresh: expected bool"),
    ],
)
def test_from_dict_rejects_wrong_types(change: dict[str, Any], message: str) -> None:
    with pytest.raises(SerializationError, match=message):
        OptInRequested.from_dict(_sample(OptInRequested).to_dict() | change)


def test_from_dict_rejects_missing_required_and_fills_defaults() -> None:
    data = _sample(OptInRequested).to_dict()
    with pytest.raises(SerializationError, match="request_id: missing"):
        OptInRequested.from_dict({k: v for k, v in data.items() if k != "request_id"})
    trimmed = {k: v for k, v in data.items() if k not in ("pool", "top_chats")}
    event = OptInRequested.from_dict(trimmed)
    assert (event.pool, event.top_chats) == ("default", 5)


def test_from_dict_rejects_non_mappings() -> None:
    with pytest.raises(SerializationError, match="expected a mapping"):
        OptInRequested.from_dict(["not", "a", "dict"])  # type: ignore[arg-type]
