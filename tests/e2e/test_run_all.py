"""``mosaic run all`` end to end on the real stack: the supervisor starts every service as a
child process; users opt in through Nakama's RPC (-> the supervised ingress), the embedding
agent makes them seekers, one tick makes a cycle, the post-match agents notify each matched
user once; every service serves /metrics and /health (and the stack's Prometheus, when
built, scrapes them all); SIGTERM stops everything cleanly."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from app.demo_data import make_personas, write_insights
from app.ops.supervisor import service_specs
from mosaic.nakama_client import LocalIssuer, NakamaClient
from mosaic.ops.ports import OPS_PORTS
from mosaic.settings import Settings
from stack.base import Service, port_open
from tests.support import free_ports, own_topics, with_topic_prefix

pytestmark = pytest.mark.e2e

USERS = 8
NOTIFY_CODE = 101


def _get(url: str) -> httpx.Response:
    return httpx.get(url, timeout=5, trust_env=False)


def _wait(what: str, check: object, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except (httpx.HTTPError, OSError):
            pass
        time.sleep(1.0)
    pytest.fail(f"{what} not reached in {timeout:.0f}s; supervisor log:\n"
                + "\n".join(log.read_text(errors="replace").splitlines()[-80:]))


@pytest.fixture(scope="module")
def stack(settings: Settings, kafka_stack: Service, cassandra_stack: Service,
          nakama_stack: Service, s3_stack: Service) -> Settings:
    if port_open("127.0.0.1", settings.ingress.port):
        pytest.fail(f"127.0.0.1:{settings.ingress.port} is taken: Nakama's runtime env "
                    "sends RPCs to the ingress there")
    return settings


def _ports(base: int) -> dict[str, int]:
    return {name: port - OPS_PORTS["run"] + base for name, port in OPS_PORTS.items()}


@pytest.fixture(scope="module")
def prometheus(stack: Settings) -> Service | None:
    """The stack's Prometheus when its binaries are built (never built here: minutes)."""
    from stack.prometheus import Prometheus

    service = Prometheus(stack)
    if not service.installed():
        return None
    service.up()
    return service


@pytest.fixture
def run(stack: Settings, tmp_path: Path) -> Iterator[tuple[Settings, str, subprocess.Popen[bytes],
                                                           Path, dict[str, int]]]:
    tag = f"{random.getrandbits(32):08x}"
    pool = f"run-{tag}"
    settings = with_topic_prefix(stack, f"run{tag}.")
    env = {**os.environ,
           "MOSAIC_KAFKA__TOPIC_PREFIX": settings.kafka.topic_prefix,
           "MOSAIC_EMBEDDING_AGENT__GROUP_ID": f"run{tag}-embedding",
           "MOSAIC_MATCHER__TRANSACTIONAL_ID": f"run{tag}-matcher",
           "MOSAIC_MATCHER__POOLS": json.dumps([pool])}
    log = tmp_path / "run.log"
    base = free_ports(tuple(range(len(OPS_PORTS))), step=10)
    with own_topics(settings):
        with log.open("wb") as sink:
            proc = subprocess.Popen(
                [sys.executable, "-c", "from app.cli import entry; entry()", "run", "all",
                 "--ops-port-base", str(base)],
                env=env, stdout=sink, stderr=subprocess.STDOUT)
        try:
            yield settings, pool, proc, log, _ports(base)
        finally:
            if proc.poll() is None:
                # SIGTERM first: the supervisor stops its children (their own sessions);
                # a bare kill would orphan them and their ports would break later tests.
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(90)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(30)


