"""Inputs and outputs of the pure matcher: frozen dataclasses, no I/O.

A pool snapshot is what one matching cycle sees; constraints say which pairs may not meet;
parameters tune the score. The result lists pairs, the users left out (each with a reason)
and statistics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.floating[Any]]
IntArray = npt.NDArray[np.integer[Any]]
BoolArray = npt.NDArray[np.bool_]

SECONDS_PER_DAY = 24 * 3600.0


@dataclass(frozen=True)
class PoolSnapshot:
    """Users waiting in one cycle. Row ``i`` of every array belongs to ``user_ids[i]``.

    ``vectors`` may have any norm (they are normalised); NaN or all-zero rows are rejected.
    """

    user_ids: tuple[str, ...]
    vectors: FloatArray
    wait_seconds: FloatArray
    missed_cycles: IntArray | None = None

    def __len__(self) -> int:
        return len(self.user_ids)


@dataclass(frozen=True)
class RecentPairing:
    """Two users who were paired ``cycles_ago`` cycles before this one (1 = last cycle)."""

    user_a: str
    user_b: str
    cycles_ago: int


@dataclass(frozen=True)
class Constraints:
    """Pairs that may not meet.

    ``blocks`` holds ``(blocker, blocked)``; a block in either direction forbids the pair.
    ``recent`` pairs are forbidden when ``cycles_ago <= MatchParams.history_cycles``.
    ``forbidden_indices`` is a fast path for large inputs: an ``(m, 2)`` array of row
    indices into the snapshot. Ids that are not in the pool are ignored.
    """

    blocks: tuple[tuple[str, str], ...] = ()
    recent: tuple[RecentPairing, ...] = ()
    forbidden_indices: IntArray | None = None


@dataclass(frozen=True)
class MatchParams:
    """Score and search parameters.

    score(u, v) = sim(u, v) + wait_boost * (w_u + w_v) / 2, w = min(1, wait / saturation).
    ``sim`` is the cosine, or with ``standardize`` the cosine's z-score over all pairs of the
    pool, so thresholds and boosts carry across embedders whose cosines sit in a narrow band.
    ``min_similarity`` applies to ``sim`` (a z-score when standardised).
    """

    wait_boost: float = 0.1
    wait_saturation_seconds: float = 7 * SECONDS_PER_DAY
    min_similarity: float | None = None
    standardize: bool = False
    history_cycles: int = 3
    candidates_k: int | None = None
    """Candidates per user; ``None`` = 40 with exact search, 20 with an index."""
    exact_max_users: int = 20_000
    max_improve_rounds: int = 200
    improve_depth: int = 14
    improve_beam: int = 16
    augment_budget: int = 2_000_000
    recall_target: float = 0.95
    """Candidate recall@10 an approximate search must reach (measured every cycle)."""
    recall_sample: int = 256
    """Rows whose exact top-10 is computed to measure the recall."""
    recall_seed: int = 0
    """Seed of the sample (same pool and seed: same sample, same result)."""
    widen_share: float = 0.10
    """Below the target: at most this share of the rows gets an exact row scan."""
    widen_max_work: float = 6e12
    """... and at most this many multiply-adds (rows x users x dimensions) of them."""
    min_probe_gain: float = 0.02
    """A partitioned index scans one more probe only if it adds this much recall."""
    exact_fallback_max_users: int = 200_000
    """Below the target after the widening: exact search up to this many users."""

    @classmethod
    def from_settings(cls, settings: Any, **overrides: Any) -> MatchParams:
        """Build from ``mosaic.settings.MatcherSettings`` (duck-typed to keep core pure)."""
        values: dict[str, Any] = {
            "wait_boost": settings.wait_boost,
            "wait_saturation_seconds": settings.wait_saturation_seconds,
            "min_similarity": settings.min_similarity,
            "standardize": settings.standardize_similarity,
            "history_cycles": settings.history_cycles,
            "recall_target": settings.recall_target,
        }
        values.update(overrides)
        return cls(**values)


class UnmatchedReason(StrEnum):
    """Why a user was left out of this cycle."""

    NO_ALLOWED_PARTNER = "no_allowed_partner"
    """Every other user in the pool is blocked, a recent partner, or there is nobody else."""
    BELOW_MIN_SIMILARITY = "below_min_similarity"
    """Allowed partners exist but none reaches ``min_similarity``."""
    ODD_ONE_OUT = "odd_one_out"
    """Everyone else who could be matched was; an odd count left this shortest-waiting user."""
    PARTNERS_TAKEN = "partners_taken"
    """A maximum matching cannot include everyone; longer-waiting users took the partners."""


@dataclass(frozen=True)
class Pair:
    """A match; ``user_a < user_b``."""

    user_a: str
    user_b: str
    score: float
    similarity: float


@dataclass(frozen=True)
class Unmatched:
    user_id: str
    reason: UnmatchedReason
    wait_seconds: float
    missed_cycles: int


@dataclass(frozen=True)
class MatchStats:
    users: int
    pairs: int
    unmatched_by_reason: dict[str, int]
    total_score: float
    mean_score: float
    min_score: float
    mean_similarity: float
    candidate_method: str
    candidates_k: int
    candidate_edges: int
    forbidden_pairs: int
    greedy_pairs: int
    fallback_pairs: int
    augmentations: int
    priority_swaps: int
    improve_rounds: int
    improve_moves: int
    improve_gain: float
    similarity_mean: float
    """Mean cosine over all pairs of the pool."""
    similarity_std: float
    """Its standard deviation; NaN unless ``standardize`` (computing it costs n d^2)."""
    unmatched_again: int
    """Users left out who had already missed at least one cycle."""
    candidate_recall: float | None = None
    """Measured recall@10 of the final candidates on a seeded sample (None: exact search)."""
    candidate_recall_initial: float | None = None
    """The search's own recall before any widening."""
    recall_target: float = 0.95
    recall_target_met: bool = True
    recall_sample: int = 0
    candidate_widening: tuple[str, ...] = ()
    """Search steps with the recall after each, e.g. ``("faiss-ivf 0.331", "exact 1.000")``;
    more than one entry means the search was widened."""
    exact_rows: int = 0
    """Rows given an exact scan by the widening steps."""
    candidate_chance_share: float | None = None
    """Share of the sample's exact neighbours whose cosine does not stand out from chance
    (no index finds those; a target above ``1 - share`` needs exact search)."""

    @property
    def candidates_widened(self) -> bool:
        return len(self.candidate_widening) > 1


@dataclass(frozen=True)
class MatchResult:
    pairs: tuple[Pair, ...]
    unmatched: tuple[Unmatched, ...]
    stats: MatchStats = field(compare=False)
