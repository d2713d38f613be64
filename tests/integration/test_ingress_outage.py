"""Kafka stopped in the middle of a burst: nothing acknowledged is lost or duplicated.

Clients keep sending opt-ins while the broker is stopped and started again through the
stack service object. Every request ends as 202 (its event must be on the topic exactly
once after the restart) or as an error (503 with a retry hint, or a client timeout); an
event of an errored request may still land, but never twice.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest

from mosaic.settings import Settings
from producers.bootstrap import build_production_app, optin_topic, serve_in_thread
from producers.domain import event_id_for
from stack.base import Service
from stack.services import build
from tests.testkit import SignedClient, TopicReader

pytestmark = pytest.mark.integration

WORKERS = 8


@pytest.fixture
def kafka(settings: Settings, kafka_stack: Service) -> Iterator[Service]:
    (service,) = build(settings, ["kafka"])
    yield service
    service.up()  # whatever happened, leave Kafka running for the next tests


class Burst:
    def __init__(self, client_for: object, run: str) -> None:
        self.client_for = client_for
        self.run = run
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.outcomes: list[tuple[str, str, int]] = []  # (user, request_id, status)

    def worker(self, index: int) -> None:
        client: SignedClient = self.client_for()  # type: ignore[operator]
        n = 0
        while not self.stop.is_set():
            n += 1
            user, request_id = f"{self.run}-{index:02d}-{n:06d}", f"req-{index}-{n:08d}"
            try:
                status = client.request("POST", f"/user/{user}/opt-in-embedding",
                                        {"request_id": request_id}).status_code
            except httpx.TransportError:
                status = 0
            with self.lock:
                self.outcomes.append((user, request_id, status))
            time.sleep(0.02)
        client.close()


@pytest.mark.stack_scripts
def test_kafka_outage_during_burst_loses_and_duplicates_nothing(
        settings: Settings, kafka: Service) -> None:
    cfg = settings.ingress.model_copy(update={"state_store": "memory",
                                              "delivery_timeout_seconds": 4.0})
    test_settings = settings.model_copy(update={"ingress": cfg})
    server = serve_in_thread(build_production_app(test_settings))
    reader = TopicReader(settings.kafka.bootstrap_servers, optin_topic(settings))
    key = settings.ingress.hmac_key.get_secret_value().encode()
    burst = Burst(lambda: SignedClient(f"http://127.0.0.1:{server.port}", key,
                                       timeout_seconds=20), uuid.uuid4().hex[:8])
    threads = [threading.Thread(target=burst.worker, args=(i,)) for i in range(WORKERS)]
    try:
        for t in threads:
            t.start()
        time.sleep(2)
        kafka.down()
        time.sleep(6)  # longer than the delivery timeout: some requests must fail
        health_down = _health(server.port)
        kafka.up()
        time.sleep(3)
    finally:
        burst.stop.set()
        for t in threads:
            t.join(60)
    accepted = {event_id_for("opt_in", u, r) for u, r, s in burst.outcomes if s == 202}
    failed = [s for _, _, s in burst.outcomes if s != 202]
    mine = _events_of_run(reader, burst.run, accepted)
    print(f"outcomes {Counter(s for _, _, s in burst.outcomes)}; events on topic {len(mine)}")
    assert health_down == 503
    assert _wait_healthy(server.port), "health did not recover after Kafka came back"
    assert failed, "the outage produced no error: Kafka was not really down"
    assert set(failed) <= {503, 0}, Counter(failed)
    assert accepted <= set(mine), f"{len(accepted - set(mine))} acknowledged events lost"
    assert max(mine.values()) == 1, "an event was written twice"
    server.stop()


def _events_of_run(reader: TopicReader, run: str, accepted: set[str]) -> Counter[str]:
    """How often each event id of this run is on the topic (waits for the accepted ones)."""
    records = reader.read(lambda rs: accepted <= {r.event.event_id for r in rs},
                          timeout_seconds=60)
    reader.close()
    return Counter(r.event.event_id for r in records if r.key.startswith(run))


def _health(port: int) -> int:
    return httpx.get(f"http://127.0.0.1:{port}/health", trust_env=False).status_code


def _wait_healthy(port: int, timeout_seconds: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if _health(port) == 200:
            return True
        time.sleep(0.5)
    return False
