"""The VectorIndex contract on the in-memory index (cases live with the integration suite)."""

from __future__ import annotations

import pytest

from profiles.index import VectorIndex
from tests.fakes import InMemoryVectorIndex
from tests.integration.test_profiles_index_contract import DIM, IndexContract

pytestmark = pytest.mark.unit


@pytest.fixture
def index() -> VectorIndex:
    return InMemoryVectorIndex(DIM)


class TestInMemoryIndexContract(IndexContract):
    pass
