"""The matcher's pool checkpoint on the real broker: a restarted matcher starts from the
checkpoint its predecessor left and the records after it, and ends up with the same pool
as one that reads the whole topic; a checkpoint of a topic since deleted and created
again is not used."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from matcher.checkpoint import Checkpoints
from matcher.service import MatcherService
from mosaic.settings import Settings
from producers.ticker import publish_tick
from stack.base import Service
from streams.admin import TopicDriftError, apply
from streams.events import SeekerRemoved, SeekerUpdated, derive_event_id
from streams.kafka import (
    KafkaOperationError,
    make_admin,
    make_producer,
    produce_event,
    watermarks,
)
from streams.topics import Topic, TopicCatalog
from tests.support import CLUSTERED_POOL as POOL
from tests.support import T0, matcher_topics
from tests.unit.test_matcher_checkpoint import contents

pytestmark = pytest.mark.integration


@pytest.fixture
def env(settings: Settings, kafka_stack: Service, unique: str, tmp_path: Path
        ) -> Iterator[tuple[Settings, TopicCatalog]]:
    with matcher_topics(settings, f"t{unique}.", f"m-{unique}") as (own, catalog):
        yield own.model_copy(update={"matcher": own.matcher.model_copy(
            update={"checkpoint_dir": tmp_path})}), catalog


def without_checkpoints(settings: Settings) -> Settings:
    return settings.model_copy(update={"matcher": settings.matcher.model_copy(
        update={"checkpoints": False})})


def opt_in(settings: Settings, catalog: TopicCatalog, users: dict[str, tuple[float, ...]],
           version: int) -> None:
    producer = make_producer(settings)
    for user, vector in users.items():
        produce_event(producer, catalog.seekers, SeekerUpdated(
            event_id=derive_event_id("opt-in", user, str(version)), occurred_at=T0,
            user_id=user, opted_in_at=T0 - timedelta(hours=2), vector=vector, model="test",
            traits_hash="h", version=version))
    assert producer.flush(30) == 0


def recreate(settings: Settings, topic: Topic) -> None:
    """Delete ``topic`` and create it again (the broker deletes asynchronously)."""
    admin = make_admin(settings)
    for future in admin.delete_topics([topic.name], operation_timeout=30).values():
        future.result(timeout=30)
    deadline = time.monotonic() + 60
    while True:
        try:
            apply([topic], admin)
            return
        except (TopicDriftError, KafkaOperationError) as exc:
            if time.monotonic() > deadline:
                raise AssertionError(f"{topic.name} not created again in 60 s: {exc}") from exc
            time.sleep(0.5)


def seekers_end(settings: Settings, catalog: TopicCatalog) -> dict[int, int]:
    from streams.kafka import make_consumer

    consumer = make_consumer(settings, "checkpoint-test-ends")
    try:
        return {p: high for p, (_, high) in
                watermarks(consumer, catalog.seekers.name, 30).items()}
    finally:
        consumer.close()


def test_a_restart_starts_from_the_checkpoint_and_the_records_after_it(
        env: tuple[Settings, TopicCatalog]) -> None:
    settings, catalog = env
    opt_in(settings, catalog, POOL, version=1)
    publish_tick(settings, "default", T0 + timedelta(minutes=1))
    with MatcherService(settings) as first:
        (report,) = first.run(stop_when_idle=True)
        name = first.transactional_id
    assert (report.outcome, report.pairs) == ("completed", 3)  # u7 is left over
    # A clean stop checkpoints the pool as of everything committed, the cycle included.
    assert Checkpoints(settings.matcher.checkpoint_dir, name).path.is_file()
    ends = seekers_end(settings, catalog)

    # After the checkpoint: newcomers, the leftover opts out, a matched user's old
    # opt-in is replayed (stale: must stay out), one user forgotten by a tombstone.
    opt_in(settings, catalog, {"n1": (1.0, 0.0, 0.1), "n2": (1.0, 0.05, 0.1),
                               "n3": (0.0, 1.0, 0.0)}, version=5)
    opt_in(settings, catalog, {"u1": POOL["u1"]}, version=1)
    producer = make_producer(settings)
    produce_event(producer, catalog.seekers, SeekerRemoved(
        event_id=derive_event_id("out", "u7"), occurred_at=T0, user_id="u7",
        reason="opted_out", version=9))
    producer.produce(catalog.seekers.name, key=b"n3", value=None)
    assert producer.flush(30) == 0

    with MatcherService(settings) as resumed:
        assert resumed.resumed is not None, "the restart read the whole topic"
        # The first cycle's records are in it (only its commit marker may come after).
        positions = resumed.resumed.meta.positions
        assert set(positions) == set(ends)
        assert all(ends[p] - 1 <= positions[p] <= ends[p] for p in ends), (positions, ends)
        from_checkpoint = contents(resumed.pool)
    with MatcherService(without_checkpoints(settings)) as whole:
        assert whole.resumed is None
        assert contents(whole.pool) == from_checkpoint
        assert {s.user_id for s in whole.pool.waiting("default")} == {"n1", "n2"}

    # The resumed matcher's next cycle pairs the newcomers, once.
    publish_tick(settings, "default", T0 + timedelta(hours=1, minutes=1))
    with MatcherService(settings) as third:
        assert third.resumed is not None
        (second,) = third.run(stop_when_idle=True)
    assert (second.outcome, second.pairs, set(second.matched_user_ids)) == (
        "completed", 1, {"n1", "n2"})


def test_a_checkpoint_of_a_topic_deleted_and_created_again_is_not_used(
        env: tuple[Settings, TopicCatalog], caplog: pytest.LogCaptureFixture) -> None:
    settings, catalog = env
    opt_in(settings, catalog, POOL, version=1)
    with MatcherService(settings) as first:
        assert first.resumed is None
    # The topic starts over and grows past the checkpoint's offsets: offsets alone
    # cannot tell it from the old one, its id can.
    recreate(settings, catalog.seekers)
    fresh = {f"f{i}": (1.0, i / 100, 0.0) for i in range(120)}  # past the old ends
    opt_in(settings, catalog, fresh, version=2)
    caplog.set_level(logging.WARNING, logger="matcher.harness_log")
    caplog.set_level(logging.WARNING, logger="matcher.checkpoint")
    with MatcherService(settings) as second:
        assert second.resumed is None, "the checkpoint of the deleted topic was used"
        assert {s.user_id for s in second.pool.waiting("default")} == set(fresh)
    assert "earlier topic" in caplog.text
