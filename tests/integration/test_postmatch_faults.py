"""Post-match guarantees under the faults a production cluster sees, on the real stack.

A cycle of ``USERS`` users (``USERS / 2`` pairs committed in one Kafka transaction, as the
matcher does) is processed while something breaks: the post-match process is killed
with SIGKILL at random points several times; Nakama is stopped for 30 s; Cassandra is
restarted; the Kafka broker is restarted. Afterwards, what users see through Nakama's
client API must be exact: each user is in exactly one group, shared with exactly their
partner (two members, closed), holds exactly one match notification naming that group,
and every pair's audit row has every flag set. Also: SIGTERM drains and exits 0 in a
bounded time, and an agent that dies takes the process down with a non-zero exit.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.ops.lag import consumer_lag
from consumers.postmatch.app import PostMatch, build_postmatch, run_postmatch
from mosaic.errors import ExternalServiceError
from mosaic.nakama_client import NakamaClient
from mosaic.settings import Settings
from stack.nakama import bulk_accounts
from stack.postgres import Postgres
from streams.events import CycleCompleted, PairMatched, derive_event_id, pair_key
from streams.kafka import make_transactional_producer, produce_event, transaction
from tests.brokers import FAULTS, PrivateBroker, private_broker
from tests.support import own_keyspace, own_topics

pytestmark = [pytest.mark.integration, pytest.mark.fault]

USERS = 1000
# The private broker's port (and + 1); unset: a free pair picked at random.
BROKER_PORT = int(os.environ.get("MOSAIC_FAULT_BROKER_PORT", "0")) or None
PAUSE_SECONDS = 60.0
MOSAIC = str(Path(sys.executable).parent / "mosaic")


class Cycle:
    def __init__(self, app: PostMatch, users: dict[str, str], prefix: str) -> None:
        self.app = app
        self.users = users  # custom id (sub) -> Nakama user id
        self.prefix = prefix
        ordered = sorted(users)
        self.id = f"default:fault-{uuid.uuid4().hex[:8]}"
        self.pairs = [(a, b) for a, b in zip(ordered[::2], ordered[1::2], strict=True)]

    def commit(self) -> None:
        now = datetime.now(UTC)
        producer = make_transactional_producer(self.app.settings, f"t-{uuid.uuid4().hex}")
        with transaction(producer):
            for a, b in self.pairs:
                key = pair_key(a, b)
                produce_event(producer, self.app.catalog.pairs, PairMatched(
                    event_id=derive_event_id("fault", self.id, key), occurred_at=now,
                    cycle_id=self.id, pair_key=key, user_a=a, user_b=b, score=0.9,
                    similarity=0.8))
            produce_event(producer, self.app.catalog.cycles, CycleCompleted(
                event_id=derive_event_id("fault-cycle", self.id), occurred_at=now,
                cycle_id=self.id, pairs=len(self.pairs), seekers=len(self.users)))

    def complete(self) -> int:
        return sum(r.complete for r in self.app.audit.rows(self.id))

    def wait_complete(self, timeout: float, *, alive: Callable[[], bool] = lambda: True,
                      errors: Callable[[], Sequence[BaseException]] = list,
                      groups: Settings | None = None) -> None:
        """Every pair complete within ``timeout``; else fail naming the cause: an agent's
        error first, then which audit flags the unfinished pairs lack and, with
        ``groups``, each agent's committed offset against the partition's end."""
        deadline = time.monotonic() + timeout
        done = 0
        while time.monotonic() < deadline:
            if errors():
                raise AssertionError(f"an agent died at {done}/{len(self.pairs)} pairs: "
                                     + "; ".join(f"{type(e).__name__}: {e}" for e in errors()))
            if not alive():
                raise AssertionError(f"post-match exited at {done}/{len(self.pairs)} pairs")
            try:
                done = self.complete()
            except ExternalServiceError:  # our own reads ride out the outage too
                done = -1
            if done == len(self.pairs):
                return
            time.sleep(1)
        raise AssertionError(f"{done}/{len(self.pairs)} pairs complete after {timeout:.0f} s "
                             f"and no agent error; {self.stall_report(groups)}")

    def stall_report(self, groups: Settings | None) -> str:
        rows = self.app.audit.rows(self.id)
        lacking = Counter(flag for r in rows if not r.complete for flag in
                          ("pinecone_metadata_updated", "nakama_group_created",
                           "user1_notified", "user2_notified") if not getattr(r, flag))
        report = f"{len(self.pairs) - len(rows)} pairs without a row, unfinished lack {lacking}"
        if groups is not None:
            try:
                behind = [f"{g.group} {g.topic}[{g.partition}] {g.committed}/{g.end}"
                          for g in consumer_lag(groups, timeout_seconds=20) if g.lag]
            except Exception as exc:  # noqa: BLE001 - the report must not hide the failure
                behind = [f"unavailable ({exc})"]
            report += "; groups behind (committed/end): " + (", ".join(behind) or "none")
        return report + "; agents at:\n" + _agent_stacks()

    def wait_progress(self, at_least: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.complete() < at_least:
            assert time.monotonic() < deadline, "no progress before the fault"
            time.sleep(0.3)

    def verify(self) -> None:
        """Exactly one room and one notification per user: every user in Nakama's own
        tables, and a sample through the client API as the users see it."""
        rows = {r.pair_key: r for r in self.app.audit.rows(self.id)}
        assert len(rows) == len(self.pairs)
        assert all(r.complete for r in rows.values()), [r for r in rows.values()
                                                         if not r.complete][:3]
        group_of = {u: rows[pair_key(a, b)].nakama_group_id
                    for a, b in self.pairs for u in (a, b)}
        sql = Postgres(self.app.settings).app_sql
        mine = f"u.custom_id LIKE '{self.prefix}%'"
        notes = {c: (int(n), g) for c, n, g in sql(
            "SELECT u.custom_id, count(*), max(n.content->>'group_id') FROM notification n "
            f"JOIN users u ON u.id = n.user_id WHERE n.code = 101 AND {mine} "
            "GROUP BY u.custom_id")}
        assert notes == {u: (1, g) for u, g in group_of.items()}
        member = {c: (int(n), g) for c, n, g in sql(
            "SELECT u.custom_id, count(*), max(g.id::text) FROM group_edge e "
            "JOIN groups g ON g.id = e.source_id JOIN users u ON u.id = e.destination_id "
            f"WHERE e.state <= 2 AND {mine} GROUP BY u.custom_id")}
        assert member == {u: (1, g) for u, g in group_of.items()}
        (shapes,) = sql(
            "SELECT count(*), count(*) FILTER (WHERE g.edge_count = 2 AND g.state = 1) "
            f"FROM groups g JOIN users u ON u.id = g.creator_id WHERE {mine}")
        assert shapes == [str(len(self.pairs))] * 2  # no stray groups, all closed pairs
        client = NakamaClient(self.app.settings.nakama)
        for a, b in random.Random(7).sample(self.pairs, 5):
            session = _login(client, a)
            seen = [n for n in client.notifications(session) if n.get("code") == 101]
            content = json.loads(seen[0]["content"])
            assert len(seen) == 1 and content["partner_user_id"] == self.users[b]
            assert b not in json.dumps(content)
            assert [g["id"] for g in client.groups(session)] == [group_of[a]]


def _login(client: NakamaClient, user: str) -> Any:
    """Log in, riding out a restart of the shared Nakama by someone else (60 s at most)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            return client.login(user)
        except httpx.ConnectError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def _agent_stacks() -> str:
    """Where each agent thread of this process is (a stall's evidence: a blocking call?)."""
    frames = sys._current_frames()
    return "\n".join(
        f"{t.name}:\n" + "".join(traceback.format_stack(frames[t.ident])[-6:])
        for t in threading.enumerate()
        if t.name.startswith("agent-") and t.ident in frames) or "(no agent threads)"


