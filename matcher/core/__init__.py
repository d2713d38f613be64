"""The pure matcher core: stdlib, numpy and our own modules only (a unit test enforces it).

Public API: ``match_pool(pool, constraints, params, search) -> MatchResult``.
"""

from matcher.core.candidates import ExactSearch, NeighbourSearch
from matcher.core.engine import match_pool
from matcher.core.model import (
    Constraints,
    MatchParams,
    MatchResult,
    MatchStats,
    Pair,
    PoolSnapshot,
    RecentPairing,
    Unmatched,
    UnmatchedReason,
)

__all__ = [
    "Constraints",
    "ExactSearch",
    "MatchParams",
    "MatchResult",
    "MatchStats",
    "NeighbourSearch",
    "Pair",
    "PoolSnapshot",
    "RecentPairing",
    "Unmatched",
    "UnmatchedReason",
    "match_pool",
]
