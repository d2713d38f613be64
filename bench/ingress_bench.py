"""Opt-ins per second and latency through the ingress, beside a raw producer loop.

Starts ``mosaic ingress serve`` as its own process on a free port (Kafka from settings),
then drives it from this process with a bounded number of keep-alive loopback connections
(a minimal HTTP/1.1 client, so the client costs little CPU). Three phases:

1. saturation: as many signed opt-ins as the connections can push, for --seconds;
2. paced: an open-loop schedule at --paced-rate (default half the saturation rate);
3. raw: the same events produced straight to Kafka (same producer config), no HTTP.

Each opt-in uses a fresh user id so the per-user limit (10/min) never applies; the
global limit is raised for the run. The run writes to a topic of its own
(``bench-ingress-<run>.optin``, deleted at the end; ``--keep-topic`` keeps it), never to
the shared ``mosaic.optin``: its ~100,000 opt-ins would otherwise sit in front of every
later demo's and agent's records. With ``--state-store cassandra`` the ingress also writes
one ``user_state`` row per (fresh, bench-only) user id to the configured keyspace.
Usage:

    python bench/ingress_bench.py --seconds 15 --connections 64
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from mosaic.settings import Settings
from producers.bootstrap import ensure_optin_topic, optin_topic
from producers.domain import OptIn, event_id_for
from producers.events import to_event
from producers.kafka_publisher import ingress_producer_config
from producers.signing import signed_headers
from streams.serde import default_serde


@dataclass
class Stats:
    latencies: list[float] = field(default_factory=list)
    codes: dict[int, int] = field(default_factory=dict)
    started: float = 0.0
    ended: float = 0.0

    def add(self, code: int, seconds: float) -> None:
        self.codes[code] = self.codes.get(code, 0) + 1
        if code == 202:
            self.latencies.append(seconds)

    def line(self, name: str) -> str:
        lat = sorted(self.latencies)
        if not lat:
            return f"{name}: nothing accepted, codes={self.codes}"
        p50 = lat[len(lat) // 2] * 1000
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000
        rate = len(lat) / (self.ended - self.started)
        return (f"{name}: accepted={len(lat)} rate={rate:,.0f}/s p50={p50:.1f}ms "
                f"p99={p99:.1f}ms mean={statistics.fmean(lat) * 1000:.1f}ms codes={self.codes}")

    @property
    def rate(self) -> float:
        return len(self.latencies) / max(1e-9, self.ended - self.started)


class Connection:
    """One keep-alive HTTP/1.1 connection sending signed opt-ins."""

    def __init__(self, host: str, port: int, key: bytes, run_id: str) -> None:
        self.host, self.port, self.key, self.run_id = host, port, key, run_id
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def opt_in(self, n: int) -> int:
        assert self.reader is not None and self.writer is not None
        path = f"/user/{self.run_id}-{n:09d}/opt-in-embedding"
        body = json.dumps({"request_id": f"{self.run_id}-{n:09d}", "top_chats": 5}).encode()
        headers = signed_headers(self.key, "POST", path, body)
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.writer.write(
            f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{head}\r\n".encode() + body)
        status_line = await self.reader.readuntil(b"\r\n")
        raw_headers = await self.reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in raw_headers.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        await self.reader.readexactly(length)
        return int(status_line.split(b" ", 2)[1])


async def saturate(conns: list[Connection], seconds: float, counter: list[int]) -> Stats:
    stats = Stats(started=time.perf_counter())
    deadline = stats.started + seconds

    async def worker(conn: Connection) -> None:
        while time.perf_counter() < deadline:
            counter[0] += 1
            t0 = time.perf_counter()
            stats.add(await conn.opt_in(counter[0]), time.perf_counter() - t0)

    await asyncio.gather(*(worker(c) for c in conns))
    stats.ended = time.perf_counter()
    return stats


async def paced(conns: list[Connection], rate: float, seconds: float,
                counter: list[int]) -> Stats:
    """Open loop: request i is due at start + i/rate; latency counts from when it was due."""
    stats = Stats(started=time.perf_counter())
    total = int(rate * seconds)
    next_index = [0]

    async def worker(conn: Connection) -> None:
        while True:
            i = next_index[0]
            if i >= total:
                return
            next_index[0] += 1
            due = stats.started + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            counter[0] += 1
            stats.add(await conn.opt_in(counter[0]), time.perf_counter() - due)

    await asyncio.gather(*(worker(c) for c in conns))
    stats.ended = time.perf_counter()
    return stats


def raw_producer(settings: Settings, count: int) -> float:
    """Events/s produced straight to Kafka with delivery callbacks, one poll loop."""
    from confluent_kafka import Producer

    producer = Producer({**ingress_producer_config(settings), "client.id": "bench-raw"})
    serde = default_serde()
    topic, now, done = optin_topic(settings), datetime.now(UTC), [0]

    def delivered(err: object, _msg: object) -> None:
        done[0] += err is None

    run = uuid.uuid4().hex[:8]
    started = time.perf_counter()
    for i in range(count):
        user = f"raw-{run}-{i:09d}"
        event = to_event(OptIn(user, f"r{i:09d}", now), event_id_for("opt_in", user, str(i)), now)
        value = serde.encode(event)
        while True:
            try:
                producer.produce(topic, value=value, key=user.encode(), on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    producer.flush(60)
    return done[0] / (time.perf_counter() - started)


def _delete_topic(settings: Settings, topic: str) -> None:
    from streams.kafka import make_admin

    admin = make_admin(settings)  # keep the handle alive until the futures resolve
    for future in admin.delete_topics([topic], operation_timeout=30).values():
        future.result(timeout=30)
    print(f"deleted {topic}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int, metric: str) -> float:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(metric + " "):
                return float(line.split()[1])
    return float("nan")


def start_ingress(port: int, store: str, topic_prefix: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "MOSAIC_INGRESS__GLOBAL_RATE_PER_SECOND": "1000000",
           "MOSAIC_INGRESS__STATE_STORE": store, "NO_PROXY": "127.0.0.1",
           "MOSAIC_KAFKA__TOPIC_PREFIX": topic_prefix}
    proc = subprocess.Popen([sys.executable, "-c", "from app.cli import entry; entry()",
                             "ingress", "serve", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with opener.open(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit("ingress did not become healthy")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def http_phases(port: int, key: bytes, args: argparse.Namespace,
                      server_pid: int) -> tuple[Stats, Stats, float]:
    run_id = uuid.uuid4().hex[:8]
    conns = [Connection("127.0.0.1", port, key, run_id) for _ in range(args.connections)]
    await asyncio.gather(*(c.open() for c in conns))
    counter = [0]
    await saturate(conns, 2.0, counter)  # warm-up: connections, producer, JIT-free caches
    cpu_before = cpu_seconds(server_pid)
    sat = await saturate(conns, args.seconds, counter)
    server_cpu_per_request = (cpu_seconds(server_pid) - cpu_before) / max(1, len(sat.latencies))
    rate = args.paced_rate or sat.rate / 2
    pace = await paced(conns, rate, args.seconds, counter)
    return sat, pace, server_cpu_per_request


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=15.0,
                        help="length of the saturation and of the paced phase (default 15)")
    parser.add_argument("--connections", type=int, default=32,
                        help="keep-alive connections (default 32)")
    parser.add_argument("--paced-rate", type=float, default=0.0,
                        help="opt-ins/s of the paced phase (default: saturation/2)")
    parser.add_argument("--state-store", choices=["memory", "cassandra"], default="memory",
                        help="the ingress's user_state projection (default memory)")
    parser.add_argument("--keep-topic", action="store_true",
                        help="keep the run's own opt-in topic afterwards")
    args = parser.parse_args()
    base = Settings()
    prefix = f"bench-ingress-{uuid.uuid4().hex[:8]}."
    settings = base.model_copy(update={
        "kafka": base.kafka.model_copy(update={"topic_prefix": prefix})})
    topic = ensure_optin_topic(settings)
    print(f"writing to {topic} (a topic of this run's own, not {optin_topic(base)})",
          flush=True)
    port = free_port()
    proc = start_ingress(port, args.state_store, prefix)
    try:
        key = settings.ingress.hmac_key.get_secret_value().encode()
        sat, pace, cpu = asyncio.run(http_phases(port, key, args, proc.pid))
        shed = scrape(port, "mosaic_ingress_state_writes_dropped_total")
    finally:
        proc.terminate()
        proc.wait(30)
    try:
        raw = raw_producer(settings, max(20_000, int(sat.rate * args.seconds)))
    finally:
        if not args.keep_topic:
            _delete_topic(settings, topic)
    print(f"machine: {os.cpu_count()} cpus, load average {os.getloadavg()[0]:.1f}; "
          f"connections={args.connections}; state store={args.state_store}")
    print(sat.line("ingress saturation"))
    print(pace.line(f"ingress paced at {pace.rate:,.0f}/s"))
    print(f"raw producer loop: {raw:,.0f} events/s")
    print(f"ratio ingress/raw: {sat.rate / raw:.2f}")
    print(f"user_state projections shed under load: {shed:.0f}")
    print(f"ingress process CPU per accepted opt-in: {cpu * 1e6:.0f} us "
          f"(=> {1 / cpu:,.0f}/s per fully used core)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
