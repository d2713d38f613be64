"""Make the broker match the topic catalog: create what is missing, verify the rest.

Partition count and cleanup policy cannot be changed safely behind a running system
(keys would move partitions, a compacted changelog would lose its meaning), so a
difference is an error for a human to resolve, never something ``apply`` "fixes". The
other configs the catalog sets (retention, compaction cadence) are safe to change, and
``apply`` sets them on existing topics whose values differ (action ``updated``).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from confluent_kafka import KafkaError, KafkaException, TopicCollection

# Public names that confluent_kafka.admin imports without re-exporting them for mypy.
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    ResourceType,
)

from mosaic.errors import ConfigError
from streams.kafka import DEFAULT_TIMEOUT_SECONDS, wrap_kafka_error
from streams.topics import Topic

log = logging.getLogger(__name__)


class TopicDriftError(ConfigError):
    """Existing topics differ from the catalog (or are missing when not creating)."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("topics differ from the catalog:\n  " + "\n  ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class TopicState:
    name: str
    action: Literal["created", "verified", "updated"]
    partitions: int
    cleanup_policy: str


def existing_partitions(admin: AdminClient, timeout_seconds: float) -> dict[str, int]:
    """Partition count of every topic on the broker."""
    try:
        metadata = admin.list_topics(timeout=timeout_seconds)
    except KafkaException as exc:
        raise wrap_kafka_error("list topics", exc) from exc
    return {name: len(meta.partitions) for name, meta in metadata.topics.items()
            if meta.error is None}


def topic_id(admin: AdminClient, name: str, timeout_seconds: float) -> str:
    """Kafka's id of topic ``name`` (a topic deleted and created again gets a new one)."""
    future = admin.describe_topics(TopicCollection([name]),
                                   request_timeout=timeout_seconds)[name]
    try:
        return str(future.result(timeout=timeout_seconds).topic_id)
    except KafkaException as exc:
        raise wrap_kafka_error(f"describe topic {name}", exc) from exc


def topic_configs(admin: AdminClient, names: Iterable[str],
                  timeout_seconds: float) -> dict[str, dict[str, str | None]]:
    """Every config value of each topic, as the broker describes it."""
    resources = [ConfigResource(ResourceType.TOPIC, name) for name in names]
    if not resources:
        return {}
    futures = admin.describe_configs(resources, request_timeout=timeout_seconds)
    configs: dict[str, dict[str, str | None]] = {}
    for resource, future in futures.items():
        try:
            entries: dict[str, Any] = future.result(timeout=timeout_seconds)
        except KafkaException as exc:
            raise wrap_kafka_error(f"describe configs of {resource.name}", exc) from exc
        configs[resource.name] = {k: e.value for k, e in entries.items()}
    return configs


def cleanup_policies(admin: AdminClient, names: Iterable[str],
                     timeout_seconds: float) -> dict[str, str]:
    return {name: str(config["cleanup.policy"])
            for name, config in topic_configs(admin, names, timeout_seconds).items()}


def settle_configs(admin: AdminClient, topics: Iterable[Topic],
                   timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS) -> dict[str, list[str]]:
    """Set the catalog's configs that differ on existing ``topics`` (never the cleanup
    policy: see the module docstring); the keys changed per topic."""
    wanted = {t.name: {k: v for k, v in t.config().items() if k != "cleanup.policy"}
              for t in topics}
    current = topic_configs(admin, wanted, timeout_seconds)
    changes = {name: sorted(k for k, v in config.items() if current[name].get(k) != v)
               for name, config in wanted.items()}
    changes = {name: keys for name, keys in changes.items() if keys}
    resources = [ConfigResource(ResourceType.TOPIC, name, incremental_configs=[
        ConfigEntry(k, wanted[name][k], incremental_operation=AlterConfigOpType.SET)
        for k in keys]) for name, keys in changes.items()]
    if resources:
        for resource, future in admin.incremental_alter_configs(
                resources, request_timeout=timeout_seconds).items():
            try:
                future.result(timeout=timeout_seconds)
            except KafkaException as exc:
                raise wrap_kafka_error(f"alter configs of {resource.name}", exc) from exc
            log.info("topic %s: set %s", resource.name, ", ".join(changes[resource.name]))
    return changes


