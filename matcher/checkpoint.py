"""A checkpoint of the matcher's pool, so a restart reads it plus what came after it
instead of the whole ``seekers`` topic.

A checkpoint is :class:`~matcher.pool.PoolState` (every waiting user's record and vector,
every user's latest version) together with the ``seekers`` offsets it was folded up to.
Folding is deterministic, so "the checkpoint, then the records from its offsets on" is
the same pool as "every record from the beginning"; any checkpoint, however old, is a
valid starting point as long as the records after it are all still in the log:

- every offset lies between the partition's log start and its end (else the topic was
  recreated or truncated);
- it is younger than the topic's ``delete.retention.ms``: compaction drops a tombstone
  only that long after writing it, so every removal after the checkpoint is still there.

The file is one ``<name>.ckpt`` per matcher (its transactional id) in
``matcher.checkpoint_dir``: a magic line, the metadata as one JSON line, then the pickled
pool. It is written to a temporary file, fsynced and renamed over the old one, so a crash
mid-write leaves the previous checkpoint. Anything unexpected on load (another topic, pool
set, schema or format; a truncated or unreadable file) is logged and ignored: the matcher
then reads the whole topic, as without a checkpoint. The file is pickle: only ever load
one this service wrote (the directory is the service's own, like a database's data).
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO

from matcher.pool import PoolState
from mosaic.settings import Settings
from streams.admin import topic_configs, topic_id
from streams.events import SeekerRemoved, SeekerUpdated
from streams.kafka import KafkaOperationError, make_admin
from streams.serde import default_serde
from streams.topics import TopicCatalog

log = logging.getLogger(__name__)

FORMAT = 2  # 2: the pool's store may hold an adopted snapshot matrix (VectorRows.adopt)
MAGIC = b"mosaic-matcher-checkpoint\n"


def schema_id() -> str:
    """The current schemas of the records a pool folds: another code version with other
    fields must not unpickle them."""
    registry = default_serde().registry
    return "+".join(registry.current(kind.schema_name).fingerprint.hex()
                    for kind in (SeekerUpdated, SeekerRemoved))


@dataclass(frozen=True)
class CheckpointMeta:
    topic: str
    topic_id: str  # Kafka's id of the topic: a topic deleted and created again has another
    pools: list[str] | None
    positions: dict[int, int]  # per partition: the next offset to read
    written_at: float  # unix seconds
    users: int  # waiting users in the pool
    schema: str
    format: int = FORMAT

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode() + b"\n"

    @staticmethod
    def from_json(line: bytes) -> CheckpointMeta:
        raw = json.loads(line)
        raw["positions"] = {int(p): int(o) for p, o in raw["positions"].items()}
        return CheckpointMeta(**raw)


@dataclass(frozen=True)
class Loaded:
    pool: PoolState
    meta: CheckpointMeta
    seconds: float


class Checkpoints:
    """The checkpoint file of one matcher (``name``: its transactional id)."""

    def __init__(self, directory: Path, name: str) -> None:
        self.path = directory / f"{name}.ckpt"

    def save(self, pool: PoolState, topic: str, topic_id: str,
             positions: Mapping[int, int]) -> float:
        """Write the checkpoint (atomically); returns the seconds it took."""
        began = time.monotonic()
        meta = CheckpointMeta(topic=topic, topic_id=topic_id,
                              pools=sorted(pool.pools) if pool.pools is not None else None,
                              positions=dict(positions), written_at=time.time(),
                              users=len(pool), schema=schema_id())
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        try:
            with partial.open("wb") as out:
                out.write(MAGIC)
                out.write(meta.to_json())
                pickle.dump(pool, out, protocol=pickle.HIGHEST_PROTOCOL)
                out.flush()
                os.fsync(out.fileno())
            os.replace(partial, self.path)
        finally:
            partial.unlink(missing_ok=True)
        seconds = time.monotonic() - began
        log.info("checkpoint of %s: %d waiting users at %s in %.1f s (%s)", topic,
                 meta.users, meta.positions, seconds, self.path)
        return seconds

    def load(self, topic: str, topic_id: str, pools: frozenset[str] | None,
             max_age_seconds: float) -> Loaded | None:
        """The pool of the checkpoint if it belongs to ``topic`` (named and with the id
        ``topic_id``) and ``pools``, is of this
        code's format and schemas and younger than ``max_age_seconds``; else None (why is
        logged). Whether its offsets are still in the log is the caller's check."""
        began = time.monotonic()
        try:
            with self.path.open("rb") as source:
                meta = _read_meta(source)
                why = _refusal(meta, topic, topic_id, pools, max_age_seconds)
                if why is not None:
                    log.warning("checkpoint %s not used: %s; reading %s from the beginning",
                                self.path, why, topic)
                    return None
                log.info("loading checkpoint %s: %d waiting users, offsets %s", self.path,
                         meta.users, meta.positions)
                pool = pickle.load(source)  # noqa: S301 - the service's own file
        except FileNotFoundError:
            log.info("no checkpoint at %s: reading %s from the beginning", self.path, topic)
            return None
        except Exception as exc:  # noqa: BLE001 - damage of any kind: read the log instead
            log.warning("checkpoint %s unreadable (%s: %s); reading %s from the beginning",
                        self.path, type(exc).__name__, exc, topic)
            return None
        if not isinstance(pool, PoolState) or len(pool) != meta.users:
            log.warning("checkpoint %s does not hold the pool its header names; reading %s "
                        "from the beginning", self.path, topic)
            return None
        return Loaded(pool, meta, time.monotonic() - began)


