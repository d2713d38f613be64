"""VectorIndex on Pinecone (a dense, cosine index) through the ``pinecone`` 10.x SDK.

The SDK's REST transport already retries 408/429/5xx up to 3 times per request
(decorrelated jitter, honours Retry-After); this adapter adds an outer Retrier for what
survives that (it honours Retry-After too), spends one token of a client-side limiter
per request, and maps SDK errors to ExternalServiceError (with ``throttled`` and
``retry_after_seconds``). Writes go out in batches of at most 100 vectors, reads of ids
in batches of 100 (URL length); metadata updates of many ids share those reads and run
a few at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import numpy as np

from mosaic.errors import ExternalServiceError
from mosaic.ratelimit import TokenBucket
from mosaic.retry import Retrier, is_throttled, retry_after_seconds
from mosaic.retry import is_pinecone_transient as is_transient
from profiles.index import (
    Condition,
    Match,
    MetaValue,
    Vector,
    VectorIndex,
    VectorRecord,
    coerce_metadata,
    unparse_filter,
)

T = TypeVar("T")
BATCH = 100
# Default client-side limit (requests/s): Pinecone's documented serverless data-plane
# limits are 100 updates/s per namespace and 100 fetches/s per index.
DEFAULT_REQUESTS_PER_SECOND = 100.0
UPDATE_CONCURRENCY = 8  # metadata updates in flight at once (each is one HTTP request)


def _chunks(items: list[T], size: int) -> Iterator[list[T]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


class PineconeVectorIndex(VectorIndex):
    def __init__(self, index: Any, *, dim: int, namespace: str,
                 retrier: Retrier | None = None, limiter: TokenBucket | None = None) -> None:
        self._index = index
        self.dim = dim
        self.namespace = namespace
        self.retrier = retrier or Retrier(5)
        # One token per HTTP request (retries too): Pinecone's serverless limits are per
        # second (100 updates per namespace, 100 fetches per index: docs "Rate limits").
        self.limiter = limiter or TokenBucket(DEFAULT_REQUESTS_PER_SECOND,
                                              DEFAULT_REQUESTS_PER_SECOND)

    @classmethod
    def connect(cls, *, api_key: str, host: str, dim: int, namespace: str,
                retrier: Retrier | None = None, timeout_seconds: float = 30.0,
                limiter: TokenBucket | None = None) -> PineconeVectorIndex:
        """``host`` is the index's data-plane URL (an IP, localhost or a dotted name)."""
        from pinecone import Pinecone

        client = Pinecone(api_key=api_key, timeout=timeout_seconds)
        return cls(client.Index(host=host), dim=dim, namespace=namespace, retrier=retrier,
                   limiter=limiter)

    @classmethod
    def from_settings(cls, vs: Any, *, dim: int,
                      retrier: Retrier | None = None) -> PineconeVectorIndex:
        if not vs.pinecone_host:
            from mosaic.errors import ConfigError

            raise ConfigError("MOSAIC_VECTOR_INDEX__PINECONE_HOST is required for Pinecone")
        return cls.connect(api_key=vs.pinecone_api_key.get_secret_value(),
                           host=vs.pinecone_host, dim=dim, namespace=vs.pinecone_namespace,
                           retrier=retrier or Retrier(vs.max_attempts),
                           limiter=TokenBucket(vs.pinecone_requests_per_second,
                                               vs.pinecone_requests_per_second))

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        from pinecone.errors.exceptions import PineconeError

        def limited() -> T:
            self.limiter.acquire()
            return fn()

        try:
            return self.retrier.call(limited, retryable=is_transient,
                                     what=f"Pinecone {what}")
        except PineconeError as exc:
            raise ExternalServiceError(f"Pinecone {what} failed: {exc}",
                                       retryable=is_transient(exc),
                                       throttled=is_throttled(exc),
                                       retry_after_seconds=retry_after_seconds(exc)) from exc

    def _upsert(self, records: list[VectorRecord]) -> None:
        for chunk in _chunks(records, BATCH):
            payload = [{"id": r.id, "values": [float(x) for x in r.vector],
                        "metadata": dict(r.metadata)} for r in chunk]
            self._call("upsert", partial(self._index.upsert, vectors=payload,
                                         namespace=self.namespace))

    def _fetch(self, ids: list[str]) -> dict[str, VectorRecord]:
        found: dict[str, VectorRecord] = {}
        for chunk in _chunks(ids, BATCH):
            response = self._call("fetch", partial(self._index.fetch, ids=chunk,
                                                   namespace=self.namespace))
            for vid, vec in response.vectors.items():
                found[vid] = VectorRecord(vid, np.asarray(vec.values, dtype=np.float32),
                                          coerce_metadata(vec.metadata))
        return found

    def _query(self, vector: Vector, top_k: int, conditions: tuple[Condition, ...],
               include_vectors: bool) -> list[Match]:
        spec = unparse_filter(conditions) or None
        response = self._call("query", lambda: self._index.query(
            top_k=top_k, vector=[float(x) for x in vector], filter=spec,
            include_values=include_vectors, include_metadata=True, namespace=self.namespace))
        return [Match(m.id, float(m.score), coerce_metadata(m.metadata),
                      np.asarray(m.values, dtype=np.float32) if include_vectors else None)
                for m in response.matches]

    def _update_metadata(self, record_id: str, fields: dict[str, MetaValue]) -> bool:
        return self._update_metadata_many([record_id], fields)[0]

    def _update_metadata_many(self, record_ids: list[str], fields: dict[str, MetaValue]
                              ) -> list[bool]:
        """Pinecone's update-by-id answers the same whether or not the id exists: look
        first (one fetch per 100 ids, not one per id) so a missing user is reported (a
        racing delete is harmless either way), then update the present ones, by id (the
        API has no multi-id update), UPDATE_CONCURRENCY at a time under the limiter."""
        present = set(self._fetch(list(dict.fromkeys(record_ids))))

        def update(record_id: str) -> None:
            self._call("update", lambda: self._index.update(
                id=record_id, set_metadata=fields, namespace=self.namespace))

        todo = sorted(present)
        if len(todo) == 1:
            update(todo[0])
        elif todo:
            with ThreadPoolExecutor(min(UPDATE_CONCURRENCY, len(todo)),
                                    thread_name_prefix="pinecone-update") as pool:
                list(pool.map(update, todo))
        return [i in present for i in record_ids]

    def _delete(self, ids: list[str]) -> None:
        for chunk in _chunks(ids, 1000):
            self._call("delete", partial(self._index.delete, ids=chunk,
                                         namespace=self.namespace))

    def list_ids(self) -> list[str]:
        def everything() -> list[str]:
            return [item.id for page in self._index.list(namespace=self.namespace)
                    for item in page.vectors if item.id]

        return sorted(self._call("list", everything))

    def count(self) -> int:
        stats = self._call("describe_index_stats", self._index.describe_index_stats)
        summary = stats.namespaces.get(self.namespace)
        return int(summary.vector_count) if summary is not None else 0


