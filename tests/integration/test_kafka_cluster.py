"""A real 3-broker KRaft cluster (issue 11): kill -9 one broker during a burst of opt-ins and
a matching cycle; every 202 is on the optin topic exactly once and the cycle's output is
committed exactly once.

The cluster is this test's own (ports 29092/29192/29292, controllers 29093-29095, a data
dir under /tmp): the shared single-broker stack is never touched. Its brokers are stopped
and their data deleted at the end. Run with ``pytest -m cluster`` (about 1-2 minutes).
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest

from matcher.harness import CyclePlan
from matcher.service import MatcherService
from mosaic.settings import (
    IngressSettings,
    KafkaSettings,
    MatcherSettings,
    Settings,
    StackSettings,
)
from producers.bootstrap import build_production_app, serve_in_thread
from producers.ticker import publish_tick
from stack.base import port_open
from stack.kafka import Kafka, nodes
from stack.services import up_all
from streams.admin import apply
from streams.events import CycleCompleted, PairMatched, SeekerUpdated, derive_event_id
from streams.kafka import make_admin, make_consumer, make_producer, produce_event, read_to_end
from streams.serde import decode
from streams.topics import build_catalog
from tests.support import CLUSTERED_POOL as POOL
from tests.support import T0
from tests.testkit import SignedClient

pytestmark = [pytest.mark.integration, pytest.mark.cluster]

PORTS = (29092, 29192, 29292)
CONTROLLER = 29093
BURST = 600


@pytest.fixture
def cluster(unique: str) -> Iterator[tuple[Settings, list[Kafka]]]:
    if any(port_open("127.0.0.1", p) for p in (*PORTS, CONTROLLER, CONTROLLER + 1,
                                                CONTROLLER + 2)):
        pytest.skip("the cluster test's ports are in use")
    data = Path(f"/tmp/mosaic-cluster-{unique}")
    settings = Settings(
        stack=StackSettings(data_dir=data),
        kafka=KafkaSettings(bootstrap_servers=",".join(f"127.0.0.1:{p}" for p in PORTS),
                            controller_port=CONTROLLER, brokers=3, replication_factor=3,
                            topic_prefix=f"k{unique}."),
        ingress=IngressSettings(state_store="memory", port=0),
        matcher=MatcherSettings(transactional_id=f"mk-{unique}", block_store="none"))
    brokers = nodes(settings)
    started = time.monotonic()
    try:
        for line in up_all(list(brokers)):
            print(line)
        print(f"cluster of 3 up in {time.monotonic() - started:.1f}s")
        yield settings, brokers
    finally:
        for broker in brokers:
            broker.down(wipe=True)
        shutil.rmtree(data, ignore_errors=True)


def _read(settings: Settings, topic: str) -> list[tuple[str, object]]:
    consumer = make_consumer(settings, f"check-{uuid.uuid4().hex[:8]}")
    try:
        return [((m.key() or b"").decode(), decode(m.value()))
                for m in read_to_end(consumer, topic, timeout_seconds=60).messages]
    finally:
        consumer.close()


def test_kill_one_broker_during_a_burst_and_a_cycle(
        cluster: tuple[Settings, list[Kafka]]) -> None:
    settings, brokers = cluster
    catalog = build_catalog(settings)
    admin = make_admin(settings)
    apply(catalog, admin)
    metadata = admin.list_topics(catalog.optin.name, timeout=10).topics[catalog.optin.name]
    assert {len(p.replicas) for p in metadata.partitions.values()} == {3}
    assert catalog.optin.config()["min.insync.replicas"] == "2"

    producer = make_producer(settings)
    for user, vector in POOL.items():
        produce_event(producer, catalog.seekers, SeekerUpdated(
            event_id=derive_event_id("seed", user), occurred_at=T0, user_id=user,
            opted_in_at=T0 - timedelta(hours=2), vector=vector, model="test",
            traits_hash="h", version=1))
    assert producer.flush(30) == 0
    tick = publish_tick(settings, "default", T0)

    running = serve_in_thread(build_production_app(settings))
    key = settings.ingress.hmac_key.get_secret_value().encode()
    clients = [SignedClient(f"http://127.0.0.1:{running.port}", key) for _ in range(16)]
    results: list[tuple[str, int]] = []
    half = threading.Event()

    def one(n: int) -> None:
        user = str(uuid.uuid4())
        answer = clients[n % len(clients)].request("POST", f"/user/{user}/opt-in-embedding",
                                                   {})
        results.append((user, answer.status_code))
        if len(results) >= BURST // 4:
            half.set()

    victim = brokers[1]
    killed: list[float] = []

    def kill_victim(plan: CyclePlan) -> None:
        if not killed:  # mid-transaction of the cycle, while the burst runs
            pid = victim.pid()
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            killed.append(time.monotonic())

    try:
        with ThreadPoolExecutor(len(clients)) as pool:
            futures = [pool.submit(one, n) for n in range(BURST)]
            assert half.wait(60), "the burst did not get going"
            with MatcherService(settings, before_commit=kill_victim) as service:
                reports = service.run(stop_when_idle=True)
            for future in futures:
                future.result(timeout=120)
    finally:
        for client in clients:
            client.close()
        running.stop()
    assert killed, "the broker was never killed"
    assert [r.outcome for r in reports] == ["completed"]

    codes = Counter(code for _, code in results)
    assert set(codes) <= {202, 503}, codes
    accepted = {user for user, code in results if code == 202}
    on_topic = Counter(user for user, _ in _read(settings, catalog.optin.name))
    assert {u: on_topic[u] for u in accepted if on_topic[u] != 1} == {}
    assert max(on_topic.values()) == 1  # not even a refused request twice
    cycles = [e for _, e in _read(settings, catalog.cycles.name)
              if isinstance(e, CycleCompleted)]
    assert [c.cycle_id for c in cycles] == [tick.cycle_id]
    pairs = [e for _, e in _read(settings, catalog.pairs.name) if isinstance(e, PairMatched)]
    assert sorted(p.pair_key for p in pairs) == ["u1|u2", "u3|u4", "u5|u6"]
    print(f"burst {BURST}: {codes[202]} accepted, {codes[503]} refused; broker "
          f"{victim.name} killed mid-cycle; 1 CycleCompleted, {len(pairs)} pairs")
