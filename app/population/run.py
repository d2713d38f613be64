"""A population run: N simulated users against the services run as an operator runs them.

``run_population`` starts ``mosaic run`` (ingress, embedding x E, matcher, post-match x K,
reconciler; no ticker: the run ticks once itself) with this run's own topic prefix, pool,
consumer groups and transactional id; signs the users in (ID token -> Nakama -> socket),
opts them in through ``rpc_opt_in_match``, waits until each is a seeker, ticks, and waits
until every user's socket got its match notification. Stages that stall fail with
:class:`PopulationError` naming the stage, what is missing and the services' log tail.

Embedder: the fast honest path. Trait texts are pre-computed into the agent's S3 traits
cache (the real TraitsService over insights held in memory, one S3 object per user; the
agent then reads one object per user instead of four) and the agent embeds them with the
Vertex AI stand-in (standins/vertex.py, no added latency, 64-dim hashed bag-of-words
vectors, batches of 250).
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import httpx

from app.demo_data import make_personas, write_insights
from app.ops.supervisor import service_specs
from app.population.report import (
    CpuWindow,
    Progress,
    child_pids,
    mean_request_seconds,
    not_exactly_once,
    notification_delays,
    peak_rss_mib,
    spread,
)
from app.population.users import Population, SimUser
from mosaic.ops.ports import OPS_PORTS
from mosaic.settings import Settings
from standins.vertex import VertexStandin
from streams.events import CycleCompleted, SeekerUpdated

EMBEDDER = ("traits pre-computed into the S3 traits cache; Vertex AI stand-in, 0 s latency, "
            "64 dims, 250 texts per request")
_TOKEN = "population-bench"  # noqa: S105 - the stand-in's fixed bearer, not a secret
_DIM = 64
_SERVICES = ("ingress", "embedding", "matcher", "postmatch", "reconciler")


class PopulationError(RuntimeError):
    """A stage did not finish: which one, what is missing, the services' log tail."""


@dataclass(frozen=True)
class PopulationOptions:
    users: int
    postmatch_processes: int = 1
    embedding_processes: int = 1
    concurrency: int = 32  # sign-ins / opt-ins in flight (32 beat 128 here: docs)
    stall_seconds: float = 90.0  # a stage without progress this long fails
    settle_seconds: float = 3.0  # after the last notification, time for duplicates
    seed: int = 7


@dataclass
class Run:
    """One run's own names and processes."""

    settings: Settings
    tag: str
    pool: str
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def fail(self, stage: str, why: str) -> PopulationError:
        return PopulationError(f"{stage}: {why}\nservices' log ({self.log}), last lines:\n"
                               f"{self.tail()}")


def run_population(settings: Settings, options: PopulationOptions,
                   out: IO[str] | None = None) -> dict[str, Any]:
    """Run it and return the summary (see bench/population.py)."""
    err = out or sys.stderr
    _raise_fd_limit(options.users + 1024)
    tag = uuid.uuid4().hex[:8]
    prefix = f"pop{tag}."
    own = settings.model_copy(update={
        "kafka": settings.kafka.model_copy(update={"topic_prefix": prefix})})
    logs = settings.stack.data_dir / "population"
    logs.mkdir(parents=True, exist_ok=True)
    run = Run(own, tag, f"pop-{tag}", logs / f"{tag}.log")
    personas = make_personas(options.users, options.seed)
    with (_topics(own), VertexStandin(token=_TOKEN, max_instances=250) as vertex,
          _traits_cache(own, personas, options.seed, err),
          _services(run, options, vertex.url, err)):
        return asyncio.run(_drive(run, [p.user_id for p in personas], options, err))