@pytest.fixture(scope="module")
def fault_settings(settings: Settings, kafka_stack: object, cassandra_stack: object,
                   nakama_stack: object) -> Iterator[Settings]:
    run = uuid.uuid4().hex[:8]
    with own_keyspace(settings.model_copy(update={
        "kafka": settings.kafka.model_copy(update={"topic_prefix": f"fault{run}."}),
        "cassandra": settings.cassandra.model_copy(update={"keyspace": f"fault_{run}"}),
    })) as own, own_topics(own):
        yield own


def _cycle(settings: Settings) -> Iterator[Cycle]:
    prefix = f"fault-{uuid.uuid4().hex[:8]}-"
    users = bulk_accounts(settings, USERS, prefix)
    app = build_postmatch(settings)
    yield Cycle(app, users, prefix)
    app.close()


@pytest.fixture
def cycle(fault_settings: Settings) -> Iterator[Cycle]:
    yield from _cycle(fault_settings)


@pytest.fixture(scope="module")
def broker(fault_settings: Settings) -> Iterator[PrivateBroker]:
    """The broker-fault cases' own Kafka (a free port pair): restarting, killing or pausing it
    never disturbs the shared stack's broker; Nakama and Cassandra stay the shared ones."""
    with private_broker(fault_settings, BROKER_PORT) as own, own_topics(own.settings):
        yield own


@pytest.fixture
def broker_cycle(broker: PrivateBroker) -> Iterator[Cycle]:
    yield from _cycle(broker.settings)


def _env(settings: Settings) -> dict[str, str]:
    return {**os.environ,
            "MOSAIC_KAFKA__TOPIC_PREFIX": settings.kafka.topic_prefix,
            "MOSAIC_CASSANDRA__KEYSPACE": settings.cassandra.keyspace}


def _postmatch(settings: Settings, *args: str, env: dict[str, str] | None = None
               ) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [MOSAIC, "postmatch", "--port", "0", "--max-batch", "50", "--reconcile-every", "0",
         *args], env=env or _env(settings), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, start_new_session=True)


