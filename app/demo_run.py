"""The stages of ``mosaic demo`` and the report it prints (see app/demo.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from tqdm import tqdm

from app.demo_backlog import end_offsets, measure
from app.demo_data import make_personas, write_insights
from app.demo_report import DemoReport, cluster_purity, demo_pool, now_utc, verify
from mosaic.errors import MosaicError
from mosaic.nakama_client import LocalIssuer, NakamaClient, Session
from mosaic.settings import Settings


@contextmanager
def stage(report: DemoReport, name: str) -> Iterator[None]:
    print(f"\n== {name}", flush=True)
    started = time.monotonic()
    yield
    report.timings.record(name, started)
    print(f"   done in {report.timings.stages[name]:.1f}s", flush=True)


def run_demo(settings: Settings, *, users: int, seed: int, timeout_seconds: float,
             before_opt_in: Callable[[DemoReport], None] | None = None) -> DemoReport:
    """One full cycle; ``before_opt_in`` runs once every user can sign in (``--web``)."""
    report = DemoReport(pool=demo_pool(seed), personas=make_personas(users, seed))
    print(f"Mosaic Match demo: {users} users, pool {report.pool}, persona seed {seed}")
    print(f"shares with everything else on this stack: topics {settings.kafka.topic_prefix}* "
          f"(Nakama's RPCs call the one ingress), the embedding agent's consumer group "
          f"{settings.embedding_agent.group_id}, keyspace {settings.cassandra.keyspace}; "
          f"the pool is its own")
    with stage(report, "topics"):
        _apply_topics(settings)
    with stage(report, "insights to S3"):
        _write_insights(settings, report, seed)
    client = NakamaClient(settings.nakama, id_tokens=LocalIssuer(settings.identity))
    with stage(report, "Nakama logins"):
        sessions = _logins(client, report)
    if before_opt_in is not None:
        before_opt_in(report)
    with ingress_serving(settings):  # the status RPC at the end goes through it too
        with stage(report, "opt-in via Nakama RPC -> ingress -> Kafka"):
            before = end_offsets(settings)  # anything below is not this demo's
            _opt_in(client, sessions, report)
        with stage(report, "embedding agent (S3 traits -> embed -> index -> seekers)"):
            _embed(settings, report, timeout_seconds, before)
        with stage(report, "matching cycle (one Kafka transaction)"):
            _match(settings, report)
        with stage(report, "rooms and notifications"):
            _postmatch(settings, report, timeout_seconds)
        with stage(report, "checking what users see in Nakama"):
            _verify(client, sessions, report)
    client.close()
    with stage(report, "cycle report (mosaic report)"):
        _cycle_report(settings, report)
    return report


def _logins(client: NakamaClient, report: DemoReport) -> dict[str, Session]:
    sessions = {}
    for persona in tqdm(report.personas, unit="user", leave=False):
        sessions[persona.user_id] = session = client.login(persona.user_id)
        client.set_display_name(session, persona.name)  # the partner's name in the web client
    return sessions


def _apply_topics(settings: Settings) -> None:
    from streams.admin import apply
    from streams.kafka import make_admin
    from streams.topics import build_catalog

    apply(build_catalog(settings), make_admin(settings))


def _write_insights(settings: Settings, report: DemoReport, seed: int) -> None:
    from profiles.bootstrap import build_insight_store

    written = write_insights(build_insight_store(settings), report.personas, seed=seed,
                             now=now_utc())
    print(f"   {written} chat insight documents for {len(report.personas)} users")


_SERVING: list[object] = []  # ingresses this process serves (demo --web nests the context)


@contextmanager
def ingress_serving(settings: Settings) -> Iterator[None]:
    """Reuse an ingress already serving on the configured port, else serve one here."""
    if _SERVING:
        yield
        return
    url = f"http://{settings.ingress.host}:{settings.ingress.port}/health"
    try:
        if httpx.get(url, timeout=2, trust_env=False).status_code == 200:
            print(f"   using the ingress already running at {url}")
            yield
            return
    except httpx.HTTPError:
        pass  # nothing answers there: serve one in this process
    from producers.bootstrap import build_production_app, serve_in_thread

    server = serve_in_thread(build_production_app(settings), settings.ingress.host,
                             settings.ingress.port)
    _SERVING.append(server)
    try:
        yield
    finally:
        _SERVING.remove(server)
        server.stop()


def _opt_in(client: NakamaClient, sessions: dict[str, Session], report: DemoReport) -> None:
    # One confidential block inside a cluster: the matcher must never pair these two.
    blocker, blocked = report.personas[0], report.personas[min(4, len(report.personas) - 1)]
    if blocker != blocked:
        client.rpc(sessions[blocker.user_id], "rpc_block_user",
                   {"global_user_id": blocked.user_id})
        report.blocked = (blocker.user_id, blocked.user_id)
    for persona in tqdm(report.personas, unit="opt-in", leave=False):
        answer = client.rpc(sessions[persona.user_id], "rpc_opt_in_match",
                            {"pool": report.pool})
        if not answer.get("accepted"):
            raise MosaicError(f"opt-in of {persona.name} was not accepted: {answer}")


def _watch(what: str, total: int, progress: Callable[[], int], worker: threading.Thread,
           timeout_seconds: float, *, desc: str | None = None) -> int:
    """Show a progress bar until ``progress()`` reaches ``total`` or the worker ends."""
    done = 0
    deadline = time.monotonic() + timeout_seconds
    with tqdm(total=total, unit=what, leave=False, desc=desc) as bar:
        while worker.is_alive() and time.monotonic() < deadline:
            done = progress()
            bar.update(done - bar.n)
            if done >= total:
                break
            time.sleep(1.0)
    return done


def _embed(settings: Settings, report: DemoReport, timeout_seconds: float,
           before: dict[int, int]) -> None:
    from consumers.embedding.worker import run_embedding_worker
    from mosaic.cassandra import connect
    from mosaic.user_state import read_states

    session = connect(settings.cassandra)
    keyspace = settings.cassandra.keyspace
    stop = threading.Event()
    result: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: result.update(report=run_embedding_worker(
        settings, stop=stop, max_seconds=timeout_seconds)), name="embedding", daemon=True)
    backlog = measure(settings, before)
    worker.start()
    started = time.monotonic()
    if backlog.earlier:
        print(f"   catching up: {backlog.earlier:,} earlier records on the shared topic "
              f"{backlog.topic} (group {backlog.group}) come before this demo's opt-ins",
              flush=True)
        _watch("record", backlog.earlier, lambda: backlog.consumed(settings), worker,
               timeout_seconds, desc="catching up")
        print(f"   worked through {backlog.consumed(settings):,} earlier records in "
              f"{time.monotonic() - started:.0f}s", flush=True)
    ids = [p.user_id for p in report.personas]
    done = _watch("profile", len(ids), lambda: sum(
        s == "waiting" for s in read_states(session, keyspace, ids).values()),
        worker, max(1.0, timeout_seconds - (time.monotonic() - started)))
    stop.set()
    worker.join(60)
    states = read_states(session, keyspace, ids)
    session.cluster.shutdown()
    failed = sorted(u for u, s in states.items() if s != "waiting")
    print(f"   {done}/{len(ids)} profiles embedded and waiting")
    report.check("every opted-in user became a seeker", not failed,
                 f"not waiting: {failed}" if failed else f"{done} seekers")


def _match(settings: Settings, report: DemoReport) -> None:
    from matcher.service import MatcherService
    from matcher.service_commands import build_block_store
    from producers.ticker import publish_tick

    tick = publish_tick(settings, report.pool)
    report.cycle_id = tick.cycle_id
    with MatcherService(settings, blocks=build_block_store(settings)) as service:
        cycles = service.run(stop_when_idle=True, max_seconds=300)
    mine = [c for c in cycles if c.cycle_id == tick.cycle_id]
    if not mine or mine[-1].outcome != "completed":
        raise MosaicError(f"cycle {tick.cycle_id} did not complete: {mine}")
    cycle = mine[-1]
    report.unmatched = dict(cycle.unmatched_by_reason)
    report.expected_pairs = cycle.pairs
    print(f"   cycle {cycle.cycle_id}: {cycle.seekers} seekers, {cycle.pairs} pairs, "
          f"unmatched {report.unmatched or 'none'}")


def _postmatch(settings: Settings, report: DemoReport, timeout_seconds: float) -> None:
    from consumers.postmatch.app import build_postmatch, run_postmatch

    app = build_postmatch(settings)
    stop = threading.Event()
    worker = threading.Thread(target=lambda: run_postmatch(app, stop=stop.is_set),
                              name="postmatch", daemon=True)
    worker.start()
    try:
        _watch("pair", report.expected_pairs, lambda: sum(
            r.complete for r in app.audit.rows(report.cycle_id)), worker, timeout_seconds)
    finally:
        stop.set()
        worker.join(60)
    rows = app.audit.rows(report.cycle_id)
    report.pairs = _pairs_of(app, report, rows)
    app.close()


def _pairs_of(app: Any, report: DemoReport, rows: list[Any]) -> list[tuple[str, str, float,
                                                                           float]]:
    from consumers.postmatch.app import cycle_pairs

    events = {p.pair_key: p for p in cycle_pairs(app, report.cycle_id)}
    out = []
    for row in rows:
        pair = events.get(row.pair_key)
        if pair is not None:
            out.append((pair.user_a, pair.user_b, pair.score, pair.similarity))
    return out


def _cycle_report(settings: Settings, report: DemoReport) -> None:
    from app.ops.report import report_cycle

    try:
        report.report_path = str(report_cycle(settings, report.cycle_id))
    except MosaicError as exc:  # the checks above stand; say why there is no page
        print(f"   no cycle report: {exc}")
        return
    print(f"   {report.report_path}")


def _verify(client: NakamaClient, sessions: dict[str, Session], report: DemoReport) -> None:
    verify(client, sessions, report, cluster_purity)
