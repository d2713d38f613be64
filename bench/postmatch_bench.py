"""Post-match throughput: a committed cycle -> rooms and notifications, batched vs serial.

On the local stack (real Kafka, Cassandra, Nakama + PostgreSQL): ``--users`` Nakama
accounts, their vectors in the Cassandra index, then
a cycle of ``--users / 2`` PairMatched + CycleCompleted committed in one Kafka
transaction, as the matcher does. The clock starts at that commit and stops when every
pair's audit row is complete (room, both notifications, index flag). Printed: pairs/s
per agent and end to end; per agent when its first batch started and its last ended,
and where its busy time went (Nakama RPCs, Cassandra writes, Kafka flush + commit, the
rest is Python: decoding, events, bookkeeping); then the same for the
serial shape (one record per poll: one RPC, one flush and one commit per pair) on
``--serial-pairs`` pairs in the same run, the ratio, and a projection for larger cycles.

    python bench/postmatch_bench.py                    # 10,000 users, 300 serial pairs
    python bench/postmatch_bench.py --users 2000 --serial-pairs 100
    python bench/postmatch_bench.py --users 4000 --processes 1,2,3   # scaling

``--processes 1,2,3`` measures scaling instead: per step its
own cycle of ``--users`` fresh accounts on fresh topics, run by K ``mosaic postmatch``
processes in one consumer group per agent; pairs/s, the ratio to the first step, and the
CPU that Nakama, PostgreSQL, Cassandra and the K processes used meanwhile.

Every run uses its own topics (prefix ``bench-pm-<run>.``), keyspace ``bench_pm`` and
Nakama accounts (inserted in bulk into Nakama's users table: a login each would take
minutes), so it never competes with the demo's or a service's backlog.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

import consumers.postmatch.handlers as postmatch
from consumers.postmatch.app import AGENTS, PostMatch, build_postmatch, run_postmatch
from consumers.runner import BatchRunner
from mosaic.migrations import migrate_keyspace
from mosaic.settings import Settings
from profiles.index import VectorRecord
from stack.nakama import bulk_accounts
from streams.admin import apply
from streams.events import CycleCompleted, PairMatched, derive_event_id, pair_key
from streams.kafka import (
    BatchPublisher,
    group_id,
    make_admin,
    make_transactional_producer,
    produce_event,
    transaction,
)
from streams.topics import TopicCatalog, build_catalog

log = logging.getLogger("postmatch_bench")
KEYSPACE = "bench_pm"

# -- where the time goes: wall time per (agent thread, category) --------------------------

_spent: dict[tuple[str, str], float] = defaultdict(float)
_lock = threading.Lock()


def _agent() -> str:
    return threading.current_thread().name.removeprefix("agent-")


@contextmanager
def _timed(category: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        with _lock:
            _spent[(_agent(), category)] += time.perf_counter() - start


def _wrap(obj: Any, category: str, names: tuple[str, ...]) -> None:
    for name in names:
        original = getattr(obj, name)

        def timed(*args: Any, _f: Callable[..., Any] = original, **kwargs: Any) -> Any:
            with _timed(category):
                return _f(*args, **kwargs)

        setattr(obj, name, timed)


def _instrument(app: PostMatch) -> None:
    _wrap(app.chat, "nakama", ("create_rooms", "notify_matches"))
    _wrap(app.audit, "cassandra", ("mark_rooms", "mark_notified", "mark_index_updated",
                                   "mark_status", "record_cycle"))
    _wrap(app.states, "cassandra", ("matched_many",))
    _wrap(app.index, "cassandra", ("update_metadata_many",))
    parallel = postmatch._parallel

    def timed_parallel(*args: Any) -> None:
        with _timed("cassandra"):
            parallel(*args)

    postmatch._parallel = timed_parallel  # type: ignore[assignment]
    confirm, commit = BatchPublisher.confirm, BatchRunner._commit

    def timed_confirm(self: BatchPublisher, *a: Any, **k: Any) -> None:
        with _timed("kafka"):
            confirm(self, *a, **k)

    def timed_commit(self: BatchRunner, *a: Any, **k: Any) -> None:
        with _timed("kafka"):
            commit(self, *a, **k)

    BatchPublisher.confirm = timed_confirm  # type: ignore[method-assign]
    BatchRunner._commit = timed_commit  # type: ignore[method-assign]
    batch = BatchRunner._batch

    def timed_batch(self: BatchRunner, *a: Any, **k: Any) -> None:
        with _lock:
            _first_start.setdefault(self.name, time.monotonic())
        with _timed("total"):
            batch(self, *a, **k)
        with _lock:
            _last_done[self.name] = time.monotonic()

    BatchRunner._batch = timed_batch  # type: ignore[method-assign]


_last_done: dict[str, float] = {}
_first_start: dict[str, float] = {}

# -- set-up ------------------------------------------------------------------------------


def bench_settings(topic_prefix: str) -> Settings:
    """The stack's settings on the bench's own topics and keyspace."""
    base = Settings()
    return base.model_copy(update={
        "kafka": base.kafka.model_copy(update={"topic_prefix": topic_prefix}),
        "cassandra": base.cassandra.model_copy(update={"keyspace": KEYSPACE}),
    })



def accounts(settings: Settings, count: int, prefix: str) -> list[str]:
    started = time.monotonic()
    users = sorted(bulk_accounts(settings, count, prefix))
    print(f"   {len(users)} Nakama accounts in {time.monotonic() - started:.1f} s")
    return users


def vectors(app: PostMatch, users: list[str], dim: int) -> None:
    rng = np.random.default_rng(7)
    for i in range(0, len(users), 500):
        chunk = users[i:i + 500]
        vecs = rng.normal(size=(len(chunk), dim)).astype(np.float32)
        app.index.upsert([VectorRecord(u, v, {"status": "waiting", "missed_cycles": 0})
                          for u, v in zip(chunk, vecs, strict=True)])


def commit_cycle(app: PostMatch, cycle_id: str, users: list[str],
                 catalog: TopicCatalog | None = None) -> float:
    """Publish the cycle's pairs + summary in one transaction (on ``catalog``'s topics,
    default the app's); the commit time."""
    now = datetime.now(UTC)
    catalog = catalog or app.catalog
    producer = make_transactional_producer(app.settings, f"bench-{uuid.uuid4().hex[:8]}")
    with transaction(producer):
        for a, b in zip(users[::2], users[1::2], strict=True):
            key = pair_key(a, b)
            ua, ub = sorted((a, b))
            produce_event(producer, catalog.pairs, PairMatched(
                event_id=derive_event_id("bench", cycle_id, key), occurred_at=now,
                cycle_id=cycle_id, pair_key=key, user_a=ua, user_b=ub, score=0.9,
                similarity=0.8))
        produce_event(producer, catalog.cycles, CycleCompleted(
            event_id=derive_event_id("bench-cycle", cycle_id), occurred_at=now,
            cycle_id=cycle_id, pairs=len(users) // 2, seekers=len(users)))
    return time.monotonic()


def _run(app: PostMatch, cycle_id: str, users: list[str], *, max_batch: int,
         timeout: float) -> dict[str, Any]:
    _spent.clear()
    _last_done.clear()
    _first_start.clear()
    pairs = len(users) // 2
    stop = threading.Event()
    errors: list[BaseException] = []

    def agents() -> None:
        try:
            run_postmatch(app, stop=stop.is_set, max_batch=max_batch)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
            errors.append(exc)

    worker = threading.Thread(target=agents, name="postmatch", daemon=True)
    worker.start()
    time.sleep(8)  # groups join (the broker delays a new group 3 s) before the clock starts
    t0 = commit_cycle(app, cycle_id, users)
    complete = 0
    while complete < pairs:
        if errors:
            raise errors[0]
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"{complete}/{pairs} pairs complete after {timeout:.0f} s")
        time.sleep(0.5)
        complete = sum(r.complete for r in app.audit.rows(cycle_id))
        print(f"\r   {complete}/{pairs} pairs complete, {time.monotonic() - t0:5.1f} s",
              end="", flush=True)
    t_end = time.monotonic()
    print()
    stop.set()
    worker.join(60)
    return {"pairs": pairs, "seconds": t_end - t0, "t0": t0,
            "agents": {a: t - t0 for a, t in _last_done.items()},
            "starts": {a: t - t0 for a, t in _first_start.items()},
            "spent": dict(_spent)}


def _report(title: str, r: dict[str, Any]) -> None:
    pairs, secs = r["pairs"], r["seconds"]
    print(f"\n== {title}: {pairs} pairs in {secs:.1f} s = {pairs / secs:.0f} pairs/s end to end")
    print(f"   {'agent':<12} {'first':>6} {'done at':>8} {'pairs/s':>8} {'busy':>7} "
          f"{'nakama':>7} {'cassandra':>9} {'kafka':>6} {'python':>7}")
    for agent in ("rooms", "notifier", "index-state"):
        done = r["agents"].get(agent, secs)
        spent = {c: r["spent"].get((agent, c), 0.0) for c in
                 ("total", "nakama", "cassandra", "kafka")}
        python = spent["total"] - spent["nakama"] - spent["cassandra"] - spent["kafka"]
        first = r["starts"].get(agent, 0.0)
        print(f"   {agent:<12} {first:5.1f}s {done:7.1f}s {pairs / max(done, 1e-9):8.0f} "
              f"{spent['total']:6.1f}s {spent['nakama']:6.1f}s {spent['cassandra']:8.1f}s "
              f"{spent['kafka']:5.1f}s {python:6.1f}s")


# -- scaling: K `mosaic postmatch` processes per step ---------------------------------------

STACK_PIDS = ("nakama", "postgres", "cassandra")


def _ticks(pid: int) -> int:
    """utime + stime of ``pid``, plus cutime + cstime (children it reaped)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15])


def _tree(root: int) -> list[int]:
    """``root`` and every live descendant (PostgreSQL: the postmaster and its backends)."""
    children: dict[int, list[int]] = defaultdict(list)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children[int(fields[1])].append(int(stat.parent.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def cpu_seconds(pids: list[int]) -> float:
    """CPU seconds used so far by ``pids`` and their process trees."""
    total = 0
    for pid in {p for root in pids for p in _tree(root)}:
        try:
            total += _ticks(pid)
        except (OSError, ValueError):
            continue  # a backend that just exited: its time moves to the postmaster
    return total / os.sysconf("SC_CLK_TCK")


def stack_pid(settings: Settings, name: str) -> int:
    """The pid a stack service wrote (stack/base.py: <data dir>/run/<name>.pid)."""
    return int((settings.stack.data_dir / "run" / f"{name}.pid").read_text().strip())


def _start_processes(settings: Settings, k: int) -> list[subprocess.Popen[bytes]]:
    """K ``mosaic postmatch`` processes on the step's topics; their logs in the stack's
    log folder, named after the topic prefix."""
    env = {**os.environ, "MOSAIC_KAFKA__TOPIC_PREFIX": settings.kafka.topic_prefix,
           "MOSAIC_CASSANDRA__KEYSPACE": KEYSPACE}
    mosaic = str(Path(sys.executable).with_name("mosaic"))
    logs = settings.stack.data_dir / "logs"
    procs = []
    for i in range(k):
        with (logs / f"{settings.kafka.topic_prefix}{i}.log").open("wb") as log_file:
            procs.append(subprocess.Popen(
                [mosaic, "postmatch", "--port", "0", "--reconcile-every", "0"],
                env=env, stdout=log_file, stderr=subprocess.STDOUT))
    print(f"   logs: {logs}/{settings.kafka.topic_prefix}<0..{k - 1}>.log")
    return procs


def _wait_joined(admin: Any, settings: Settings, k: int,
                 procs: list[subprocess.Popen[bytes]], timeout: float = 90.0) -> None:
    """Until each agent's group is stable with K members (or a process died: say which)."""
    groups = [group_id(settings, a) for a in AGENTS]
    deadline = time.monotonic() + timeout
    sizes: dict[str, int] = {}
    while time.monotonic() < deadline:
        dead = [p.pid for p in procs if p.poll() is not None]
        if dead:
            raise RuntimeError(f"mosaic postmatch process(es) {dead} exited before the cycle")
        futures = admin.describe_consumer_groups(groups, request_timeout=10)
        sizes = {g: len(f.result().members) if str(f.result().state).endswith("STABLE")
                 else 0 for g, f in futures.items()}
        if all(n == k for n in sizes.values()):
            return
        time.sleep(1)
    raise TimeoutError(f"consumer groups not stable with {k} members after {timeout:.0f} s: "
                       f"{sizes}")


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(60)
        except subprocess.TimeoutExpired:
            p.kill()


def _scaling_step(app: PostMatch, admin: Any, run: str, k: int, users: int, dim: int,
                  timeout: float, nakama_pid: int | None) -> dict[str, float]:
    settings = bench_settings(f"bench-pm-{run}-k{k}.")
    catalog = build_catalog(settings)
    apply(catalog, admin)
    members = accounts(settings, users, f"bench-{run}-k{k}-")
    vectors(app, members, dim)
    cycle_id, pairs = f"bench-{run}-k{k}", users // 2
    procs = _start_processes(settings, k)
    watched = {n: [stack_pid(app.settings, n)] for n in STACK_PIDS}
    if nakama_pid:
        watched["nakama"] = [nakama_pid]
    try:
        _wait_joined(admin, settings, k, procs)
        watched["postmatch"] = [p.pid for p in procs]
        before = {n: cpu_seconds(pids) for n, pids in watched.items()}
        t0 = commit_cycle(app, cycle_id, members, catalog)
        complete = 0
        while complete < pairs:
            dead = [p.pid for p in procs if p.poll() is not None]
            if dead:
                raise RuntimeError(f"K={k}: mosaic postmatch {dead} died at "
                                   f"{complete}/{pairs} pairs")
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"K={k}: {complete}/{pairs} pairs complete after "
                                   f"{timeout:.0f} s")
            time.sleep(0.25)
            complete = sum(r.complete for r in app.audit.rows(cycle_id))
        seconds = time.monotonic() - t0
        used = {n: cpu_seconds(pids) - before[n] for n, pids in watched.items()}
    finally:
        _stop(procs)
        for future in admin.delete_topics([t.name for t in catalog],
                                          operation_timeout=30).values():
            future.result(timeout=30)
    return {"k": k, "pairs": pairs, "seconds": seconds, "rate": pairs / seconds,
            **{f"cpu_{n}": used[n] / seconds for n in used}}


