"""Trait texts for a whole batch at once: the S3 reads of different users overlap.

``ProfileIndexer.index_users`` asks the traits service for one user after another; with
S3 round trips of ~30 ms (index, chat documents, cache read and write) that was most of
a batch's time once embedding is batched. ``prefetch`` computes the batch's traits on a
small thread pool first; the indexer's own calls then return those results. Each call is
timed (stage ``traits``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from consumers.embedding.metrics import timed
from mosaic.errors import ValidationError
from profiles.traits import TraitsService, UserTraits

log = logging.getLogger(__name__)

Key = tuple[str, int | None, bool]  # user_id, top_n, force_refresh


class PrefetchingTraitsService(TraitsService):
    workers = 8

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._memo: dict[Key, UserTraits | ValidationError] = {}
        self._lock = threading.Lock()

    def prefetch(self, requests: Sequence[Key]) -> None:
        """Compute traits for ``(user_id, top_n, force_refresh)`` in parallel. Failures
        other than ValidationError are not kept: the later call repeats and raises them."""
        if len(requests) < 2:
            return
        with ThreadPoolExecutor(min(self.workers, len(requests))) as pool:
            list(pool.map(lambda r: self._fetch_one(*r), requests))

    def _fetch_one(self, user_id: str, top_n: int | None, force_refresh: bool) -> None:
        try:
            result: UserTraits | ValidationError = self._compute(user_id, top_n,
                                                                  force_refresh)
        except ValidationError as exc:
            result = exc
        except Exception as exc:  # noqa: BLE001 - the sequential call will raise it
            log.debug("prefetching traits of %s failed: %s", user_id, exc)
            return
        with self._lock:
            self._memo[(user_id, top_n, force_refresh)] = result

    def forget(self) -> None:
        with self._lock:
            self._memo.clear()

    def user_traits(self, user_id: str, *, top_n: int | None = None,
                    force_refresh: bool = False) -> UserTraits:
        with self._lock:
            found = self._memo.pop((user_id, top_n, force_refresh), None)
        if isinstance(found, ValidationError):
            raise found
        if found is not None:
            return found
        return self._compute(user_id, top_n, force_refresh)

    def _compute(self, user_id: str, top_n: int | None, force_refresh: bool) -> UserTraits:
        with timed("traits"):
            return super().user_traits(user_id, top_n=top_n, force_refresh=force_refresh)
