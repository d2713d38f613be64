"""Invariants of the topic catalog (no broker)."""

from __future__ import annotations

import pytest

from mosaic.errors import ConfigError
from mosaic.settings import KafkaSettings, Settings
from streams.events import EVENT_TYPES, CycleTick, PairMatched
from streams.samples import sample_events
from streams.topics import SPECS, build_catalog

pytestmark = pytest.mark.unit

CATALOG = build_catalog(Settings())


def test_ticks_has_exactly_one_partition() -> None:
    # The single partition plus transactional.id fencing is the matcher's lock.
    assert CATALOG.ticks.partitions == 1
    assert CATALOG.ticks.spec.event_types == (CycleTick,)


def test_seekers_is_compacted_and_keyed_by_user() -> None:
    assert CATALOG.seekers.cleanup_policy == "compact"
    assert CATALOG.seekers.config()["cleanup.policy"] == "compact"
    assert "retention.ms" not in CATALOG.seekers.config()
    assert CATALOG.seekers.spec.key == "user_id"


def test_optin_layout() -> None:
    assert CATALOG.optin.partitions == 6
    assert CATALOG.optin.spec.key == "user_id"


def test_deadletter_keeps_records_longest() -> None:
    retention = {t.spec.logical: t.spec.retention_ms for t in CATALOG if t.spec.retention_ms > 0}
    assert retention["deadletter"] == max(retention.values())
    assert retention["deadletter"] >= 90 * 24 * 3600 * 1000


def test_every_event_type_has_exactly_one_topic() -> None:
    carried = [t for spec in SPECS for t in spec.event_types]
    assert sorted(t.schema_name for t in carried) == sorted(t.schema_name for t in EVENT_TYPES)


def test_topic_names_use_the_prefix_and_are_unique() -> None:
    catalog = build_catalog(Settings(kafka=KafkaSettings(topic_prefix="t123.")))
    names = [t.name for t in catalog]
    assert len(set(names)) == len(names) == 8
    assert all(name.startswith("t123.") for name in names)
    assert catalog.by_name("t123.ticks") is catalog.ticks
    with pytest.raises(ConfigError):
        catalog.by_name("mosaic.ticks")


def test_events_route_to_their_topic_and_key() -> None:
    for event in sample_events():
        topic = CATALOG.for_event(event)
        assert topic.carries(event)
        assert event.key() is not None
    assert CATALOG.for_event(PairMatched) is CATALOG.pairs


def test_delete_topics_set_retention() -> None:
    for topic in CATALOG:
        if topic.cleanup_policy == "delete":
            assert int(topic.config()["retention.ms"]) == topic.spec.retention_ms > 0