def scaling(settings: Settings, run: str, steps: list[int], *, users: int,
            timeout: float, nakama_pid: int | None = None) -> None:
    """One fresh cycle of ``users`` per step of ``steps`` processes; the table."""
    from profiles.bootstrap import build_embedder

    app, dim = build_postmatch(settings), build_embedder(settings).dim
    admin = make_admin(settings)
    rows = []
    try:
        for k in steps:
            print(f"== {k} process(es): {users} users, topics bench-pm-{run}-k{k}.*")
            rows.append(_scaling_step(app, admin, run, k, users, dim, timeout, nakama_pid))
            r = rows[-1]
            print(f"   {r['pairs']} pairs in {r['seconds']:.1f} s = {r['rate']:.0f} pairs/s")
    finally:
        app.close()
    print(f"\n== scaling ({users} users per step; CPU in cores, 1.0 = one core of "
          f"{os.cpu_count()}; load average {os.getloadavg()[0]:.1f})")
    print(f"   {'processes':>9} {'pairs/s':>8} {'ratio':>6} {'nakama':>7} {'postgres':>8} "
          f"{'cassandra':>9} {'postmatch':>9}")
    for r in rows:
        print(f"   {r['k']:>9} {r['rate']:8.0f} {r['rate'] / rows[0]['rate']:6.2f} "
              f"{r['cpu_nakama']:7.2f} {r['cpu_postgres']:8.2f} {r['cpu_cassandra']:9.2f} "
              f"{r['cpu_postmatch']:9.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--users", type=int, default=10_000, help="users in the cycle")
    parser.add_argument("--serial-pairs", type=int, default=300,
                        help="pairs for the serial (one record per poll) comparison")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per run")
    parser.add_argument("--processes", default="",
                        help="comma-separated counts of `mosaic postmatch` processes, e.g. "
                             "1,2,3: measure scaling instead (one fresh cycle per step)")
    parser.add_argument("--nakama-pid", type=int, default=None,
                        help="the Nakama whose CPU to count (a second Nakama that "
                             "MOSAIC_NAKAMA__URL points at; default: the stack's)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("consumers").setLevel(logging.ERROR)

    run = uuid.uuid4().hex[:8]
    settings = bench_settings(f"bench-pm-{run}.")
    migrate_keyspace(settings.cassandra)  # `mosaic db migrate --keyspace bench_pm`
    if args.processes:
        steps = [int(k) for k in args.processes.split(",") if k.strip()]
        scaling(settings, run, steps, users=args.users, timeout=args.timeout,
                nakama_pid=args.nakama_pid)
        return
    apply_topics = make_admin(settings)
    app = build_postmatch(settings)
    from profiles.bootstrap import build_embedder

    dim = build_embedder(settings).dim
    apply(app.catalog, apply_topics)
    print(f"== set-up: {args.users} + {2 * args.serial_pairs} users, topics bench-pm-{run}.*")
    users = accounts(settings, args.users, f"bench-{run}-b-")
    serial_users = accounts(settings, 2 * args.serial_pairs, f"bench-{run}-s-")
    vectors(app, users + serial_users, dim)
    _instrument(app)
    try:
        print("== batched agents (500 records per poll)")
        batched = _run(app, f"bench-{run}-batched", users, max_batch=500,
                       timeout=args.timeout)
        _report("batched", batched)
        print(f"\n== serial agents (1 record per poll) on {args.serial_pairs} pairs")
        serial = _run(app, f"bench-{run}-serial", serial_users, max_batch=1,
                      timeout=args.timeout)
        _report("serial", serial)
    finally:
        app.close()
        futures = apply_topics.delete_topics([t.name for t in app.catalog],
                                             operation_timeout=30)
        for future in futures.values():
            future.result(timeout=30)

    rate = batched["pairs"] / batched["seconds"]
    serial_rate = serial["pairs"] / serial["seconds"]
    print(f"\n== batched / serial: {rate:.0f} / {serial_rate:.1f} pairs/s = "
          f"{rate / serial_rate:.1f}x")
    print("== projection from the batched rate of this 2-core machine (Nakama, PostgreSQL, "
          "Cassandra, Kafka and the agents all share it):")
    print("   N post-match processes need >= N partitions on pairs and rooms (6 today) and a "
          "chat/database tier that keeps up; the rate is assumed to scale with N.")
    for n_users in (100_000, 1_000_000):
        n_pairs = n_users // 2
        cells = "  ".join(f"N={n}: {n_pairs / (rate * n):6.0f} s" for n in (1, 4, 16))
        print(f"   {n_users:>9,} users ({n_pairs:,} pairs): {cells};  serial N=1: "
              f"{n_pairs / serial_rate / 3600:5.1f} h")

if __name__ == "__main__":
    main()
