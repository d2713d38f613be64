"""The embedding stage against a project quota: 1, 2 and 3 worker processes side by side.

Each run starts N real ``mosaic agents embedding`` processes (faust on Kafka, S3 insights,
Cassandra vector index and user_state, seekers topic) against the Vertex stand-in
(``--latency`` per request, a project quota of ``--quota`` requests per minute, and a
burst of 429s with ``Retry-After: 1`` at the start), waits until the processes hold their
partitions, then produces ``--users`` opt-ins with one distinct trait text each. Figures:

- throughput: accepted embed requests per second, first to last accepted request, against
  the quota's ceiling (quota / 60);
- the busiest ``--window`` seconds of requests over all processes, against the quota's
  allowance for it (rate x window + the processes' bursts, which sum to one second);
- users lost (no SeekerUpdated) or duplicated (more than one event id), texts embedded
  twice.

Usage (the stack must be up): ``python bench/embedding_quota_bench.py --users 600``
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from mosaic.cassandra import connect
from mosaic.migrations import migrate_keyspace
from mosaic.s3 import s3_client
from mosaic.settings import CassandraSettings, KafkaSettings, Settings
from profiles.insights import ChatInsights, ParticipantInsight, S3InsightStore
from standins.vertex import VertexStandin
from streams.admin import apply
from streams.events import OptInRequested, SeekerUpdated, new_event_id
from streams.kafka import make_admin, make_consumer, make_producer, produce_event, read_to_end
from streams.serde import decode
from streams.topics import build_catalog

T0 = datetime(2026, 11, 1, tzinfo=UTC)
TOKEN = "quota-bench-token"
DIM = 64


def seed(settings: Settings, s3: Any, users: list[str]) -> None:
    store = S3InsightStore(s3, settings.s3.insights_bucket)

    def one(i_user: tuple[int, str]) -> None:
        i, user = i_user
        insight = ParticipantInsight((f"quirk{i:05d}", "curious"), ("hiking", "jazz"),
                                     ("honesty",), "short messages")
        store.put_chat_insights(ChatInsights(f"{user}-chat", T0, (user,), {user: insight}),
                                T0)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, enumerate(users)))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def worker(settings: Settings, url: str, args: argparse.Namespace, port: int,
           log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ,
           "MOSAIC_KAFKA__TOPIC_PREFIX": settings.kafka.topic_prefix,
           "MOSAIC_CASSANDRA__KEYSPACE": settings.cassandra.keyspace,
           "MOSAIC_VECTOR_INDEX__CASSANDRA_TABLE": f"vectors{DIM}",
           "MOSAIC_EMBEDDING__BACKEND": "vertex",
           "MOSAIC_EMBEDDING__VERTEX_BASE_URL": url,
           "MOSAIC_EMBEDDING__VERTEX_STATIC_TOKEN": TOKEN,
           "MOSAIC_EMBEDDING__OUTPUT_DIMENSIONALITY": str(DIM),
           "MOSAIC_EMBEDDING__BATCH_SIZE": str(args.texts_per_request),
           "MOSAIC_EMBEDDING__REQUESTS_PER_MINUTE": str(args.quota),
           "MOSAIC_EMBEDDING_AGENT__GROUP_ID": f"quota-{settings.kafka.topic_prefix}",
           "MOSAIC_EMBEDDING_AGENT__BATCH_MAX": "32",
           "MOSAIC_METRICS_PORT": str(port)}
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-c", "from app.cli import entry; entry()",
                                 "agents", "embedding", "--idle-seconds", "6"],
                                env=env, stdout=out, stderr=subprocess.STDOUT)


def share(port: int) -> float | None:
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2, trust_env=False).text
    except httpx.HTTPError:
        return None
    for line in text.splitlines():
        if line.startswith("mosaic_embedding_quota_share_ratio "):
            return float(line.split()[1])
    return None


def run(base: Settings, s3: Any, processes: int, args: argparse.Namespace) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    settings = base.model_copy(update={"kafka": KafkaSettings(topic_prefix=f"qb{tag}.")})
    catalog = build_catalog(settings)
    admin = make_admin(settings)
    apply(catalog, admin)
    users = [f"qb-{tag}-{i:05d}" for i in range(args.users)]
    seed(settings, s3, users)
    logs = Path(tempfile.mkdtemp(prefix="quota-bench-"))
    with VertexStandin(token=TOKEN, latency_seconds=args.latency,
                       quota_requests=args.quota) as vertex:
        ports = [free_port() for _ in range(processes)]
        procs = [worker(settings, vertex.url, args, p, logs / f"w{i}.log")
                 for i, p in enumerate(ports)]
        try:
            deadline = time.monotonic() + 120
            while [share(p) for p in ports] != [1 / processes] * processes:
                if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                    raise SystemExit(f"workers never split the partitions; logs in {logs}")
                time.sleep(0.3)
            vertex.reset_requests()
            vertex.fail_next(args.burst, 429, retry_after=1.0)
            producer = make_producer(settings)
            for i, user in enumerate(users):
                at = T0 + timedelta(seconds=i)
                produce_event(producer, catalog.optin, OptInRequested(
                    event_id=new_event_id(), occurred_at=at, request_id=f"r{i}",
                    user_id=user, opted_in_at=at))
            producer.flush(30)
            for proc in procs:
                proc.wait(900)
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
        ok = sorted(r.at for r in vertex.requests if r.status == 200)
        busiest = vertex.most_requests_in(args.window)
        texts = vertex.embedded_texts()
        statuses = Counter(r.status for r in vertex.requests)
    consumer = make_consumer(settings, f"quota-bench-reader-{tag}")
    published: dict[str, set[str]] = {}
    for message in read_to_end(consumer, catalog.seekers).messages:
        event = decode(message.value())
        if isinstance(event, SeekerUpdated):
            published.setdefault(event.user_id, set()).add(event.event_id)
    consumer.close()
    for future in admin.delete_topics([t.name for t in catalog]).values():
        future.result(30)
    seconds = ok[-1] - ok[0] if len(ok) > 1 else 0.0
    rate = (len(ok) - 1) / seconds if seconds else 0.0
    ceiling = args.quota / 60
    return {"processes": processes, "users": args.users, "requests_ok": len(ok),
            "throttled": statuses.get(429, 0), "seconds": round(seconds, 1),
            "requests_per_s": round(rate, 2), "of_ceiling": round(rate / ceiling, 2),
            "busiest_window": busiest,
            "window_allowance": round(ceiling * args.window + ceiling, 1),
            "lost": len(set(users) - set(published)),
            "duplicated": sum(1 for ids in published.values() if len(ids) > 1),
            "texts_embedded_twice": sum(1 for n in Counter(texts).values() if n > 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=600, help="opt-ins per run")
    parser.add_argument("--quota", type=int, default=300, help="requests per minute")
    parser.add_argument("--texts-per-request", type=int, default=4, help="batch_size")
    parser.add_argument("--latency", type=float, default=0.1, help="stand-in s/request")
    parser.add_argument("--burst", type=int, default=8, help="429s injected at the start")
    parser.add_argument("--window", type=float, default=10.0, help="seconds")
    parser.add_argument("--processes", default="1,2,3", help="worker counts to run")
    args = parser.parse_args()
    keyspace = f"qbench_{uuid.uuid4().hex[:8]}"
    base = Settings().model_copy(update={"cassandra": CassandraSettings(keyspace=keyspace)})
    migrate_keyspace(base.cassandra)
    session, s3 = connect(base.cassandra), s3_client(base.s3)
    try:
        for count in (int(p) for p in args.processes.split(",")):
            print(run(base, s3, count, args), flush=True)
    finally:
        session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}")
        session.cluster.shutdown()


if __name__ == "__main__":
    main()
