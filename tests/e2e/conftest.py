"""Fixtures of the end-to-end tests: the real ingress where Nakama's Lua module calls it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mosaic.settings import Settings
from producers.bootstrap import RunningServer, build_production_app, serve_in_thread
from stack.base import Service, port_open


@pytest.fixture(scope="module")
def ingress(settings: Settings, kafka_stack: Service, cassandra_stack: Service,
            nakama_stack: Service) -> Iterator[RunningServer]:
    """The production ingress on ``settings.ingress`` host:port (Nakama's runtime env)."""
    host, port = settings.ingress.host, settings.ingress.port
    if port_open(host, port):
        pytest.fail(f"{host}:{port} is taken; Nakama's runtime env sends RPCs there")
    server = serve_in_thread(build_production_app(settings), host, port)
    yield server
    server.stop()
