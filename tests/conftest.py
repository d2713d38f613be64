"""Shared fixtures. Integration fixtures bring up the REAL local stack once per session
through the project's own scripts (``stack.services``); nothing is faked here."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from mosaic.settings import Settings
from stack.base import Service


@pytest.fixture(scope="session")
def settings() -> Settings:
    return Settings()


_started: dict[str, Service] = {}


def _ensure(settings: Settings, name: str) -> Service:
    from stack.services import build

    if name not in _started:
        (service,) = build(settings, [name])
        service.up()
        _started[name] = service
    return _started[name]


@pytest.fixture(scope="session")
def kafka_stack(settings: Settings) -> Service:
    return _ensure(settings, "kafka")


@pytest.fixture(scope="session")
def cassandra_stack(settings: Settings) -> Service:
    return _ensure(settings, "cassandra")


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