async def _drive(run: Run, ids: list[str], options: PopulationOptions,
                 err: IO[str]) -> dict[str, Any]:
    s = run.settings
    pids = {**{n: _stack_pid(s, n) for n in ("nakama", "postgres", "oidc", "authhook")},
            **child_pids(run.log.read_text(errors="replace"))}
    cpu = {k: CpuWindow(pids) for k in ("run", "sign_in", "opt_in", "cycle")}
    async with Population(s, ids, concurrency=options.concurrency) as population:
        users = population.users
        cpu["run"].start()
        seekers = _Watch(s, s.kafka.topic_prefix + "seekers", SeekerUpdated, set(ids))
        cpu["sign_in"].start()
        rates: dict[str, Any] = {
            "sign_in_per_s": await _stage(run, "sign-in", population.sign_in_all, users, err)}
        cpu["sign_in"].stop()
        cpu["opt_in"].start()
        rates["opt_in_per_s"] = await _stage(
            run, "opt-in", lambda p: population.opt_in_all(run.pool, p), users, err)
        cpu["opt_in"].stop()
        rates["ingress_request_mean_s"] = _ingress_means(s)
        await _wait(run, "seekers", lambda: len(seekers.seen), len(ids),
                    options=options, err=err, users=users)
        seekers.stop()
        cpu["cycle"].start()
        tick_at, cycle_id = _tick(run)
        cycles = _Watch(s, s.kafka.topic_prefix + "cycles", CycleCompleted, {cycle_id})
        await _wait(run, "notified", lambda: sum(u.count(cycle_id) > 0 for u in users),
                    len(ids), options=options, err=err, users=users)
        cpu["cycle"].stop()
        await asyncio.sleep(options.settle_seconds)
        cycles.stop()
        cpu["run"].stop()
        return {"users": len(ids), **rates,
                **_figures(run, users, seekers.seen, cycles.seen.get(cycle_id),
                           tick_at=tick_at, cycle_id=cycle_id),
                "postmatch_processes": options.postmatch_processes,
                "embedding_processes": options.embedding_processes, "embedder": EMBEDDER,
                "cpu_cores": {k: w.result for k, w in cpu.items()},
                "cpu_count": os.cpu_count(),
                "load_average": [round(x, 2) for x in os.getloadavg()]}