def test_run_all_supervises_a_whole_cycle_and_stops_cleanly(
        run: tuple[Settings, str, subprocess.Popen[bytes], Path, dict[str, int]],
        prometheus: Service | None) -> None:
    settings, pool, proc, log, ports = run
    specs = service_specs(settings, ports)

    # Every child up, each with /health and /metrics.
    def all_ready() -> bool:
        return bool(_get(f"http://127.0.0.1:{ports['run']}/health").json().get("ready")
                    and all(_get(f"http://127.0.0.1:{s.port}/health").status_code == 200
                            for s in specs.values()))

    _wait("every service healthy", all_ready, 180, log)
    for spec in specs.values():
        body = _get(f"http://127.0.0.1:{spec.port}/metrics").text
        assert "process_cpu_seconds_total" in body, spec.name

    # Users opt in through Nakama -> the supervised ingress -> Kafka.
    from profiles.bootstrap import build_insight_store

    personas = make_personas(USERS, random.getrandbits(30))
    write_insights(build_insight_store(settings), personas, seed=5, now=datetime.now(UTC))
    client = NakamaClient(settings.nakama, id_tokens=LocalIssuer(settings.identity))
    try:
        sessions = {p.user_id: client.login(p.user_id) for p in personas}
        for persona in personas:
            answer = client.rpc(sessions[persona.user_id], "rpc_opt_in_match", {"pool": pool})
            assert answer.get("accepted"), answer

        # The embedding agent makes every user a seeker.
        from mosaic.cassandra import connect
        from mosaic.user_state import read_states

        session = connect(settings.cassandra)
        ids = [p.user_id for p in personas]
        _wait("every user waiting", lambda: all(
            s == "waiting" for s in read_states(session, settings.cassandra.keyspace,
                                                ids).values())
            and len(read_states(session, settings.cassandra.keyspace, ids)) == USERS,
            180, log)
        session.cluster.shutdown()

        # One tick in the next slot (the ticker already ticked the current, empty one).
        at = datetime.now(UTC) + timedelta(seconds=settings.matcher.cycle_seconds)
        tick = subprocess.run(
            [sys.executable, "-c", "from app.cli import entry; entry()", "tick", "--pool",
             pool, "--at", at.isoformat()],
            env={**os.environ, "MOSAIC_KAFKA__TOPIC_PREFIX": settings.kafka.topic_prefix},
            capture_output=True, text=True, timeout=60, check=True)
        cycle_id = tick.stdout.strip()

        def notified() -> dict[str, int]:
            counts = {}
            for user_id, s in sessions.items():
                notes = [json.loads(n.get("content") or "{}")
                         for n in client.notifications(s) if n.get("code") == NOTIFY_CODE]
                counts[user_id] = sum(n.get("cycle_id") == cycle_id for n in notes)
            return counts

        _wait("every user notified", lambda: all(c == 1 for c in notified().values()),
              180, log)
        assert set(notified().values()) == {1}  # exactly one each, still
    finally:
        client.close()

    # The matcher's histogram saw every matched user's opt-in-to-match time.
    matcher = _get(f"http://127.0.0.1:{specs['matcher'].port}/metrics").text
    assert f'mosaic_matcher_optin_to_match_seconds_count{{pool="{pool}"}} {USERS}.0' in matcher
    # The embedding agent's group (run<tag>-embedding) is among those the supervisor sees
    # (its lag collector caches a query over every group on the broker for a few seconds).
    group = f'group="{settings.kafka.topic_prefix[:-1]}-embedding"'
    _wait("the supervisor reporting the embedding group's lag", lambda: group in _get(
        f"http://127.0.0.1:{ports['run']}/metrics").text, 60, log)

    if prometheus is not None:
        wanted = {"run", *specs}

        def scraped() -> bool:
            reply = _get(f"http://127.0.0.1:{settings.stack.prometheus_port}"
                         "/api/v1/targets?state=active").json()
            up = {t["labels"].get("service") for t in reply["data"]["activeTargets"]
                  if t["labels"].get("job") == "mosaic" and t["health"] == "up"}
            return wanted <= up

        _wait("Prometheus scraping every service", scraped, 90, log)

    # Clean stop: SIGTERM is forwarded, every child drains and exits, nothing is killed.
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(90) == 0
    text = log.read_text(errors="replace")
    for name in specs:
        assert f"{name} stopped" in text, text[-3000:]
    assert "SIGKILL" not in text
    assert "restarting in" not in text, text[-3000:]
    for spec in specs.values():
        assert not port_open("127.0.0.1", spec.port), spec.name
