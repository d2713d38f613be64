"""The opt-in use case over the three seams: traits -> embedding -> index upsert.

A Kafka agent decodes a record, calls ``index_users`` with a batch and routes each
outcome: ``IndexedProfile`` on success, the ValidationError (dead letter) or
ExternalServiceError (retry) otherwise. Re-embedding is skipped when the stored record
already has this trait text (same fingerprint) from the same model, and when a retried
batch's text was embedded by the failed attempt (kept until it is indexed).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from mosaic.errors import ValidationError
from profiles.embedders import Embedder
from profiles.index import Vector, VectorIndex, VectorRecord, check_metadata
from profiles.traits import TraitsService, UserTraits


@dataclass(frozen=True)
class IndexedProfile:
    user_id: str
    traits: UserTraits
    model: str
    embedded: bool  # False: the vector was current, only metadata was written


@dataclass(frozen=True)
class IndexRequest:
    user_id: str
    metadata: Mapping[str, Any]  # e.g. status, pool, opted_in_at, missed_cycles
    force_refresh: bool = False
    top_n: int | None = None  # how many of the user's newest chats; None: the service's


Outcome = IndexedProfile | ValidationError
# Vectors kept for a retry at most (a few agent batches' worth).
MAX_PENDING_VECTORS = 4096


class ProfileIndexer:
    def __init__(self, traits: TraitsService, embedder: Embedder, index: VectorIndex, *,
                 clock: Callable[[], float] = time.time, embed_concurrency: int = 4) -> None:
        if index.dim != embedder.dim:
            raise ValueError(f"index dim {index.dim} != embedder dim {embedder.dim}")
        self.traits, self.embedder, self.index, self.clock = traits, embedder, index, clock
        # Vectors embedded but not yet indexed, by (model, text): a retry after a failed
        # embed request or a failed upsert embeds only what is missing.
        self._pending: OrderedDict[tuple[str, str], Vector] = OrderedDict()
        self._lock = threading.Lock()
        # Embed requests of one batch in flight at once (Vertex: 100 ms each; one at a time
        # a worker could not reach the quota).
        self.embed_concurrency = max(1, embed_concurrency)

    def _vectors(self, texts: Sequence[str]) -> list[Vector]:
        """One vector per text; texts already in ``_pending`` are not embedded again, the
        others go out one embedder batch (one request) each, ``embed_concurrency`` at a
        time (the embedder's limiter spaces them), each kept as soon as it is back, so a
        failed request loses only its own texts."""
        model = self.embedder.model
        missing = list(dict.fromkeys(t for t in texts if (model, t) not in self._pending))
        step = max(1, self.embedder.batch_size)
        chunks = [missing[i:i + step] for i in range(0, len(missing), step)]

        def embed(chunk: list[str]) -> None:
            vectors = self.embedder.embed(chunk)
            with self._lock:
                for text, vector in zip(chunk, vectors, strict=True):
                    self._pending[(model, text)] = vector

        if len(chunks) == 1 or self.embed_concurrency == 1:
            for chunk in chunks:
                embed(chunk)
        elif chunks:
            with ThreadPoolExecutor(min(self.embed_concurrency, len(chunks))) as pool:
                for future in [pool.submit(embed, c) for c in chunks]:
                    future.result()  # the first failure, once every request has ended
        while len(self._pending) > MAX_PENDING_VECTORS:  # batches abandoned mid-way
            self._pending.popitem(last=False)
        return [self._pending[(model, t)] for t in texts]

    def index_user(self, user_id: str, metadata: Mapping[str, Any], *,
                   force_refresh: bool = False) -> IndexedProfile:
        """One user; raises what ``index_users`` would return as an outcome."""
        (outcome,) = self.index_users([IndexRequest(user_id, metadata, force_refresh)])
        if isinstance(outcome, ValidationError):
            raise outcome
        return outcome

    def index_users(self, requests: Sequence[IndexRequest]) -> list[Outcome]:
        """Per-request outcomes in order. Bad input (no insights, bad metadata) is an
        outcome; ExternalServiceError from S3, the embedder or the index is raised
        (the whole batch is then safe to retry: every write is idempotent). When a user
        appears twice, the last request wins and both get its outcome."""
        outcomes: dict[str, Outcome] = {}
        ready: dict[str, _Prepared] = {}
        for req in requests:
            try:
                ready[req.user_id] = _Prepared(
                    req, self.traits.user_traits(req.user_id, top_n=req.top_n,
                                                 force_refresh=req.force_refresh),
                    check_metadata(req.metadata))
                outcomes.pop(req.user_id, None)
            except ValidationError as exc:
                outcomes[req.user_id] = exc
                ready.pop(req.user_id, None)
        outcomes.update(self._write(list(ready.values())))
        return [outcomes[req.user_id] for req in requests]

    def _write(self, batch: list[_Prepared]) -> dict[str, Outcome]:
        existing = self.index.fetch([p.traits.user_id for p in batch])
        model, now = self.embedder.model, self.clock()
        for p in batch:
            p.metadata.update(model=model, fingerprint=p.traits.fingerprint, updated_at=now)
        stale = [p for p in batch if p.request.force_refresh
                 or not _current(existing.get(p.traits.user_id), model, p.traits)]
        vectors = self._vectors([p.traits.text for p in stale])
        self.index.upsert([VectorRecord(p.traits.user_id, v, p.metadata)
                           for p, v in zip(stale, vectors, strict=True)])
        for p in stale:  # indexed: a retry no longer needs them
            self._pending.pop((model, p.traits.text), None)
        for p in batch:
            if p not in stale:
                self.index.update_metadata(p.traits.user_id, p.metadata)
        return {p.traits.user_id: IndexedProfile(p.traits.user_id, p.traits, model,
                                                 embedded=p in stale) for p in batch}


@dataclass(eq=False)
class _Prepared:
    request: IndexRequest
    traits: UserTraits
    metadata: dict[str, Any]


def _current(old: VectorRecord | None, model: str, traits: UserTraits) -> bool:
    return old is not None and old.metadata.get("model") == model \
        and old.metadata.get("fingerprint") == traits.fingerprint