@dataclass(frozen=True)
class CheckpointPlace:
    """Where the pool's checkpoint lives, and what it must match to be used."""

    checkpoints: Checkpoints
    topic_id: str  # of the seekers topic, now
    max_age_seconds: float  # the seekers topic's delete.retention.ms


def checkpoint_place(settings: Settings, catalog: TopicCatalog, name: str,
                     timeout_seconds: float) -> CheckpointPlace | None:
    """The checkpoint of matcher ``name`` per ``settings.matcher``, with what the seekers
    topic is now (its id and ``delete.retention.ms``); None when checkpoints are off or
    the broker cannot say (then the matcher reads the whole topic, as without one)."""
    if not settings.matcher.checkpoints:
        return None
    topic = catalog.seekers.name
    admin = make_admin(settings)
    try:
        ident = topic_id(admin, topic, timeout_seconds)
        config = topic_configs(admin, [topic], timeout_seconds).get(topic, {})
    except KafkaOperationError as exc:
        log.warning("no checkpoint for %s: the broker did not describe %s: %s", name,
                    topic, exc)
        return None
    retention = config.get("delete.retention.ms") or catalog.seekers.config().get(
        "delete.retention.ms", "0")
    return CheckpointPlace(Checkpoints(settings.matcher.checkpoint_dir, name), ident,
                           int(retention) / 1000.0)


def _read_meta(source: BinaryIO) -> CheckpointMeta:
    if source.read(len(MAGIC)) != MAGIC:
        raise ValueError("not a matcher checkpoint")
    return CheckpointMeta.from_json(source.readline())


def _refusal(meta: CheckpointMeta, topic: str, topic_id: str,
             pools: frozenset[str] | None, max_age_seconds: float) -> str | None:
    wanted: Any = sorted(pools) if pools is not None else None
    age = time.time() - meta.written_at
    checks = (
        (meta.format != FORMAT, f"format {meta.format}, this code writes {FORMAT}"),
        (meta.topic != topic, f"it is of topic {meta.topic}"),
        (meta.topic_id != topic_id,
         f"it is of an earlier topic {topic} (id {meta.topic_id}, now {topic_id})"),
        (meta.pools != wanted, f"it is of pools {meta.pools}, this matcher serves {wanted}"),
        (meta.schema != schema_id(), "it was written with other seekers schemas"),
        (age > max_age_seconds,
         f"it is {age:.0f} s old, past the topic's delete.retention.ms "
         f"({max_age_seconds:.0f} s): removals after it may be compacted away"),
        (age < -60, f"it was written {-age:.0f} s in the future (clock?)"),
    )
    return next((why for refused, why in checks if refused), None)


def offsets_refusal(positions: Mapping[int, int],
                    watermarks: Mapping[int, tuple[int, int]]) -> str | None:
    """Why the records after ``positions`` are not all in the log (``watermarks``: per
    partition the log start and end), or None."""
    if set(positions) != set(watermarks):
        return (f"its partitions {sorted(positions)} are not the topic's "
                f"{sorted(watermarks)}")
    for partition, offset in sorted(positions.items()):
        low, high = watermarks[partition]
        if offset > high:
            return (f"partition {partition} ends at {high}, before the checkpoint's "
                    f"{offset} (the topic was recreated?)")
        if offset < low:
            return (f"partition {partition} starts at {low}, after the checkpoint's "
                    f"{offset} (records after it were deleted)")
    return None
