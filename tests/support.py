"""Helpers and data shared by the tests (fixtures live in conftest.py)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest

from mosaic.settings import CassandraSettings, KafkaSettings, MatcherSettings, Settings
from stack.base import Service
from streams.admin import apply
from streams.kafka import make_admin
from streams.topics import TopicCatalog, build_catalog


def with_topic_prefix(settings: Settings, prefix: str) -> Settings:
    return settings.model_copy(update={
        "kafka": settings.kafka.model_copy(update={"topic_prefix": prefix})})


@contextmanager
def own_topics(settings: Settings) -> Iterator[TopicCatalog]:
    """Create the whole catalog under ``settings``' prefix; delete it afterwards."""
    catalog = build_catalog(settings)
    admin = make_admin(settings)
    apply(catalog, admin)
    try:
        yield catalog
    finally:
        futures = admin.delete_topics([t.name for t in catalog], operation_timeout=30)
        for future in futures.values():
            future.result(timeout=30)



@contextmanager
def own_keyspace(settings: Settings) -> Iterator[Settings]:
    """``settings`` after ``mosaic db migrate`` on its keyspace (for the processes a test
    starts against its own keyspace); the keyspace is dropped afterwards. Left behind,
    every run's keyspaces pile up in the shared node's schema until its 1 GiB heap runs
    out (it did, at 268 keyspaces and 2,034 tables: OutOfMemoryError mid-suite)."""
    from mosaic.migrations import migrate_keyspace

    migrate_keyspace(settings.cassandra)
    try:
        yield settings
    finally:
        drop_keyspace(settings.cassandra, settings.cassandra.keyspace)


def drop_keyspace(cassandra: CassandraSettings, keyspace: str) -> None:
    from mosaic.cassandra import connect

    admin = connect(cassandra, use_keyspace=False)
    try:
        admin.execute(f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=120)
    finally:
        admin.cluster.shutdown()


def migrated_session(settings: Settings | CassandraSettings, keyspace: str | None = None) -> Any:
    """``mosaic db migrate --keyspace K`` (creates K, or brings it to the code's schema
    version), then a session on K. Tests with their own keyspace open it with this; a
    process pointed at a keyspace nobody migrated refuses to start."""
    from mosaic.cassandra import connect
    from mosaic.migrations import migrate_keyspace

    cassandra = settings.cassandra if isinstance(settings, Settings) else settings
    migrate_keyspace(cassandra, keyspace)
    return connect(cassandra, keyspace=keyspace)


def assert_up_reuses(service: Service) -> None:
    """A second ``up`` finds the running process and leaves it be (``stack_scripts`` tests)."""
    pid_before = service.pid()
    assert "reused" in service.up()
    assert service.pid() == pid_before
    assert service.status().healthy


# The matcher tests' clock and pool: three tight clusters and one user far from everyone
# (three pairs and an odd one out).
T0 = datetime(2025, 3, 1, 10, 0, tzinfo=UTC)
CLUSTERED_POOL = {
    "u1": (1.0, 0.05, 0.0), "u2": (0.95, 0.0, 0.05),
    "u3": (0.0, 1.0, 0.05), "u4": (0.05, 0.95, 0.0),
    "u5": (0.0, 0.05, 1.0), "u6": (0.05, 0.0, 0.95),
    "u7": (-1.0, -1.0, -1.0),
}
EXPECTED_PAIRS = {"u1|u2", "u3|u4", "u5|u6"}


@contextmanager
def matcher_topics(settings: Settings, topic_prefix: str, transactional_id: str
                   ) -> Iterator[tuple[Settings, TopicCatalog]]:
    """Settings for one matcher test (its own topics and transactional id, no block store,
    hourly cycles) and its topic catalog; the topics are deleted afterwards."""
    own = Settings(kafka=KafkaSettings(bootstrap_servers=settings.kafka.bootstrap_servers,
                                       topic_prefix=topic_prefix),
                   matcher=MatcherSettings(transactional_id=transactional_id, block_store="none",
                                           cycle_seconds=3600,
                                           checkpoint_dir=settings.matcher.checkpoint_dir))
    with own_topics(own) as catalog:
        yield own, catalog


