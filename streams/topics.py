"""The topic catalog as data: every topic, its layout, and the events it carries.

Names are ``settings.kafka.topic_prefix + logical name`` (``mosaic.optin`` by default),
so tests and parallel environments can use a prefix of their own.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from mosaic.errors import ConfigError
from mosaic.settings import Settings
from streams.events import (
    BlockRequested,
    CycleCompleted,
    CycleTick,
    DeadLettered,
    Event,
    OptInRequested,
    OptOutRequested,
    PairMatched,
    RoomCreated,
    SeekerRemoved,
    SeekerUnmatched,
    SeekerUpdated,
    UserNotified,
)

CleanupPolicy = Literal["delete", "compact"]

_DAY_MS = 24 * 3600 * 1000
_HOUR_MS = 3600 * 1000


@dataclass(frozen=True)
class TopicSpec:
    """One topic, independent of any environment (no prefix)."""

    logical: str
    partitions: int
    cleanup_policy: CleanupPolicy
    retention_ms: int  # -1 keeps forever; compacted topics keep the latest per key
    key: str  # which event field is the message key (documentation and tests)
    event_types: tuple[type[Event], ...]
    description: str


@dataclass(frozen=True)
class Topic:
    """A spec resolved for one environment: the real name and replication factor."""

    name: str
    spec: TopicSpec
    replication_factor: int
    min_insync_replicas: int = 1

    @property
    def partitions(self) -> int:
        return self.spec.partitions

    @property
    def cleanup_policy(self) -> CleanupPolicy:
        return self.spec.cleanup_policy

    def config(self) -> dict[str, str]:
        """Topic-level configs set on creation."""
        # Always explicit: acks=all waits for this many replicas (2 of 3 on a cluster, so
        # one broker may die without losing an acknowledged write).
        config: dict[str, str] = {"cleanup.policy": self.spec.cleanup_policy,
                                  "min.insync.replicas": str(self.min_insync_replicas)}
        if self.spec.cleanup_policy == "delete":
            config["retention.ms"] = str(self.spec.retention_ms)
        else:
            # Lets the matcher's snapshot see a complete, recent changelog quickly.
            config["min.cleanable.dirty.ratio"] = "0.1"
            config["delete.retention.ms"] = str(_DAY_MS)
            # The active segment is never compacted: roll it hourly (not weekly, Kafka's
            # default) and compact any record within 6 h, so a restart reads about one
            # record per user rather than a week of history.
            config["segment.ms"] = str(_HOUR_MS)
            config["max.compaction.lag.ms"] = str(6 * _HOUR_MS)
        return config

    def carries(self, event: Event | type[Event]) -> bool:
        event_type = event if isinstance(event, type) else type(event)
        return event_type in self.spec.event_types


SPECS: tuple[TopicSpec, ...] = (
    TopicSpec("optin", 6, "delete", 7 * _DAY_MS, "user_id",
              (OptInRequested, OptOutRequested, BlockRequested),
              "user requests from the ingress"),
    TopicSpec("seekers", 6, "compact", -1, "user_id", (SeekerUpdated, SeekerRemoved),
              "the waiting pool as a changelog, latest state per user"),
    # One partition: a total order of ticks plus transactional.id fencing is the lock.
    TopicSpec("ticks", 1, "delete", 7 * _DAY_MS, "pool", (CycleTick,),
              "when to run a matching cycle"),
    TopicSpec("pairs", 6, "delete", 30 * _DAY_MS, "pair_key (PairMatched) / user_id",
              (PairMatched, SeekerUnmatched), "per-seeker outcome of each cycle"),
    TopicSpec("cycles", 1, "delete", 365 * _DAY_MS, "cycle_id", (CycleCompleted,),
              "one summary per cycle, in order"),
    TopicSpec("rooms", 6, "delete", 30 * _DAY_MS, "pair_key", (RoomCreated,),
              "chat rooms created for pairs"),
    TopicSpec("notifications", 6, "delete", 30 * _DAY_MS, "user_id", (UserNotified,),
              "notifications sent, one per user per cycle"),
    TopicSpec("deadletter", 3, "delete", 365 * _DAY_MS, "source key", (DeadLettered,),
              "records no consumer could process, with why and where from"),
)


@dataclass(frozen=True)
class TopicCatalog:
    """Every topic for one environment; attribute access by logical name."""

    optin: Topic
    seekers: Topic
    ticks: Topic
    pairs: Topic
    cycles: Topic
    rooms: Topic
    notifications: Topic
    deadletter: Topic

    def __iter__(self) -> Iterator[Topic]:
        return iter((self.optin, self.seekers, self.ticks, self.pairs, self.cycles,
                     self.rooms, self.notifications, self.deadletter))

    def by_name(self, name: str) -> Topic:
        for topic in self:
            if topic.name == name:
                return topic
        raise ConfigError(f"{name!r} is not in the topic catalog")

    def for_event(self, event: Event | type[Event]) -> Topic:
        """The one topic an event type is published to."""
        for topic in self:
            if topic.carries(event):
                return topic
        name = event.schema_name
        raise ConfigError(f"no topic carries {name}")


def build_catalog(settings: Settings | None = None) -> TopicCatalog:
    """Resolve :data:`SPECS` with the prefix and replication factor from settings."""
    kafka = (settings or Settings()).kafka
    min_isr = kafka.min_insync_replicas or (2 if kafka.replication_factor >= 3 else 1)
    if min_isr > kafka.replication_factor:
        raise ConfigError(f"min.insync.replicas {min_isr} exceeds the replication factor "
                          f"{kafka.replication_factor}: no write could ever be acknowledged")
    topics = {
        spec.logical: Topic(kafka.topic_prefix + spec.logical, spec, kafka.replication_factor,
                            min_isr)
        for spec in SPECS
    }
    return TopicCatalog(**topics)