# -- control plane: `mosaic index create` / `mosaic index status` ------------------------


@dataclass(frozen=True)
class IndexInfo:
    name: str
    host: str | None
    dimension: int | None
    metric: str | None
    ready: bool
    state: str
    action: str = "found"  # created | found | missing


def _control(vs: Any) -> Any:
    from pinecone import Pinecone

    return Pinecone(api_key=vs.pinecone_api_key.get_secret_value(),
                    host=vs.pinecone_control_url)


def _info(model: Any, action: str) -> IndexInfo:
    dense = [f for f in model.schema.fields.values() if hasattr(f, "dimension")]
    field = dense[0] if dense else None
    return IndexInfo(model.name, model.host, getattr(field, "dimension", None),
                     getattr(field, "metric", None), bool(model.status.ready),
                     str(model.status.state), action)


def index_status(vs: Any) -> IndexInfo:
    """The configured index as Pinecone describes it (``action`` missing when absent)."""
    from pinecone.errors.exceptions import NotFoundError

    try:
        return _info(_control(vs).describe_index(vs.pinecone_index_name), "found")
    except NotFoundError:
        return IndexInfo(vs.pinecone_index_name, None, None, None, False, "Missing",
                         "missing")


def create_index(vs: Any, *, dim: int, timeout_seconds: int = 300) -> IndexInfo:
    """Create the serverless index from settings (name, ``dim``, metric, cloud, region)
    and wait until it is ready; an existing one of the same shape is left as it is, one
    of another dimension or metric is a ConfigError (it would mix vector spaces)."""
    from pinecone import ServerlessSpec

    found = index_status(vs)
    if found.action == "found":
        if (found.dimension, found.metric) != (dim, vs.pinecone_metric):
            from mosaic.errors import ConfigError

            raise ConfigError(f"Pinecone index {found.name} has dimension {found.dimension} "
                              f"and metric {found.metric}; the settings need {dim} and "
                              f"{vs.pinecone_metric}: choose another pinecone_index_name")
        return found
    model = _control(vs).create_index(
        name=vs.pinecone_index_name, dimension=dim, metric=vs.pinecone_metric,
        spec=ServerlessSpec(cloud=vs.pinecone_cloud, region=vs.pinecone_region),
        timeout=timeout_seconds)
    return _info(model, "created")
