"""Build the profile adapters from settings: the one place that picks backends.

Nothing connects until a builder is called; each takes optional pre-built clients so
an entry point can share one S3 client or Cassandra session across adapters.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from mosaic.settings import Settings
from profiles.embedders import Embedder, build_embedder
from profiles.index import VectorIndex
from profiles.insights import S3InsightStore
from profiles.pipeline import ProfileIndexer
from profiles.traits import S3TraitsCache, TraitsService

__all__ = ["build_embedder", "build_insight_store", "build_profile_indexer",
           "build_traits_service", "build_vector_index"]


def _s3(settings: Settings, client: Any) -> Any:
    if client is not None:
        return client
    from mosaic.s3 import s3_client

    return s3_client(settings.s3)


def build_insight_store(settings: Settings, *, s3_client: Any = None) -> S3InsightStore:
    return S3InsightStore(_s3(settings, s3_client), settings.s3.insights_bucket)


def build_traits_service(settings: Settings, *, s3_client: Any = None,
                         clock: Callable[[], float] = time.time) -> TraitsService:
    client = _s3(settings, s3_client)
    t = settings.traits
    return TraitsService(S3InsightStore(client, settings.s3.insights_bucket),
                         S3TraitsCache(client, settings.s3.traits_cache_bucket),
                         top_n=t.top_chats, ttl_seconds=settings.s3.traits_cache_ttl_seconds,
                         half_life_seconds=t.recency_half_life_seconds,
                         max_items=t.max_items_per_section, clock=clock)


def build_vector_index(settings: Settings, *, dim: int, session: Any = None) -> VectorIndex:
    """``dim`` is the embedder's (``embedder.dim``): the index must match it."""
    if settings.vector_index.backend == "pinecone":
        from profiles.pinecone_index import PineconeVectorIndex

        return PineconeVectorIndex.from_settings(settings.vector_index, dim=dim)
    from profiles.cassandra_index import CassandraVectorIndex

    return CassandraVectorIndex.from_settings(settings, dim=dim, session=session)


def build_profile_indexer(settings: Settings, *, s3_client: Any = None,
                          session: Any = None, embedder: Embedder | None = None,
                          ) -> ProfileIndexer:
    emb = embedder or build_embedder(settings)
    return ProfileIndexer(build_traits_service(settings, s3_client=s3_client), emb,
                          build_vector_index(settings, dim=emb.dim, session=session))
