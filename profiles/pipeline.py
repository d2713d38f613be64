"""The opt-in use case over the three seams: traits -> embedding -> index upsert.

A Kafka agent decodes a record, calls ``index_users`` with a batch and routes each
outcome: ``IndexedProfile`` on success, the ValidationError (dead letter) or
ExternalServiceError (retry) otherwise. Re-embedding is skipped when the stored record
already has this trait text (same fingerprint) from the same model.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mosaic.errors import ValidationError
from profiles.embedders import Embedder
from profiles.index import VectorIndex, VectorRecord, check_metadata
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


Outcome = IndexedProfile | ValidationError


class ProfileIndexer:
    def __init__(self, traits: TraitsService, embedder: Embedder, index: VectorIndex, *,
                 clock: Callable[[], float] = time.time) -> None:
        if index.dim != embedder.dim:
            raise ValueError(f"index dim {index.dim} != embedder dim {embedder.dim}")
        self.traits, self.embedder, self.index, self.clock = traits, embedder, index, clock

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
                    req, self.traits.user_traits(req.user_id, force_refresh=req.force_refresh),
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
        vectors = self.embedder.embed([p.traits.text for p in stale])
        self.index.upsert([VectorRecord(p.traits.user_id, v, p.metadata)
                           for p, v in zip(stale, vectors, strict=True)])
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