def _figures(run: Run, users: list[SimUser], seekers: dict[str, float],
             completed: float | None, *, tick_at: float, cycle_id: str) -> dict[str, Any]:
    last = max((at for u in users for at, c in u.notes if c == cycle_id), default=tick_at)
    opt_delays = [seekers[u.custom_id] - u.opted_in_at
                  for u in users if u.custom_id in seekers and u.opted_in_at]
    rss = peak_rss_mib(child_pids(run.log.read_text(errors="replace")))
    rss["bench"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    bad = not_exactly_once(users, cycle_id)
    return {
        "notified_exactly_once": len(users) - len(bad),
        "tick_to_last_notification_s": round(last - tick_at, 3), "cycle_id": cycle_id,
        "opt_in_rpc_s": spread([u.opt_in_seconds for u in users]),
        "optin_to_seeker_s": spread(opt_delays),
        "tick_to_cycle_completed_s": None if completed is None
        else round(completed - tick_at, 3),
        "tick_to_notification_s": spread(notification_delays(users, cycle_id, tick_at)),
        "peak_rss_mib": rss, "not_exactly_once": bad}


async def _stage(run: Run, stage: str, step: Callable[[Progress], Any],
                 users: list[SimUser], err: IO[str]) -> float:
    """Run one client stage; its rate per second. Fails when any user failed it."""
    progress = Progress(stage, len(users), out=err)
    await step(progress)
    rate = round(progress.rate(), 1)
    failed = [u for u in users if u.error]
    if failed:
        raise run.fail(stage, f"{len(failed)} of {len(users)} users failed it, e.g. "
                              f"{failed[0].custom_id}: {failed[0].error}")
    return rate


async def _wait(run: Run, stage: str, count: Callable[[], int], total: int, *,
                options: PopulationOptions, err: IO[str],
                users: list[SimUser] | None = None) -> None:
    """Until ``count()`` reaches ``total``; fails when it stops moving for
    ``stall_seconds``, the supervisor exits or one of ``users``' sockets closed."""
    progress = Progress(stage, total, out=err)
    last, moved = -1, time.monotonic()
    while (done := count()) < total:
        if done != last:
            last, moved = done, time.monotonic()
            progress(done)
        if time.monotonic() - moved > options.stall_seconds:
            raise run.fail(stage, f"stalled at {done:,}/{total:,} for "
                                  f"{options.stall_seconds:.0f}s ({total - done:,} missing)")
        if run.proc is not None and run.proc.poll() is not None:
            raise run.fail(stage, f"the supervisor exited ({run.proc.returncode})")
        if users and (closed := [u for u in users if u.socket_closed]):
            raise run.fail(stage, f"{len(closed):,} users' sockets closed (Nakama restarted? "
                                  f"./dev stack status), e.g. {closed[0].custom_id}: "
                                  f"{closed[0].socket_closed}")
        await asyncio.sleep(0.2)
    progress(total)


def _tick(run: Run) -> tuple[float, str]:
    from producers.ticker import publish_tick

    at = time.time()
    tick = publish_tick(run.settings, run.pool, datetime.now(UTC))
    return at, tick.cycle_id


class _Watch:
    """Reads ``topic`` from the start in a thread: for each event of ``kind`` whose key
    field is in ``wanted``, the record's time (epoch seconds) in ``seen``."""

    def __init__(self, settings: Settings, topic: str, kind: type, wanted: set[str]) -> None:
        from streams.kafka import make_consumer

        self.seen: dict[str, float] = {}
        self._wanted, self._kind = wanted, kind
        self._stop = threading.Event()
        self._consumer = make_consumer(settings, f"{settings.kafka.topic_prefix}watch-{topic}",
                                       [topic])
        self._thread = threading.Thread(target=self._loop, name=f"watch-{topic}", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        from streams.serde import decode

        while not self._stop.is_set():
            message = self._consumer.poll(0.2)
            if message is None or message.error():
                continue
            event = decode(message.value())
            if not isinstance(event, self._kind):
                continue
            key = getattr(event, "user_id", None) or getattr(event, "cycle_id", "")
            if key in self._wanted and key not in self.seen:
                ms = message.timestamp()[1]  # the record's time on the topic
                self.seen[key] = ms / 1000 if ms > 0 else time.time()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._consumer.close()


# -- set-up and tear-down ----------------------------------------------------------------


@contextmanager
def _topics(settings: Settings) -> Iterator[None]:
    from streams.admin import apply
    from streams.kafka import make_admin
    from streams.topics import build_catalog

    catalog, admin = build_catalog(settings), make_admin(settings)
    apply(catalog, admin)
    try:
        yield
    finally:
        futures = admin.delete_topics([t.name for t in catalog], operation_timeout=30)
        for future in futures.values():
            future.result(timeout=30)


@contextmanager
def _traits_cache(settings: Settings, personas: list[Any], seed: int,
                  err: IO[str]) -> Iterator[None]:
    """Each user's trait text in the S3 traits cache (fresh, the agent's top_n), computed
    by the real TraitsService from insights held in memory; deleted afterwards."""
    from mosaic.s3 import s3_client
    from profiles.bootstrap import build_traits_service
    from profiles.insights import InMemoryInsightStore
    from profiles.traits import traits_key

    client = s3_client(settings.s3)
    service = build_traits_service(settings, s3_client=client)
    service.store = InMemoryInsightStore()
    write_insights(service.store, personas, seed=seed, now=datetime.now(UTC),
                   chats_per_user=1)
    progress = Progress("traits cache", len(personas), out=err)
    try:
        with ThreadPoolExecutor(16) as pool:
            for i, _ in enumerate(pool.map(lambda p: service.user_traits(p.user_id),
                                           personas)):
                progress(i + 1)
        yield
    finally:
        keys = [{"Key": traits_key(p.user_id)} for p in personas]
        for at in range(0, len(keys), 1000):
            client.delete_objects(Bucket=settings.s3.traits_cache_bucket,
                                  Delete={"Objects": keys[at:at + 1000], "Quiet": True})


def _env(run: Run, vertex_url: str) -> dict[str, str]:
    return {**os.environ,
            "MOSAIC_KAFKA__TOPIC_PREFIX": run.settings.kafka.topic_prefix,
            "MOSAIC_EMBEDDING_AGENT__GROUP_ID": f"pop{run.tag}-embedding",
            "MOSAIC_EMBEDDING_AGENT__BATCH_MAX": "250",
            "MOSAIC_MATCHER__TRANSACTIONAL_ID": f"pop{run.tag}-matcher",
            "MOSAIC_MATCHER__POOLS": json.dumps([run.pool]),
            "MOSAIC_EMBEDDING__BACKEND": "vertex",
            "MOSAIC_EMBEDDING__VERTEX_BASE_URL": vertex_url,
            "MOSAIC_EMBEDDING__VERTEX_STATIC_TOKEN": _TOKEN,
            "MOSAIC_EMBEDDING__OUTPUT_DIMENSIONALITY": str(_DIM),
            "MOSAIC_EMBEDDING__BATCH_SIZE": "250",
            "MOSAIC_EMBEDDING__REQUESTS_PER_MINUTE": "60000",
            "MOSAIC_VECTOR_INDEX__CASSANDRA_TABLE": f"vectors{_DIM}"}


@contextmanager
def _services(run: Run, options: PopulationOptions, vertex_url: str,
              err: IO[str]) -> Iterator[None]:
    """``mosaic run`` with this run's names, until every child is healthy; SIGTERM to the
    supervisor afterwards (also on failure or Ctrl-C), which stops its children."""
    from stack.base import port_open

    if port_open("127.0.0.1", run.settings.ingress.port):
        raise run.fail("start", f"127.0.0.1:{run.settings.ingress.port} is taken (another "
                                "ingress?): Nakama sends the opt-in RPCs there")
    base = _free_base(len(OPS_PORTS) + options.embedding_processes
                      + options.postmatch_processes)
    replicas = {"embedding": options.embedding_processes,
                "postmatch": options.postmatch_processes}
    with run.log.open("wb") as sink:
        run.proc = subprocess.Popen(
            [sys.executable, "-c", "from app.cli import entry; entry()", "run", *_SERVICES,
             "--ops-port-base", str(base),
             *(f"--{k}-processes={v}" for k, v in replicas.items())],
            env=_env(run, vertex_url), stdout=sink, stderr=subprocess.STDOUT)
    err.write(f"services: mosaic run (pid {run.proc.pid}), log {run.log}\n")
    try:
        shift = base - OPS_PORTS["run"]
        specs = service_specs(run.settings, {n: p + shift for n, p in OPS_PORTS.items()},
                              replicas=replicas)
        _await_healthy(run, [s.port for n, s in specs.items() if n != "ticker"],
                       options.stall_seconds * 2)
        yield
    finally:
        _stop(run)


def _await_healthy(run: Run, ports: list[int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    waiting = ports
    while time.monotonic() < deadline:
        waiting = [p for p in ports if not _healthy(p)]
        if not waiting:
            return
        if run.proc is not None and run.proc.poll() is not None:
            raise run.fail("start", f"the supervisor exited ({run.proc.returncode})")
        time.sleep(1.0)
    raise run.fail("start", f"services on ports {waiting} not healthy in {timeout:.0f}s")


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=3,
                         trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


def _stop(run: Run) -> None:
    proc = run.proc
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)  # the supervisor stops its children (own sessions)
    try:
        proc.wait(90)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(30)


def _free_base(count: int) -> int:
    """A random base port below the ephemeral range with ``count`` free ports after it."""
    import random

    from stack.base import port_open

    rng = random.SystemRandom()
    for _ in range(50):
        base = rng.randrange(20000, 32700 - count, 10)
        if not any(port_open("127.0.0.1", base + i) for i in range(count)):
            return base
    raise PopulationError(f"no {count} free ports in 20000-32700 after 50 tries")


def _ingress_means(settings: Settings) -> dict[str, float]:
    try:
        text = httpx.get(f"http://127.0.0.1:{settings.ingress.port}/metrics", timeout=10,
                         trust_env=False).text
    except httpx.HTTPError:
        return {}
    return mean_request_seconds(text)


def _stack_pid(settings: Settings, service: str) -> int | None:
    try:
        return int((settings.stack.data_dir / "run" / f"{service}.pid").read_text().strip())
    except (OSError, ValueError):
        return None


def _raise_fd_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted * 2, hard), hard))