def _create(admin: AdminClient, topics: list[Topic], timeout_seconds: float) -> list[Topic]:
    """Create ``topics``; returns those created by us (others raced us to it)."""
    if not topics:
        return []
    new = [NewTopic(t.name, num_partitions=t.partitions,
                    replication_factor=t.replication_factor, config=t.config())
           for t in topics]
    futures = admin.create_topics(new, operation_timeout=timeout_seconds,
                                  request_timeout=timeout_seconds)
    created: list[Topic] = []
    for topic in topics:
        try:
            futures[topic.name].result(timeout=timeout_seconds)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if isinstance(error, KafkaError) and error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue  # someone else created it: verify it like any existing topic
            raise wrap_kafka_error(f"create topic {topic.name}", exc) from exc
        created.append(topic)
        log.info("created topic %s (%d partitions, %s)", topic.name, topic.partitions,
                 topic.cleanup_policy)
    return created


def _await_visible(admin: AdminClient, names: set[str], timeout_seconds: float) -> None:
    """New topics reach the broker's metadata (and get leaders) a moment after creation;
    wait for that so the verification and any client started next can use them."""
    deadline = time.monotonic() + timeout_seconds
    while not _ready(admin, names, timeout_seconds):
        if time.monotonic() > deadline:
            return  # verify() names what is still missing
        time.sleep(0.1)


def _ready(admin: AdminClient, names: set[str], timeout_seconds: float) -> bool:
    try:
        topics = admin.list_topics(timeout=timeout_seconds).topics
    except KafkaException as exc:
        raise wrap_kafka_error("list topics", exc) from exc
    return all(
        name in topics and topics[name].error is None and topics[name].partitions
        and all(p.leader >= 0 and p.error is None for p in topics[name].partitions.values())
        for name in names
    )


def verify(admin: AdminClient, topics: Iterable[Topic],
           timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS) -> list[TopicState]:
    """Check existing topics against the catalog; raise :class:`TopicDriftError`."""
    wanted = list(topics)
    partitions = existing_partitions(admin, timeout_seconds)
    present = [t for t in wanted if t.name in partitions]
    policies = cleanup_policies(admin, [t.name for t in present], timeout_seconds)
    problems = [f"{t.name}: missing" for t in wanted if t.name not in partitions]
    for topic in present:
        if partitions[topic.name] != topic.partitions:
            problems.append(f"{topic.name}: {partitions[topic.name]} partitions, "
                            f"catalog says {topic.partitions}")
        if policies[topic.name] != topic.cleanup_policy:
            problems.append(f"{topic.name}: cleanup.policy={policies[topic.name]}, "
                            f"catalog says {topic.cleanup_policy}")
    if problems:
        raise TopicDriftError(problems)
    return [TopicState(t.name, "verified", partitions[t.name], policies[t.name])
            for t in present]


def apply(topics: Iterable[Topic], admin: AdminClient,
          timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS) -> list[TopicState]:
    """Create missing topics, then verify all others. Idempotent; safe to run twice
    at once (a creation race ends in verification)."""
    wanted = list(topics)
    partitions = existing_partitions(admin, timeout_seconds)
    created = _create(admin, [t for t in wanted if t.name not in partitions], timeout_seconds)
    _await_visible(admin, {t.name for t in wanted}, timeout_seconds)
    created_names = {t.name for t in created}
    existing = [t for t in wanted if t.name not in created_names]
    states = verify(admin, existing, timeout_seconds)
    updated = settle_configs(admin, existing, timeout_seconds)
    states = [dataclasses.replace(s, action="updated") if s.name in updated else s
              for s in states]
    states += [TopicState(t.name, "created", t.partitions, t.cleanup_policy) for t in created]
    order = {t.name: i for i, t in enumerate(wanted)}
    return sorted(states, key=lambda s: order[s.name])
