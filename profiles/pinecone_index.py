"""VectorIndex on Pinecone (a dense, cosine index) through the ``pinecone`` 10.x SDK.

The SDK's REST transport already retries 408/429/5xx up to 3 times per request
(decorrelated jitter, honours Retry-After); this adapter adds an outer Retrier for what
survives that, and maps SDK errors to ExternalServiceError. Writes go out in batches
of at most 100 vectors, reads of ids in batches of 100 (URL length).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from typing import Any, TypeVar

import numpy as np

from mosaic.errors import ExternalServiceError
from mosaic.retry import Retrier
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


def _chunks(items: list[T], size: int) -> Iterator[list[T]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


class PineconeVectorIndex(VectorIndex):
    def __init__(self, index: Any, *, dim: int, namespace: str,
                 retrier: Retrier | None = None) -> None:
        self._index = index
        self.dim = dim
        self.namespace = namespace
        self.retrier = retrier or Retrier(5)

    @classmethod
    def connect(cls, *, api_key: str, host: str, dim: int, namespace: str,
                retrier: Retrier | None = None, timeout_seconds: float = 30.0,
                ) -> PineconeVectorIndex:
        """``host`` is the index's data-plane URL (an IP, localhost or a dotted name)."""
        from pinecone import Pinecone

        client = Pinecone(api_key=api_key, timeout=timeout_seconds)
        return cls(client.Index(host=host), dim=dim, namespace=namespace, retrier=retrier)

    @classmethod
    def from_settings(cls, vs: Any, *, dim: int,
                      retrier: Retrier | None = None) -> PineconeVectorIndex:
        if not vs.pinecone_host:
            from mosaic.errors import ConfigError

            raise ConfigError("MOSAIC_VECTOR_INDEX__PINECONE_HOST is required for Pinecone")
        return cls.connect(api_key=vs.pinecone_api_key.get_secret_value(),
                           host=vs.pinecone_host, dim=dim, namespace=vs.pinecone_namespace,
                           retrier=retrier or Retrier(vs.max_attempts))

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        from pinecone.errors.exceptions import PineconeError

        try:
            return self.retrier.call(fn, retryable=is_transient, what=f"Pinecone {what}")
        except PineconeError as exc:
            raise ExternalServiceError(f"Pinecone {what} failed: {exc}",
                                       retryable=is_transient(exc)) from exc

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
        # Pinecone's update-by-id answers the same whether or not the id exists; look
        # first so a missing user is reported (a racing delete is harmless either way).
        if not self._fetch([record_id]):
            return False
        self._call("update", lambda: self._index.update(
            id=record_id, set_metadata=fields, namespace=self.namespace))
        return True

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