def test_kill_9_at_random_points_still_gives_exactly_one_room_and_notification(
        cycle: Cycle) -> None:
    rng = random.Random(20261201)
    cycle.commit()
    kills = 0
    for _ in range(4):
        before = _progress(cycle)
        proc = _postmatch(cycle.app.settings)
        # Kill mid-work: once this run has visibly done something (a fixed delay let a
        # fast run finish every pair before the first kill), after a random moment more.
        deadline = time.monotonic() + 60
        while _progress(cycle) == before:
            if proc.poll() is not None:
                pytest.fail("post-match exited early:\n"
                            f"{proc.stdout.read() if proc.stdout else ''}")
            assert time.monotonic() < deadline, f"post-match run {kills + 1}: no progress " \
                f"in 60 s (audit rows, complete pairs: {before})"
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 0.4))
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        kills += 1
    done_before_last_run = cycle.complete()
    proc = _postmatch(cycle.app.settings)
    try:
        cycle.wait_complete(240, alive=lambda: proc.poll() is None)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    assert kills == 4 and done_before_last_run < len(cycle.pairs)
    cycle.verify()


def _progress(cycle: Cycle) -> tuple[int, int]:
    """Audit rows written and pairs complete so far."""
    rows = cycle.app.audit.rows(cycle.id)
    return len(rows), sum(r.complete for r in rows)


def _in_process(cycle: Cycle, reconcile_every: float | None = None
                ) -> tuple[threading.Thread, threading.Event, list[BaseException]]:
    stop = threading.Event()
    errors: list[BaseException] = []

    def work() -> None:
        try:
            run_postmatch(cycle.app, stop=stop.is_set, max_batch=50,
                          reconcile_every=reconcile_every)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread, stop, errors


def _service(settings: Settings, name: str) -> Any:
    from stack.services import build

    (service,) = build(settings, [name])
    return service


@pytest.mark.parametrize("server,down_seconds", [("nakama", 30.0), ("cassandra", 0.0)])
def test_a_server_outage_mid_cycle_still_completes_exactly_once(
        cycle: Cycle, server: str, down_seconds: float) -> None:
    # As `mosaic postmatch` runs: the agents and the reconciler (every 30 s).
    thread, stop, errors = _in_process(cycle, reconcile_every=30.0)
    try:
        cycle.commit()
        cycle.wait_progress(20)
        service = _service(cycle.app.settings, server)
        service.down()
        time.sleep(down_seconds)
        service.up()
        cycle.wait_complete(300, errors=lambda: errors)
    finally:
        stop.set()
        thread.join(90)
    assert not errors, errors
    cycle.verify()


def broker_fault_runs() -> list[Any]:
    """Each broker fault once (CI); ``MOSAIC_BROKER_FAULT_RUNS=N`` loops each N times
    (bench/broker_faults.py)."""
    runs = int(os.environ.get("MOSAIC_BROKER_FAULT_RUNS", "1"))
    return [pytest.param(fault, run, id=f"{fault}-{run}")
            for fault in FAULTS for run in range(1, runs + 1)]


@pytest.mark.parametrize("fault,run", broker_fault_runs())
def test_a_broker_fault_mid_cycle_still_completes_exactly_once(
        broker_cycle: Cycle, broker: PrivateBroker, fault: str, run: int) -> None:
    # restart: SIGTERM and start again; kill9: SIGKILL and start again; pause: SIGSTOP for
    # 60 s (past the session timeout: the group rebalances when it comes back).
    cycle = broker_cycle
    thread, stop, errors = _in_process(cycle, reconcile_every=30.0)
    try:
        cycle.commit()
        cycle.wait_progress(20)
        broker.fault(fault, pause_seconds=PAUSE_SECONDS)
        cycle.wait_complete(300, errors=lambda: errors, groups=broker.settings)
    finally:
        stop.set()
        thread.join(90)
    assert not errors, errors
    cycle.verify()


def test_sigterm_drains_commits_and_exits_zero(cycle: Cycle) -> None:
    cycle.commit()
    proc = _postmatch(cycle.app.settings)
    cycle.wait_progress(10)
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert time.monotonic() - started < 30
    assert "rooms        handled=" in out
    # Whatever it committed is not redone: the rest finishes in a second run.
    proc = _postmatch(cycle.app.settings, "--idle-seconds", "10")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    cycle.verify()


class _Garbage(BaseHTTPRequestHandler):
    """A broken chat server: answers every RPC 200 with a body that is not the contract."""

    def do_POST(self) -> None:
        body = b'{"unexpected": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_a_dead_agent_takes_the_process_down_with_the_cause(cycle: Cycle) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Garbage)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        cycle.commit()
        env = {**_env(cycle.app.settings),
               "MOSAIC_NAKAMA__URL": f"http://127.0.0.1:{server.server_address[1]}"}
        proc = _postmatch(cycle.app.settings, env=env)
        out, _ = proc.communicate(timeout=120)
    finally:
        server.shutdown()
    assert proc.returncode != 0, out
    assert "rooms died" in out and "malformed answer" in out
