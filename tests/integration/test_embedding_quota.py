"""The embedding stage under a project quota, on the real stack: two real worker
processes (``mosaic agents embedding``) share one Vertex quota through the Vertex
stand-in, which answers bursts of 429s with ``Retry-After`` (at the start, and on the
requests of a few users wherever they fall in their batch). Checks: together the two
processes never send more than the quota allows, no text is embedded twice, every user
is indexed and published exactly once, the throttles are counted in the processes'
metrics and the users were told "delayed" meanwhile. Also the delayed status on the real
Cassandra: it reads as delayed over the ingress' preparing_profile and never outlives
the profile's outcome."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from mosaic.settings import EmbeddingSettings, Settings
from mosaic.user_state import (
    DELAY_MESSAGES,
    DELAYED_DELAY,
    PROFILE_DELAYED,
    STAGE_DELAY,
    CassandraUserStateStore,
    CassandraUserStateWriter,
    UserState,
    reason_message,
)
from stack.base import Service
from standins.vertex import VertexStandin
from streams.events import SeekerUpdated
from tests.integration.test_embedding_agent import DIM, TOKEN, Env, make_env, opt_in
from tests.support import migrated_session

pytestmark = pytest.mark.integration

USERS = 72
BATCH_SIZE = 3  # texts per Vertex request: 24 requests at least
QUOTA_PER_MINUTE = 120  # the project's quota, shared: 2 requests/s for both processes
WINDOW_SECONDS = 4.0
# Users whose request is refused twice (more than one request's retries): their batch's
# profile stage is retried, which must not embed the batch's other texts again.
THROTTLED_USERS = (5, 17, 29, 41, 53, 65)


@pytest.fixture(scope="module")
def keyspace(settings: Settings, cassandra_stack: Service) -> Iterator[tuple[str, Any]]:
    name = f"quota_{uuid.uuid4().hex[:10]}"
    session = migrated_session(settings, name)
    yield name, session
    session.execute(f"DROP KEYSPACE IF EXISTS {name}")
    session.cluster.shutdown()


@pytest.fixture
def quota_env(settings: Settings, kafka_stack: Service, s3_stack: Service,
              keyspace: tuple[str, Any], unique: str) -> Iterator[tuple[Env, VertexStandin]]:
    with VertexStandin(token=TOKEN, latency_seconds=0.05) as vertex:
        embedding = EmbeddingSettings(
            backend="vertex", vertex_base_url=vertex.url, vertex_static_token=SecretStr(TOKEN),
            output_dimensionality=DIM, max_attempts=2, batch_size=BATCH_SIZE,
            requests_per_minute=QUOTA_PER_MINUTE)
        for env in make_env(settings, keyspace, unique, embedding, table="vectors64"):
            yield env, vertex


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _worker(env: Env, port: int, log: Path) -> subprocess.Popen[bytes]:
    s = env.settings
    variables = {
        "MOSAIC_KAFKA__BOOTSTRAP_SERVERS": s.kafka.bootstrap_servers,
        "MOSAIC_KAFKA__TOPIC_PREFIX": s.kafka.topic_prefix,
        "MOSAIC_CASSANDRA__KEYSPACE": s.cassandra.keyspace,
        "MOSAIC_VECTOR_INDEX__CASSANDRA_TABLE": s.vector_index.cassandra_table,
        "MOSAIC_EMBEDDING__BACKEND": "vertex",
        "MOSAIC_EMBEDDING__VERTEX_BASE_URL": str(s.embedding.vertex_base_url),
        "MOSAIC_EMBEDDING__VERTEX_STATIC_TOKEN": TOKEN,
        "MOSAIC_EMBEDDING__OUTPUT_DIMENSIONALITY": str(DIM),
        "MOSAIC_EMBEDDING__BATCH_SIZE": str(BATCH_SIZE),
        "MOSAIC_EMBEDDING__MAX_ATTEMPTS": "2",
        "MOSAIC_EMBEDDING__REQUESTS_PER_MINUTE": str(QUOTA_PER_MINUTE),
        "MOSAIC_EMBEDDING_AGENT__GROUP_ID": s.embedding_agent.group_id,
        "MOSAIC_EMBEDDING_AGENT__BATCH_MAX": "12",
        "MOSAIC_EMBEDDING_AGENT__BATCH_WITHIN_SECONDS": "0.3",
        "MOSAIC_EMBEDDING_AGENT__RETRY_BACKOFF_SECONDS": "0.2",
        "MOSAIC_EMBEDDING_AGENT__RETRY_MAX_BACKOFF_SECONDS": "1",
        "MOSAIC_METRICS_PORT": str(port),
    }
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-c", "from app.cli import entry; entry()", "agents",
             "embedding", "--idle-exit", "8"],
            env={**os.environ, **variables}, stdout=out, stderr=subprocess.STDOUT)


def _metrics(port: int) -> dict[str, float]:
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2, trust_env=False).text
    except httpx.HTTPError:
        return {}
    values = {}
    for line in text.splitlines():
        if line.startswith(("mosaic_embedding_quota_share_ratio",
                            "mosaic_embedding_throttled_calls_total")):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def _tail(log: Path) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-25:])


def _wait_until_both_assigned(workers: list[tuple[subprocess.Popen[bytes], int, Path]]
                              ) -> None:
    deadline = time.monotonic() + 90
    shares: list[float | None] = []
    while time.monotonic() < deadline:
        for process, _, log in workers:
            if process.poll() is not None:
                raise AssertionError(f"worker {process.pid} exited ({process.returncode}) "
                                     f"before its assignment:\n{_tail(log)}")
        shares = [_metrics(port).get("mosaic_embedding_quota_share_ratio")
                  for _, port, _ in workers]
        if shares == [0.5, 0.5]:
            return
        time.sleep(0.3)
    raise AssertionError(f"the two workers never split the 6 partitions 3/3: quota shares "
                         f"{shares}; logs:\n" + "\n---\n".join(_tail(w[2]) for w in workers))


def test_two_workers_share_the_quota_and_a_429_burst_embeds_nothing_twice(
        quota_env: tuple[Env, VertexStandin], tmp_path: Path) -> None:
    env, vertex = quota_env
    users = [env.user(f"q{i:03d}") for i in range(USERS)]
    for i, user in enumerate(users):
        env.seed(user, f"quirk{i:03d}", "curious")  # one distinct text per user
    workers = [(None, _free_port(), tmp_path / f"worker{i}.log") for i in range(2)]
    started = [(_worker(env, port, log), port, log) for _, port, log in workers]
    try:
        _wait_until_both_assigned(started)
        vertex.reset_requests()
        vertex.fail_next(4, 429, retry_after=1.0)  # a burst of throttles, with Retry-After
        for i in THROTTLED_USERS:  # and mid-batch: requests after others of the batch
            vertex.fail_matching(f"quirk{i:03d}", 2, 429, retry_after=1.0)
        env.produce(*(opt_in(user, i) for i, user in enumerate(users)))
        delayed_seen, throttled = _watch(env, started, users)
    finally:
        for process, _, _ in started:
            if process.poll() is None:
                process.kill()
            process.wait(30)
    for process, _, log in started:
        assert process.returncode == 0, f"worker {process.pid} failed:\n{_tail(log)}"
    statuses = [r.status for r in vertex.requests]
    throttles = 4 + 2 * len(THROTTLED_USERS)
    assert statuses.count(429) == throttles == throttled, (statuses, throttled)
    texts = vertex.embedded_texts()
    repeated = [t for t, n in Counter(texts).items() if n > 1]
    assert not repeated and len(texts) == USERS, f"embedded twice: {repeated[:3]}"
    # The quota holds across both processes: in any window at most the rate's worth plus
    # both bursts (one request of slack: the server stamps arrival, not the client's take).
    allowed = QUOTA_PER_MINUTE / 60 * WINDOW_SECONDS + 2 + 1
    busiest = vertex.most_requests_in(WINDOW_SECONDS)
    assert busiest <= allowed, f"{busiest} requests in {WINDOW_SECONDS} s, quota {allowed}"
    # One SeekerUpdated per user. A record may be written twice with the same event id (a
    # worker that went idle and left hands its last uncommitted batch to the other one:
    # at least once, and readers dedupe by id), never as a second, different event.
    published: dict[str, set[str]] = {}
    for message in env.read(env.catalog.seekers):
        event = _decode(message.value())
        if isinstance(event, SeekerUpdated):
            published.setdefault(event.user_id, set()).add(event.event_id)
    assert sorted(published) == sorted(users)
    assert all(len(ids) == 1 for ids in published.values()), published
    assert sorted(env.index().fetch(users)) == sorted(users)
    assert delayed_seen, "no user was marked delayed while the stage waited out the 429s"
    for user in users:
        row = env.state(user)
        assert row.state == "waiting" and row.reason_code is None, (user, row)


def _decode(value: bytes | None) -> Any:
    from streams.serde import decode

    return None if value is None else decode(value)


def _watch(env: Env, workers: list[tuple[subprocess.Popen[bytes], int, Path]],
           users: list[str]) -> tuple[bool, float]:
    """Until both workers exit (idle): whether a user was seen delayed, and the throttled
    calls both counted (last scrape of each)."""
    deadline = time.monotonic() + 180
    delayed_seen = False
    throttled = [0.0, 0.0]
    query = env.session.prepare("SELECT user_id FROM user_state WHERE user_id IN ? "
                                "AND reason_code = ? ALLOW FILTERING")
    while any(p.poll() is None for p, _, _ in workers):
        if time.monotonic() > deadline:
            raise AssertionError("workers still running after 180 s; logs:\n"
                                 + "\n---\n".join(_tail(w[2]) for w in workers))
        for i, (_, port, _) in enumerate(workers):
            value = _metrics(port).get('mosaic_embedding_throttled_calls_total{api="vertex"}')
            throttled[i] = value if value is not None else throttled[i]
        if not delayed_seen:
            delayed_seen = bool(list(env.session.execute(query, (users, PROFILE_DELAYED))))
        time.sleep(0.2)
    return delayed_seen, sum(throttled)


def test_delayed_reads_as_delayed_and_never_outlives_the_outcome(
        keyspace: tuple[str, Any], unique: str) -> None:
    asyncio.run(_delayed_then_outcome(keyspace, unique))


async def _delayed_then_outcome(keyspace: tuple[str, Any], unique: str) -> None:
    _, session = keyspace
    name = keyspace[0]
    store = CassandraUserStateStore(session, name)
    writer = CassandraUserStateWriter(session, name)
    user = f"delayed-{unique}"
    at = datetime(2026, 11, 1, 12, 0, 0, 123000, tzinfo=UTC)  # the request's ms
    await store.record(UserState(user, "preparing_profile", opted_in_at=at, pool="eu",
                                 updated_at=at))
    writer.profile_delayed(user, at=at + DELAYED_DELAY)
    row = await store.get(user)
    assert row is not None and row.state == "preparing_profile"
    assert reason_message(row) == (PROFILE_DELAYED, DELAY_MESSAGES[PROFILE_DELAYED])
    writer.waiting(user, pool="eu", waiting_since=at, missed_cycles=0, at=at + STAGE_DELAY)
    writer.profile_delayed(user, at=at + DELAYED_DELAY)  # a late or replayed notice
    row = await store.get(user)
    assert row is not None and row.state == "waiting" and row.reason_code is None
    assert reason_message(row) == (None, None)
    # The user's next request (a millisecond later at least) clears a notice of its own.
    later = at + timedelta(milliseconds=1)
    await store.record(UserState(user, "preparing_profile", opted_in_at=later, pool="eu",
                                 updated_at=later))
    writer.profile_delayed(user, at=at + DELAYED_DELAY)
    row = await store.get(user)
    assert row is not None and row.reason_code is None