def wait_for_line(process: subprocess.Popen[str], needle: str, *, timeout: float,
                  failure: str) -> None:
    """Read the process's stderr until a line contains ``needle``; kill it and fail the test
    with ``failure`` and its last lines when it exits or ``timeout`` seconds pass first."""
    assert process.stderr is not None
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        seen.append(line)
        if needle in line:
            return
        if not line and process.poll() is not None:
            break
    process.kill()
    pytest.fail(f"{failure}:\n" + "".join(seen[-40:]))


# Linux hands out local ports for outgoing connections from 32768-60999
# (/proc/sys/net/ipv4/ip_local_port_range); a listener picked there can lose its port to
# a client socket between the check and the bind (CI saw Nakama's console fail that way).
_LISTEN_RANGE = (20000, 32700)


def free_ports(offsets: tuple[int, ...], step: int = 1) -> int:
    """A random base port b, below the ephemeral range, with b + o free for every offset o
    (random, so that two test sessions on one machine do not pick the same ports)."""
    import random

    from stack.base import port_open

    rng = random.SystemRandom()
    low, high = _LISTEN_RANGE[0] - min(offsets), _LISTEN_RANGE[1] - max(offsets)
    for _ in range(50):
        base = rng.randrange(low, high, step)
        if not any(port_open("127.0.0.1", base + o) for o in offsets):
            return base
    raise AssertionError(f"no free ports at offsets {offsets} in {_LISTEN_RANGE} after 50 tries")


def _start_nakama(node: Any, log_path: Any) -> subprocess.Popen[bytes] | None:
    """Start ``node`` and wait until it answers; None when it lost one of its ports to
    another process between the port check and the bind (the caller picks others)."""
    from stack.base import wait_until

    with log_path.open("wb") as log:
        proc = subprocess.Popen([str(node.binary), "--config", str(node.config_file)],
                                stdout=log, stderr=subprocess.STDOUT)

    def up() -> bool:
        if proc.poll() is None:
            return bool(node.healthy())
        text = log_path.read_text()
        if "address already in use" in text:
            return True
        raise AssertionError(f"second Nakama exited: {text[-2000:]}")
    try:
        wait_until(up, what=f"second Nakama at {node.where()}", timeout=90)
    except BaseException:
        proc.kill()
        raise
    return proc if proc.poll() is None else None


@contextmanager
def second_nakama(settings: Settings, data_dir: Any, **sections: Any) -> Iterator[Settings]:
    """A second Nakama on its own ports (same database, same Lua modules), its settings
    sections replaced by ``sections`` (e.g. ``identity=``, ``nakama=``); yields its
    settings once it answers, and stops it afterwards."""
    import json

    from stack.nakama import Nakama, write_private

    for attempt in range(3):
        # base - 1 is the gRPC port, base + 7 and base + 10 the console's gRPC and HTTP.
        base = free_ports((-1, 0, 7, 10))
        nakama = sections.get("nakama", settings.nakama).model_copy(update={
            "url": f"http://127.0.0.1:{base}", "grpc_port": base - 1, "console_port": base + 10})
        own = settings.model_copy(update={
            **sections, "nakama": nakama,
            "stack": settings.stack.model_copy(update={"data_dir": data_dir})})
        node = Nakama(own)
        write_private(node.config_file, json.dumps(node.config()))
        proc = _start_nakama(node, data_dir / f"nakama-{attempt}.log")
        if proc is None:
            continue
        try:
            yield own
            return
        finally:
            proc.terminate()
            proc.wait(30)
    raise AssertionError("second Nakama lost its ports to other processes 3 times")
