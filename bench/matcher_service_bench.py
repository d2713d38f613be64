"""The matcher SERVICE at scale, phase by phase, on the real broker and Cassandra.

For each size: N seekers (clustered 384-d vectors, waits up to 14 days) are written to the
``seekers`` topic of a prefix of this run's own (``bench-ms-<run>-<n>.``). Then
``mosaic matcher run --once`` runs three times as its own process (Cassandra block store,
as deployed; checkpoints in a directory of the run's own): with no tick yet (it reads the
whole topic, and its clean stop writes the pool's checkpoint); after a tick is published
(it starts from that checkpoint and runs the cycle); and once more (the restart after the
cycle). Printed per size:

- start-up: process start to "started at tick offset", reading the whole topic;
- checkpoint write: the first run's checkpoint of the full pool;
- start-up from the checkpoint: the second run's (the full pool, from its checkpoint);
- the cycle's phases as the service reports them (snapshot, constraints, match = the core,
  publish = encode + transaction; transaction = begin to commit);
- tick -> committed cycle: start-up end to the cycle's JSON line (printed when the tick is
  handled, before the clean stop's checkpoint);
- restart: the third run's start-up (from the checkpoint written after the cycle);
- peak RSS of the service (the larger of the first two runs) against the vectors' size.

    python bench/matcher_service_bench.py --sizes 100000
    python bench/matcher_service_bench.py --sizes 100000,300000,1000000

Topics are deleted at the end (``--keep`` keeps them). ``--blocks N`` first times the
constraints' block lookup alone for N pool members (one per 100 with a block), one IN query
at a time against ``READ_CONCURRENCY`` in flight, side by side. ``--fold N`` times the
start-up's decoding alone: N encoded records folded into the pool with the flat reader
and with fastavro, side by side. ``--encode N`` times the publish phase's encoding alone:
the events of a cycle of N seekers encoded with fastavro and with the flat writer.
``--snapshot N`` times the phases around the core for N folded seekers, the service's way
before and after (the snapshot: a Seeker per user vs the rows from the store; the encode
phase: every event built and encoded vs ``CyclePlan.records``), side by side.
``--memory N`` shows in-process where a cycle of N seekers takes its memory: RSS and peak
per phase (fold, snapshot, constraints, each step of the core, plan, encode) in multiples
of the vectors' bytes.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from matcher.pool import LogRecord
from matcher.synthetic import clustered_vectors
from mosaic.settings import Settings
from producers.ticker import publish_tick
from streams.admin import apply
from streams.events import (
    Event,
    PairMatched,
    SeekerRemoved,
    SeekerUnmatched,
    SeekerUpdated,
    derive_event_id,
    pair_key,
)
from streams.kafka import Encoded, encode_event, make_admin, make_producer, produce_encoded
from streams.topics import TopicCatalog, build_catalog

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
_STARTED = re.compile(r"started at tick offset")
_MAXRSS = re.compile(r"^MAXRSS (\d+)$")
_SAVED = re.compile(r"checkpoint of \S+: \d+ waiting users at .* in ([0-9.]+) s")


@dataclass
class Run:
    startup_s: float = 0.0
    committed_s: float = 0.0  # process start to the cycle's JSON line
    total_s: float = 0.0
    report: dict[str, object] = field(default_factory=dict)
    maxrss_bytes: int = 0
    resumed: bool = False  # the pool started from a checkpoint
    checkpoint_save_s: float = 0.0
    tail: list[str] = field(default_factory=list)


def seed(settings: Settings, catalog: TopicCatalog, n: int, dim: int, seed_: int) -> float:
    """Write ``n`` SeekerUpdated records; returns the seconds it took."""
    started = time.perf_counter()
    vectors = clustered_vectors(n, dim, seed_)
    waits = np.random.default_rng(seed_).uniform(0, 14 * 24 * 3600, n)
    producer = make_producer(settings, {"linger.ms": 50, "batch.size": 1_000_000,
                                        "compression.type": "lz4"})
    for i in range(n):
        user = f"b{i:07d}"
        event = SeekerUpdated(
            event_id=derive_event_id("bench-seed", user), occurred_at=T0,
            user_id=user, opted_in_at=T0 - timedelta(seconds=float(waits[i])),
            vector=tuple(vectors[i].tolist()), model="bench", traits_hash="h", version=1)
        produce_encoded(producer, encode_event(catalog.seekers, event), timeout_seconds=120)
        if i % 50_000 == 49_999:
            print(f"   seeded {i + 1:,}/{n:,} ({time.perf_counter() - started:.0f} s)",
                  flush=True)
    if producer.flush(300) != 0:
        raise SystemExit("seeding: records still queued after 300 s")
    return time.perf_counter() - started


def run_service(settings: Settings, timeout_s: float, checkpoints: str) -> Run:
    """``mosaic matcher run --once`` in its own process (checkpoints in ``checkpoints``):
    its start-up, the time to its cycle's JSON line, its checkpoint save and peak RSS."""
    env = {**os.environ, "MOSAIC_KAFKA__TOPIC_PREFIX": settings.kafka.topic_prefix,
           "MOSAIC_MATCHER__TRANSACTIONAL_ID": settings.matcher.transactional_id,
           "MOSAIC_MATCHER__CHECKPOINT_DIR": checkpoints, "MOSAIC_METRICS_PORT": "-1",
           "MOSAIC_LOG_FORMAT": "text"}
    code = ("import atexit, resource, sys\n"
            "atexit.register(lambda: print('MAXRSS', resource.getrusage("
            "resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr, flush=True))\n"
            "from app.cli import entry\nentry()\n")
    run = Run()
    started = time.perf_counter()
    # One stream (stderr into stdout), so the JSON line is timed when it is printed.
    process = subprocess.Popen([sys.executable, "-c", code, "matcher", "run", "--once"],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    assert process.stdout is not None
    for line in process.stdout:
        run.tail = [*run.tail[-30:], line.rstrip()]
        now = time.perf_counter() - started
        if not run.startup_s and _STARTED.search(line):
            run.startup_s, run.resumed = now, "from the checkpoint" in line
        if line.startswith('{"cycle_id"') and not run.report:
            run.committed_s, run.report = now, json.loads(line)
        if (saved := _SAVED.search(line)) is not None:
            run.checkpoint_save_s = float(saved.group(1))
        if (match := _MAXRSS.match(line.strip())) is not None:
            run.maxrss_bytes = int(match.group(1)) * 1024
        if now > timeout_s:
            process.kill()
            raise SystemExit(f"matcher still running after {timeout_s:.0f} s:\n"
                             + "\n".join(run.tail))
    if process.wait() != 0:
        raise SystemExit(f"matcher exited {process.returncode}:\n" + "\n".join(run.tail))
    run.total_s = time.perf_counter() - started
    return run


def bench_size(base: Settings, n: int, dim: int, seed_: int, keep: bool) -> dict[str, object]:
    """Seed ``n`` seekers; start the matcher with no tick (it reads the whole topic and
    writes the pool's checkpoint at its clean stop); tick; start it again (from that
    checkpoint) to run the cycle; then restart it after the cycle."""
    run_id = uuid.uuid4().hex[:6]
    settings = base.model_copy(update={
        "kafka": base.kafka.model_copy(update={"topic_prefix": f"bench-ms-{run_id}-{n}."}),
        "matcher": base.matcher.model_copy(update={"transactional_id": f"bench-ms-{run_id}"}),
    })
    catalog = build_catalog(settings)
    admin = make_admin(settings)
    apply(catalog, admin)
    checkpoints = tempfile.mkdtemp(prefix="bench-ms-checkpoints-")
    try:
        print(f"== {n:,} seekers x {dim}: seeding", flush=True)
        seeded = seed(settings, catalog, n, dim, seed_)
        print(f"   seeded in {seeded:.1f} s; first start (no tick yet)", flush=True)
        cold = run_service(settings, 3600, checkpoints)
        print(f"   whole topic read in {cold.startup_s:.1f} s, checkpoint written in "
              f"{cold.checkpoint_save_s:.1f} s, peak RSS {cold.maxrss_bytes / 2**30:.2f} GiB",
              flush=True)
        publish_tick(settings, "default", T0)
        first = run_service(settings, 3600, checkpoints)
        print(f"   cycle: start-up {first.startup_s:.1f} s (from the checkpoint: "
              f"{first.resumed}), committed after {first.committed_s:.1f} s, "
              f"peak RSS {first.maxrss_bytes / 2**30:.2f} GiB, {json.dumps(first.report)}",
              flush=True)
        print("   restarting", flush=True)
        second = run_service(settings, 1800, checkpoints)
    finally:
        shutil.rmtree(checkpoints, ignore_errors=True)
        if not keep:
            for future in admin.delete_topics([t.name for t in catalog],
                                              operation_timeout=60).values():
                future.result(timeout=60)
    phases = dict(first.report.get("phase_seconds") or {})  # type: ignore[call-overload]
    vectors = n * dim * 4
    peak = max(cold.maxrss_bytes, first.maxrss_bytes)
    return {"seekers": n, "startup_s": round(cold.startup_s, 1),
            "checkpoint_write_s": round(cold.checkpoint_save_s, 1),
            "startup_from_checkpoint_s": round(first.startup_s, 1), **{
                f"{k}_s": round(float(v), 1) for k, v in phases.items()},
            "tick_to_commit_s": round(first.committed_s - first.startup_s, 1),
            "restart_s": round(second.startup_s, 1),
            "restart_from_checkpoint": second.resumed,
            "peak_rss_gib": round(peak / 2**30, 2),
            "rss_over_vectors": round(peak / vectors, 2),
            "pairs": first.report.get("pairs"), "outcome": first.report.get("outcome")}


def bench_blocks(settings: Settings, n: int) -> None:
    from consumers.blocks import READ_CONCURRENCY, CassandraBlockStore
    from mosaic.cassandra import connect, write_batched
    from mosaic.migrations import migrate_keyspace

    keyspace = "bench_blocks"
    migrate_keyspace(settings.cassandra, keyspace)
    session = connect(settings.cassandra, keyspace=keyspace)
    session.execute("TRUNCATE blocks")
    users = [f"b{i:07d}" for i in range(n)]
    insert = session.prepare("INSERT INTO blocks (blocker_id, blocked_id, blocked_at) "
                             "VALUES (?, ?, ?)")
    write_batched(session, insert, [(users[i], users[(i * 7919 + 1) % n], T0)
                                    for i in range(0, n, 100)])
    timings = {}
    ways = {"one IN query at a time": {"concurrency": 1, "scan_min_users": n + 1},
            f"{READ_CONCURRENCY} IN queries in flight": {"scan_min_users": n + 1},
            "table scan (the default here)": {}}
    for way, options in ways.items():
        store = CassandraBlockStore(session, **options)  # type: ignore[arg-type]
        started = time.perf_counter()
        found = store.blocked_pairs(users)
        timings[way] = time.perf_counter() - started
        print(f"== blocks: {n:,} users, {len(found):,} blocked pairs, {way}: "
              f"{timings[way]:.2f} s", flush=True)
    first = next(iter(timings.values()))
    print("== blocks: " + ", ".join(f"{way} {first / t:.1f}x" for way, t in timings.items()))
    session.shutdown()


def seeker_records(n: int, dim: int, seed_: int, *, start: int = 0, stop: int | None = None,
                   vectors: np.ndarray | None = None) -> list[LogRecord]:
    """Records ``start`` to ``stop`` of ``n`` encoded SeekerUpdated records as the start-up
    reads them (waits up to 14 days); ``vectors``: all n, when already made."""
    from streams.serde import default_serde

    stop = n if stop is None else stop
    vectors = (clustered_vectors(n, dim, seed_) if vectors is None else vectors)[start:stop]
    waits = np.random.default_rng(seed_).uniform(0, 14 * 24 * 3600, n)
    serde = default_serde()
    records = []
    for i in range(start, stop):
        user = f"b{i:07d}"
        event = SeekerUpdated(
            event_id=derive_event_id("bench-seed", user), occurred_at=T0, user_id=user,
            opted_in_at=T0 - timedelta(seconds=float(waits[i])),
            vector=tuple(vectors[i - start].tolist()), model="bench", traits_hash="h",
            version=1)
        records.append(LogRecord(i % 6, i, user.encode(), serde.encode(event)))
    return records


def bench_fold(n: int, dim: int, seed_: int) -> None:
    from matcher.pool import PoolState
    from streams.serde import default_serde

    records, serde = seeker_records(n, dim, seed_), default_serde()
    timings = {}
    for way in ("fastavro", "flat reader"):
        state = PoolState()
        if way == "fastavro":
            fingerprint = serde.registry.current("SeekerUpdated").fingerprint
            state._fast[fingerprint] = None  # what every record took before
        started = time.perf_counter()
        state.apply_all(records)
        timings[way] = time.perf_counter() - started
        print(f"== fold: {n:,} records x {dim}, {way}: {timings[way]:.2f} s "
              f"({n / timings[way]:,.0f} records/s, {len(state):,} users)", flush=True)
    print(f"== fold: fastavro / flat reader = "
          f"{timings['fastavro'] / timings['flat reader']:.1f}x")


def cycle_events(n: int, dim: int, seed_: int) -> list[Event]:
    """The events a cycle of ``n`` seekers publishes per user, as the harness builds them:
    a PairMatched per pair and a SeekerRemoved per matched user, and for 1 % leftovers a
    SeekerUnmatched and the carry-over SeekerUpdated (with its vector)."""
    cycle, vectors = "default:20261201T120000Z", clustered_vectors(max(1, n // 100), dim, seed_)
    users = [f"b{i:07d}" for i in range(n)]
    left, paired = users[: len(vectors)], users[len(vectors):]
    out: list[Event] = []
    for a, b in zip(paired[::2], paired[1::2], strict=False):
        key = pair_key(a, b)
        out.append(PairMatched(event_id=derive_event_id("PairMatched", cycle, key),
                               occurred_at=T0, cycle_id=cycle, pair_key=key, user_a=a,
                               user_b=b, score=0.8123, similarity=0.7456, version_a=1,
                               version_b=1))
    out += [SeekerUnmatched(event_id=derive_event_id("SeekerUnmatched", cycle, u),
                            occurred_at=T0, cycle_id=cycle, user_id=u, reason="odd_one_out",
                            missed_cycles=1, version=1) for u in left]
    out += [SeekerRemoved(event_id=derive_event_id("SeekerRemoved", cycle, u), occurred_at=T0,
                          user_id=u, reason=f"matched:{cycle}", cycle_id=cycle, version=1)
            for u in paired]
    out += [SeekerUpdated(event_id=derive_event_id("SeekerUpdated", cycle, u), occurred_at=T0,
                          user_id=u, opted_in_at=T0 - timedelta(days=1),
                          vector=tuple(v.tolist()), model="bench", traits_hash="h",
                          missed_cycles=1, version=1, cycle_id=cycle)
            for u, v in zip(left, vectors, strict=True)]
    return out


def bench_encode(n: int, dim: int, seed_: int) -> None:
    """Encoding a cycle's events alone, as the publish phase does (``encode_event``):
    fastavro against the flat writer, side by side, on the same events."""
    from streams.serde import AvroSerde

    catalog = build_catalog(Settings())
    started = time.perf_counter()
    events = cycle_events(n, dim, seed_)
    print(f"== encode: {len(events):,} events of a {n:,}-seeker cycle built in "
          f"{time.perf_counter() - started:.2f} s", flush=True)
    timings, outputs = {}, {}
    for way, serde in (("fastavro", AvroSerde(flat_writers=False)),
                       ("flat writer", AvroSerde())):
        started = time.perf_counter()
        outputs[way] = [encode_event(catalog.for_event(e), e, serde=serde).value
                        for e in events]
        timings[way] = time.perf_counter() - started
        print(f"== encode: {way}: {timings[way]:.2f} s "
              f"({len(events) / timings[way]:,.0f} events/s)", flush=True)
    same = outputs["fastavro"] == outputs["flat writer"]
    print(f"== encode: fastavro / flat writer = "
          f"{timings['fastavro'] / timings['flat writer']:.1f}x, same bytes: {same}")
    if not same:
        raise SystemExit("the flat writer wrote other bytes than fastavro")


def _side_by_side(phase: str, ways: dict[str, Callable[[], Any]],
                  digest: Callable[[Any], bytes]) -> Any:
    """Each way timed alone (the previous result dropped first); raises unless all give
    the same result (by ``digest``). Returns the last way's result."""
    timings, digests, result = {}, set(), None
    for way, run in ways.items():
        result = None
        gc.collect()
        started = time.perf_counter()
        result = run()
        timings[way] = time.perf_counter() - started
        digests.add(digest(result))
        print(f"== {phase}: {way}: {timings[way]:.2f} s", flush=True)
    first, last = timings.values()
    print(f"== {phase}: {first / last:.1f}x, same result: {len(digests) == 1}", flush=True)
    if len(digests) != 1:
        raise SystemExit(f"{phase}: the two ways gave different results")
    return result


def _snapshot_digest(cycle: Any) -> bytes:
    snap = cycle.snapshot
    parts = [*snap.user_ids, *(s.user_id for s in cycle.invalid)]
    return hashlib.sha256("\n".join(parts).encode() + snap.vectors.tobytes()
                          + snap.wait_seconds.tobytes() + snap.missed_cycles.tobytes()).digest()


def _records_digest(records: list[Encoded]) -> bytes:
    digest = hashlib.sha256()
    for record in records:
        digest.update(f"{record.topic}\n{record.key!r}\n{len(record.value)}\n".encode())
        digest.update(record.value)
    return digest.digest()


def bench_snapshot(n: int, dim: int, seed_: int) -> None:
    """The service's phases around the core alone, for a pool of ``n`` folded seekers:
    the snapshot (a Seeker per user, then ``build_snapshot``, against ``snapshot_of``: the
    rows copied from the store at once) and the encode phase (every event built and
    ``encode_event``-ed, against ``CyclePlan.records``), on a cycle that pairs the rows in
    order and leaves 1 % out, side by side, each checked to give the same result."""
    from matcher.core.model import Pair, Unmatched, UnmatchedReason
    from matcher.harness import CycleOutcome, plan_cycle
    from matcher.pool import PoolState
    from matcher.snapshot import build_snapshot, snapshot_of
    from producers.ticker import make_tick

    started = time.perf_counter()
    state = PoolState()
    state.apply_all(seeker_records(n, dim, seed_))
    print(f"== snapshot: {len(state):,} seekers x {dim} folded in "
          f"{time.perf_counter() - started:.1f} s", flush=True)
    cycle = _side_by_side("snapshot", {
        "a Seeker per user + build_snapshot": lambda: build_snapshot(
            state.waiting("default"), T0),
        "snapshot_of (rows from the store)": lambda: snapshot_of(state, "default", T0)},
        _snapshot_digest)
    ids, left = cycle.snapshot.user_ids, max(1, n // 100)
    outcome = CycleOutcome(
        tuple(Pair(a, b, 0.81, 0.75) for a, b in zip(ids[left::2], ids[left + 1::2],
                                                     strict=False)),
        tuple(Unmatched(u, UnmatchedReason.NO_ALLOWED_PARTNER, 1.0, 0)
              for u in (*ids[:left], *ids[left:][len(ids[left:]) // 2 * 2:])))
    tick = make_tick("default", T0, 3600)
    catalog = build_catalog(Settings())

    def plan() -> Any:
        return plan_cycle(tick, cycle, outcome, snapshot_offsets={0: n},
                          params_digest="sha256:bench", phase_seconds={})

    records = _side_by_side("encode", {
        "events + encode_event each": lambda: [
            encode_event(catalog.for_event(e), e) for e in plan().events()],
        "plan.records": lambda: plan().records(catalog, Encoded)},
        _records_digest)
    print(f"== encode: {len(records):,} records", flush=True)


class _Rss:
    """The process's resident memory, now and at its peak since :meth:`mark` (sampled
    every 10 ms by a thread), in multiples of ``unit`` bytes."""

    def __init__(self, unit: float) -> None:
        self.unit, self.peak = unit, 0
        self._page = os.sysconf("SC_PAGE_SIZE")
        threading.Thread(target=self._sample, daemon=True).start()

    def now(self) -> int:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * self._page

    def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, self.now())
            time.sleep(0.01)

    def mark(self) -> int:
        self.peak = now = self.now()
        return now

    def line(self, name: str, began: float, before: int) -> str:
        now, peak = self.now(), max(self.peak, self.now())
        return (f"   {name:<24} {time.perf_counter() - began:6.1f} s  rss {now / 2**30:5.2f} GiB "
                f"({now / self.unit:4.2f}x)  peak {peak / 2**30:5.2f} GiB "
                f"({peak / self.unit:4.2f}x, +{(peak - before) / self.unit:4.2f}x)")


def bench_memory(n: int, dim: int, seed_: int) -> None:
    """Where a cycle's memory goes, in-process: ``n`` seekers folded by the pool (50,000
    records at a time, so the records do not linger), then the service's cycle path phase
    by phase (the core's steps timed by wrapping ``matcher.core.engine``'s functions),
    each phase's RSS and peak in multiples of the vectors' bytes."""
    import matcher.core.engine as engine
    from matcher.core.model import MatchParams
    from matcher.harness import CycleOutcome, plan_cycle
    from matcher.pool import PoolState, build_constraints
    from matcher.service import _core_match
    from matcher.snapshot import snapshot_of
    from producers.ticker import make_tick

    rss = _Rss(n * dim * 4)
    print(f"== memory: {n:,} x {dim} (vectors {n * dim * 4 / 2**30:.2f} GiB), "
          f"before the pool {rss.now() / 2**30:.2f} GiB", flush=True)
    state, began, before = PoolState(), time.perf_counter(), rss.mark()
    vectors = clustered_vectors(n, dim, seed_)
    for start in range(0, n, 50_000):
        state.apply_all(seeker_records(n, dim, seed_, start=start,
                                       stop=min(n, start + 50_000), vectors=vectors))
    del vectors
    gc.collect()
    print(rss.line("pool (folded)", began, before), flush=True)

    def measured(name: str, step: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any, **kwargs: Any) -> Any:
            began, before = time.perf_counter(), rss.mark()
            result = step(*args, **kwargs)
            print(rss.line(name, began, before), flush=True)
            return result
        return run

    for name in ("prepare", "similarity_scale", "checked_search", "build_candidates",
                 "candidate_edges", "maximum_matching", "improve", "_result"):
        setattr(engine, name, measured(f"  core: {name}", getattr(engine, name)))
    tick = make_tick("default", T0, 3600)
    cycle = measured("snapshot", snapshot_of)(state, "default", tick.occurred_at)
    constraints = measured("constraints", build_constraints)(cycle.seekers, set(), ())
    params = MatchParams.from_settings(Settings().matcher)
    began = time.perf_counter()
    result = _core_match(cycle.snapshot, constraints, params)  # its steps print above
    print(f"   {'core (all steps)':<24} {time.perf_counter() - began:6.1f} s", flush=True)
    outcome = CycleOutcome(result.pairs, result.unmatched, stats=result.stats)
    del result
    plan = measured("plan", plan_cycle)(tick, cycle, outcome, snapshot_offsets={0: n},
                                        params_digest="sha256:bench", phase_seconds={})
    records = measured("encode", plan.records)(build_catalog(Settings()), Encoded)
    print(f"== memory: {len(records):,} records; peak RSS of the process "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / rss.unit:.2f}x "
          f"the vectors", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100000",
                        help="comma-separated pool sizes (default: %(default)s)")
    parser.add_argument("--dim", type=int, default=384, help="vector dimension (%(default)s)")
    parser.add_argument("--seed", type=int, default=7, help="random seed (%(default)s)")
    parser.add_argument("--keep", action="store_true", help="keep the topics afterwards")
    parser.add_argument("--blocks", type=int, default=0,
                        help="first time the block lookup for this many users (%(default)s)")
    parser.add_argument("--fold", type=int, default=0,
                        help="first time decoding this many seeker records (%(default)s)")
    parser.add_argument("--encode", type=int, default=0,
                        help="first time encoding a cycle of this many seekers (%(default)s)")
    parser.add_argument("--memory", type=int, default=0,
                        help="first show, in-process, where a cycle of this many seekers "
                             "takes its memory (%(default)s)")
    parser.add_argument("--snapshot", type=int, default=0,
                        help="first time the snapshot and encode phases of a cycle of this "
                             "many seekers, before and after (%(default)s)")
    args = parser.parse_args(argv)
    base = Settings()
    if args.encode:
        bench_encode(args.encode, args.dim, args.seed)
    if args.snapshot:
        bench_snapshot(args.snapshot, args.dim, args.seed)
    if args.memory:
        bench_memory(args.memory, args.dim, args.seed)
    if args.fold:
        bench_fold(args.fold, args.dim, args.seed)
    if args.blocks:
        bench_blocks(base, args.blocks)
    rows = [bench_size(base, int(n), args.dim, args.seed, args.keep)
            for n in args.sizes.split(",") if n]
    if not rows:
        return 0
    keys = sorted({k for row in rows for k in row}, key=lambda k: list(rows[0]).index(k)
                  if k in rows[0] else 99)
    print("\n" + "  ".join(f"{k:>16}" for k in keys))
    for row in rows:
        print("  ".join(f"{row.get(k, '')!s:>16}" for k in keys))
    for row in rows:
        print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
