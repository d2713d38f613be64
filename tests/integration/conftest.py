"""Fixtures shared by the Nakama room tests (rooms, privacy, room names)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mosaic.settings import Settings
from stack.base import Service
from tests.integration.test_nakama_rooms import Rpc, Sql


@pytest.fixture
def rpc(settings: Settings, nakama_stack: Service) -> Iterator[Rpc]:
    """The rooms RPCs, server to server."""
    client = Rpc(settings)
    yield client
    client.close()


@pytest.fixture
def sql(settings: Settings, nakama_stack: Service) -> Sql:
    """Nakama's own tables, read-only queries."""
    return Sql(settings)
