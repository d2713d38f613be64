"""Wiring for the post-match agents and the reconciler: the one place that builds them.

``run_postmatch`` runs the rooms, notifier and index-state agents (one thread each, each
its own consumer group); ``reconcile`` finishes every incomplete pair of a cycle by
replaying the cycle's PairMatched events from the pairs topic through the same handlers.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from consumers.audit import AuditStore, CassandraAuditStore
from consumers.chat import ChatServer, NakamaChat
from consumers.postmatch import IndexStateHandler, NotifierHandler, RoomsHandler
from consumers.runner import AgentRunner, RunStats
from mosaic.settings import Settings
from mosaic.user_state import CassandraUserStateWriter, UserStateWriter
from profiles.index import VectorIndex
from streams.deadletter import Handler
from streams.events import Event, PairMatched
from streams.kafka import make_consumer, make_producer, produce_and_wait, read_to_end
from streams.serde import default_serde
from streams.topics import TopicCatalog, build_catalog

log = logging.getLogger(__name__)

AGENTS = ("rooms", "notifier", "index-state")


@dataclass
class PostMatch:
    """Everything the post-match handlers need, built once from settings."""

    settings: Settings
    catalog: TopicCatalog
    audit: AuditStore
    chat: ChatServer
    states: UserStateWriter
    index: VectorIndex
    publish: Callable[[Event], None]
    close: Callable[[], None]

    def handler(self, agent: str) -> Handler:
        if agent == "rooms":
            return RoomsHandler(self.audit, self.chat, self.states, self.publish)
        if agent == "notifier":
            return NotifierHandler(self.audit, self.chat, self.publish)
        return IndexStateHandler(self.audit, self.index, self.states)

    def topics(self, agent: str) -> list[Any]:
        return {"rooms": [self.catalog.pairs], "notifier": [self.catalog.rooms],
                "index-state": [self.catalog.pairs]}[agent]


def build_postmatch(settings: Settings) -> PostMatch:
    from mosaic.cassandra import connect
    from profiles.bootstrap import build_embedder, build_vector_index

    session = connect(settings.cassandra)
    catalog = build_catalog(settings)
    producer = make_producer(settings)

    def publish(event: Event) -> None:
        produce_and_wait(producer, catalog.for_event(event), event)

    def close() -> None:
        producer.flush(10)
        session.cluster.shutdown()

    dim = build_embedder(settings).dim  # the index table is typed by the embedder's size
    return PostMatch(
        settings=settings, catalog=catalog, audit=CassandraAuditStore(session),
        chat=NakamaChat(settings.nakama),
        states=CassandraUserStateWriter(session, settings.cassandra.keyspace),
        index=build_vector_index(settings, dim=dim, session=session),
        publish=publish, close=close,
    )


def run_postmatch(app: PostMatch, agents: Iterable[str] = AGENTS, *,
                  stop: Callable[[], bool] = lambda: False,
                  idle_seconds: float | None = None,
                  max_seconds: float | None = None) -> dict[str, RunStats]:
    """Run the chosen agents concurrently until each stops; returns their stats."""
    results: dict[str, RunStats] = {}
    errors: list[BaseException] = []

    def work(agent: str) -> None:
        runner = AgentRunner(app.settings, agent, app.topics(agent), app.handler(agent))
        try:
            results[agent] = runner.run(stop=stop, idle_seconds=idle_seconds,
                                        max_seconds=max_seconds)
        except Exception as exc:  # noqa: BLE001 - re-raised in the caller's thread below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(a,), name=f"agent-{a}") for a in agents]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


@dataclass(frozen=True)
class Reconciled:
    cycle_id: str
    pairs: int
    already_complete: int
    finished: int


def reconcile(app: PostMatch, cycle_id: str) -> Reconciled:
    """Finish every incomplete pair of ``cycle_id`` (idempotent; safe to run any time)."""
    pairs = cycle_pairs(app, cycle_id)
    rooms = RoomsHandler(app.audit, app.chat, app.states, app.publish)
    notifier = NotifierHandler(app.audit, app.chat, app.publish)
    index = IndexStateHandler(app.audit, app.index, app.states)
    done = finished = 0
    for pair in pairs:
        row = app.audit.get(pair.cycle_id, pair.pair_key)
        if row is not None and row.complete:
            done += 1
            continue
        index.on_pair(pair)
        notifier.handle(rooms.handle(pair))
        finished += 1
    return Reconciled(cycle_id, len(pairs), done, finished)


def cycle_pairs(app: PostMatch, cycle_id: str) -> list[PairMatched]:
    consumer = make_consumer(app.settings, "mosaic-reconciler")
    try:
        snapshot = read_to_end(consumer, app.catalog.pairs)
    finally:
        consumer.close()
    serde = default_serde()
    seen: dict[str, PairMatched] = {}
    for message in snapshot.messages:
        event = serde.decode(message.value())
        if isinstance(event, PairMatched) and event.cycle_id == cycle_id:
            seen.setdefault(event.pair_key, event)
    return [seen[k] for k in sorted(seen)]
