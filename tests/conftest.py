"""Shared fixtures. Integration fixtures bring up the REAL servers once per session:
by default through the project's own stack scripts (``stack.services``); with
``MOSAIC_TEST_STACK=docker`` on a machine with a Docker engine, through testcontainers
and docker-compose.kafka.yml (same services, same ports). Nothing is faked here."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator

import pytest

from mosaic.settings import Settings
from stack.base import Service, wait_until


def pytest_configure(config: pytest.Config) -> None:
    # Matcher checkpoints of this session (its matchers, in-process or spawned) go to a
    # directory of its own, not the user's cache; a test that wants one sets its own.
    if "MOSAIC_MATCHER__CHECKPOINT_DIR" not in os.environ:
        directory = tempfile.mkdtemp(prefix="mosaic-test-checkpoints-")
        os.environ["MOSAIC_MATCHER__CHECKPOINT_DIR"] = directory
        config.add_cleanup(lambda: shutil.rmtree(directory, ignore_errors=True))


@pytest.fixture(scope="session")
def settings() -> Settings:
    return Settings()


_started: dict[str, Service] = {}
DOCKER = os.environ.get("MOSAIC_TEST_STACK", "local") == "docker"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if not DOCKER:
        return
    skip = pytest.mark.skip(reason="MOSAIC_TEST_STACK=docker: the servers run in Docker, "
                                   "not under the project's stack scripts")
    for item in items:
        if item.get_closest_marker("stack_scripts"):
            item.add_marker(skip)


def _ensure(settings: Settings, name: str) -> Service:
    from stack.services import build

    if name not in _started:
        (service,) = build(settings, [name])
        if DOCKER:
            _compose_up()
            wait_until(service.healthy, what=f"{name} (docker)", timeout=300)
        else:
            service.up()
        _started[name] = service
    return _started[name]


_compose: list[object] = []


def _compose_up() -> None:
    """Start docker-compose.kafka.yml once (testcontainers); stopped at session end."""
    if _compose:
        return
    import atexit
    import subprocess
    from pathlib import Path

    from testcontainers.compose import DockerCompose

    probe = subprocess.run(["docker", "info"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        pytest.exit("MOSAIC_TEST_STACK=docker, but no Docker engine answers `docker info`: "
                    + (probe.stderr.strip().splitlines() or ["?"])[-1], returncode=3)
    compose = DockerCompose(Path(__file__).resolve().parent.parent,
                            compose_file_name="docker-compose.kafka.yml", wait=False)
    compose.start()
    _compose.append(compose)
    atexit.register(compose.stop)


@pytest.fixture(scope="session")
def kafka_stack(settings: Settings) -> Service:
    return _ensure(settings, "kafka")


# Keyspaces the suite keeps on purpose (reused by the next run); a test's own keyspace
# must be dropped (tests/support.py own_keyspace, drop_keyspace).
_KEPT_KEYSPACES = ("mosaic_test_profiles",)


@pytest.fixture(scope="session")
def cassandra_stack(settings: Settings) -> Iterator[Service]:
    """The shared node. At the end of the session, a keyspace a test created and left
    behind fails the run: they pile up in the node's schema across runs until its heap
    runs out (it did: OutOfMemoryError at 268 keyspaces, 2,034 tables)."""
    from mosaic.migrations import migrate_keyspace

    service = _ensure(settings, "cassandra")
    migrate_keyspace(settings.cassandra)  # the default keyspace, also with the Docker stack
    before = _keyspaces(settings)
    yield service
    left = sorted(_keyspaces(settings) - before - set(_KEPT_KEYSPACES))
    if left:
        pytest.fail(f"the tests left {len(left)} Cassandra keyspace(s) behind: "
                    f"{', '.join(left[:20])}; drop what a test creates "
                    "(tests/support.py: own_keyspace, drop_keyspace)")


def _keyspaces(settings: Settings) -> set[str]:
    from mosaic.cassandra import connect

    admin = connect(settings.cassandra, use_keyspace=False)
    try:
        return {row.keyspace_name for row in admin.execute(
            "SELECT keyspace_name FROM system_schema.keyspaces", timeout=60)}
    finally:
        admin.cluster.shutdown()


@pytest.fixture(scope="session")
def nakama_stack(settings: Settings) -> Service:
    _ensure(settings, "postgres")
    return _ensure(settings, "nakama")


@pytest.fixture(scope="session")
def s3_stack(settings: Settings) -> Service:
    return _ensure(settings, "s3")


@pytest.fixture
def unique() -> str:
    """A short unique token for names (topics, keyspaces, users) so tests never collide."""
    return uuid.uuid4().hex[:10]


@pytest.fixture(scope="session", autouse=True)
def _no_proxy() -> Iterator[None]:
    # Loopback traffic must never go through a proxy configured on the machine.
    old = os.environ.get("NO_PROXY")
    os.environ["NO_PROXY"] = "127.0.0.1,localhost"
    yield
    if old is None:
        os.environ.pop("NO_PROXY", None)
    else:
        os.environ["NO_PROXY"] = old
