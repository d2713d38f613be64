"""``topics apply`` against the real broker: creates, then verifies idempotently, and
reports drift clearly. Each test uses its own topic prefix."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]

from app.cli import main
from mosaic.settings import Settings
from stack.base import Service
from streams.admin import TopicDriftError, apply, cleanup_policies, topic_configs, verify
from streams.kafka import make_admin
from streams.topics import TopicCatalog, build_catalog

pytestmark = pytest.mark.integration


@pytest.fixture
def isolated(settings: Settings, kafka_stack: Service, unique: str) -> Iterator[Settings]:
    """Settings whose topics are ``t<unique>.*``; the topics are deleted afterwards."""
    kafka = settings.kafka.model_copy(update={"topic_prefix": f"t{unique}."})
    own = settings.model_copy(update={"kafka": kafka})
    yield own
    admin = make_admin(own)  # keep a reference: a destroyed client cancels the request
    futures = admin.delete_topics([t.name for t in build_catalog(own)], operation_timeout=30)
    for future in futures.values():
        with contextlib.suppress(KafkaException):  # a test may not have created it
            future.result(timeout=30)


def _catalog(settings: Settings) -> TopicCatalog:
    return build_catalog(settings)


def test_apply_creates_then_verifies(isolated: Settings) -> None:
    admin = make_admin(isolated)
    catalog = _catalog(isolated)

    first = apply(catalog, admin)
    assert [s.action for s in first] == ["created"] * 8
    assert [s.name for s in first] == [t.name for t in catalog]

    second = apply(catalog, admin)
    assert [s.action for s in second] == ["verified"] * 8
    by_name = {s.name: s for s in second}
    assert by_name[catalog.ticks.name].partitions == 1
    assert by_name[catalog.optin.name].partitions == 6
    assert by_name[catalog.seekers.name].cleanup_policy == "compact"
    assert cleanup_policies(admin, [catalog.pairs.name], 10) == {catalog.pairs.name: "delete"}
    assert len(verify(admin, catalog)) == 8


def test_verify_reports_missing_topics(isolated: Settings) -> None:
    with pytest.raises(TopicDriftError, match="ticks: missing"):
        verify(make_admin(isolated), _catalog(isolated))


def test_drift_in_partitions_and_cleanup_policy_is_an_error(isolated: Settings) -> None:
    admin = make_admin(isolated)
    catalog = _catalog(isolated)
    wrong = [NewTopic(catalog.ticks.name, num_partitions=2, replication_factor=1),
             NewTopic(catalog.seekers.name, num_partitions=6, replication_factor=1,
                      config={"cleanup.policy": "delete"})]
    for future in admin.create_topics(wrong).values():
        future.result(timeout=30)

    with pytest.raises(TopicDriftError) as info:
        apply(catalog, admin)
    assert any("ticks: 2 partitions, catalog says 1" in p for p in info.value.problems)
    assert any("seekers: cleanup.policy=delete, catalog says compact" in p
               for p in info.value.problems)
    assert len(info.value.problems) == 2  # the other six were created and are fine


def test_cli_apply_and_check(isolated: Settings, monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MOSAIC_KAFKA__TOPIC_PREFIX", isolated.kafka.topic_prefix)
    monkeypatch.setenv("MOSAIC_KAFKA__BOOTSTRAP_SERVERS", isolated.kafka.bootstrap_servers)
    assert main(["topics", "apply", "--check"]) == 1  # nothing exists yet
    assert "missing" in capsys.readouterr().err
    assert main(["topics", "apply"]) == 0
    assert capsys.readouterr().out.count("created") == 8
    assert main(["topics", "apply", "--check"]) == 0
    assert capsys.readouterr().out.count("verified") == 8


def test_apply_brings_an_older_topics_compaction_settings_to_the_catalogs(
        isolated: Settings) -> None:
    """A seekers topic created before the catalog set segment.ms and max.compaction.lag.ms
    (a week of history left uncompacted) gets them from apply; the rest stay verified."""
    admin = make_admin(isolated)
    catalog = _catalog(isolated)
    seekers = catalog.seekers
    older = {k: v for k, v in seekers.config().items()
             if k not in ("segment.ms", "max.compaction.lag.ms")}
    for future in admin.create_topics([NewTopic(seekers.name, num_partitions=6,
                                                replication_factor=1,
                                                config=older)]).values():
        future.result(timeout=30)
    states = {s.name: s.action for s in apply(catalog, admin)}
    assert states[seekers.name] == "updated"
    assert sorted(states.values()).count("created") == 7
    wanted = (str(3600 * 1000), str(6 * 3600 * 1000))
    deadline = time.monotonic() + 15  # the controller applies the change asynchronously
    while True:
        config = topic_configs(admin, [seekers.name], 10)[seekers.name]
        seen = (config["segment.ms"], config["max.compaction.lag.ms"])
        if seen == wanted:
            break
        assert time.monotonic() < deadline, f"{seekers.name}: still {seen} after 15 s"
        time.sleep(0.2)
    assert {s.action for s in apply(catalog, admin)} == {"verified"}
